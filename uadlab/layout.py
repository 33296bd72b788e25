"""The folders and file names uadlab writes: a run, an evaluation, and the results of a study.

One place for every name, so the library, the notebooks and the tests never spell ``"runs"`` or
``"metrics.json"`` themselves::

    OUT/                              ResultsLayout(OUT)
      data/                           .data          the built data set of a built-in study
      data/<name>/                    .dataset(name) each data set of a study file
      runs/<run>/seed<seed>/          .run(run, fraction, seed)         a training run (RUN_FILES)
      evaluation/<run>/seed<seed>/    .evaluation(run, fraction, seed)  metrics.json, subjects.csv
                 .../seed<seed>/<data>/                                 (one per data set of a study file)
      figures/                        .figures
      table1.csv, table1.md           .table("table1.csv"), .table1_csv, .table1_md
      paired.csv, report.md           .paired, .report   several seeds: comparisons, one page
      reproduce.json                  .record        what the study ran (written last)
      plan.json                       .plan          the study's runs (``uadlab reproduce --plan``)
      logs/, slurm/                   .logs, .slurm  output of runs executed as separate processes or jobs
      lambert2021/, behrendt2024/     .study(name)   a built-in study's own folder, laid out the same way

A run's folder name is the experiment's name with ``@<percent>`` for a training-set fraction, and a
model prefix ``MODEL:`` written ``MODEL_`` (no ``:`` in file names):

>>> run_name("3D-Cube-n"), run_name("2D-None", 0.2), run_name("spatial-vae:3D-None")
('3D-Cube-n', '2D-None@20', 'spatial-vae_3D-None')
>>> ResultsLayout("out").run("2D-None", 0.2, seed=1).as_posix()
'out/runs/2D-None@20/seed1'
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from uadlab.errors import RunError

__all__ = ["RUN_CONFIG", "RUN_CHECKPOINT", "RUN_HISTORY", "RUN_FILES", "EVAL_METRICS", "EVAL_SUBJECTS",
           "DATASET_RECORD", "ResultsLayout", "run_name", "check_output_folder"]

#: Files of a training run folder (:func:`uadlab.training.train`).
RUN_CONFIG, RUN_CHECKPOINT, RUN_HISTORY = "config.yaml", "checkpoint.pt", "history.csv"
RUN_FILES: tuple[str, ...] = (RUN_CONFIG, RUN_CHECKPOINT, RUN_HISTORY)
#: Files of an evaluation folder (:func:`uadlab.evaluation.evaluate_run`).
EVAL_METRICS, EVAL_SUBJECTS = "metrics.json", "subjects.csv"
#: The record that marks a built data set (:func:`uadlab.data.build_dataset`).
DATASET_RECORD = "dataset.json"


def run_name(experiment: str, fraction: float = 1.0) -> str:
    """Folder name of a run: the experiment name (``:`` as ``_``), ``@<percent>`` for a fraction below 1."""
    name = experiment.replace(":", "_")
    return name if fraction == 1.0 else f"{name}@{round(fraction * 100)}"


@dataclass(frozen=True)
class ResultsLayout:
    """The output folder of a study (``uadlab reproduce --out``), shared by the labs.

    Attributes:
        root: the folder (``--out``).
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def data(self) -> Path:
        """Where a built-in study builds its data set."""
        return self.root / "data"

    def dataset(self, name: str) -> Path:
        """Where a study file builds its data set ``name``."""
        return self.data / name

    @property
    def runs(self) -> Path:
        """Folder of all training runs."""
        return self.root / "runs"

    @property
    def figures(self) -> Path:
        """Folder of the study's figures."""
        return self.root / "figures"

    def table(self, name: str) -> Path:
        """A table of the study, e.g. ``table("table1.csv")``."""
        return self.root / name

    @property
    def table1_csv(self) -> Path:
        """Table 1 as CSV."""
        return self.table("table1.csv")

    @property
    def table1_md(self) -> Path:
        """Table 1 as Markdown."""
        return self.table("table1.md")

    @property
    def record(self) -> Path:
        """``reproduce.json``: what the study ran, written last."""
        return self.root / "reproduce.json"

    @property
    def paired(self) -> Path:
        """``paired.csv``: the study's comparisons, resampling seeds and subjects."""
        return self.root / "paired.csv"

    @property
    def report(self) -> Path:
        """``report.md``: a study's results on one page."""
        return self.root / "report.md"

    @property
    def plan(self) -> Path:
        """``plan.json``: the study's run specifications."""
        return self.root / "plan.json"

    @property
    def logs(self) -> Path:
        """Output of runs executed as separate local processes."""
        return self.root / "logs"

    def log(self, run: str, seed: int) -> Path:
        """Output of one run executed as a separate local process."""
        return self.logs / f"{run}-seed{seed}.log"

    @property
    def slurm(self) -> Path:
        """submitit's folder of the runs submitted as SLURM jobs."""
        return self.root / "slurm"

    def study(self, name: str) -> ResultsLayout:
        """The folder of a built-in study that writes beside Table 1 (``lambert2021``, ``behrendt2024``)."""
        return ResultsLayout(self.root / name)

    def run(self, run: str, fraction: float = 1.0, seed: int = 0) -> Path:
        """Run folder of ``run`` (an experiment, or a segmenter's name) on ``fraction`` of the training split."""
        return self.runs / run_name(run, fraction) / f"seed{seed}"

    def evaluation(self, run: str, fraction: float = 1.0, seed: int = 0, data: str | None = None) -> Path:
        """Evaluation folder of that run, per data set ``data`` where a study scores several."""
        folder = self.root / "evaluation" / run_name(run, fraction) / f"seed{seed}"
        return folder if data is None else folder / data

    def metrics(self, run: str, fraction: float = 1.0, seed: int = 0, data: str | None = None) -> Path:
        """The run's ``metrics.json``."""
        return self.evaluation(run, fraction, seed, data) / EVAL_METRICS

    def subjects(self, run: str, fraction: float = 1.0, seed: int = 0, data: str | None = None) -> Path:
        """The run's per-subject ``subjects.csv``."""
        return self.evaluation(run, fraction, seed, data) / EVAL_SUBJECTS


