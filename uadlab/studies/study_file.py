"""Study files: the paper's real set-up (train on one healthy data set, test on others) in one YAML.

Bengs et al. 2021 (Sec. 2.1, 3) train on healthy scans and test on two *other* data sets (BraTS,
ATLAS), each lesion data set split into a validation part (threshold search) and a test part.
A study file names those data sets, each a manifest plus its root, what to run and how to score it::

    name: paper_real                       # identifier: letters, digits, "_" and "-"
    description: ...                       # free text (optional)
    protocol: bengs2021                    # bengs2021 (default) | lambert2021 | behrendt2024 | zoo
    train:                                 # the healthy data set the models learn from
      manifest: ../data_manifests/ixi_t1.yaml
      root: ${UADLAB_DATA}/IXI             # $VARS and ~ are expanded; relative to this file
    test:                                  # any number of lesion data sets
      - manifest: ../data_manifests/brats2019.yaml
        root: ${UADLAB_DATA}/BraTS2019
      - manifest: ../data_manifests/atlas_v1_2.yaml
        root: ${UADLAB_DATA}/ATLAS
        val_data: brats2019                # optional: a data set (manifest name) whose labelled
                                           #   val cases fit thresholds this one has none for
    profile: lab                           # smoke | lab | paper (--profile overrides)
    experiments: [2D-None, 3D-None]        # any registered model's experiments (--experiments overrides)
    seeds: [0, 1, 2]                       # one training run per experiment and seed (--seeds overrides)
    labelled_cases: 2                      # behrendt2024 only: K labelled cases per cohort (--labelled-cases)

Relative ``manifest`` and ``root`` paths are relative to the study file's folder. A phantom
manifest needs no ``root``. Each data set is named by its manifest's ``name`` (unique in a study)
and built into ``OUT/data/<name>``; every lesion cohort with test subjects of every data set (the
training one's included) is scored, each run's evaluations going to
``OUT/evaluation/<run>/seed<seed>/<data set>/``. Unknown keys are refused, naming the file and the
key, as for manifests. :func:`load_study` turns the file into a study of the protocol it names
(:mod:`uadlab.studies.bengs2021`, :mod:`~uadlab.studies.lambert2021`, :mod:`~uadlab.studies.behrendt2024`),
run like any other by :func:`uadlab.studies.run_study`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from uadlab.data.manifests import check_manifest, load_manifest, load_yaml_model
from uadlab.errors import ManifestError
from uadlab.profiles import PROFILES
from uadlab.studies.behrendt2024 import Behrendt2024
from uadlab.studies.bengs2021 import Bengs2021
from uadlab.studies.lambert2021 import Lambert2021
from uadlab.studies.spec import DataSource, Study, experiment_names
from uadlab.studies.zoo import Zoo

__all__ = ["DEFAULT_EXPERIMENTS", "PHANTOM_STUDY", "PROTOCOLS", "is_study_file", "load_study", "check_study",
           "check_seeds"]

#: The protocols a study follows, by name: the built-in studies and what a study file's ``protocol`` names.
PROTOCOLS: dict[str, type[Study]] = {"bengs2021": Bengs2021, "lambert2021": Lambert2021, "behrendt2024": Behrendt2024,
                                     "zoo": Zoo}

#: The default phantom as a study file (``studies/phantom.yaml`` in the source tree).
PHANTOM_STUDY = Path(__file__).resolve().parents[2] / "studies" / "phantom.yaml"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
_UNEXPANDED = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?")
#: Experiments of a ``bengs2021`` study file that names none: the 2D/3D baselines and their erasing counterparts.
DEFAULT_EXPERIMENTS: tuple[str, ...] = ("2D-None", "2D-Patch-n", "3D-None", "3D-Cube-n")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _DataSpec(_Strict):
    """One data set of a study file: a manifest and its root (see the module docstring)."""

    manifest: str
    root: str | None = None
    val_data: str | None = None


class _StudyFile(_Strict):
    """The schema of a study file (see the module docstring for every key)."""

    name: str = Field(pattern=_NAME)
    description: str = ""
    protocol: Literal["bengs2021", "lambert2021", "behrendt2024", "zoo"] = "bengs2021"
    train: _DataSpec
    test: list[_DataSpec] = Field(default_factory=list)
    profile: str = "smoke"
    experiments: list[str] | None = Field(default=None, min_length=1)
    seeds: list[StrictInt] = Field(default_factory=lambda: [0], min_length=1)
    labelled_cases: StrictInt | None = None

    @field_validator("profile")
    @classmethod
    def _check_profile(cls, profile: str) -> str:
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
        return profile

    @field_validator("experiments")
    @classmethod
    def _check_experiments(cls, experiments: list[str] | None) -> list[str] | None:
        return None if experiments is None else experiment_names(experiments)

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, seeds: list[int]) -> list[int]:
        return check_seeds(seeds)


def check_seeds(seeds: list[int]) -> list[int]:
    """Distinct training seeds in ``[0, 2**32)``, at least one (ValueError otherwise, naming them).

    >>> check_seeds([0, 1, 2])
    [0, 1, 2]
    """
    if isinstance(seeds, (str, bytes)) or not list(seeds) or len(set(seeds)) != len(list(seeds)) or any(
            isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**32 for s in seeds):
        raise ValueError(f"`seeds` must be distinct integers in [0, 2**32), at least one, got {seeds!r}")
    return list(seeds)


def is_study_file(value: str | os.PathLike) -> bool:
    """Whether a ``--study`` value names a study file (it ends in ``.yaml`` or ``.yml``) rather than a built-in study.

    >>> is_study_file("studies/paper_real.yaml"), is_study_file("lambert2021")
    (True, False)
    """
    return str(value).lower().endswith((".yaml", ".yml"))


def load_study(path: str | os.PathLike, *, experiments: list[str] | None = None,
               labelled_cases: int | None = None) -> Study:
    """Read and validate a study file and the manifests it names; return the study of its protocol.

    Args:
        path: the study YAML, e.g. ``studies/paper_real.yaml``.
        experiments: override the file's ``experiments`` (``--experiments``).
        labelled_cases: override the file's ``labelled_cases`` (``--labelled-cases``; behrendt2024 only).

    Returns:
        A :class:`~uadlab.studies.spec.Study` whose sources are the file's data sets (training first),
        paths resolved against the file's folder (``$VARS`` and ``~`` expanded).

    Raises:
        TypeError: ``path`` is not a str/path.
        uadlab.errors.ManifestError: the file is missing or not valid YAML, has an unknown,
            missing or bad key (named, with the file), a path uses an unset environment variable,
            two data sets share a manifest name, a ``val_data`` names no data set of the study, a
            named manifest is invalid, the training data set has no healthy cohort, or
            ``labelled_cases`` is given to another protocol than ``behrendt2024``.
    """
    spec = load_yaml_model(path, _StudyFile, what="study")
    path = Path(path)
    sources = _sources(path, spec)
    if spec.labelled_cases is not None and spec.protocol != "behrendt2024":
        raise ManifestError(f"{path}: labelled_cases: only for protocol behrendt2024, not {spec.protocol}")
    if labelled_cases is not None and spec.protocol != "behrendt2024":
        raise ValueError(f"`labelled_cases` (--labelled-cases) is for protocol behrendt2024, not {spec.protocol} "
                         f"({path})")
    experiments = spec.experiments if experiments is None else experiment_names(experiments)
    labelled_cases = spec.labelled_cases if labelled_cases is None else labelled_cases
    options = {"name": spec.name, "argument": str(path), "profile": spec.profile, "seeds": tuple(spec.seeds),
               "description": spec.description}
    if spec.protocol == "bengs2021":  # the seed tables, no data-size runs; four experiments unless named
        options |= {"from_file": True}
        experiments = experiments or list(DEFAULT_EXPERIMENTS)
    else:  # writes into OUT itself, not OUT/<protocol>
        options |= {"folder": None} | ({} if labelled_cases is None else {"labelled_cases": labelled_cases})
    return PROTOCOLS[spec.protocol](sources, experiments, **options)


def _sources(path: Path, spec: _StudyFile) -> tuple[DataSource, ...]:
    """The file's data sets, validated: manifests readable, names distinct, ``val_data`` known, a healthy cohort."""
    base = path.resolve().parent
    sources, manifests = [], {}
    for role, key, entry in [("train", "train", spec.train)] + [
            ("test", f"test[{i}]", e) for i, e in enumerate(spec.test)]:
        manifest_path = _resolve(path, base, f"{key}.manifest", entry.manifest)
        root = None if entry.root is None else _resolve(path, base, f"{key}.root", entry.root)
        try:
            manifest = load_manifest(manifest_path)
        except ManifestError as error:
            raise ManifestError(f"{path}: {key}.manifest: {error}") from None
        if manifest.kind == "real" and root is None:
            raise ManifestError(f"{path}: {key}.root: missing; a real data set ({manifest.name}) needs its folder")
        if manifest.name in manifests:
            raise ManifestError(f"{path}: data sets must have distinct manifest names, got "
                                f"{[manifest.name]} more than once")
        manifests[manifest.name] = manifest
        sources.append(DataSource(manifest.name, manifest_path, root, val_data=entry.val_data, role=role))
    names = list(manifests)
    for source in sources:
        if source.val_data is not None and (source.val_data not in names or source.val_data == source.name):
            raise ManifestError(f"{path}: val_data of {source.name!r} must name another data set of the study "
                                f"({[n for n in names if n != source.name]}), got {source.val_data!r}")
    if not any(c.role == "healthy" for c in manifests[names[0]].cohorts):
        raise ManifestError(f"{path}: train: {names[0]} has no healthy cohort to train on")
    return tuple(sources)


