"""Data-set manifests: one YAML file per data set, validated, turned into a list of cases.

A manifest says where a data set's files are, how its subjects are named, which cohorts it holds
and how each cohort is split. The shipped ones live in ``data_manifests/``. Unknown keys are errors
(a typo must not silently fall back to a default); every problem is reported as a
:class:`uadlab.errors.ManifestError` naming the manifest file and the offending key.

Schema::

    name: brats2019               # identifier: letters, digits, "_" and "-"
    kind: real                    # real (files under --root) | phantom (simulated, see below)
    description: ...              # free text
    licence: ...                  # the data's licence or terms of use
    citation: ...                 # what to cite
    url: https://...              # optional: where to get it
    cohorts:                      # one or more
      - name: brats               # cohort name, used in the built data set (healthy, brats, atlas...)
        role: lesion              # healthy (train/val) | lesion (val/test; never train)
        split: {val: 133, test: 202}   # see "Splits"
        seed: 0                   # seed of this cohort's split permutation
        # real data only:
        cases: "MICCAI_BraTS_2019_Data_Training/*GG/*/"  # glob under --root: one anchor per case
        match: "..."              # optional regex searched in the anchor path; named groups become
                                  #   placeholders; anchors that do not match are skipped
        subject_id: "{stem}"      # template of the subject id (default "{stem}")
        image: "{case_dir}/{stem}_t1.nii.gz"
        brain_mask: nonzero       # a pattern, or "nonzero": skull-stripped data, brain = image != 0,
                                  #   or "deepbet": whole-head T1, skull-stripped by uadlab.data.preprocessing
        lesion_mask: "{case_dir}/{stem}_seg.nii.gz"   # lesion cohorts only; may be a glob
        lesion_rule: "> 0"        # lesion = union over the lesion files of (value > 0)
        bias_correction: n4       # optional: N4 bias-field correction inside the brain mask
                                  #   (SimpleITK; Lambert et al.), before the preprocessing

Anchors and placeholders: ``cases`` is a glob relative to the data root (``**`` recursive; a trailing
``/`` keeps folders only; hidden files are skipped); each match is one case, its *anchor*, a file or
a folder. ``subject_id``, ``image``, ``brain_mask`` and ``lesion_mask`` are :meth:`str.format`
templates over these placeholders:

- ``{anchor}``: the anchor's path relative to the root (POSIX separators);
- ``{case_dir}``: the anchor if it is a folder, otherwise the folder holding it (relative to root);
- ``{stem}``: the anchor's name without ``.nii.gz``/``.nii`` (a folder: its name);
- ``{parent}``: the name of the folder holding the anchor;
- the named groups of ``match``;
- ``{subject_id}`` (not in ``subject_id`` itself).

A formatted pattern is a path relative to the root. It may contain glob characters: the image and
a brain mask must then match exactly one file; ``lesion_mask`` may match several files, which are
merged by union (ATLAS R1.2 ships ``*_LesionSmooth_stx`` plus ``*_LesionSmooth_1_stx``... for
subjects with several traced lesions). Subject ids must be unique in a manifest and usable as file
names (letters, digits, ``.``, ``_``, ``-``).

Splits: a mapping from ``train``/``val``/``test`` to either

- fractions that sum to 1: ``{train: 0.9, val: 0.1}`` (every case is assigned);
- case counts: ``{val: 133, test: 202}`` (the paper's numbers). With more cases than the counts'
  sum, the counts are taken and the surplus cases are left out; with fewer, the counts are scaled
  down proportionally (``val : test`` kept);
- the single entry ``{test: all}`` (or ``{val: all}``...): every case goes to that split.

Sizes are rounded by the largest-remainder method, and every split gets at least one case when
there are at least as many cases as splits (see :func:`split_sizes`). Which case goes where is a
permutation, drawn from ``numpy.random.default_rng(seed)``, of the cohort's cases sorted by subject
id: it depends on the seed and the set of subject ids only, not on the file system's listing order.
Lesion cohorts may not have a ``train`` split: the models learn from healthy data only (Bengs et
al. 2021, Sec. 2.1).

Phantom manifests (``kind: phantom``) have no files; their cohorts are ``healthy``, ``tumour``,
``stroke`` (roles healthy, lesion, lesion) with a ``split`` and ``seed`` only, plus::

    phantom:
      sources: mni152             # default: nilearn's MNI152 2009a symmetric template; or a list
                                  #   of globs of skull-stripped healthy T1 files relative to --root
      seed: 0                     # seed of the simulation
      counts: {healthy: 200, tumour: 60, stroke: 60}   # subjects per cohort (the default); a
                                  #   profile's phantom_counts take precedence (uadlab.data.dataset)
      params: {}                  # passed unchanged to uadlab.data.phantom.PhantomParams

Source: Bengs et al. 2021, Sec. 2.1 (data sets and splits).
"""

