"""Study files: the paper's real set-up (train on one healthy data set, test on others) in one YAML.

Bengs et al. 2021 (Sec. 2.1, 3) train on healthy scans and test on two *other* data sets (BraTS,
ATLAS), each lesion data set split into a validation part (threshold search) and a test part.
A study file names those data sets, each a manifest plus its root, and what to run::

    name: paper_real                       # identifier: letters, digits, "_" and "-"
    description: ...                       # free text (optional)
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
    experiments: [2D-None, 3D-None]        # Table 1 names (--experiments overrides)
    seeds: [0, 1, 2]                       # one training run per experiment and seed (--seeds)

Relative ``manifest`` and ``root`` paths are relative to the study file's folder. A phantom
manifest needs no ``root``. Each data set is named by its manifest's ``name`` (unique in a study).
Unknown keys are refused, naming the file and the key, as for manifests.

:func:`run_study` then, into ``OUT``:

1. **Data** — builds every data set into ``OUT/data/<name>`` with
   :func:`uadlab.data.dataset.build_dataset` (cached and resumable: a finished build is reused).
2. **Training** — every experiment once per seed on the healthy training split of the ``train``
   data set, into ``OUT/runs/<run name>/seed<seed>`` (:func:`uadlab.layout.run_name`; resumed, so a
   rerun skips finished runs).
3. **Evaluation** — every lesion cohort with test subjects, of every data set of the study (the
   training data set's included), with :func:`uadlab.evaluation.protocol.evaluate_run`: the threshold from
   that cohort's own validation split, else from the ``val_data`` data set; written to
   ``OUT/evaluation/<run name>/seed<seed>/<data set>/``.
4. **Tables** — ``OUT/table1_seeds.csv`` (one row per experiment, cohort and seed),
   ``OUT/table1.csv`` and ``OUT/table1.md`` (mean over seeds, with the sd over seeds beside the
   per-subject sd: :func:`uadlab.evaluation.analysis.seed_summary`), and ``OUT/paired.csv``: each erasing
   experiment against its ``None`` baseline in per-subject DICE and AUPRC (column ``metric``),
   resampling seeds and subjects
   (:func:`uadlab.evaluation.analysis.ablation_differences_seeds`); ``OUT/figures/seeds_*.png`` show every
   seed's score beside the mean (:func:`uadlab.viz.figures.seed_spread_plot`); ``OUT/report.md`` puts the
   data sets, the table, the comparisons (with a verdict: beyond seed and subject noise or not)
   and the figures on one page.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from uadlab.data.dataset import build_dataset, load_dataset
from uadlab.data.io import atomic_write
from uadlab.data.manifests import Manifest, check_manifest, load_manifest, load_yaml_model
from uadlab.errors import DatasetError, ManifestError
from uadlab.evaluation import analysis
from uadlab.evaluation.protocol import evaluate_run
from uadlab.layout import EVAL_METRICS, EVAL_SUBJECTS, RUN_CHECKPOINT, ResultsLayout
from uadlab.profiles import PROFILES, Profile, get_profile
from uadlab.training import TrainConfig, train
from uadlab.training.experiments import parse_experiment
from uadlab.viz import figures as viz

__all__ = ["DEFAULT_EXPERIMENTS", "PHANTOM_STUDY", "TABLE1_SEED_COLUMNS", "DataSpec", "Study", "StudyData",
           "check_study", "is_study_file", "load_study", "run_study"]

#: The built-in study of ``uadlab reproduce --seeds 0,1,2`` without ``--study``: the default phantom.
PHANTOM_STUDY = Path(__file__).resolve().parents[1] / "studies" / "phantom.yaml"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
_UNEXPANDED = re.compile(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?")
#: Experiments of a study that names none: the paper's 2D/3D baselines and their erasing counterparts.
DEFAULT_EXPERIMENTS: tuple[str, ...] = ("2D-None", "2D-Patch-n", "3D-None", "3D-Cube-n")
TABLE1_SEED_COLUMNS: tuple[str, ...] = ("experiment", "data", "dataset", "seed", "dice_d", "dice_s_mean",
                                        "dice_s_std", "auprc", "threshold")
"""Columns of ``table1_seeds.csv``: ``data`` is the data set, ``dataset`` the cohort (Table 1's column)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSpec(_Strict):
    """One data set of a study file: a manifest and its root (see the module docstring)."""

    manifest: str
    root: str | None = None
    val_data: str | None = None


class _StudyFile(_Strict):
    """The schema of a study file (see the module docstring for every key)."""

    name: str = Field(pattern=_NAME)
    description: str = ""
    train: DataSpec
    test: list[DataSpec] = Field(default_factory=list)
    profile: str = "smoke"
    experiments: list[str] = Field(default_factory=lambda: list(DEFAULT_EXPERIMENTS), min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("profile")
    @classmethod
    def _check_profile(cls, profile: str) -> str:
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
        return profile

    @field_validator("experiments")
    @classmethod
    def _check_experiments(cls, experiments: list[str]) -> list[str]:
        return _experiments(experiments)

    @field_validator("seeds")
    @classmethod
    def _check_seeds(cls, seeds: list[int]) -> list[int]:
        return _seeds(seeds)


def _experiments(experiments: list[str]) -> list[str]:
    """Table 1 names, distinct and non-empty (ValueError otherwise, naming the bad one)."""
    names = [parse_experiment(e).name for e in experiments]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"`experiments` must be distinct Table 1 names, at least one, got {experiments!r}")
    return names


def _seeds(seeds: list[int]) -> list[int]:
    """Distinct training seeds in ``[0, 2**32)``, at least one (ValueError otherwise)."""
    if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**32 for s in seeds) \
            or len(set(seeds)) != len(seeds):
        raise ValueError(f"`seeds` must be distinct integers in [0, 2**32), at least one, got {seeds!r}")
    return list(seeds)


