"""What every study does the same way: find its data, train or resume a run, evaluate it or reuse the evaluation.

The rules live here once, for every study:

- **Data.** A source's data set is built into ``OUT/data`` (a built-in study) or ``OUT/data/<name>``
  (a study file) by :func:`uadlab.data.build_dataset` (cached; an identical build is reused), or an
  already built folder is used as it is. A run executed as its own process (``--only-run``) never
  builds: the driver or the plan's data lines did.
- **Train or resume.** A run goes to ``runs/<run>/seed<seed>``; a stopped run resumes, a finished one
  is returned at once (:func:`uadlab.training.train` with ``resume``). With ``overwrite``, a run whose
  config differs is started afresh; a folder holding anything but a run is never discarded.
- **Evaluate or reuse.** ``metrics.json`` is read back when it is newer than the run's checkpoint,
  else the run is evaluated anew (:func:`uadlab.evaluation.evaluate_run`).
- **Thresholds.** Each lesion cohort's threshold comes from its own validation split, else from its
  ``val_data`` (:func:`uadlab.evaluation.protocol.validation_source`); a cohort with neither stops
  the study before any training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from uadlab.data.dataset import build_dataset, load_dataset
from uadlab.errors import DatasetError, RunError
from uadlab.evaluation.protocol import evaluate_run, validation_source
from uadlab.layout import DATASET_RECORD, EVAL_METRICS, RUN_CHECKPOINT, RUN_CONFIG, ResultsLayout
from uadlab.profiles import Profile, get_profile
from uadlab.studies.spec import DataSource, RunSpec
from uadlab.training import TrainConfig, TrainResult, train

__all__ = ["StudyContext"]


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
        return build_dataset(source.manifest, target, root=source.root, profile=self.profile,
                             progress=self.progress, workers=self.workers, overwrite=self.overwrite)

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

    def train(self, spec: RunSpec) -> TrainResult:
        """Train ``spec`` into its run folder, resume it, or return it finished (see the module docstring)."""
        config = TrainConfig(experiment=spec.experiment, profile=self.profile, data=str(self.data_dir(self.train_data)),
                             fraction=spec.fraction, seed=spec.seed, device=self.device, **self.train_options(spec))
        run_dir = self.layout.run(spec.experiment, spec.fraction, spec.seed)
        try:
            return train(config, run_dir, resume=True, progress=self.progress)
        except RunError:
            holds_run = any((run_dir / name).exists() for name in (RUN_CONFIG, RUN_CHECKPOINT))
            if not (self.overwrite and holds_run):  # never discard a folder that holds something else
                raise
        return train(config, run_dir, overwrite=True, progress=self.progress)

    def train_options(self, spec: RunSpec) -> dict[str, Any]:
        """The run's own config fields (``spec.options``) and the study's epoch limit, if any."""
        return dict(spec.options) | ({} if self.max_epochs is None else {"max_epochs": self.max_epochs})

    def evaluation_dir(self, spec: RunSpec, data: str) -> Path:
        """Evaluation folder of ``spec`` on data set ``data`` (a built-in study's single one has no sub-folder)."""
        return self.layout.evaluation(spec.name if spec.labels else spec.experiment, 1.0 if spec.labels
                                      else spec.fraction, spec.seed, None if data == "data" else data)

    def evaluate(self, spec: RunSpec, run_dir: Path, data: str) -> dict[str, Any]:
        """``metrics.json`` of a trained run on data set ``data``: reused when newer than the checkpoint, else made."""
        eval_dir = self.evaluation_dir(spec, data)
        metrics_file = eval_dir / EVAL_METRICS
        if metrics_file.exists() and metrics_file.stat().st_mtime >= (run_dir / RUN_CHECKPOINT).stat().st_mtime:
            return json.loads(metrics_file.read_text())
        val = self.sources[data].val_data
        val_dir = None if val is None else self.data_dir(val)
        return evaluate_run(run_dir, self.data_dir(data), eval_dir, val_data=val_dir, overwrite=True,
                            progress=self.progress, device=self.device)