from __future__ import annotations

import glob
import math
import os
import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from uadlab.data.io import check_same_grid, load_volume
from uadlab.errors import ManifestError, VolumeError
from uadlab.profiles import DEFAULT_PHANTOM_COUNTS

__all__ = [
    "Case",
    "CaseVolumes",
    "Cohort",
    "Manifest",
    "PhantomSpec",
    "assign_splits",
    "check_manifest",
    "discover_cases",
    "load_case",
    "load_manifest",
    "load_yaml_model",
    "phantom_sources",
    "split_sizes",
]

SPLITS: tuple[str, ...] = ("train", "val", "test")
NONZERO = "nonzero"
#: ``brain_mask: deepbet``: the mask is computed from the T1 by :func:`uadlab.data.preprocessing.skull_strip`.
DEEPBET = "deepbet"
_COMPUTED_MASKS = (NONZERO, DEEPBET)
_PHANTOM_ROLES = {"healthy": "healthy", "tumour": "lesion", "stroke": "lesion"}
_ANCHOR_FIELDS = frozenset({"anchor", "case_dir", "stem", "parent"})
_FILE_KEYS = ("cases", "match", "image", "brain_mask", "lesion_mask", "bias_correction")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
_SUBJECT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # fullmatch: "$" would allow a trailing newline
#: Largest field of view along any axis, mm: no head is larger; a header claiming more (e.g. 1000 mm
#: voxels) is refused before preprocessing tries to resample it to 1 mm.
_MAX_FIELD_OF_VIEW_MM = 500.0
_MAGIC = re.compile(r"[*?\[]")


# --------------------------------------------------------------------------------------------------
# Schema


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _template_fields(template: str) -> set[str]:
    """Placeholder names of a :meth:`str.format` template (raises ``ValueError`` if malformed)."""
    return {field.split(".")[0].split("[")[0] for _, field, _, _ in string.Formatter().parse(template) if field}


