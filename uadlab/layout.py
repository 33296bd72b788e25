"""The folders and file names uadlab writes: a run, an evaluation, and the results of ``uadlab reproduce``.

One place for every name, so the library, the notebooks and the tests never spell ``"runs"`` or
``"metrics.json"`` themselves::

    OUT/                       ResultsLayout(OUT)
      data/                    .data        the built data set (unless an existing one is passed)
      runs/<run>/              .run(experiment, fraction)       a training run (RUN_FILES)
      evaluation/<run>/        .evaluation(experiment, fraction) metrics.json, subjects.csv
      figures/                 .figures
      table1.csv, table1.md    .table1_csv, .table1_md
      reproduce.json           .record      what the main job ran

A run's folder name is the experiment's name with ``@<percent>`` for a training-set fraction, and a
model prefix ``MODEL:`` written ``MODEL_`` (no ``:`` in file names):

>>> run_name("3D-Cube-n"), run_name("2D-None", 0.2), run_name("spatial-vae:3D-None")
('3D-Cube-n', '2D-None@20', 'spatial-vae_3D-None')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["RUN_CONFIG", "RUN_CHECKPOINT", "RUN_HISTORY", "RUN_FILES", "EVAL_METRICS", "EVAL_SUBJECTS",
           "ResultsLayout", "run_name"]

#: Files of a training run folder (:func:`uadlab.training.train`).
RUN_CONFIG, RUN_CHECKPOINT, RUN_HISTORY = "config.yaml", "checkpoint.pt", "history.csv"
RUN_FILES: tuple[str, ...] = (RUN_CONFIG, RUN_CHECKPOINT, RUN_HISTORY)
#: Files of an evaluation folder (:func:`uadlab.evaluation.evaluate_run`).
EVAL_METRICS, EVAL_SUBJECTS = "metrics.json", "subjects.csv"


def run_name(experiment: str, fraction: float = 1.0) -> str:
    """Folder name of a run: the experiment name (``:`` as ``_``), ``@<percent>`` for a fraction below 1."""
    name = experiment.replace(":", "_")
    return name if fraction == 1.0 else f"{name}@{round(fraction * 100)}"


@dataclass(frozen=True)
class ResultsLayout:
    """The output folder of ``uadlab reproduce`` (and of the labs, which share it).

    Attributes:
        root: the folder (``--out``).
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def data(self) -> Path:
        """Where the main job builds its data set."""
        return self.root / "data"

    @property
    def runs(self) -> Path:
        """Folder of all training runs."""
        return self.root / "runs"

    @property
    def figures(self) -> Path:
        """Folder of the paper's figures."""
        return self.root / "figures"

    @property
    def table1_csv(self) -> Path:
        """Table 1 as CSV."""
        return self.root / "table1.csv"

    @property
    def table1_md(self) -> Path:
        """Table 1 as Markdown."""
        return self.root / "table1.md"

    @property
    def record(self) -> Path:
        """``reproduce.json``: what the main job ran."""
        return self.root / "reproduce.json"

    def run(self, experiment: str, fraction: float = 1.0) -> Path:
        """Run folder of ``experiment`` trained on ``fraction`` of the healthy training split."""
        return self.runs / run_name(experiment, fraction)

    def evaluation(self, experiment: str, fraction: float = 1.0) -> Path:
        """Evaluation folder of that run."""
        return self.root / "evaluation" / run_name(experiment, fraction)

    def metrics(self, experiment: str, fraction: float = 1.0) -> Path:
        """The run's ``metrics.json``."""
        return self.evaluation(experiment, fraction) / EVAL_METRICS

    def subjects(self, experiment: str, fraction: float = 1.0) -> Path:
        """The run's per-subject ``subjects.csv``."""
        return self.evaluation(experiment, fraction) / EVAL_SUBJECTS