def check_output_folder(folder: str | Path, *, writer: str, owned: tuple[Path, ...] = (),
                        record: Path | None = None, owner: str | None = None, overwrite: bool = False) -> None:
    """The one output-folder guard: refuse a folder that a command must not write into.

    Refused: a file; a built data set or a training run (never written into, whatever the flags);
    and, without ``overwrite``, any of ``owned`` that exists without ``record`` beside it (a table
    the writer did not write) or with a ``record`` of another ``owner`` (another study's tables), or
    when ``record`` is ``None``, any of ``owned`` that exists.

    Args:
        folder: the output folder (it need not exist).
        writer: what writes it, for the message (``"uadlab reproduce"``, ``"an evaluation"``).
        owned: the files the writer replaces.
        record: the file the writer writes (JSON with a ``"study"`` key); its presence says the ``owned``
            files are its own.
        owner: the ``"study"`` the record must name (``None``: any).
        overwrite: replace ``owned`` files all the same (``--overwrite``).

    Raises:
        RunError: the folder is refused (the message names it and what to do).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunError(f"{folder}: exists and is not a folder; choose another --out")
    foreign = [name for name in (DATASET_RECORD, RUN_CONFIG, RUN_CHECKPOINT) if (folder / name).exists()]
    if foreign:
        what = "a built data set" if foreign[0] == DATASET_RECORD else "a training run"
        raise RunError(f"{folder}: holds {what} ({foreign[0]}); {writer} never writes into one, "
                       "choose another --out")
    existing = [path for path in owned if path.exists()]
    if not existing or overwrite:
        return
    if record is None:
        raise RunError(f"{existing[0]}: already exists; pass --overwrite (overwrite=True) to replace it")
    if not record.exists():
        raise RunError(f"{existing[0]}: exists and was not written by {writer} (no {record.name} beside it); "
                       "pass --overwrite (overwrite=True) to replace it")
    written_by = _record_owner(record)
    if owner is not None and written_by != owner:
        raise RunError(f"{existing[0]}: written by another study ({written_by or f'unreadable {record.name}'}); "
                       "choose another --out, or pass --overwrite (overwrite=True) to replace it")


def _record_owner(record: Path) -> str | None:
    """The ``"study"`` a record names; ``None`` when it cannot be read."""
    try:
        return json.loads(record.read_text()).get("study")
    except (OSError, ValueError, AttributeError):
        return None