def _validate_split(split: dict[str, Any]) -> dict[str, Any]:
    """Check a split mapping (fractions, counts or a single ``all``); raise ``ValueError`` if bad."""
    if not split:
        raise ValueError("split must name at least one of train, val, test")
    unknown = [k for k in split if k not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split name(s) {unknown}; use train, val, test")
    values = list(split.values())
    if "all" in values:
        if len(split) != 1:
            raise ValueError(f"'all' must be the only entry of a split, got {split}")
        return split
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        if min(values) < 1:
            raise ValueError(f"split counts must be >= 1, got {split}")
        return split
    if all(isinstance(v, float) for v in values):
        if min(values) <= 0 or max(values) > 1 or not math.isclose(sum(values), 1.0, abs_tol=1e-6):
            raise ValueError(f"split fractions must lie in (0, 1] and sum to 1, got {split}")
        return split
    raise ValueError(f"split values must be all fractions (0.9), all counts (133) or a single 'all', got {split}")


class Cohort(_Strict):
    """One cohort of a manifest (see the module docstring for every key)."""

    name: str = Field(pattern=_NAME)
    role: Literal["healthy", "lesion"]
    split: dict[str, Any]
    seed: int = Field(default=0, ge=0, strict=True)
    cases: str | None = None
    match: str | None = None
    subject_id: str = "{stem}"
    image: str | None = None
    brain_mask: str | None = None
    lesion_mask: str | None = None
    lesion_rule: Literal["> 0"] = "> 0"
    bias_correction: Literal["n4"] | None = None

    @field_validator("split")
    @classmethod
    def _check_split(cls, split: dict[str, Any]) -> dict[str, Any]:
        return _validate_split(split)

    @field_validator("match")
    @classmethod
    def _check_match(cls, match: str | None) -> str | None:
        if match is not None:
            try:
                re.compile(match)
            except re.error as error:
                raise ValueError(f"match is not a valid regular expression ({error})") from error
        return match

    @model_validator(mode="after")
    def _check_cohort(self) -> Cohort:
        if self.role == "lesion" and "train" in self.split:
            raise ValueError(f"lesion cohort {self.name!r} may not have a train split (UAD trains on healthy data)")
        if self.role == "healthy" and self.lesion_mask is not None:
            raise ValueError(f"healthy cohort {self.name!r} may not have a lesion_mask")
        groups = set(re.compile(self.match).groupindex) if self.match else set()
        known = _ANCHOR_FIELDS | groups
        for key in ("subject_id", "image", "brain_mask", "lesion_mask", "cases"):
            template = getattr(self, key)
            if template is None or (key == "brain_mask" and template in _COMPUTED_MASKS):
                continue
            if key != "subject_id" and (template.startswith(("/", "~")) or ".." in Path(template).parts):
                raise ValueError(f"{key} must be a path relative to the data root, got {template!r}")
            if key == "cases":
                continue  # a glob, not a template
            try:
                fields = _template_fields(template)
            except ValueError as error:
                raise ValueError(f"{key} is not a valid template ({error}): {template!r}") from error
            allowed = known if key == "subject_id" else known | {"subject_id"}
            unknown = sorted(fields - allowed)
            if unknown:
                raise ValueError(
                    f"{key} uses unknown placeholder(s) {unknown} in {template!r}; known: {sorted(allowed)}"
                )
        return self


class PhantomSpec(_Strict):
    """The ``phantom:`` section of a phantom manifest (see the module docstring)."""

    sources: Literal["mni152"] | list[str] = "mni152"
    seed: int = Field(default=0, ge=0, strict=True)
    counts: dict[Literal["healthy", "tumour", "stroke"], int] = Field(
        default_factory=lambda: dict(DEFAULT_PHANTOM_COUNTS))
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("sources", mode="before")
    @classmethod
    def _check_sources(cls, sources: Any) -> Any:
        if sources == "mni152":
            return sources
        if (
            not isinstance(sources, list)
            or not sources
            or not all(isinstance(s, str) and s and not s.startswith(("/", "~")) for s in sources)
        ):
            raise ValueError(
                f"sources must be 'mni152' or a non-empty list of globs relative to --root, got {sources!r}"
            )
        return sources

    @field_validator("counts")
    @classmethod
    def _complete_counts(cls, counts: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in counts.items() if isinstance(v, bool) or v < 0}
        if bad:
            raise ValueError(f"counts must be >= 0, got {bad}")
        return {**DEFAULT_PHANTOM_COUNTS, **counts}


class Manifest(_Strict):
    """A validated data-set manifest (see the module docstring for every key)."""

    name: str = Field(pattern=_NAME)
    kind: Literal["real", "phantom"]
    description: str
    licence: str
    citation: str
    url: str | None = None
    cohorts: list[Cohort] = Field(min_length=1)
    phantom: PhantomSpec | None = None

    @model_validator(mode="after")
    def _check_manifest(self) -> Manifest:
        names = [c.name for c in self.cohorts]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"cohort names must be unique, got {duplicates} more than once")
        if self.kind == "phantom":
            if self.phantom is None:
                raise ValueError("a phantom manifest needs a `phantom:` section (`phantom: {}` for the defaults)")
            for cohort in self.cohorts:
                if _PHANTOM_ROLES.get(cohort.name) != cohort.role:
                    raise ValueError(
                        f"phantom cohort {cohort.name!r} with role {cohort.role!r}: phantom cohorts are "
                        f"{_PHANTOM_ROLES}"
                    )
                given = [k for k in _FILE_KEYS if getattr(cohort, k) is not None]
                if given:
                    raise ValueError(f"phantom cohort {cohort.name!r} may not set file keys {given}")
        else:
            if self.phantom is not None:
                raise ValueError("a real manifest may not have a `phantom:` section")
            for cohort in self.cohorts:
                required = ["cases", "image", "brain_mask"] + (["lesion_mask"] if cohort.role == "lesion" else [])
                missing = [k for k in required if getattr(cohort, k) is None]
                if missing:
                    raise ValueError(f"real cohort {cohort.name!r} needs key(s) {missing}")
        return self

    def cohort(self, name: str) -> Cohort:
        """The cohort called ``name``.

        Raises:
            KeyError: no such cohort.
        """
        for cohort in self.cohorts:
            if cohort.name == name:
                return cohort
        raise KeyError(f"manifest {self.name!r} has no cohort {name!r}; it has {[c.name for c in self.cohorts]}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML safe loader that rejects a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _error_location(loc: tuple, data: Any) -> str:
    """``cohorts[brats].split`` for pydantic's ``('cohorts', 0, 'split')``."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int):
            label = str(item)
            if isinstance(node, list) and item < len(node):
                node = node[item]
                if isinstance(node, dict) and isinstance(node.get("name"), str):
                    label = node["name"]
            parts[-1:] = [f"{parts[-1]}[{label}]"] if parts else [f"[{label}]"]
        else:
            parts.append(str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return ".".join(parts)


def load_manifest(path: str | os.PathLike) -> Manifest:
    """Read and validate a manifest YAML file.

    Args:
        path: the manifest, e.g. ``data_manifests/brats2019.yaml``.

    Returns:
        The validated :class:`Manifest`.

    Raises:
        TypeError: ``path`` is not a str/path.
        uadlab.errors.ManifestError: the file is missing or not valid YAML, a key appears twice, or
            the content breaks the schema (unknown or missing keys, bad values); the message names
            the file and every offending key, e.g. ``cohorts[brats].splitt: unknown key``.
    """
    return load_yaml_model(path, Manifest, what="manifest")


def load_yaml_model(path: str | os.PathLike, model: type[BaseModel], *, what: str) -> Any:
    """Read a YAML file and validate it with a pydantic ``model``, as :func:`load_manifest` does.

    Shared by manifests and study files (:mod:`uadlab.studies`): a duplicate key, an unknown key or
    a bad value is a :class:`~uadlab.errors.ManifestError` naming the file and every offending key.

    Args:
        path: the YAML file.
        model: the pydantic model of its content.
        what: what the file is, for messages (``"manifest"``, ``"study"``).

    Returns:
        The validated ``model`` instance.

    Raises:
        TypeError: ``path`` is not a str/path.
        uadlab.errors.ManifestError: as :func:`load_manifest`.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or path, got {path!r}")
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: {what} not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (safe loader)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ManifestError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from error
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: a {what} must be a YAML mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = _error_location(item["loc"], data) or "(top level)"
            if item["type"] == "extra_forbidden":
                what_wrong = "unknown key"
            elif item["type"] == "missing":
                what_wrong = "missing required key"
            else:
                what_wrong = item["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {what_wrong}")
        raise ManifestError(f"{path}: invalid {what}: " + "; ".join(problems)) from None


# --------------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class Case:
    """One subject of a real data set, as found on disk.

    Attributes:
        subject_id: unique id, usable as a file name.
        cohort: cohort name (``healthy``, ``brats``, ``atlas``...).
        role: ``"healthy"`` or ``"lesion"``.
        image: the T1 image file.
        brain_mask: the brain mask file, or ``None`` when the cohort's brain mask is ``nonzero``
            (skull-stripped data: brain = ``image != 0``) or computed (``skull_strip``).
        lesion_masks: lesion files, merged by union; empty for healthy cohorts.
        split: ``"train"``, ``"val"`` or ``"test"`` once :func:`assign_splits` ran, else ``None``.
        lesion_rule: ``"> 0"`` for lesion cohorts (lesion = value > 0), ``None`` for healthy ones.
        skull_strip: ``"deepbet"`` when the cohort says ``brain_mask: deepbet`` (the mask is
            computed from the image during preprocessing), else ``None``.
        bias_correction: ``"n4"`` when the cohort asks for N4 bias-field correction, else ``None``.
    """

    subject_id: str
    cohort: str
    role: str
    image: Path
    brain_mask: Path | None
    lesion_masks: tuple[Path, ...]
    split: str | None = None
    lesion_rule: str | None = None
    skull_strip: str | None = None
    bias_correction: str | None = None


def _strip_nifti(name: str) -> str:
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _anchor_fields(root: Path, rel: str, pattern: re.Pattern | None) -> dict[str, str] | None:
    """Placeholders of one anchor (``rel``: its path under ``root``), or ``None`` if ``match`` fails."""
    rel = rel.replace(os.sep, "/").rstrip("/")
    found = pattern.search(rel) if pattern is not None else None
    if pattern is not None and found is None:
        return None
    anchor = Path(rel)
    is_dir = (root / anchor).is_dir()
    fields = {
        "anchor": rel,
        "case_dir": rel if is_dir else (anchor.parent.as_posix() or "."),
        "stem": anchor.name if is_dir else _strip_nifti(anchor.name),
        "parent": anchor.parent.name,
    }
    if found is not None:
        fields.update({k: v for k, v in found.groupdict().items() if v is not None})
    return fields


def _resolve(root: Path, template: str, fields: Mapping[str, str]) -> list[Path]:
    """Files matching ``template`` under ``root``: globbed when it has glob characters, sorted."""
    literal = "".join(text for text, *_ in string.Formatter().parse(template))
    if _MAGIC.search(literal):
        pattern = template.format_map({k: glob.escape(v) for k, v in fields.items()})
        return [root / p for p in sorted(glob.glob(pattern, root_dir=root, recursive=True))]
    path = root / template.format_map(fields)
    return [path] if path.is_file() else []


def _discover(manifest: Manifest, root: Path) -> tuple[list[Case], list[str]]:
    """Every case of a real manifest under ``root``, and every problem met finding them."""
    cases: list[Case] = []
    problems: list[str] = []
    for cohort in manifest.cohorts:
        pattern = re.compile(cohort.match) if cohort.match else None
        n_found = 0
        for rel in sorted(glob.glob(cohort.cases, root_dir=root, recursive=True)):
            fields = _anchor_fields(root, rel, pattern)
            if fields is None:
                continue
            n_found += 1
            subject_id = cohort.subject_id.format_map(fields)
            who = f"{subject_id} ({cohort.name})"
            if not _SUBJECT_ID.fullmatch(subject_id):
                problems.append(f"{who}: subject id from {fields['anchor']!r} is not usable as a file name")
                continue
            fields["subject_id"] = subject_id
            files: dict[str, list[Path]] = {}
            n_problems = len(problems)
            for key in ("image", "brain_mask", "lesion_mask"):
                template = getattr(cohort, key)
                if template is None or (key == "brain_mask" and template in _COMPUTED_MASKS):
                    continue
                matches = _resolve(root, template, fields)
                label = key.replace("_", " ")
                if not matches:
                    problems.append(f"{who}: missing {label} {root / template.format_map(fields)}")
                elif len(matches) > 1 and key != "lesion_mask":
                    problems.append(f"{who}: {label} pattern {template!r} matches {len(matches)} files")
                files[key] = matches
            if len(problems) == n_problems:
                cases.append(Case(
                    subject_id=subject_id,
                    cohort=cohort.name,
                    role=cohort.role,
                    image=files["image"][0],
                    brain_mask=files["brain_mask"][0] if "brain_mask" in files else None,
                    lesion_masks=tuple(files.get("lesion_mask", ())),
                    lesion_rule=cohort.lesion_rule if cohort.role == "lesion" else None,
                    skull_strip=DEEPBET if cohort.brain_mask == DEEPBET else None,
                    bias_correction=cohort.bias_correction,
                ))
        if n_found == 0:
            problems.append(f"cohort {cohort.name!r}: no case matches {cohort.cases!r} under {root}")
    ids = [case.subject_id for case in cases]
    for subject_id in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"subject id {subject_id!r} is found {ids.count(subject_id)} times")
    return cases, problems