@dataclass(frozen=True)
class StudyData:
    """One data set of a loaded study, paths resolved.

    Attributes:
        name: the manifest's ``name``; also the folder name under ``OUT/data``.
        manifest_path: the manifest file.
        manifest: the validated manifest.
        root: the data root (``None`` for a phantom without real source brains).
        val_data: name of the study data set whose validation cases fit thresholds this one lacks.
        role: ``"train"`` or ``"test"``.
    """

    name: str
    manifest_path: Path
    manifest: Manifest
    root: Path | None
    val_data: str | None
    role: str


@dataclass(frozen=True)
class Study:
    """A validated study file, every path resolved (:func:`load_study`).

    Attributes:
        name: the study's name.
        path: the study file.
        description: free text.
        datasets: the training data set first, then the test data sets in file order.
        profile: profile name.
        experiments: Table 1 names.
        seeds: training seeds.
    """

    name: str
    path: Path
    description: str
    datasets: tuple[StudyData, ...]
    profile: str
    experiments: tuple[str, ...]
    seeds: tuple[int, ...]

    @property
    def train(self) -> StudyData:
        """The training (healthy) data set."""
        return self.datasets[0]

    def dataset(self, name: str) -> StudyData:
        """The data set called ``name``.

        Raises:
            KeyError: no such data set.
        """
        for data in self.datasets:
            if data.name == name:
                return data
        raise KeyError(f"study {self.name!r} has no data set {name!r}; it has {[d.name for d in self.datasets]}")


def is_study_file(value: str | os.PathLike) -> bool:
    """Whether a ``--study`` value names a study file (it ends in ``.yaml`` or ``.yml``) rather than a built-in study.

    >>> is_study_file("studies/paper_real.yaml"), is_study_file("lambert2021")
    (True, False)
    """
    return str(value).lower().endswith((".yaml", ".yml"))


def load_study(path: str | os.PathLike) -> Study:
    """Read and validate a study file and the manifests it names.

    Args:
        path: the study YAML, e.g. ``studies/paper_real.yaml``.

    Returns:
        The :class:`Study`, paths resolved against the file's folder (``$VARS`` and ``~`` expanded).

    Raises:
        TypeError: ``path`` is not a str/path.
        uadlab.errors.ManifestError: the file is missing or not valid YAML, has an unknown,
            missing or bad key (named, with the file), a path uses an unset environment variable,
            two data sets share a manifest name, a ``val_data`` names no data set of the study, a
            named manifest is invalid, or the training data set has no healthy cohort.
    """
    spec = load_yaml_model(path, _StudyFile, what="study")
    path = Path(path)
    base = path.resolve().parent
    datasets: list[StudyData] = []
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
        datasets.append(StudyData(manifest.name, manifest_path, manifest, root, entry.val_data, role))
    names = [d.name for d in datasets]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ManifestError(f"{path}: data sets must have distinct manifest names, got {repeated} more than once")
    for data in datasets:
        if data.val_data is not None and (data.val_data not in names or data.val_data == data.name):
            raise ManifestError(f"{path}: val_data of {data.name!r} must name another data set of the study "
                                f"({[n for n in names if n != data.name]}), got {data.val_data!r}")
    if not any(c.role == "healthy" for c in datasets[0].manifest.cohorts):
        raise ManifestError(f"{path}: train: {datasets[0].name} has no healthy cohort to train on")
    return Study(spec.name, path, spec.description, tuple(datasets), spec.profile, tuple(spec.experiments),
                 tuple(spec.seeds))


