"""What a study is: the runs it needs, the data sets it reads, and the protocol every study follows.

A *study* trains some models on a healthy data set, scores them on lesion data sets and turns the
scores into tables, figures and a report. Every study, built in (:mod:`.bengs2021`,
:mod:`.lambert2021`, :mod:`.behrendt2024`) or read from a study file (:mod:`.study_file`), is a
:class:`Study`: it lists its runs for a seed (:class:`RunSpec`), scores one run, and collects the
scores. One runner (:func:`uadlab.studies.runner.run_study`) does the rest for all of them: seeds,
planning, resumption, the output-folder guard and the executors.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uadlab.layout import run_name
from uadlab.training.experiments import parse_experiment

if TYPE_CHECKING:
    import pandas as pd

    from uadlab.studies.context import StudyContext

__all__ = ["RunSpec", "DataSource", "Study", "experiment_names"]


@dataclass(frozen=True)
class RunSpec:
    """One run of a study: a model trained with one seed, or a segmenter on such a run.

    Attributes:
        experiment: the experiment, canonical (``3D-Cube-n``, ``spatial-vae:2D-None``); for a
            segmenter, the reconstruction model it is trained on.
        seed: the training seed.
        fraction: share of the healthy training split, in ``(0, 1]``.
        options: further :class:`~uadlab.training.TrainConfig` fields as ``(name, value)`` pairs
            (``("loss", "lambert")``, ``("max_epochs", 4)``).
        labels: ``""`` for a reconstruction run; for a segmenter (Behrendt et al. 2024), what it learns
            from: ``"synthetic"`` or ``"synthetic + 2 tumour"``.
        labelled: a weakly supervised segmenter's ``(cohort, k)``: ``k`` labelled validation cases.
    """

    experiment: str
    seed: int = 0
    fraction: float = 1.0
    options: tuple[tuple[str, Any], ...] = ()
    labels: str = ""
    labelled: tuple[str, int] | None = None

    @property
    def name(self) -> str:
        """The run's name: its folder under ``runs/`` and the value of ``--only-run``.

        >>> RunSpec("2D-None", fraction=0.2).name, RunSpec("ddpm:2D-None", labels="synthetic + 1 tumour").name
        ('2D-None@20', 'ddpm_2D-None__synthetic+1-tumour')
        """
        base = run_name(self.experiment, self.fraction)
        return base if not self.labels else f"{base}__{self.labels.replace(' + ', '+').replace(' ', '-')}"

    @property
    def depends_on(self) -> str | None:
        """Name of the run this one needs first (a segmenter's reconstruction model), else ``None``."""
        return run_name(self.experiment, self.fraction) if self.labels else None

    def to_dict(self) -> dict[str, Any]:
        """The specification as JSON-ready values (``plan.json``)."""
        return {"name": self.name, "experiment": self.experiment, "seed": self.seed, "fraction": self.fraction,
                "options": dict(self.options), "stage": "segmenter" if self.labels else "reconstruction",
                "labels": self.labels, "depends_on": self.depends_on}


@dataclass(frozen=True)
class DataSource:
    """One data set a study reads: a manifest to build, or a folder already built.

    Attributes:
        name: ``"data"`` for a built-in study's data set (built into ``OUT/data``); a study file's
            data sets are named by their manifests (built into ``OUT/data/<name>``).
        manifest: the manifest to build (``None`` when ``built`` is given).
        root: the data root of a real manifest (or of a phantom's real source brains).
        built: a folder built by ``uadlab data build``, used as it is.
        val_data: name of another source whose labelled validation cases fit the thresholds of
            cohorts this one has none for.
        role: ``"train"`` (the healthy data the models learn from, scored too when it has lesion
            cohorts), ``"test"`` (scored) or ``"val"`` (thresholds only).
    """

    name: str
    manifest: Path | None = None
    root: Path | None = None
    built: Path | None = None
    val_data: str | None = None
    role: str = "train"


class Study(ABC):
    """The protocol every study follows; :mod:`uadlab.studies.runner` runs any of them.

    Attributes:
        name: the study's name (``bengs2021``, a study file's ``name``).
        argument: what ``uadlab reproduce --study`` takes to name it again (a name or the file).
        protocol: how runs are scored: ``bengs2021``, ``lambert2021`` or ``behrendt2024``.
        folder: the study's own folder under ``OUT`` (``None``: ``OUT`` itself).
        tables: the files of its folder it replaces on every run (guarded: a file it did not write
            is never replaced without ``overwrite``).
        sources: the data sets, the training one first.
        profile: the profile a study file names (``None``: the runner's default).
        seeds: the seeds a study file names (``None``: ``[0]``).
        description: free text for the report.
    """

    name: str
    argument: str
    protocol: str
    folder: str | None = None
    tables: tuple[str, ...] = ()
    sources: tuple[DataSource, ...] = ()
    profile: str | None = None
    seeds: tuple[int, ...] | None = None
    description: str = ""

    @abstractmethod
    def runs(self, ctx: StudyContext, seed: int) -> list[RunSpec]:
        """The runs of one seed, each after the runs it depends on.

        Raises:
            DatasetError: a data set the runs depend on cannot be built or read.
        """

    @abstractmethod
    def score(self, ctx: StudyContext, spec: RunSpec) -> list[dict[str, Any]]:
        """Train (or resume, or reuse) one run, evaluate it (or reuse its evaluation) and return its rows.

        Raises:
            RunError, DatasetError: as :meth:`StudyContext.train` and :meth:`StudyContext.evaluate`.
        """

    @abstractmethod
    def collect(self, ctx: StudyContext, rows: pd.DataFrame, seeds: list[int]) -> dict[str, Path]:
        """Write the study's tables, figures and report from the rows of all runs; return their paths.

        Raises:
            OSError: a table cannot be written (nothing half-written is left).
        """

    def options(self) -> list[str]:
        """The study's own ``uadlab reproduce`` options, for the command lines of a plan."""
        return []


def experiment_names(experiments: list[str]) -> list[str]:
    """Canonical experiment names, distinct and at least one (ValueError otherwise, naming the bad value)."""
    if isinstance(experiments, str) or not list(experiments) or any(not str(e).strip() for e in experiments):
        raise ValueError(f"`experiments` must name at least one experiment (None: all of Table 1), got {experiments!r}")
    names = [parse_experiment(e).name for e in experiments]
    if len(set(names)) != len(names):
        raise ValueError(f"`experiments` must be distinct, got {experiments!r}")
    return names