def _check_real(manifest: Any) -> Manifest:
    if not isinstance(manifest, Manifest):
        raise TypeError(f"`manifest` must be a Manifest (from load_manifest), got {type(manifest).__name__}")
    return manifest


def _root(root: Any, manifest: Manifest) -> Path:
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"`root` must be a str or path, got {root!r}")
    root = Path(root)
    if not root.is_dir():
        raise ManifestError(f"{root}: data root of manifest {manifest.name!r} not found or not a folder")
    return root


def discover_cases(manifest: Manifest, root: str | os.PathLike) -> list[Case]:
    """Find every case of a real manifest under ``root``.

    Args:
        manifest: a ``kind: real`` manifest from :func:`load_manifest`.
        root: the folder the manifest's globs and patterns are relative to (``--root``).

    Returns:
        The cases, in manifest cohort order, sorted by anchor path within a cohort; ``split`` unset
        (see :func:`assign_splits`).

    Raises:
        TypeError: ``manifest`` is not a :class:`Manifest` or ``root`` not a str/path.
        ValueError: ``manifest`` is a phantom manifest (it has no files).
        uadlab.errors.ManifestError: ``root`` is missing, or files are missing, ambiguous or
            duplicated, or a cohort matches nothing; the message lists every problem at once.
    """
    manifest = _check_real(manifest)
    if manifest.kind != "real":
        raise ValueError(f"`manifest` must be a real-data manifest, got kind {manifest.kind!r} ({manifest.name})")
    root = _root(root, manifest)
    cases, problems = _discover(manifest, root)
    if problems:
        listing = "\n".join(f"  - {p}" for p in problems)
        raise ManifestError(f"manifest {manifest.name!r}: {len(problems)} problem(s) under {root}:\n{listing}")
    return cases