def check_study(study: Study | str | os.PathLike) -> dict[str, list[str]]:
    """Every problem of every data set of a study, at once (``uadlab data check --study``).

    Args:
        study: a :class:`Study` or a study file.

    Returns:
        ``{data set name: problems}`` (:func:`uadlab.data.manifests.check_manifest`), one entry per
        data set, empty lists when all is fine.

    Raises:
        uadlab.errors.ManifestError: the study file is invalid (see :func:`load_study`).
    """
    study = study if isinstance(study, Study) else load_study(study)
    problems: dict[str, list[str]] = {}
    for data in study.datasets:
        if data.root is None:  # a phantom from the MNI152 template: nothing on disk to check
            problems[data.name] = []
        else:
            problems[data.name] = check_manifest(data.manifest, data.root)
    return problems


def run_study(
    study: Study | str | os.PathLike,
    out: str | os.PathLike,
    *,
    profile: str | Profile | None = None,
    experiments: list[str] | None = None,
    seeds: list[int] | None = None,
    workers: int = 1,
    progress: bool = False,
    device: str | None = None,
) -> dict[str, Path]:
    """Build, train, evaluate and tabulate a study (Bengs et al. 2021, Sec. 3, on your data sets).

    Every file of every real data set is checked first, so that a missing file anywhere stops the
    study before hours of work, with all problems listed at once.

    Args:
        study: a :class:`Study` or a study file.
        out: output folder; data sets, runs and evaluations inside it are reused.
        profile: overrides the study's profile.
        experiments: override the study's experiments (Table 1 names).
        seeds: override the study's seeds.
        workers: processes building each data set (see :func:`uadlab.data.dataset.build_dataset`).
        progress: show progress bars.
        device: where models train and run; ``None``: CUDA when available.

    Returns:
        Paths of the outputs: ``table1.csv``, ``table1.md``, ``table1_seeds.csv``, ``paired.csv``,
        ``report.md`` (all of them on one page, readable without Jupyter),
        ``figures`` (``seeds_dice_d.png``, ``seeds_auprc.png``: every seed's score,
        :func:`uadlab.viz.figures.seed_spread_plot`), ``runs``, ``data``.

    Raises:
        ValueError: an unknown profile or experiment, or bad seeds.
        uadlab.errors.ManifestError: the study file is invalid, or files of its data sets are
            missing or unreadable (every problem listed).
        uadlab.errors.DatasetError: no data set of the study has a lesion cohort with test subjects, or
            a scored cohort has no labelled validation cases of its own nor in its ``val_data``
            (checked after the data are built, before any training).
    """
    study = study if isinstance(study, Study) else load_study(study)
    prof = get_profile(study.profile if profile is None else profile)
    names = list(study.experiments) if experiments is None else _experiments(list(experiments))
    seed_list = list(study.seeds) if seeds is None else _seeds(list(seeds))
    out = Path(out)
    problems = {name: p for name, p in check_study(study).items() if p}
    if problems:
        listing = "\n".join(f"  - {name}: {p}" for name, ps in problems.items() for p in ps)
        count = sum(len(p) for p in problems.values())
        raise ManifestError(f"study {study.path}: {count} problem(s):\n{listing}")

    out.mkdir(parents=True, exist_ok=True)
    layout = ResultsLayout(out)
    built = {data.name: build_dataset(data.manifest_path, layout.data / data.name, root=data.root, profile=prof,
                                      progress=progress, workers=workers)
             for data in study.datasets}
    opened = {name: load_dataset(path) for name, path in built.items()}
    scored = [data for data in study.datasets
              if any(opened[data.name].ids(cohort=c, split="test") for c in opened[data.name].lesion_cohorts)]
    if not scored:
        raise DatasetError(f"study {study.path}: no data set has a lesion cohort with test subjects")
    unfit = _cohorts_without_thresholds(scored, opened)
    if unfit:  # found now, not after hours of training
        raise DatasetError(f"study {study.path}: no labelled validation cases to fit the threshold of "
                           f"{', '.join(unfit)}; give that data set `val_data: <another data set of the study>`")

    rows, subject_tables = [], {}
    for experiment in names:
        for seed in seed_list:
            config = TrainConfig(experiment=experiment, profile=prof, data=str(built[study.train.name]), seed=seed,
                                 device=device)
            run_dir = train(config, layout.run(experiment) / f"seed{seed}", resume=True, progress=progress).run_dir
            tables = []
            for data in scored:
                eval_dir = layout.evaluation(experiment) / f"seed{seed}" / data.name
                val_data = None if data.val_data is None else built[data.val_data]
                metrics = _evaluation(run_dir, built[data.name], eval_dir, val_data, progress, device)
                for cohort, m in metrics["cohorts"].items():
                    rows.append({"experiment": experiment, "data": data.name, "dataset": cohort, "seed": seed,
                                 **{k: m[k] for k in TABLE1_SEED_COLUMNS[4:]}})
                tables.append(pd.read_csv(eval_dir / EVAL_SUBJECTS).assign(data=data.name))
            subject_tables[(experiment, seed)] = pd.concat(tables, ignore_index=True)

    per_seed = pd.DataFrame(rows, columns=list(TABLE1_SEED_COLUMNS))
    per_seed["dataset"] = _cohort_labels(per_seed)
    for table in subject_tables.values():
        table["cohort"] = _cohort_labels(table.rename(columns={"cohort": "dataset"}))
    summary = analysis.seed_summary(per_seed)
    by_seed = {e: {s: subject_tables[(e, s)] for s in seed_list} for e in names}
    comparisons, skipped = [], []
    for metric in ("dice", "auprc"):
        try:
            comparisons.append(analysis.ablation_differences_seeds(by_seed, metric=metric).assign(metric=metric))
        except ValueError as error:  # e.g. no subject with a defined value: say so, keep the study's results
            skipped.append(f"{metric}: {error}")
    paired = pd.concat(comparisons, ignore_index=True) if comparisons else pd.DataFrame()
    outputs = {"table1.csv": layout.table1_csv, "table1.md": layout.table1_md,
               "table1_seeds.csv": out / "table1_seeds.csv", "paired.csv": out / "paired.csv"}
    for key, frame in (("table1_seeds.csv", per_seed), ("table1.csv", summary), ("paired.csv", paired)):
        with atomic_write(outputs[key], overwrite=True) as tmp:
            frame.to_csv(tmp, index=False)
    with atomic_write(outputs["table1.md"], overwrite=True) as tmp:
        tmp.write_text(analysis.table1_markdown(summary))
    figures = layout.figures
    figures.mkdir(exist_ok=True)
    for metric in ("dice_d", "auprc"):
        fig = viz.seed_spread_plot(per_seed, metric=metric)
        viz.save_figure(fig, figures / f"seeds_{metric}.png")
        fig.clf()
    outputs["report.md"] = out / "report.md"
    with atomic_write(outputs["report.md"], overwrite=True) as tmp:
        tmp.write_text(_report(study, prof.name, names, seed_list, summary, paired, skipped))
    with atomic_write(out / "study.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps({
            "study": str(study.path), "name": study.name, "profile": prof.name, "experiments": names,
            "seeds": seed_list, "data": {name: str(path) for name, path in built.items()},
            "train": study.train.name, "scored": [d.name for d in scored],
        }, indent=2) + "\n")
    return {**outputs, "figures": figures, "runs": layout.runs, "data": layout.data}


