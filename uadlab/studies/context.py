"""What every study does the same way: find its data, train or resume a run, evaluate it or reuse the evaluation.

The rules live here once, for every study:

- **Data.** A source's data set is built into ``OUT/data`` (a built-in study) or ``OUT/data/<name>``
  (a study file) by :func:`uadlab.data.build_dataset` (cached; an identical build is reused), or an
  already built folder is used as it is. A run executed as its own process (``--only-run``) never
  builds: the driver or the plan's data lines did.
- **Train or resume.** A run (a model or a segmenter) goes to ``runs/<run>/seed<seed>``; a stopped run
  resumes, a finished one is returned at once (:func:`uadlab.training.train` with ``resume``). With
  ``overwrite``, a run whose config differs is started afresh (:meth:`StudyContext.resume_or_restart`);
  a finished run with the same config is always kept, and a folder holding anything but a run is
  never discarded.
- **Evaluate or reuse.** ``metrics.json`` is read back when it is newer than the run's checkpoint,
  else the run is evaluated anew (:func:`uadlab.evaluation.evaluate_run`).
- **Thresholds.** Each lesion cohort's threshold comes from its own validation split, else from its
  ``val_data`` (:func:`uadlab.evaluation.protocol.validation_source`); a cohort with neither stops
  the study before any training.
- **Shared folders.** Studies (and labs) that share an output folder may run at once, in several
  processes: each holds the lock of what it writes (a data set, a run, an evaluation:
  :meth:`StudyContext.lock`) only while it writes it. A study that needs a folder another process
  is writing waits for it (at most :data:`LOCK_WAIT_S`, announced by a warning), then reuses what
  that process wrote: a finished run is not trained again, a fresh evaluation not made again.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

from uadlab.data.dataset import build_dataset, load_dataset
from uadlab.data.io import folder_lock
from uadlab.errors import DatasetError, RunError, UadlabWarning
from uadlab.evaluation.protocol import SUBJECT_COLUMNS, evaluate_run, validation_source
from uadlab.layout import DATASET_RECORD, EVAL_METRICS, EVAL_SUBJECTS, RUN_CHECKPOINT, RUN_CONFIG, ResultsLayout
from uadlab.profiles import Profile, get_profile
from uadlab.studies.spec import DataSource, RunSpec
from uadlab.training import TrainConfig, TrainResult, train
from uadlab.training.runs import load_checkpoint

__all__ = ["LOCK_WAIT_S", "StudyContext", "cohort_labels"]

T = TypeVar("T")

#: Seconds a study waits for another uadlab process that writes a folder it needs (a data set, a run,
#: an evaluation, its tables) before it stops with one line: two hours, longer than a lab run trains.
LOCK_WAIT_S: float = 2 * 3600.0


@dataclass
class StudyContext:
    """One study run's settings and the steps every study shares (see the module docstring).

    Attributes:
        out: the output folder (``--out``); data sets live in it.
        layout: the study's own folder (``out`` or ``out/<study>``): runs, evaluations, tables.
        profile: the profile as given (a name, or a :class:`~uadlab.profiles.Profile`).
        sources: the study's data sets by name, the training one first.
        overwrite: rebuild data sets and restart runs whose config differs (``--overwrite``).
        progress: tqdm bars.
        device: where models train and run (``None``: CUDA when present).
        workers: processes building a data set.
        build: build missing data sets (``False`` in a run executed as its own process).
        seeds: the study's training seeds.
        max_epochs: epoch limit of every run (``None``: the profile's; lab 07 caps it so that it runs in
            minutes, and a run trained with another limit is refused on resume unless ``overwrite``).
    """

    out: ResultsLayout
    layout: ResultsLayout
    profile: str | Profile
    sources: dict[str, DataSource]
    overwrite: bool = False
    progress: bool = False
    device: str | None = None
    workers: int = 1
    build: bool = True
    seeds: list[int] = field(default_factory=lambda: [0])
    max_epochs: int | None = None
    _dirs: dict[str, Path] = field(default_factory=dict, repr=False)
    _opened: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def resolved_profile(self) -> Profile:
        """The :class:`~uadlab.profiles.Profile`."""
        return get_profile(self.profile)

    @property
    def train_data(self) -> str:
        """Name of the training data set."""
        return next(iter(self.sources))

    def data_dir(self, name: str) -> Path:
        """The built folder of data set ``name``, building it first if needed (see the module docstring).

        Raises:
            DatasetError: a given folder is no built data set, or (``build`` off) the data set is not built.
            Others: as :func:`uadlab.data.build_dataset`.
        """
        if name not in self._dirs:
            self._dirs[name] = self._resolve(self.sources[name])
        return self._dirs[name]

    def _resolve(self, source: DataSource) -> Path:
        if source.built is not None:
            if not (source.built / DATASET_RECORD).exists():
                raise DatasetError(f"{source.built}: not 'phantom', a manifest (.yaml) or a folder built by "
                                   f"`uadlab data build` (no {DATASET_RECORD})")
            return source.built
        target = self.out.data if source.name == "data" else self.out.dataset(source.name)
        if not self.build:
            if not (target / DATASET_RECORD).exists():
                raise DatasetError(f"{target}: data set not built yet; run the plan's `uadlab data build` line first")
            return target
        with self.lock(target):  # another process building it: wait, then reuse its identical build
            return build_dataset(source.manifest, target, root=source.root, profile=self.profile,
                                 progress=self.progress, workers=self.workers, overwrite=self.overwrite)

    def lock(self, folder: Path) -> AbstractContextManager[Path]:
        """:func:`uadlab.data.io.folder_lock` on ``folder``, waiting up to :data:`LOCK_WAIT_S` for another process.

        Raises:
            uadlab.errors.UadlabError: another process still writes ``folder`` after the wait (one line).
        """
        return folder_lock(folder, wait=LOCK_WAIT_S)

    def dataset(self, name: str) -> Any:
        """Data set ``name``, loaded (:class:`~uadlab.data.BuiltDataset`)."""
        if name not in self._opened:
            self._opened[name] = load_dataset(self.data_dir(name))
        return self._opened[name]

    def scored(self) -> list[str]:
        """Names of the data sets scored: the non-``val`` ones with a lesion cohort that has test subjects."""
        return [name for name, source in self.sources.items() if source.role != "val"
                and any(self.dataset(name).ids(cohort=c, split="test") for c in self.dataset(name).lesion_cohorts)]

    def prepare(self) -> None:
        """Build every data set and check that every scored cohort has a threshold source, before any training.

        Raises:
            DatasetError: no data set to score, or cohorts without labelled validation cases (all named).
        """
        for name in self.sources:
            self.data_dir(name)
        scored = self.scored()
        if not scored:
            raise DatasetError(f"{self.data_dir(self.train_data)}: no lesion cohort with test subjects to evaluate")
        missing = []
        for name in scored:
            dataset, val = self.dataset(name), self.sources[name].val_data
            for cohort in dataset.lesion_cohorts:
                if not dataset.ids(cohort=cohort, split="test"):
                    continue
                try:
                    validation_source(cohort, dataset, None if val is None else self.dataset(val), name, val)
                except DatasetError:
                    missing.append(f"{name}:{cohort}")
        if missing:  # found now, not after hours of training
            raise DatasetError(f"no labelled validation cases to fit the threshold of {', '.join(missing)}; "
                               "give that data set a `val_data` (--val-data) with some")

    def run_dir(self, spec: RunSpec) -> Path:
        """The run folder of ``spec``: ``runs/<spec.name>/seed<seed>`` (:meth:`uadlab.layout.ResultsLayout.run`)."""
        return self.layout.run(spec.name, seed=spec.seed)

    def evaluation_dir(self, spec: RunSpec, data: str) -> Path:
        """Evaluation folder of ``spec`` on data set ``data`` (a built-in study's single one has no sub-folder)."""
        return self.layout.evaluation(spec.name, seed=spec.seed, data=None if data == "data" else data)

    def finished(self, spec: RunSpec) -> bool:
        """Whether the run of ``spec`` has finished training (its checkpoint says so)."""
        try:
            checkpoint = load_checkpoint(self.run_dir(spec))
        except RunError:  # unreadable: the run resumes or refuses when it is trained
            return False
        return bool(checkpoint is not None and checkpoint.get("finished"))

    def resume_or_restart(self, run_dir: Path, start: Callable[[bool], T]) -> T:
        """The one rule of every run: ``start(False)`` resumes (or returns a finished run); with ``overwrite``, a
        run whose config differs is started afresh by ``start(True)``. Both under the run's lock
        (:meth:`lock`): a run another process trains is waited for, then resumed or returned finished.

        Raises:
            RunError: as ``start``, when ``overwrite`` is off or ``run_dir`` holds something other than a run
                (never discarded).
            uadlab.errors.UadlabError: another process still trains it after :data:`LOCK_WAIT_S`.
        """
        with self.lock(run_dir):
            try:
                return start(False)
            except RunError:
                holds_run = any((run_dir / name).exists() for name in (RUN_CONFIG, RUN_CHECKPOINT))
                if not (self.overwrite and holds_run):
                    raise
            return start(True)

    def train(self, spec: RunSpec) -> TrainResult:
        """Train ``spec`` into its run folder, resume it, or return it finished (see the module docstring).

        Raises:
            RunError: the run folder holds another config (without ``overwrite``) or something else.
            DatasetError: as :func:`uadlab.training.train`.
        """
        config = TrainConfig(experiment=spec.experiment, profile=self.profile, data=str(self.data_dir(self.train_data)),
                             fraction=spec.fraction, seed=spec.seed, device=self.device, **self.train_options(spec))
        run_dir, legacy = self.run_dir(spec), self.run_dir(spec).parent / RUN_CONFIG
        if legacy.exists() and not (run_dir / RUN_CHECKPOINT).exists():
            warnings.warn(f"{legacy.parent}: a run from before seed folders, not reused; training {run_dir}",
                          UadlabWarning, stacklevel=2)
        return self.resume_or_restart(run_dir, lambda restart: train(
            config, run_dir, resume=not restart, overwrite=restart, progress=self.progress))

    def train_options(self, spec: RunSpec) -> dict[str, Any]:
        """The run's own config fields (``spec.options``) and the study's epoch limit, if any."""
        return dict(spec.options) | ({} if self.max_epochs is None else {"max_epochs": self.max_epochs})

    def evaluate(self, spec: RunSpec, run_dir: Path, data: str) -> dict[str, Any]:
        """``metrics.json`` of a trained run on data set ``data``: reused when newer than the checkpoint (and its
        ``subjects.csv`` holds every column of :data:`~uadlab.evaluation.protocol.SUBJECT_COLUMNS`: an older
        uadlab's evaluation is made again), else made.

        Decided under the evaluation folder's lock (:meth:`lock`): an evaluation another process is writing
        is waited for, then reused.

        Raises:
            RunError, DatasetError: as :func:`uadlab.evaluation.evaluate_run`.
            uadlab.errors.UadlabError: another process still writes it after :data:`LOCK_WAIT_S`.
        """
        eval_dir = self.evaluation_dir(spec, data)
        with self.lock(eval_dir):
            metrics_file = eval_dir / EVAL_METRICS
            if (metrics_file.exists() and metrics_file.stat().st_mtime >= (run_dir / RUN_CHECKPOINT).stat().st_mtime
                    and _current_subjects(eval_dir / EVAL_SUBJECTS)):
                return json.loads(metrics_file.read_text())
            val = self.sources[data].val_data
            val_dir = None if val is None else self.data_dir(val)
            return evaluate_run(run_dir, self.data_dir(data), eval_dir, val_data=val_dir, overwrite=True,
                                progress=self.progress, device=self.device)

    def subjects(self, spec: RunSpec) -> pd.DataFrame:
        """The per-subject table (``subjects.csv``) of an evaluated run over every scored data set.

        Returns:
            Columns of :data:`uadlab.evaluation.protocol.SUBJECT_COLUMNS` and ``data``; ``cohort`` reads
            ``<data set>:<cohort>`` where two data sets share a cohort name (:func:`cohort_labels`).
        """
        table = pd.concat([pd.read_csv(self.evaluation_dir(spec, data) / EVAL_SUBJECTS).assign(data=data)
                           for data in self.scored()], ignore_index=True)
        table["cohort"] = cohort_labels(table.rename(columns={"cohort": "dataset"}))
        return table


def cohort_labels(frame: pd.DataFrame) -> list[str]:
    """Table column names: the cohort, or ``<data set>:<cohort>`` when two data sets share a cohort name.

    Args:
        frame: columns ``data`` (the data set) and ``dataset`` (the cohort).

    Returns:
        One label per row.

    >>> cohort_labels(pd.DataFrame({"data": ["a", "b", "b"], "dataset": ["tumour", "tumour", "stroke"]}))
    ['a:tumour', 'b:tumour', 'stroke']
    """
    pairs = frame[["data", "dataset"]].drop_duplicates()
    shared = set(pairs["dataset"][pairs["dataset"].duplicated()])
    return [f"{d}:{c}" if c in shared else c for d, c in zip(frame["data"], frame["dataset"])]


def _current_subjects(path: Path) -> bool:
    """Whether a ``subjects.csv`` has every column this uadlab writes (its header line is read)."""
    try:
        with path.open() as file:
            header = file.readline().strip().split(",")
    except OSError:
        return False
    return set(SUBJECT_COLUMNS) <= set(header)