def phantom_sources(manifest: Manifest, root: str | os.PathLike | None = None) -> list[Path] | None:
    """The source T1 files of a phantom manifest, or ``None`` for the MNI152 template.

    Args:
        manifest: a ``kind: phantom`` manifest.
        root: folder the ``sources`` globs are relative to; needed unless ``sources: mni152``.

    Returns:
        Sorted unique files matched by the globs, or ``None`` (``sources: mni152``).

    Raises:
        TypeError: ``manifest`` is not a :class:`Manifest`.
        ValueError: ``manifest`` is not a phantom manifest.
        uadlab.errors.ManifestError: globs are given but ``root`` is ``None`` or missing, or a glob
            matches no file (every such glob is listed).
    """
    manifest = _check_real(manifest)
    if manifest.kind != "phantom" or manifest.phantom is None:
        raise ValueError(f"`manifest` must be a phantom manifest, got kind {manifest.kind!r} ({manifest.name})")
    sources = manifest.phantom.sources
    if sources == "mni152":
        return None
    if root is None:
        raise ManifestError(f"manifest {manifest.name!r}: its phantom sources are globs; pass the data root (--root)")
    root = _root(root, manifest)
    found: set[Path] = set()
    empty = []
    for pattern in sources:
        matches = [root / p for p in glob.glob(pattern, root_dir=root, recursive=True) if (root / p).is_file()]
        if not matches:
            empty.append(pattern)
        found.update(matches)
    if empty:
        raise ManifestError(f"manifest {manifest.name!r}: phantom source glob(s) {empty} match no file under {root}")
    return sorted(found)