def _cohorts_without_thresholds(scored: list[StudyData], opened: dict[str, Any]) -> list[str]:
    """``"<data set>:<cohort>"`` of every scored cohort with neither own val cases nor a ``val_data`` with some.

    As :func:`uadlab.evaluation.protocol.evaluate_run` chooses: the cohort's own validation split,
    else ``val_data``'s split of the same cohort, else all of ``val_data``'s lesion validation cases.
    """
    missing = []
    for data in scored:
        dataset = opened[data.name]
        other = None if data.val_data is None else opened[data.val_data]
        other_has_val = other is not None and any(other.ids(cohort=c, split="val") for c in other.lesion_cohorts)
        for cohort in dataset.lesion_cohorts:
            if dataset.ids(cohort=cohort, split="test") and not dataset.ids(cohort=cohort, split="val") \
                    and not other_has_val:
                missing.append(f"{data.name}:{cohort}")
    return missing


def _report(study: Study, profile: str, experiments: list[str], seeds: list[int], summary: pd.DataFrame,
            paired: pd.DataFrame, skipped: list[str]) -> str:
    """``report.md``: the data sets, Table 1 with seed spread, the paired comparisons, the figures."""
    lines = [f"# Study {study.name}", ""] + ([study.description.strip(), ""] if study.description.strip() else []) + [
             f"Profile `{profile}`, experiments {', '.join(experiments)}, training seeds "
             f"{', '.join(map(str, seeds))}.", "", "| data set | role | manifest | root |", "|---|---|---|---|"]
    lines += [f"| {d.name} | {d.role} | `{d.manifest_path}` | `{d.root or '-'}` |" for d in study.datasets]
    lines += ["", "## Table 1 (percent)", "", analysis.table1_markdown(summary).rstrip(), "",
              "## Erasing against its baseline (per-subject DICE and AUPRC, paired over subjects, resampling seeds)",
              ""]
    if paired.empty:
        lines.append("No erasing experiment with its `None` baseline in this study.")
    else:
        lines += ["| experiment | baseline | test set | metric | subjects | difference | 95 % interval "
                  "| beyond seed and subject noise? |", "|---|---|---|---|---|---|---|---|"]
        for row in paired.itertuples(index=False):
            verdict = ("no (under 0.01 points)" if abs(100 * row.difference) < 0.005
                       else "yes, better" if row.ci_low > 0 else "yes, worse" if row.ci_high < 0 else "no")
            label = "DICE_S" if row.metric == "dice" else "AUPRC"
            lines.append(f"| {row.experiment} | {row.baseline} | {row.cohort} | {label} | {row.n_subjects} | "
                         f"{100 * row.difference:+.2f} | [{100 * row.ci_low:+.2f}, {100 * row.ci_high:+.2f}] | "
                         f"{verdict} |")
        if min(paired["n_seeds_a"].min(), paired["n_seeds_b"].min()) < 3 or paired["n_subjects"].min() < 5:
            lines += ["", "With fewer than 3 seeds per method or 5 test subjects, a bootstrap has few distinct "
                          "resamples: read these intervals as rough."]
    lines += [f"\nNot compared: {why}" for why in skipped]
    lines += ["", "## Every seed", "", "![DICE_D per seed](figures/seeds_dice_d.png)",
              "![AUPRC per seed](figures/seeds_auprc.png)", ""]
    return "\n".join(lines)


