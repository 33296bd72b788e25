"""Reconstruct a built data set with a trained model and turn it into anomaly maps.

Bengs et al. 2021, Sec. 2.3: every test volume is reconstructed (a 2D model reconstructs all axial
slices and stacks them back, see :func:`uadlab.models.base.reconstruct_and_score`), the residual
``|x - x_hat|`` (or the model's own voxel-wise anomaly score, ``ModelBase.anomaly_score``) is
post-processed into an anomaly map by :func:`uadlab.evaluation.postprocessing.anomaly_map`,
identically for 2D and 3D models, so both are scored on the same kind of volume.

The core is array-level (:func:`make_maps`), so notebooks and tests can build maps without a
trained model; :func:`predict` is the thin loop over a data set and :func:`save_maps` writes the
maps back as NIfTI in each subject's preprocessed space.

Shape:
    - image, recon, residual, anomaly_map: ``(X, Y, Z)`` float32 (``64^3`` at the paper's size).
    - brain_mask, lesion_mask: ``(X, Y, Z)`` bool; ``lesion_mask`` is ``None`` for subjects
      without ground truth (a healthy subject of a built data set has an all-false mask).
    - affine: ``(4, 4)`` float64 voxel-to-world (mm) of the preprocessed grid.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from uadlab._checks import check_int
from uadlab._progress import progress_bar
from uadlab.data.io import save_volume
from uadlab.errors import RunError
from uadlab.evaluation.postprocessing import anomaly_map, residual
from uadlab.models.base import reconstruct_and_score

__all__ = ["SubjectMaps", "make_maps", "iter_predict", "predict", "save_maps", "as_maps_list", "lesion_slice",
           "MAP_FOLDERS"]

#: Sub-folders of :func:`save_maps`' output, one per saved array.
MAP_FOLDERS: dict[str, str] = {"anomaly_map": "anomaly_maps", "recon": "recons"}


@dataclass(frozen=True, eq=False)
class SubjectMaps:
    """Everything the evaluation needs about one subject (Bengs et al. 2021, Sec. 2.3).

    Attributes:
        subject_id: the data set's subject id.
        image: ``(X, Y, Z)`` float32 preprocessed input in ``[0, 1]``.
        recon: ``(X, Y, Z)`` float32 reconstruction of ``image``.
        residual: ``(X, Y, Z)`` float32 voxel-wise anomaly score before post-processing: ``|image - recon|``
            unless the model scores otherwise (the ceVAE, the z-score floor).
        anomaly_map: ``(X, Y, Z)`` float32 post-processed residual, ``0`` outside the eroded brain.
        brain_mask: ``(X, Y, Z)`` bool.
        lesion_mask: ``(X, Y, Z)`` bool ground truth, or ``None`` when the subject has none.
        affine: ``(4, 4)`` voxel-to-world matrix in mm.
        cohort: the subject's cohort (``"healthy"``, ``"tumour"``, ``"brats2014"``...), if known.
        split: ``"train"``, ``"val"`` or ``"test"``, if known.
    """

    subject_id: str
    image: np.ndarray
    recon: np.ndarray
    residual: np.ndarray
    anomaly_map: np.ndarray
    brain_mask: np.ndarray
    lesion_mask: np.ndarray | None
    affine: np.ndarray
    cohort: str | None = None
    split: str | None = None

    def __repr__(self) -> str:
        lesion = "None" if self.lesion_mask is None else f"{self.lesion_voxels} voxels"
        return (f"SubjectMaps({self.subject_id!r}, cohort={self.cohort!r}, split={self.split!r}, "
                f"shape={self.image.shape}, lesion={lesion})")

    @property
    def lesion_voxels(self) -> int:
        """Number of lesion voxels (``0`` without a lesion mask)."""
        return 0 if self.lesion_mask is None else int(np.count_nonzero(self.lesion_mask))


def make_maps(
    subject_id: str,
    image: np.ndarray,
    recon: np.ndarray,
    brain_mask: np.ndarray,
    lesion_mask: np.ndarray | None = None,
    affine: np.ndarray | None = None,
    *,
    cohort: str | None = None,
    split: str | None = None,
    postprocess_kwargs: Mapping[str, Any] | None = None,
    score: np.ndarray | None = None,
) -> SubjectMaps:
    """Residual and anomaly map of one subject from its image and reconstruction (Sec. 2.3).

    Args:
        subject_id: non-empty subject id.
        image: ``(X, Y, Z)`` preprocessed image.
        recon: ``(X, Y, Z)`` reconstruction.
        brain_mask: ``(X, Y, Z)`` brain mask (bool or 0/1).
        lesion_mask: ``(X, Y, Z)`` ground truth (bool or 0/1), or ``None``.
        affine: ``(4, 4)`` voxel-to-world matrix; ``None``: identity (1 mm voxels).
        cohort: the subject's cohort, carried along.
        split: the subject's split, carried along.
        postprocess_kwargs: options of :func:`uadlab.evaluation.postprocessing.anomaly_map`
            (``erosion_iterations``, ``median_size``, ``closing_iterations``); ``None``: its defaults.
        score: ``(X, Y, Z)`` the model's own non-negative voxel-wise anomaly score, used in place of
            the residual ``|image - recon|``; ``None``: the residual.

    Returns:
        The subject's :class:`SubjectMaps`.

    Raises:
        TypeError: ``subject_id`` is not a string or ``postprocess_kwargs`` not a mapping.
        ValueError: shapes differ, an array is not 3D, a mask is not binary, the affine is not
            ``(4, 4)``, or an unknown post-processing option.
        VolumeError: the brain mask is empty.
    """
    if not isinstance(subject_id, str) or not subject_id:
        raise TypeError(f"`subject_id` must be a non-empty str, got {subject_id!r}")
    if postprocess_kwargs is not None and not isinstance(postprocess_kwargs, Mapping):
        raise TypeError(f"`postprocess_kwargs` must be a mapping or None, got {postprocess_kwargs!r}")
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"`image` must be an (X, Y, Z) volume, got shape {image.shape!r}")
    recon = np.asarray(recon, dtype=np.float32)
    brain_mask = _as_mask(brain_mask, "brain_mask", image.shape)
    if lesion_mask is not None:
        lesion_mask = _as_mask(lesion_mask, "lesion_mask", image.shape)
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4):
        raise ValueError(f"`affine` must be a (4, 4) matrix, got shape {affine.shape!r}")
    options = dict(postprocess_kwargs or {})
    unknown = sorted(set(options) - {"erosion_iterations", "median_size", "closing_iterations"})
    if unknown:
        raise ValueError(f"`postprocess_kwargs` must hold only anomaly_map options, got unknown {unknown!r}")
    res = residual(image, recon)  # ValueError on a shape mismatch
    if score is not None:
        res = _as_score(score, image.shape)
    return SubjectMaps(subject_id=subject_id, image=image, recon=recon, residual=res,
                       anomaly_map=anomaly_map(res, brain_mask, **options), brain_mask=brain_mask,
                       lesion_mask=lesion_mask, affine=affine, cohort=cohort, split=split)


def iter_predict(
    model: Any,
    dataset: Any,
    ids: Iterable[str],
    *,
    postprocess_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 16,
    device: str | None = None,
    progress: bool = False,
) -> Iterator[SubjectMaps]:
    """Yield the :class:`SubjectMaps` of ``ids`` one at a time (lazy form of :func:`predict`).

    Args:
        model: a trained model (any :class:`uadlab.models.base.ReconstructionModel`, 2D or 3D), e.g. from
            :func:`uadlab.training.load_run`.
        dataset: a :class:`uadlab.data.dataset.BuiltDataset` (anything with ``.subject(id)``).
        ids: subject ids of ``dataset``.
        postprocess_kwargs: options of :func:`uadlab.evaluation.postprocessing.anomaly_map`.
        batch_size: volumes (3D) or slices (2D) per forward pass.
        device: where the model runs; ``None``: where its parameters are.
        progress: a transient bar over the subjects (gone when done).

    Yields:
        One :class:`SubjectMaps` per id, in order.

    Raises:
        TypeError: ``batch_size`` is not an int.
        ValueError: a non-positive ``batch_size``; as :func:`make_maps`.
        DatasetError: an unknown subject id (from ``dataset.subject``).
    """
    check_int("batch_size", batch_size, "a positive int", lambda v: v >= 1)
    with progress_bar(progress, list(ids), desc="reconstruct", unit="subject", leave=False) as subjects:
        for subject_id in subjects:
            subject = dataset.subject(subject_id)
            recon, score = reconstruct_and_score(model, subject.image, batch_size=batch_size, device=device)
            yield make_maps(subject.subject_id, subject.image, recon, subject.brain_mask,
                            subject.lesion_mask, subject.affine, cohort=subject.cohort, split=subject.split,
                            postprocess_kwargs=postprocess_kwargs, score=score)


def predict(
    model: Any,
    dataset: Any,
    ids: Iterable[str],
    *,
    postprocess_kwargs: Mapping[str, Any] | None = None,
    batch_size: int = 16,
    device: str | None = None,
    progress: bool = False,
) -> dict[str, SubjectMaps]:
    """Reconstruct subjects of a built data set and post-process them (Bengs et al. 2021, Sec. 2.3).

    Holds every map in memory: about 4.5 MB per ``64^3`` subject (four float32 volumes and two
    bool masks), so a few hundred subjects fit easily; use :func:`iter_predict` to stream.

    Args:
        model: a trained model (any :class:`uadlab.models.base.ReconstructionModel`, 2D or 3D).
        dataset: a :class:`uadlab.data.dataset.BuiltDataset`.
        ids: subject ids of ``dataset``; duplicates are rejected.
        postprocess_kwargs: options of :func:`uadlab.evaluation.postprocessing.anomaly_map`.
        batch_size: volumes (3D) or slices (2D) per forward pass.
        device: where the model runs; ``None``: where its parameters are.
        progress: a transient bar over the subjects (gone when done).

    Returns:
        ``{subject_id: SubjectMaps}`` in the order of ``ids``.

    Raises:
        ValueError: duplicate ids; as :func:`iter_predict`.
        DatasetError: an unknown subject id.
    """
    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise ValueError(f"`ids` must be unique, got duplicates {sorted({i for i in ids if ids.count(i) > 1})!r}")
    return {m.subject_id: m for m in iter_predict(model, dataset, ids, postprocess_kwargs=postprocess_kwargs,
                                                  batch_size=batch_size, device=device, progress=progress)}


def save_maps(
    maps: Mapping[str, SubjectMaps] | Iterable[SubjectMaps],
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    fields: Iterable[str] = ("anomaly_map", "recon"),
) -> list[Path]:
    """Write anomaly maps (and reconstructions) as NIfTI in each subject's preprocessed space.

    Files: ``OUT/anomaly_maps/<id>.nii.gz`` and ``OUT/recons/<id>.nii.gz`` (see
    :data:`MAP_FOLDERS`), float32 with the subject's affine, so they overlay the built data set's
    ``images/<id>.nii.gz``. Every target is checked before anything is written, so a refused call
    leaves no partial output.

    Args:
        maps: ``{id: SubjectMaps}`` (from :func:`predict`) or an iterable of :class:`SubjectMaps`.
        out_dir: output folder, created if needed.
        overwrite: replace existing files.
        fields: which arrays to save, keys of :data:`MAP_FOLDERS`.

    Returns:
        The written paths, subject by subject.

    Raises:
        ValueError: an unknown field, or two maps with one subject id (one file each).
        TypeError: an element is not a :class:`SubjectMaps`.
        RunError: a target file exists and ``overwrite`` is False.
    """
    fields = list(fields)
    unknown = [f for f in fields if f not in MAP_FOLDERS]
    if unknown or not fields:
        raise ValueError(f"`fields` must be a non-empty subset of {sorted(MAP_FOLDERS)}, got {fields!r}")
    items = list(maps.values()) if isinstance(maps, Mapping) else list(maps)
    for item in items:
        if not isinstance(item, SubjectMaps):
            raise TypeError(f"`maps` must hold SubjectMaps, got {type(item).__name__}")
    ids = [m.subject_id for m in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"`maps` must hold one map per subject, got duplicates "
                         f"{sorted({i for i in ids if ids.count(i) > 1})!r}")
    out_dir = Path(out_dir)
    targets = [(m, f, out_dir / MAP_FOLDERS[f] / f"{m.subject_id}.nii.gz") for m in items for f in fields]
    if not overwrite:
        existing = [str(path) for _, _, path in targets if path.exists()]
        if existing:
            raise RunError(f"{len(existing)} map file(s) already exist (pass overwrite=True to replace), "
                           f"e.g. {existing[0]}")
    written = []
    for m, field, path in targets:
        path.parent.mkdir(parents=True, exist_ok=True)
        written.append(save_volume(path, getattr(m, field).astype(np.float32), m.affine, overwrite=overwrite))
    return [Path(p) for p in written]


def lesion_slice(mask: np.ndarray | None, axis: int = 2, size: int | None = None) -> int:
    """Index along ``axis`` of the slice with the most lesion voxels (the first on a tie).

    Where figures and Fig. 7 show a subject (Bengs et al. 2021: the axial slice with most lesion).

    Args:
        mask: ``(X, Y, Z)`` lesion mask, or ``None``.
        axis: 2 for axial slices.
        size: the volume's extent along ``axis``, needed when ``mask`` is ``None``.

    Returns:
        The index; the middle slice ``size // 2`` when ``mask`` is ``None``, empty or not 3D.

    >>> mask = np.zeros((4, 4, 6), bool); mask[1, 1:3, 4] = True
    >>> lesion_slice(mask), lesion_slice(None, size=6)
    (4, 3)
    """
    if mask is None or np.asarray(mask).ndim != 3 or not np.any(mask):
        return (np.shape(mask)[axis] if size is None else size) // 2
    other = tuple(a for a in range(3) if a != axis)
    return int(np.argmax(np.count_nonzero(mask, axis=other)))


def as_maps_list(maps: Mapping[str, SubjectMaps] | Sequence[SubjectMaps], name: str = "maps", *,
                 labelled: bool = False) -> list[SubjectMaps]:
    """``maps`` (a dict id -> maps, or a list) as a non-empty list of :class:`SubjectMaps`.

    The one check every consumer of maps (evaluation, analysis, Lambert's protocol) makes.

    Args:
        maps: the subjects' maps.
        name: the argument's name, for the messages.
        labelled: require a lesion mask on every subject.

    Raises:
        TypeError: ``maps`` is neither a dict nor a list/tuple, or holds something else than SubjectMaps.
        ValueError: no subject, or (``labelled``) a subject without lesion mask.
    """
    if isinstance(maps, Mapping):
        items = list(maps.values())
    elif isinstance(maps, (list, tuple)):
        items = list(maps)
    else:
        raise TypeError(f"`{name}` must be a dict or list of SubjectMaps, got {type(maps).__name__}")
    if not items:
        raise ValueError(f"`{name}` must hold at least one subject, got none")
    for m in items:
        if not isinstance(m, SubjectMaps):
            raise TypeError(f"`{name}` must hold SubjectMaps, got {type(m).__name__}")
        if labelled and m.lesion_mask is None:
            raise ValueError(f"`{name}` must be labelled, got subject {m.subject_id!r} without a lesion mask")
    return items


def _as_score(score: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A model's anomaly score as float32 of ``shape``, finite and non-negative (ValueError otherwise)."""
    score = np.asarray(score, dtype=np.float32)
    if score.shape != shape:
        raise ValueError(f"`score` must have the shape of `image` {shape}, got {score.shape!r}")
    if not np.isfinite(score).all() or score.min(initial=0.0) < 0:
        raise ValueError("`score` must be finite and non-negative (a voxel-wise anomaly score)")
    return score


def _as_mask(mask: np.ndarray, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``mask`` as a bool array of ``shape``; ``ValueError`` for another shape or non-binary values."""
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"`{name}` must have the shape of `image` {shape}, got {mask.shape!r}")
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError(f"`{name}` must be binary (bool or 0/1), got values {np.unique(mask)[:5]!r}")
        mask = mask.astype(bool)
    return mask