def _volume_problems(case: Case) -> list[str]:
    """Every reading, grid and content problem of one case's files (see :func:`_content_problems`)."""
    who = f"{case.subject_id} ({case.cohort})"
    problems: list[str] = []
    volumes: dict[Path, tuple[np.ndarray, np.ndarray]] = {}
    for path in [case.image, *([case.brain_mask] if case.brain_mask else []), *case.lesion_masks]:
        try:
            volumes[path] = load_volume(path)
        except VolumeError as error:
            problems.append(f"{who}: {error}")
    if case.image not in volumes:
        return problems
    image, affine = volumes[case.image]
    grid_ok = True
    for path, (data, other_affine) in volumes.items():
        if path != case.image:
            try:
                check_same_grid(str(case.image), image.shape, affine, str(path), data.shape, other_affine)
            except VolumeError as error:
                problems.append(f"{who}: {error}")
                grid_ok = False
    if problems or not grid_ok:
        return problems
    if case.skull_strip is not None:  # the brain mask is computed later, from the image
        brain = None
    else:
        brain = image != 0 if case.brain_mask is None else volumes[case.brain_mask][0] > 0
    lesions = [volumes[path][0] for path in case.lesion_masks]
    return [f"{who}: {problem}" for problem in _content_problems(case, image, affine, brain, lesions)]


def _content_problems(case: Case, image: np.ndarray, affine: np.ndarray, brain_mask: np.ndarray | None,
                      lesion_masks: Sequence[np.ndarray]) -> list[str]:
    """What makes a readable, on-grid case unusable, each naming its file; empty when fine.

    Refused, because each would build silently wrong data: a field of view larger than
    :data:`_MAX_FIELD_OF_VIEW_MM` (wrong voxel sizes in the header), an empty brain mask, an image
    that is zero everywhere inside the brain, a lesion mask holding labels outside the documented
    set (non-negative integers; rule ``> 0``: a ``-1`` label would be dropped silently), and, for a
    lesion case, an empty lesion mask or one lying entirely outside the brain mask. Without a brain
    mask yet (``brain_mask: deepbet``: ``None``), the checks that need one are left out.
    """
    problems = []
    voxel_mm = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    extent = np.array(image.shape) * voxel_mm
    if extent.max() > _MAX_FIELD_OF_VIEW_MM:
        problems.append(f"{case.image}: field of view {np.round(extent).astype(int).tolist()} mm (voxels "
                        f"{np.round(voxel_mm, 3).tolist()} mm) is larger than a head "
                        f"({_MAX_FIELD_OF_VIEW_MM:g} mm at most); check the voxel sizes in the header")
        return problems
    brain_file = case.brain_mask or f"{case.image} != 0"
    if brain_mask is not None and not brain_mask.any():
        problems.append(f"brain mask is empty ({case.brain_mask or f'{case.image} is all zero'})")
        return problems
    if brain_mask is not None and not np.any(image[brain_mask] != 0):
        problems.append(f"{case.image}: image is all zero inside the brain mask ({brain_file})")
    if brain_mask is None and not np.any(image != 0):
        problems.append(f"{case.image}: image is all zero (nothing to skull strip)")
    union, labels_ok = np.zeros(image.shape, dtype=bool), True
    for path, mask in zip(case.lesion_masks, lesion_masks):
        labels = np.unique(mask)
        bad = labels[(labels < 0) | (labels != np.round(labels))]
        if bad.size:
            shown = ", ".join(f"{v:g}" for v in bad[:5]) + (" ..." if bad.size > 5 else "")
            problems.append(f"{path}: holds label(s) {shown} outside the documented set (non-negative "
                            f"integers; lesion rule '> 0')")
            labels_ok = False
        union |= mask > 0
    if case.role == "lesion" and case.lesion_masks and labels_ok:
        files = ", ".join(map(str, case.lesion_masks))
        if not union.any():
            problems.append(f"lesion mask is empty (no voxel > 0 in {files})")
        elif brain_mask is not None and not (union & brain_mask).any():
            problems.append(f"lesion mask lies entirely outside the brain mask ({files} vs {brain_file})")
    return problems