def _evaluation(run_dir: Path, data_dir: Path, eval_dir: Path, val_data: Path | None, progress: bool,
                device: str | None) -> dict[str, Any]:
    """The run's ``metrics.json`` on one data set: read back when newer than its checkpoint, else evaluated."""
    metrics_file = eval_dir / EVAL_METRICS
    if metrics_file.exists() and metrics_file.stat().st_mtime >= (run_dir / RUN_CHECKPOINT).stat().st_mtime:
        return json.loads(metrics_file.read_text())
    return evaluate_run(run_dir, data_dir, eval_dir, val_data=val_data, overwrite=True, progress=progress,
                        device=device)


def _cohort_labels(frame: pd.DataFrame) -> list[str]:
    """Table 1 column names: the cohort, or ``<data set>:<cohort>`` when two data sets share a cohort name."""
    pairs = frame[["data", "dataset"]].drop_duplicates()
    shared = set(pairs["dataset"][pairs["dataset"].duplicated()])
    return [f"{d}:{c}" if c in shared else c for d, c in zip(frame["data"], frame["dataset"])]


def _resolve(path: Path, base: Path, key: str, value: str) -> Path:
    """``value`` with ``$VARS`` and ``~`` expanded, relative to ``base``; ManifestError for an unset variable."""
    expanded = os.path.expanduser(os.path.expandvars(value))
    unset = _UNEXPANDED.findall(expanded)
    if unset:
        raise ManifestError(f"{path}: {key}: environment variable(s) {unset} not set in {value!r}")
    resolved = Path(expanded)
    return Path(os.path.normpath(resolved if resolved.is_absolute() else base / resolved))