def check_study(study: Study | str | os.PathLike) -> dict[str, list[str]]:
    """Every problem of every data set of a study, at once (``uadlab data check --study``).

    Args:
        study: a study (its sources are read) or a study file.

    Returns:
        ``{data set name: problems}`` (:func:`uadlab.data.manifests.check_manifest`), one entry per
        data set to build, empty lists when all is fine.

    Raises:
        uadlab.errors.ManifestError: the study file is invalid (see :func:`load_study`).
    """
    study = study if isinstance(study, Study) else load_study(study)
    problems: dict[str, list[str]] = {}
    for source in study.sources:
        if source.manifest is None:  # a folder already built
            continue
        # a phantom from the MNI152 template has nothing on disk to check
        problems[source.name] = [] if source.root is None else check_manifest(load_manifest(source.manifest),
                                                                              source.root)
    return problems


def _resolve(path: Path, base: Path, key: str, value: str) -> Path:
    """``value`` with ``$VARS`` and ``~`` expanded, relative to ``base``; ManifestError for an unset variable."""
    expanded = os.path.expanduser(os.path.expandvars(value))
    unset = _UNEXPANDED.findall(expanded)
    if unset:
        raise ManifestError(f"{path}: {key}: environment variable(s) {unset} not set in {value!r}")
    resolved = Path(expanded)
    return Path(os.path.normpath(resolved if resolved.is_absolute() else base / resolved))