def check_manifest(manifest: Manifest, root: str | os.PathLike) -> list[str]:
    """List every problem of a data set against its manifest; empty when all is fine.

    Real manifests: every missing, ambiguous or duplicate file (as :func:`discover_cases`), then every
    found file is read in full with :func:`uadlab.data.io.load_volume` (so truncated or NaN-holding files
    show up), masks are compared with their image's grid, and empty brain or lesion masks are
    reported. Phantom manifests: the ``sources`` globs (nothing to check for ``mni152``).
    Reading every volume takes time on a full data set (about a second per case).

    Args:
        manifest: a manifest from :func:`load_manifest`.
        root: the data root (``--root``).

    Returns:
        One human-readable line per problem, each naming the subject and the file.

    Raises:
        TypeError: ``manifest`` is not a :class:`Manifest` or ``root`` not a str/path.
    """
    manifest = _check_real(manifest)
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"`root` must be a str or path, got {root!r}")
    root = Path(root)
    if not root.is_dir():
        return [f"{root}: data root not found or not a folder"]
    if manifest.kind == "phantom":
        try:
            paths = phantom_sources(manifest, root) or []
        except ManifestError as error:
            return [str(error)]
        problems = []
        for path in paths:
            try:
                load_volume(path)
            except VolumeError as error:
                problems.append(f"phantom source: {error}")
        return problems
    cases, problems = _discover(manifest, root)
    for case in cases:
        problems.extend(_volume_problems(case))
    return problems


# --------------------------------------------------------------------------------------------------
# Splits


def _largest_remainder(quotas: Sequence[float], total: int) -> list[int]:
    """Integers summing to ``total``, each the floor of its quota or one more (largest remainders first)."""
    sizes = [math.floor(q + 1e-9) for q in quotas]
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - sizes[i]), i))
    for i in order[: total - sum(sizes)]:
        sizes[i] += 1
    return sizes


