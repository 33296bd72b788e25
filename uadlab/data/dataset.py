"""Build a data-set folder (``uadlab data build``) and load it back.

A built data set is the preprocessed form (Bengs et al. 2021, Sec. 2.1; :mod:`uadlab.data.preprocessing`)
of everything a manifest describes, either a real data set on disk or the simulated phantom
(:mod:`uadlab.data.phantom`). Training, inference and evaluation read only this folder:

.. code-block:: text

    DIR/dataset.json              name, manifest (path, sha256), profile, image_size, spacing_mm, seed,
                                  uadlab_version, preprocessing parameters, cohorts (role, split counts)
    DIR/subjects.csv              subject_id, cohort, split, image, brain_mask, lesion_mask,
                                  lesion_voxels, lesion_volume_mm3, source
    DIR/images/<id>.nii.gz        float32 in [0, 1], zero outside the brain
    DIR/brain_masks/<id>.nii.gz   uint8 0/1
    DIR/lesion_masks/<id>.nii.gz  uint8 0/1, lesion cohorts only

Paths in ``subjects.csv`` are relative to ``DIR``; ``lesion_mask`` is empty for healthy subjects.
``lesion_voxels`` counts the lesion in the built grid; ``lesion_volume_mm3`` is the lesion's volume in
the subject's source space at its own resolution (file or simulation grid). ``source`` is the input
image (relative to the data root) or the phantom's source brain.

The folder is built beside ``DIR`` as ``DIR.partial-<random>`` and renamed to ``DIR`` only once it is
complete (``dataset.json`` is written last), so an interrupted build never looks finished; the next
build into ``DIR`` removes what a killed one left behind (``DIR.partial-*``, ``DIR.old-*``).
Preprocessing results go through a :class:`~uadlab.data.preprocessing.PreprocessCache`, so rebuilding,
or building a second folder from the same inputs, does no preprocessing work.

Shape:
    - :meth:`BuiltDataset.subject` arrays: ``(S, S, S)`` with ``S = image_size``; image float32,
      masks bool.
    - :meth:`BuiltDataset.stack`: images ``(N, S, S, S)`` float32, brain masks ``(N, S, S, S)`` bool.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import json
import multiprocessing
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

import uadlab
from uadlab._checks import check_int, check_path
from uadlab._progress import progress_bar
from uadlab._threads import limit_threads
from uadlab.data.io import atomic_write, folder_lock, load_volume, save_volume
from uadlab.data.manifests import (
    SPLITS,
    Case,
    Manifest,
    assign_splits,
    check_manifest,
    discover_cases,
    load_case,
    load_manifest,
    phantom_sources,
)
from uadlab.data.phantom import (
    PhantomParams,
    load_sources,
    simulate_subject,
    subject_seed,
)
from uadlab.data.preprocessing import (
    PreprocessCache,
    Preprocessed,
    PreprocessingParams,
    bias_correct,
    bias_correction_version,
    preprocess,
    skull_strip,
    skull_strip_version,
)
from uadlab.errors import DatasetError, ManifestError, UadlabWarning, VolumeError
from uadlab.layout import DATASET_RECORD
from uadlab.profiles import Profile, get_profile

__all__ = ["COLUMNS", "BuiltDataset", "Subject", "build_dataset", "load_dataset"]

COLUMNS: tuple[str, ...] = (
    "subject_id", "cohort", "split", "image", "brain_mask", "lesion_mask", "lesion_voxels",
    "lesion_volume_mm3", "source",
)
"""Columns of ``subjects.csv``, in order."""

_INFO = DATASET_RECORD
_TABLE = "subjects.csv"
_FOLDERS = {"image": "images", "brain_mask": "brain_masks", "lesion_mask": "lesion_masks"}


class Subject(NamedTuple):
    """One preprocessed subject of a built data set.

    Attributes:
        subject_id: identifier, unique in the data set.
        cohort: cohort name, e.g. ``"healthy"``, ``"tumour"``, ``"brats"``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        image: ``(S, S, S)`` float32 in ``[0, 1]``, zero outside the brain.
        brain_mask: ``(S, S, S)`` bool.
        lesion_mask: ``(S, S, S)`` bool; all ``False`` for a healthy subject.
        affine: ``(4, 4)`` voxel-to-RAS-mm matrix of the preprocessed grid.
    """

    subject_id: str
    cohort: str
    split: str
    image: np.ndarray
    brain_mask: np.ndarray
    lesion_mask: np.ndarray
    affine: np.ndarray


class _Item(NamedTuple):
    """One subject to build: how to identify its input (cache key) and how to produce it."""

    subject_id: str
    cohort: str
    role: str
    split: str
    source: str
    key: str
    compute: Callable[[PreprocessingParams], tuple[Preprocessed, dict]]


# --------------------------------------------------------------------------------------------------
# Building


def build_dataset(
    manifest_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    profile: str | Profile = "lab",
    overwrite: bool = False,
    progress: bool = False,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 1,
) -> Path:
    """Build the data set a manifest describes into the folder ``out``.

    Real manifests: every case found under ``root`` is read (:func:`uadlab.data.manifests.load_case`:
    brain mask from its file ``> 0``, for skull-stripped data ``image != 0``, or for whole-head
    data (``brain_mask: deepbet``) :func:`uadlab.data.preprocessing.skull_strip`, cached; lesion mask the
    union of its files ``> 0``; all on one grid) and preprocessed. Phantom manifests: each
    subject is simulated on the profile's ``spacing_mm`` grid with the seed
    :func:`uadlab.data.phantom.subject_seed` ``(seed, cohort, index)`` and preprocessed identically; the
    profile's ``phantom_counts`` replace the manifest's counts. Splits come from
    :func:`uadlab.data.manifests.assign_splits` (paper: healthy train/val 90/10, lesion cohorts val/test
    about 40/60).

    If ``out`` already holds a complete data set built from the same manifest text, root and
    profile (for a phantom also the same resolved :class:`PhantomParams` and counts, so new parameter
    defaults are never served from an old build), it is returned untouched (no work at all); any
    other data set there is refused unless ``overwrite`` is set, which always rebuilds (cheaply,
    from the cache), so a damaged build is repaired. Subjects are independent (each has its own
    seed), so ``workers`` processes build them in parallel into the very same files as one process.
    ``out`` is locked (:func:`uadlab.data.io.folder_lock`) while it is built.

    Real lesion cases whose lesion mask is empty, lies entirely outside the brain or holds labels
    outside the documented set, and images that are all zero inside the brain, are refused
    (:func:`uadlab.data.manifests.load_case`, the checks of ``uadlab data check``). A lesion that exists
    but has no voxel left on the built grid (smaller than one output voxel) is kept with a
    :class:`~uadlab.errors.UadlabWarning` and recorded under ``"warnings"`` in ``dataset.json``;
    evaluation leaves such subjects out.

    Example:
        >>> out = build_dataset("data_manifests/phantom.yaml", "data/phantom", profile="smoke")  # doctest: +SKIP
        >>> print(load_dataset(out).summary())  # doctest: +SKIP

    Args:
        manifest_path: a ``data_manifests/*.yaml`` file.
        out: folder to create.
        root: folder holding a real data set (and a phantom's real source brains, if it names any).
        profile: ``"smoke"``, ``"lab"``, ``"paper"`` or a :class:`~uadlab.profiles.Profile`; sets
            ``image_size``, ``spacing_mm`` and the phantom counts.
        overwrite: rebuild and replace an existing data set in ``out``, the same or a different one
            (the new one is built completely before the old one is removed).
        progress: show a tqdm progress bar.
        cache_dir: folder of the preprocessing cache; ``None`` means
            :func:`uadlab.data.preprocessing.default_cache_dir`.
        workers: processes that simulate and preprocess subjects at once (e.g. the number of CPU
            cores); each loads its own copy of the source brains (about 5 s at 2 mm). They are
            started with Python's ``spawn`` method, so a script calling this with ``workers > 1``
            must guard its top level with ``if __name__ == "__main__":`` (notebooks and the CLI
            need nothing). More than the usable cores (``os.sched_getaffinity``) is capped at
            them with a :class:`~uadlab.errors.UadlabWarning`.

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: unknown profile, ``workers`` below 1, or ``root`` missing for a real manifest.
        uadlab.errors.ManifestError: the manifest is invalid or files it names are missing.
        uadlab.errors.VolumeError: an input volume is unreadable, or an image and its masks do not
            share one grid, or a brain mask, image or lesion mask is empty or out of place (above).
        uadlab.errors.DatasetError: ``out`` exists and holds something else, without ``overwrite``;
            or ``out`` is a file or a non-empty folder that is not a data set (never replaced).
        uadlab.errors.UadlabError: another process is building into ``out``.
    """
    manifest_path = check_path("manifest_path", manifest_path)
    out = check_path("out", out)
    root = None if root is None else check_path("root", root)
    cache = PreprocessCache(None if cache_dir is None else check_path("cache_dir", cache_dir))
    for name, flag in (("overwrite", overwrite), ("progress", progress)):
        if not isinstance(flag, bool):
            raise TypeError(f"`{name}` must be a bool, got {flag!r}")
    check_int("workers", workers, "an int")
    if workers < 1:
        raise ValueError(f"`workers` must be at least 1, got {workers!r}")
    profile = get_profile(profile)
    manifest = load_manifest(manifest_path)
    params = PreprocessingParams.from_profile(profile)
    identity = _identity(manifest, manifest_path, root, profile, params)
    if manifest.kind == "real" and root is None:
        raise ValueError(f"`root` must be the folder of the real data set {manifest.name!r}, got None")
    with folder_lock(out):
        _remove_leftovers(out)
        if not overwrite and out.exists() and _same_build(out, identity):
            return out
        _check_replaceable(out, overwrite)
        try:
            if manifest.kind == "phantom":
                items, seed = _phantom_items(manifest, profile, root), int(manifest.phantom.seed)
            else:
                items, seed = _real_items(manifest, root, cache), None
            workers = _usable_workers(workers, len(items))
            _build_into(out, items, manifest, manifest_path, identity, profile, params, seed, cache, workers,
                        progress)
        except (ManifestError, VolumeError):
            if manifest.kind == "real":
                _raise_every_problem(manifest, root)
            raise
    return out


def _identity(manifest: Manifest, manifest_path: Path, root: Path | None, profile: Profile,
              params: PreprocessingParams) -> dict:
    """What makes two builds the same data set: the manifest text, root, profile and preprocessing.

    For a phantom also what the manifest text does not pin down: the resolved parameters and counts.
    """
    uses_root = manifest.kind == "real" or manifest.phantom.sources != "mni152"
    identity = {
        "manifest_sha256": hashlib.sha256(manifest_path.read_bytes()).hexdigest(), "profile": profile.name,
        "root": str(root.resolve()) if uses_root and root is not None else None, "preprocessing": params.to_dict(),
    }
    if manifest.kind == "phantom":
        identity["phantom"] = {
            "params": PhantomParams(**manifest.phantom.params).to_dict(),
            "counts": _phantom_counts(manifest, profile),
        }
    return identity


def _raise_every_problem(manifest: Manifest, root: Path) -> None:
    """After a real build failed on its first problem: ManifestError with every problem ``data check`` finds.

    Returns without raising when the check finds fewer than two (the first error then stands).
    """
    problems = check_manifest(manifest, root)
    if len(problems) > 1:
        listing = "\n".join(f"  - {problem}" for problem in problems)
        raise ManifestError(f"manifest {manifest.name!r}: {len(problems)} problem(s) under {root} (as `uadlab data "
                            f"check` lists them):\n{listing}") from None


def _usable_workers(workers: int, n_items: int) -> int:
    """``workers`` capped at the usable CPU cores (with a warning) and at the number of subjects."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no affinity mask
        cores = os.cpu_count() or 1
    if workers > cores:
        warnings.warn(f"workers={workers} (--workers) is more than the {cores} usable CPU core(s); using {cores}",
                      UadlabWarning, stacklevel=3)
        workers = cores
    return max(1, min(workers, n_items))


def _build_into(out: Path, items: list[_Item], manifest: Manifest, manifest_path: Path, identity: dict,
                profile: Profile, params: PreprocessingParams, seed: int | None, cache: PreprocessCache,
                workers: int, progress: bool) -> None:
    """Build every item into ``out.partial-<random>``, then rename it to ``out`` (the lock is held)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f"{out.name}.partial-{secrets.token_hex(4)}")
    partial.mkdir()
    try:
        build = functools.partial(_build_item_reporting, folder=partial, cache=cache, params=params)
        bar = functools.partial(progress_bar, progress, desc=f"building {manifest.name}", unit="subject",
                                total=len(items))
        if workers == 1:
            with bar(items) as subjects:
                results = [build(item) for item in subjects]
        else:  # "spawn": a fork of a process that runs torch or OpenMP threads can deadlock
            with ProcessPoolExecutor(int(workers), mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_worker_threads, initargs=(int(workers),)) as pool, \
                    bar(pool.map(build, items)) as subjects:
                results = list(subjects)
        rows = [row for row, _ in results]
        for message in dict.fromkeys(m for _, messages in results for m in messages):  # a worker's, here
            warnings.warn(message, UadlabWarning, stacklevel=3)
        table = pd.DataFrame(rows, columns=list(COLUMNS))
        with atomic_write(partial / _TABLE) as tmp:
            table.to_csv(tmp, index=False)
        info = _info(manifest, manifest_path, identity, profile, params, seed, table, items)
        info["warnings"] = _lesion_warnings(table, items)
        for message in info["warnings"]:
            warnings.warn(f"{out}: {message}", UadlabWarning, stacklevel=3)
        with atomic_write(partial / _INFO) as tmp:  # written last: marks the folder complete
            tmp.write_text(json.dumps(info, indent=2) + "\n")
        _swap_into_place(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _lesion_warnings(table: pd.DataFrame, items: list[_Item]) -> list[str]:
    """One line per lesion subject whose lesion vanished on the built grid (smaller than a voxel
    there): kept, recorded in ``dataset.json`` and left out of DICE by :mod:`uadlab.evaluation`.
    """
    roles = {item.subject_id: item.role for item in items}
    lost = table[(table["subject_id"].map(roles) == "lesion") & (table["lesion_voxels"] == 0)]
    return [f"{row.subject_id} ({row.cohort}): lesion of {row.lesion_volume_mm3:.0f} mm^3 has no voxel on the "
            f"built grid; it is not scored" for row in lost.itertuples()]


def _real_items(manifest: Manifest, root: Path, cache: PreprocessCache) -> list[_Item]:
    """One :class:`_Item` per case of a real manifest, split assigned.

    The cache key holds the sha256 of every input file's bytes, so a changed file is preprocessed
    again while a moved or renamed data root is not. A ``brain_mask: deepbet`` case's key names
    the deepbet version; its full-resolution mask is cached on its own in ``cache`` (another
    profile reuses it).
    """
    items = []
    for case in assign_splits(discover_cases(manifest, root), manifest):
        image_sha = _file_sha256(case.image)
        if case.skull_strip is not None:
            brain_key = skull_strip_version(case.skull_strip)
        elif case.brain_mask is None:
            brain_key = "image != 0"
        else:
            brain_key = _file_sha256(case.brain_mask)
        parts = {
            "kind": "real", "role": case.role, "image": image_sha,
            "brain_mask": brain_key,
            "lesion_masks": [_file_sha256(p) for p in case.lesion_masks] if case.role == "lesion" else [],
        }
        if case.bias_correction is not None:  # absent otherwise: existing cache entries stay valid
            parts["bias_correction"] = bias_correction_version(case.bias_correction)
        key = json.dumps(parts, sort_keys=True)
        items.append(_Item(
            subject_id=case.subject_id, cohort=case.cohort, role=case.role, split=case.split,
            source=_relative_source(case.image, root), key=key,
            compute=functools.partial(_preprocess_case, case, cache, f"{image_sha} {brain_key}"),  # picklable
        ))
    return items


def _preprocess_case(case: Case, cache: PreprocessCache, mask_key: str,
                     params: PreprocessingParams) -> tuple[Preprocessed, dict]:
    """Read (:func:`uadlab.data.manifests.load_case`), skull strip and N4-correct if the manifest asks, preprocess.

    Metadata: the lesion volume in mm³, counted on the file's own grid.
    """
    volumes = load_case(case)
    brain_mask = volumes.brain_mask
    if case.skull_strip is not None:
        brain_mask = cache.get_or_compute_mask(
            mask_key, lambda: skull_strip(volumes.image, volumes.affine, method=case.skull_strip))
    image = volumes.image
    if case.bias_correction is not None:
        image = bias_correct(image, volumes.affine, brain_mask)
    result = preprocess(image, volumes.affine, brain_mask, volumes.lesion_mask, params=params)
    voxel_mm3 = float(abs(np.linalg.det(volumes.affine[:3, :3])))
    volume = 0.0 if volumes.lesion_mask is None else float(volumes.lesion_mask.sum()) * voxel_mm3
    return result, {"lesion_volume_mm3": volume}


def _phantom_counts(manifest: Manifest, profile: Profile) -> dict[str, int]:
    """Subjects per cohort of a phantom: the profile's ``phantom_counts``, else the manifest's ``counts``
    (0 where neither names the cohort). The build's identity and its subjects both come from here.
    """
    spec = manifest.phantom
    return {c.name: int(profile.phantom_counts.get(c.name, spec.counts.get(c.name, 0))) for c in manifest.cohorts}


def _phantom_items(manifest: Manifest, profile: Profile, root: Path | None) -> list[_Item]:
    """One :class:`_Item` per simulated subject, split assigned; counts from the profile.

    Subject ``i`` of a cohort is ``<cohort>_<i>`` (zero-padded), simulated from source brain
    ``i mod n_sources`` with the seed ``subject_seed(seed, cohort, i)``; the cohort's name is the
    phantom kind (``healthy``, ``tumour``, ``stroke``). The profile's ``phantom_counts`` replace the
    manifest's ``counts`` (a cohort the profile does not count keeps the manifest's). Splits use
    :func:`uadlab.data.manifests.assign_splits` on file-less cases, exactly as for real data. Source
    brains are loaded lazily, only when a subject is not in the cache.
    """
    spec = manifest.phantom
    source_paths = phantom_sources(manifest, root)
    params = PhantomParams(**spec.params)
    sources = _LazySources(source_paths, profile.spacing_mm)
    source_key = [_file_sha256(p) for p in source_paths] if source_paths else "mni152"  # hashed once
    counts = _phantom_counts(manifest, profile)
    cases = []
    for cohort in manifest.cohorts:
        count = counts[cohort.name]
        width = max(3, len(str(count - 1)))
        cases.extend(
            Case(subject_id=f"{cohort.name}_{i:0{width}d}", cohort=cohort.name, role=cohort.role,
                 image=Path(), brain_mask=None, lesion_masks=())
            for i in range(count)
        )
    items = []
    for case in assign_splits(cases, manifest):
        index = int(case.subject_id.rsplit("_", 1)[1])
        seed = subject_seed(spec.seed, case.cohort, index)
        key = json.dumps({
            "kind": "phantom", "cohort": case.cohort, "index": index, "seed": seed,
            "sources": source_key,
            "phantom": params.to_dict(), "voxel_mm": profile.spacing_mm, "profile": profile.name,
        }, sort_keys=True)
        items.append(_Item(
            subject_id=case.subject_id, cohort=case.cohort, role=case.role, split=case.split, source="",
            key=key, compute=functools.partial(_simulate, sources, index, case.cohort, seed, params),
        ))
    return items


def _simulate(
    sources: _LazySources, index: int, kind: str, seed: int, params, prep: PreprocessingParams
) -> tuple[Preprocessed, dict]:
    """Simulate one phantom subject and preprocess it; metadata: lesion volume (mm³) and source name."""
    brains = sources.get()
    subject = simulate_subject(brains[index % len(brains)], kind, seed, params=params)
    result = preprocess(subject.image, subject.affine, subject.brain_mask, subject.lesion_mask, params=prep)
    return result, {"lesion_volume_mm3": float(subject.lesion_volume_mm3), "source": subject.source}


class _LazySources:
    """The phantom's source brains, loaded on first use (a fully cached build never loads them)."""

    def __init__(self, paths: list[Path] | None, voxel_mm: float) -> None:
        self.paths, self.voxel_mm, self._brains = paths, voxel_mm, None

    def get(self) -> list:
        if self._brains is None:
            self._brains = load_sources(self.paths, voxel_mm=self.voxel_mm)
        return self._brains


def _build_item_reporting(item: _Item, folder: Path, cache: PreprocessCache,
                          params: PreprocessingParams) -> tuple[dict, list[str]]:
    """:func:`_build_item`, and the :class:`~uadlab.errors.UadlabWarning` messages it raised, so that
    the parent process reports them (a worker's own stderr would show them in Python's raw format).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UadlabWarning)
        row = _build_item(item, folder, cache, params)
    for warning in caught:
        if not issubclass(warning.category, UadlabWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return row, [str(w.message) for w in caught if issubclass(w.category, UadlabWarning)]


def _build_item(item: _Item, folder: Path, cache: PreprocessCache, params: PreprocessingParams) -> dict:
    """Preprocess (through the cache) and write one subject into ``folder``; its ``subjects.csv`` row."""
    result, meta = cache.get_or_compute_with_meta(item.key, lambda: item.compute(params), params=params)
    row = {"subject_id": item.subject_id, "cohort": item.cohort, "split": item.split}
    arrays = {"image": result.image, "brain_mask": result.brain_mask}
    if item.role == "lesion":
        if result.lesion_mask is None:  # the cache never returns an entry that lost its lesion mask
            raise DatasetError(f"{item.subject_id} ({item.cohort}): lesion subject has no lesion mask")
        arrays["lesion_mask"] = result.lesion_mask
    for name, folder_name in _FOLDERS.items():
        if name in arrays:
            relative = f"{folder_name}/{item.subject_id}.nii.gz"
            save_volume(folder / relative, arrays[name], result.affine)
            row[name] = relative
        else:
            row[name] = ""
    row["lesion_voxels"] = int(arrays["lesion_mask"].sum()) if "lesion_mask" in arrays else 0
    row["lesion_volume_mm3"] = float(meta.get("lesion_volume_mm3", 0.0))
    row["source"] = meta.get("source", item.source)
    return row


def _info(manifest: Manifest, manifest_path: Path, identity: dict, profile: Profile, params: PreprocessingParams,
          seed: int | None, table: pd.DataFrame, items: list[_Item]) -> dict:
    """The content of ``dataset.json``."""
    roles = {item.cohort: item.role for item in items}
    cohorts = {}
    for cohort, role in roles.items():
        splits = table.loc[table["cohort"] == cohort, "split"].value_counts()
        cohorts[cohort] = {"role": role, "counts": {s: int(splits.get(s, 0)) for s in SPLITS}}
    return {
        "name": manifest.name,
        "kind": manifest.kind,
        "manifest": {"path": str(manifest_path.resolve()), "sha256": identity["manifest_sha256"]},
        "root": identity["root"],
        "profile": profile.name,
        "image_size": params.out_size,
        "spacing_mm": params.spacing_mm,
        "seed": seed,
        "uadlab_version": uadlab.__version__,
        "preprocessing": params.to_dict(),
        "n_subjects": len(table),
        "cohorts": cohorts,
        "build": identity,
    }


def _same_build(out: Path, identity: dict) -> bool:
    """Whether ``out`` holds a complete data set of the same build ``identity``.

    The identity: manifest text, root, profile, preprocessing and, for a phantom, the resolved
    :class:`PhantomParams` and counts.
    """
    try:
        dataset = load_dataset(out)
    except DatasetError:
        return False
    return dataset.info.get("build") == identity


def _check_replaceable(out: Path, overwrite: bool) -> None:
    """Raise unless ``out`` is absent, an empty folder, or (with ``overwrite``) a uadlab data set."""
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir() or out.is_symlink():
        raise DatasetError(f"{out}: exists and is not a folder; not replaced")
    entries = list(out.iterdir())
    if not entries:
        return
    if not ((out / _INFO).exists() or (out / _TABLE).exists()):
        raise DatasetError(
            f"{out}: is a non-empty folder but not a uadlab data set; choose another --out (it is never replaced)"
        )
    if not overwrite:
        raise DatasetError(
            f"{out}: holds a data set built from another manifest, root, profile or phantom parameters, or an "
            "incomplete one; "
            "pass overwrite=True (--overwrite) to replace it"
        )


def _remove_leftovers(out: Path) -> None:
    """Remove ``out.partial-*`` and ``out.old-*`` folders a killed build left behind.

    Called with ``out``'s lock held: every build into ``out`` holds it, so no live process is writing them.
    """
    for leftover in out.parent.glob(f"{glob.escape(out.name)}.*-*"):
        if leftover.is_dir() and re.fullmatch(rf"{re.escape(out.name)}\.(partial|old)-[0-9a-f]{{8}}", leftover.name):
            shutil.rmtree(leftover, ignore_errors=True)


def _swap_into_place(partial: Path, out: Path) -> None:
    """Rename the complete ``partial`` folder to ``out``, replacing an old data set there."""
    if not out.exists():
        os.replace(partial, out)
        return
    old = out.with_name(f"{out.name}.old-{secrets.token_hex(4)}")
    os.replace(out, old)
    os.replace(partial, out)
    shutil.rmtree(old, ignore_errors=True)


def _worker_threads(workers: int) -> None:
    """Worker initializer: the usable cores shared among ``workers`` processes (at least one BLAS/OpenMP
    thread each, :func:`uadlab._threads.limit_threads`), so that workers do not oversubscribe them.
    """
    limit_threads(workers, torch_threads=False)


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _relative_source(path: Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)



# --------------------------------------------------------------------------------------------------
# Loading


class BuiltDataset:
    """A built data-set folder, opened by :func:`load_dataset`.

    Attributes:
        root: the folder.
        info: the content of ``dataset.json``.
        table: ``subjects.csv`` as a DataFrame (one row per subject, columns :data:`COLUMNS`).
    """

    def __init__(self, root: Path, info: dict, table: pd.DataFrame) -> None:
        self.root = root
        self.info = info
        self.table = table

    def __repr__(self) -> str:
        return f"BuiltDataset({str(self.root)!r}, {len(self.table)} subjects)"

    @property
    def image_size(self) -> int:
        """Edge of the preprocessed volumes, voxels."""
        return int(self.info["image_size"])

    @property
    def cohorts(self) -> list[str]:
        """Cohort names in the order of ``subjects.csv``."""
        return list(dict.fromkeys(self.table["cohort"]))

    @property
    def lesion_cohorts(self) -> list[str]:
        """Cohorts whose subjects have lesion masks (e.g. ``["tumour", "stroke"]``)."""
        roles = {name: c.get("role") for name, c in self.info.get("cohorts", {}).items()}
        with_masks = set(self.table.loc[self.table["lesion_mask"] != "", "cohort"])
        return [c for c in self.cohorts if roles.get(c) == "lesion" or c in with_masks]

    def ids(self, *, cohort: str | None = None, split: str | None = None) -> list[str]:
        """Subject identifiers, in table order, optionally of one cohort and/or split.

        Raises:
            ValueError: ``cohort`` is not a cohort of this data set, or ``split`` is not
                ``"train"``, ``"val"`` or ``"test"``.
        """
        rows = np.ones(len(self.table), bool)
        if cohort is not None:
            if cohort not in self.cohorts:
                raise ValueError(f"`cohort` must be one of {self.cohorts}, got {cohort!r}")
            rows &= (self.table["cohort"] == cohort).to_numpy()
        if split is not None:
            if split not in SPLITS:
                raise ValueError(f"`split` must be one of {list(SPLITS)}, got {split!r}")
            rows &= (self.table["split"] == split).to_numpy()
        return self.table.loc[rows, "subject_id"].tolist()

    def subject(self, subject_id: str) -> Subject:
        """Load one subject's volumes.

        Raises:
            KeyError: unknown ``subject_id``.
            uadlab.errors.DatasetError: a volume does not have the data set's ``image_size``.
            uadlab.errors.VolumeError: a file is unreadable.
        """
        rows = self.table.index[self.table["subject_id"] == subject_id]
        if len(rows) == 0:
            raise KeyError(f"`subject_id` {subject_id!r} is not in {self.root / _TABLE}")
        row = self.table.loc[rows[0]]
        image, affine = self._volume(row["image"])
        brain, _ = self._volume(row["brain_mask"])
        lesion = self._volume(row["lesion_mask"])[0] > 0.5 if row["lesion_mask"] else np.zeros(image.shape, bool)
        return Subject(
            subject_id=subject_id, cohort=row["cohort"], split=row["split"], image=image,
            brain_mask=brain > 0.5, lesion_mask=lesion, affine=affine,
        )

    def stack(self, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Images and brain masks of ``ids`` stacked along a new first axis.

        Returns:
            ``(images, brain_masks)``: ``(N, S, S, S)`` float32 and ``(N, S, S, S)`` bool.

        Raises:
            TypeError: ``ids`` is a single string.
            KeyError: an unknown id.
        """
        if isinstance(ids, str):
            raise TypeError(f"`ids` must be a sequence of subject ids, got {ids!r}")
        shape = (len(ids),) + (self.image_size,) * 3
        images, brains = np.zeros(shape, np.float32), np.zeros(shape, bool)
        for n, subject_id in enumerate(ids):
            subject = self.subject(subject_id)
            images[n], brains[n] = subject.image, subject.brain_mask
        return images, brains

    def summary(self) -> str:
        """Counts per cohort and split, image size, lesion volume range per lesion cohort."""
        info = self.info
        voxel = np.array(info["preprocessing"]["pad_shape_mm"]) / self.image_size
        lines = [
            f"{info['name']} ({info.get('kind', '?')}) at {self.root}",
            f"{len(self.table)} subjects, {self.image_size}^3 voxels of "
            f"{' x '.join(f'{v:.2f}' for v in voxel)} mm, profile {info['profile']}, "
            f"resampled at {info['spacing_mm']:g} mm",
            f"  {'cohort':<12} {'role':<8} " + " ".join(f"{s:>6}" for s in SPLITS),
        ]
        for cohort in self.cohorts:
            splits = self.table.loc[self.table["cohort"] == cohort, "split"].value_counts()
            role = info.get("cohorts", {}).get(cohort, {}).get("role", "")
            lines.append(f"  {cohort:<12} {role:<8} " + " ".join(f"{int(splits.get(s, 0)):>6}" for s in SPLITS))
        for cohort in self.lesion_cohorts:
            rows = self.table[self.table["cohort"] == cohort]
            cm3 = rows["lesion_volume_mm3"].astype(float) / 1000.0
            lines.append(
                f"  {cohort} lesions: {cm3.min():.1f}-{cm3.max():.1f} cm^3 (median {cm3.median():.1f}), "
                f"{int(rows['lesion_voxels'].min())}-{int(rows['lesion_voxels'].max())} voxels"
            )
        return "\n".join(lines)

    def _volume(self, relative: str) -> tuple[np.ndarray, np.ndarray]:
        path = self.root / relative
        data, affine = load_volume(path)
        if data.shape != (self.image_size,) * 3:
            raise DatasetError(f"{path}: shape {data.shape}, expected {(self.image_size,) * 3}")
        return data, affine


def load_dataset(path: str | os.PathLike) -> BuiltDataset:
    """Open a folder made by :func:`build_dataset`.

    Checks that ``dataset.json`` and ``subjects.csv`` are readable, that the table has every column
    and that every file it names exists (volumes are read lazily).

    Args:
        path: the data-set folder.

    Returns:
        A :class:`BuiltDataset`.

    Raises:
        TypeError: ``path`` is not a str/path.
        uadlab.errors.DatasetError: the folder, ``dataset.json``, ``subjects.csv``, a column or a
            volume file is missing or unreadable (the message names what is missing).
    """
    root = check_path("path", path)
    if not root.is_dir():
        raise DatasetError(f"{root}: no data-set folder here; build one with `uadlab data build`")
    missing = [name for name in (_INFO, _TABLE) if not (root / name).is_file()]
    if missing:
        raise DatasetError(f"{root}: incomplete data set, missing {', '.join(missing)}")
    try:
        info = json.loads((root / _INFO).read_text())
        table = pd.read_csv(root / _TABLE, dtype={c: str for c in COLUMNS if c not in
                                                   ("lesion_voxels", "lesion_volume_mm3")},
                            keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise DatasetError(f"{root}: unreadable {_INFO} or {_TABLE} ({error})") from error
    if not isinstance(info, dict):
        raise DatasetError(f"{root / _INFO}: expected a JSON object")
    absent = [key for key in ("name", "profile", "image_size", "preprocessing", "cohorts") if key not in info]
    if absent:
        raise DatasetError(f"{root / _INFO}: missing keys {absent}")
    columns = [c for c in COLUMNS if c not in table.columns]
    if columns:
        raise DatasetError(f"{root / _TABLE}: missing columns {columns}")
    files = [f for name in _FOLDERS for f in table[name] if f]
    lost = [f for f in files if not (root / f).is_file()]
    if lost:
        shown = ", ".join(lost[:5]) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
        raise DatasetError(f"{root}: incomplete data set, {len(lost)} missing file(s): {shown}")
    return BuiltDataset(root, info, table)