def split_sizes(n: int, split: Mapping[str, Any]) -> dict[str, int]:
    """How many of ``n`` cases go to each split of a cohort's ``split`` mapping.

    Fractions: ``n * fraction`` rounded by largest remainder, all ``n`` cases used. Counts: taken as
    they are when ``n`` reaches their sum (surplus cases left out), otherwise scaled by
    ``n / sum(counts)`` and rounded by largest remainder. ``all``: every case. When ``n`` is at least
    the number of splits, an empty split takes one case from the largest one.

    >>> split_sizes(17, {"train": 0.9, "val": 0.1})
    {'train': 15, 'val': 2}
    >>> split_sizes(100, {"val": 133, "test": 202})
    {'val': 40, 'test': 60}

    Args:
        n: number of cases, >= 0.
        split: a validated split mapping (see the module docstring).

    Returns:
        ``{split name: size}`` in the mapping's order; sizes sum to at most ``n``.

    Raises:
        TypeError: ``n`` is not an int.
        ValueError: ``n`` is negative or ``split`` is not a valid split mapping.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
        raise TypeError(f"`n` must be an int, got {n!r}")
    if n < 0:
        raise ValueError(f"`n` must be >= 0, got {n!r}")
    try:
        split = _validate_split(dict(split))
    except (ValueError, TypeError) as error:
        raise ValueError(f"`split` must be a valid split mapping, got {split!r} ({error})") from None
    names = list(split)
    values = list(split.values())
    if values == ["all"]:
        return {names[0]: int(n)}
    if isinstance(values[0], float):
        sizes = _largest_remainder([n * v for v in values], n)
    else:
        total = sum(values)
        sizes = list(values) if n >= total else _largest_remainder([v * n / total for v in values], n)
    if n >= len(sizes):
        for i in range(len(sizes)):
            if sizes[i] == 0:
                sizes[int(np.argmax(sizes))] -= 1
                sizes[i] = 1
    return dict(zip(names, (int(s) for s in sizes)))


def assign_splits(cases: Iterable[Case], manifest: Manifest) -> list[Case]:
    """Assign each case its split, seeded and deterministic, cohort by cohort.

    Within a cohort the cases are sorted by subject id and permuted with
    ``numpy.random.default_rng(cohort.seed).permutation``; the first ``split_sizes(...)[first]``
    cases of the permutation go to the first split named in the manifest, the next ones to the
    second, and so on. With counts smaller than the number of cases, the surplus cases are dropped
    from the result (the paper used exactly 133 + 202 BraTS and 121 + 183 ATLAS cases).

    Args:
        cases: cases from :func:`discover_cases` (their current ``split`` is ignored).
        manifest: the manifest they came from.

    Returns:
        New :class:`Case` objects with ``split`` set, in manifest cohort order and sorted by subject
        id within a cohort.

    Raises:
        TypeError: ``manifest`` is not a :class:`Manifest` or ``cases`` holds non-:class:`Case` items.
        ValueError: a case names a cohort the manifest lacks, or a subject id appears twice.
    """
    manifest = _check_real(manifest)
    cases = list(cases)
    for case in cases:
        if not isinstance(case, Case):
            raise TypeError(f"`cases` must hold Case items, got {case!r}")
    known = [c.name for c in manifest.cohorts]
    unknown = sorted({c.cohort for c in cases} - set(known))
    if unknown:
        raise ValueError(f"`cases` name cohort(s) {unknown} that manifest {manifest.name!r} lacks ({known})")
    ids = [c.subject_id for c in cases]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"`cases` must have unique subject ids, got {twice} twice")
    result: list[Case] = []
    for cohort in manifest.cohorts:
        members = sorted((c for c in cases if c.cohort == cohort.name), key=lambda c: c.subject_id)
        sizes = split_sizes(len(members), cohort.split)
        order = np.random.default_rng(cohort.seed).permutation(len(members))
        labels: dict[int, str] = {}
        start = 0
        for name, size in sizes.items():
            labels.update({int(i): name for i in order[start : start + size]})
            start += size
        result.extend(replace(c, split=labels[i]) for i, c in enumerate(members) if i in labels)
    return result


# --------------------------------------------------------------------------------------------------
# Reading a case


class CaseVolumes(NamedTuple):
    """The volumes of one case, on the image's grid, in the files' voxel order.

    Attributes:
        image: ``(X, Y, Z)`` float32, as stored (not normalised).
        brain_mask: ``(X, Y, Z)`` bool, non-empty; ``None`` for a case whose mask is computed by
            skull stripping (``case.skull_strip``: :func:`uadlab.data.preprocessing.skull_strip`).
        lesion_mask: ``(X, Y, Z)`` bool (union of the lesion files, rule ``> 0``), or ``None`` for
            healthy cases.
        affine: ``(4, 4)`` float64 voxel-to-world matrix of the image, mm.
    """

    image: np.ndarray
    brain_mask: np.ndarray | None
    lesion_mask: np.ndarray | None
    affine: np.ndarray


def load_case(case: Case) -> CaseVolumes:
    """Read one case and apply its manifest's rules.

    Brain mask: the mask file ``> 0``, or ``image != 0`` when the cohort's brain mask is ``nonzero``
    (not ``> 0``: bias-corrected skull-stripped images may hold small negative values inside the
    brain). Lesion mask: the union of the lesion files, each ``> 0`` (BraTS labels 1, 2, 4 all count
    as lesion). A ``brain_mask: deepbet`` case returns no brain mask (``None``): the caller skull
    strips the image (:func:`uadlab.data.dataset.build_dataset` does, with a cache). No reorientation
    or resampling (that is :mod:`uadlab.data.preprocessing`).

    Args:
        case: a case from :func:`discover_cases`.

    Returns:
        The case's :class:`CaseVolumes`.

    Raises:
        TypeError: ``case`` is not a :class:`Case`.
        uadlab.errors.VolumeError: a file is unreadable (see :func:`uadlab.data.io.load_volume`), a mask
            is not on the image's grid, or the case fails a check of ``uadlab data check``: a field
            of view larger than a head, an empty brain mask, an image all zero inside the brain,
            lesion labels outside the non-negative integers, or (lesion cases) an empty lesion
            mask or one entirely outside the brain.
    """
    if not isinstance(case, Case):
        raise TypeError(f"`case` must be a Case, got {case!r}")
    image, affine = load_volume(case.image)
    if case.skull_strip is not None:
        brain_mask = None
    elif case.brain_mask is None:
        brain_mask = image != 0
    else:
        mask, mask_affine = load_volume(case.brain_mask)
        check_same_grid(str(case.image), image.shape, affine, str(case.brain_mask), mask.shape, mask_affine)
        brain_mask = mask > 0
    lesions = []
    for path in case.lesion_masks:
        mask, mask_affine = load_volume(path)
        check_same_grid(str(case.image), image.shape, affine, str(path), mask.shape, mask_affine)
        lesions.append(mask)
    problems = _content_problems(case, image, affine, brain_mask, lesions)
    if problems:
        raise VolumeError(f"{case.subject_id} ({case.cohort}): " + "; ".join(problems))
    lesion_mask = None
    if case.lesion_masks:
        lesion_mask = np.zeros(image.shape, dtype=bool)
        for mask in lesions:
            lesion_mask |= mask > 0
    return CaseVolumes(image, brain_mask, lesion_mask, affine)
