"""Run the lab notebooks headless, in order, with papermill (``uadlab notebooks run``).

The notebooks under ``notebooks/`` hold narrative, parameters and ``uadlab`` calls only. Their first
cell is tagged ``parameters`` (papermill injects the values after it) and every notebook takes the
same ones: ``PROFILE``, ``OUT_DIR``, ``SEED``, ``INTERACTIVE`` and ``PACK``. They share one ``OUT_DIR``, so
a later notebook reuses the data set (``OUT_DIR/data``) and the training runs (``OUT_DIR/runs``) of
the earlier ones; that is why they run in order. Run out of order, or at once in two kernels, a lab
trains the runs it lacks, or waits for the kernel training them and reuses them
(:mod:`uadlab.studies.context`). Executed copies go to ``OUT_DIR/executed/``. With a course pack
(``PACK``, or ``$UADLAB_PACK``; :mod:`uadlab.course`) a lab reads the pack's data set, runs and
evaluations instead of making them, and still writes only to ``OUT_DIR``.

Headless runs pass ``INTERACTIVE=False``: the widgets of :mod:`uadlab.viz.widgets` then render static
figures, so nothing waits for a browser.

Lab 08 reads the results of a zoo study (:mod:`uadlab.studies.zoo`), its own small one or any other, without
writing to them: :func:`zoo_results` finds the study's folder, :func:`zoo_maps` predicts one family's run on a
cohort.
"""

from __future__ import annotations

import ast
import json
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

from uadlab._checks import check_int, check_path
from uadlab._progress import in_notebook
from uadlab._threads import limit_threads
from uadlab.errors import RunError, UadlabError, UadlabWarning
from uadlab.layout import ResultsLayout
from uadlab.profiles import Profile, get_profile

__all__ = ["NOTEBOOKS", "NOTEBOOK_DIR", "NotebookError", "Lab", "start_lab", "ZooMaps", "zoo_results", "zoo_maps",
           "run_notebooks", "strip_outputs", "notebook_problems", "figure_calls"]

#: The labs, in the order they must run.
NOTEBOOKS: tuple[str, ...] = (
    "00_data_prep.ipynb",
    "01_vae_2d.ipynb",
    "02_vae_3d.ipynb",
    "03_erasing_ablation.ipynb",
    "04_lesion_size.ipynb",
    "05_data_size.ipynb",
    "06_lambert_spatial_vs_dense.ipynb",
    "07_recon_plus_supervised.ipynb",
    "08_model_zoo.ipynb",
)

#: Folder of the notebooks in the source tree.
NOTEBOOK_DIR: Path = Path(__file__).resolve().parents[1] / "notebooks"


class NotebookError(UadlabError):
    """A notebook is missing, or a cell failed while running it; the message names both."""


@dataclass(frozen=True)
class Lab:
    """What a lab's setup cell starts with (:func:`start_lab`): the ``bengs2021`` study's runner, step by step.

    The labs train and evaluate through the same rules as ``uadlab reproduce``
    (:class:`~uadlab.studies.StudyContext`): a run resumes or is reused, an evaluation is reused when
    newer than its run, folders come from :class:`~uadlab.layout.ResultsLayout`.

    Attributes:
        name: the lab, e.g. ``"02_vae_3d"``; its own outputs go to ``results``.
        profile: the run profile.
        layout: the output folder all labs share (``OUT_DIR``): data, runs, evaluations.
        results: this lab's folder, ``OUT_DIR/<name>``.
        dataset: the built phantom (:class:`~uadlab.data.BuiltDataset`), in ``layout.data``.
        seed: seed of every run.
        study: the study context the steps go through.
    """

    name: str
    profile: Profile
    layout: ResultsLayout
    results: Path
    dataset: Any
    seed: int
    study: Any

    @property
    def cohort(self) -> str:
        """The first lesion cohort, used for the labs' examples."""
        return self.dataset.lesion_cohorts[0]

    def _spec(self, experiment: str, fraction: float, config: dict[str, Any]) -> Any:
        from uadlab.studies import RunSpec
        from uadlab.training.experiments import parse_experiment

        return RunSpec(parse_experiment(experiment).name, self.seed, fraction, options=tuple(config.items()))

    def train(self, experiment: str, fraction: float = 1.0, *, progress: bool = False, **config: Any) -> Any:
        """Train ``experiment`` into the shared runs folder, or return the finished run (resumes a stopped one).

        Returns:
            The :class:`~uadlab.training.TrainResult`.
        """
        return replace(self.study, progress=progress).train(self._spec(experiment, fraction, config))

    def evaluate(self, experiment: str, fraction: float = 1.0, *, progress: bool = False, **config: Any) -> dict:
        """Train (or reuse) and evaluate (or reuse) ``experiment``; returns its ``metrics.json`` content."""
        spec = self._spec(experiment, fraction, config)
        study = replace(self.study, progress=progress)
        return study.evaluate(spec, study.train(spec).run_dir, study.train_data)

    def subjects(self, experiment: str, fraction: float = 1.0, *, progress: bool = False) -> Any:
        """The per-subject table (``subjects.csv``) of a run, as a DataFrame; trained and evaluated first as
        :meth:`evaluate` does, so a lab works also before (or beside) the lab that trains the run.

        Args:
            experiment: a Table 1 experiment, optionally of another model (``spatial-vae:2D-None``).
            fraction: share of the healthy training split the run trained on.
            progress: progress bars while training or evaluating.

        Returns:
            One row per scored test subject (:data:`uadlab.evaluation.protocol.SUBJECT_COLUMNS`).

        Raises:
            ValueError: an unknown experiment; RunError, DatasetError as :meth:`evaluate`.
        """
        import pandas as pd

        self.evaluate(experiment, fraction, progress=progress)  # reused when trained and evaluated already
        return pd.read_csv(self.layout.subjects(self._spec(experiment, fraction, {}).experiment, fraction, self.seed))

    def model(self, experiment: str, fraction: float = 1.0) -> Any:
        """The trained model of a run (best epoch, eval mode); the run is trained first if it is not."""
        from uadlab.training import load_run

        return load_run(self.train(experiment, fraction).run_dir)[0]

    def data_size_study(self, experiments: Sequence[str], *, progress: bool = False) -> Any:
        """Fig. 5: each experiment trained on each of the profile's fractions and evaluated.

        Returns:
            :func:`uadlab.evaluation.analysis.data_size_table` of the runs.
        """
        from uadlab.evaluation.analysis import data_size_table

        return data_size_table([(e, f, self.evaluate(e, f, progress=progress))
                                for e in experiments for f in self.profile.fractions])

    def best_experiment(self, experiments: Sequence[str]) -> str:
        """The experiment with the highest DICE_D averaged over the lesion cohorts (trained and evaluated if needed)."""
        import pandas as pd

        from uadlab.evaluation.analysis import best_experiment

        rows = [{"experiment": e, "dataset": cohort, "dice_d": m["dice_d"]}
                for e in experiments for cohort, m in self.evaluate(e)["cohorts"].items()]
        return best_experiment(pd.DataFrame(rows))


def start_lab(name: str, *, profile: str | Profile = "smoke", out_dir: str | Path, seed: int = 0,
              pack: str | Path = "") -> Lab:
    """The setup every lab shares: seed everything, lend a course pack, load the phantom, make the lab's folder.

    The kernel takes its share of the cores as the command line does
    (:func:`uadlab._threads.limit_threads`; while it trains, the fit core chooses within that share from
    step times). In a notebook it also shows each :class:`~uadlab.errors.UadlabWarning` as one line, as
    the command line does (:func:`_show_warnings_as_lines`).

    Args:
        name: the lab's name, e.g. ``"02_vae_3d"``.
        profile: the ``PROFILE`` parameter.
        out_dir: the ``OUT_DIR`` parameter, shared by all labs.
        seed: the ``SEED`` parameter.
        pack: the ``PACK`` parameter: a course pack whose data set, runs and evaluations the lab reads
            instead of making them (:func:`uadlab.course.use_pack`); ``""``: ``$UADLAB_PACK`` if set.

    Returns:
        The :class:`Lab`.

    Raises:
        ValueError, TypeError: an unknown profile, a bad seed; DatasetError as
            :func:`~uadlab.data.build_dataset`; PackError: a damaged or mismatched pack
            (:func:`uadlab.course.verify_pack`).
    """
    from uadlab.course import use_pack
    from uadlab.data import load_dataset
    from uadlab.studies import StudyContext, make_study
    from uadlab.training import seed_everything

    if in_notebook():
        _show_warnings_as_lines()
    limit_threads()
    seed_everything(seed)
    prof = get_profile(profile)
    layout = ResultsLayout(Path(out_dir).resolve())
    use_pack(pack, layout.root, profile=prof, seed=seed)
    results = layout.root / name
    results.mkdir(parents=True, exist_ok=True)
    study = make_study("bengs2021")
    context = StudyContext(layout, layout, prof, {s.name: s for s in study.sources}, seeds=[int(seed)])
    # Built by lab 00; build_dataset returns an existing identical data set untouched.
    dataset = load_dataset(context.data_dir(context.train_data))
    return Lab(name, prof, layout, results, dataset, int(seed), context)


def _show_warnings_as_lines() -> None:
    """Show each of uadlab's warnings as one ``uadlab: warning: ...`` line on stderr, once per cell.

    Python shows a warning as its source file and line, the category and the message over several
    lines (a notebook draws them in a box); a uadlab warning is about the user's data or runs, not about
    that source line, so it gets the command line's one line instead (:class:`~uadlab.errors.UadlabWarning`
    without its name, another category of uadlab's, such as
    :class:`~uadlab.evaluation.metrics.UndefinedMetricWarning`, with it). A message already shown by the
    running cell is not repeated (a study warns once per run). Other warnings are shown as before.
    Replaces :func:`warnings.showwarning` for the rest of the process, once however often it is called
    (:func:`start_lab` calls it in a notebook).
    """
    previous = warnings.showwarning
    if getattr(previous, "uadlab_lines", False):
        return
    shown: set[tuple[Any, str]] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if not (issubclass(category, UadlabWarning) or category.__module__.startswith("uadlab.")):
            previous(message, category, filename, lineno, file, line)
            return
        from IPython import get_ipython

        kind = "" if issubclass(category, UadlabWarning) else f"{category.__name__}: "
        text = f"uadlab: warning: {kind}{' '.join(str(message).split())}"
        key = (getattr(get_ipython(), "execution_count", None), text)
        if key not in shown:
            shown.add(key)
            print(text, file=sys.stderr if file is None else file)

    show.uadlab_lines = True
    warnings.showwarning = show


class ZooMaps(NamedTuple):
    """One run of a zoo study, predicted on one cohort (:func:`zoo_maps`).

    Attributes:
        experiment: the run's experiment, e.g. ``"dae:3D-None"``.
        maps: ``{subject id: SubjectMaps}`` (:func:`uadlab.evaluation.inference.predict`), in the data set's order.
        threshold: the threshold the study fitted for the cohort on its validation split (``metrics.json``).
    """

    experiment: str
    maps: dict[str, Any]
    threshold: float


def zoo_results(folder: str | Path) -> ResultsLayout:
    """The results of a zoo study (``uadlab reproduce --study zoo``, :mod:`uadlab.studies.zoo`), read-only.

    Args:
        folder: the study's folder, which holds ``zoo.csv`` (``OUT/zoo`` of a built-in study, ``OUT`` of a
            study file with ``protocol: zoo``), or the ``OUT`` folder above ``OUT/zoo``.

    Returns:
        The :class:`~uadlab.layout.ResultsLayout` of the study's folder: ``.table("zoo.csv")``,
        ``.figures``, ``.report``, ``.run(experiment, seed=...)``.

    Raises:
        TypeError: ``folder`` is not a path.
        RunError: neither ``folder`` nor ``folder/zoo`` holds ``zoo.csv``.
    """
    folder = check_path("folder", folder)
    for candidate in (folder, folder / "zoo"):
        if (candidate / "zoo.csv").is_file():
            return ResultsLayout(candidate)
    raise RunError(f"{folder}: no zoo.csv here or in {folder / 'zoo'}; `uadlab reproduce --study zoo --out OUT` "
                   "writes it into OUT/zoo")


def zoo_maps(folder: str | Path, family: str, spatial_dims: int, *, cohort: str, split: str = "test", seed: int = 0,
             data: str | None = None, progress: bool = False) -> ZooMaps:
    """The anomaly maps of one family's run of a zoo study on one cohort, with the study's threshold.

    Reads the study's folder only: the run's best weights (:func:`uadlab.training.load_run`) predict the
    cohort's subjects of the data set the study evaluated (``metrics.json``'s ``data``) with the
    post-processing the study used (the paper's), so ``SubjectMaps.residual`` holds the family's voxel
    score (:meth:`uadlab.models.base.ModelBase.anomaly_score`).

    Args:
        folder: as :func:`zoo_results`.
        family: a registered model (:data:`uadlab.models.MODELS`), e.g. ``"dae"``.
        spatial_dims: 2 or 3; the run is the zoo's experiment of ``family`` in that dimension
            (:func:`uadlab.studies.zoo.family_experiments`).
        cohort: a lesion cohort the study scored, e.g. ``"tumour"``.
        split: the cohort's split to predict: ``"test"`` (scored with ``threshold``) or ``"val"`` (where
            ``threshold`` was fitted).
        seed: the run's training seed.
        data: the scored data set's name where a study file scores several (its evaluation sub-folder);
            ``None`` for a built-in study.
        progress: a progress bar over the subjects.

    Returns:
        The :class:`ZooMaps`.

    Raises:
        TypeError: ``spatial_dims`` or ``seed`` not an int.
        ValueError: an unknown family, a dimension the family has no zoo run in, a cohort the run was not
            scored on, a split other than ``"test"`` or ``"val"``.
        RunError: no zoo results in ``folder``; the run or its evaluation is missing or unreadable.
        DatasetError: the evaluated data set is gone.
    """
    from uadlab.data import load_dataset
    from uadlab.evaluation.inference import predict
    from uadlab.studies.zoo import family_experiments
    from uadlab.training import load_run
    from uadlab.training.experiments import parse_experiment

    layout = zoo_results(folder)
    check_int("spatial_dims", spatial_dims, "2 or 3", lambda v: v in (2, 3))
    check_int("seed", seed, "a non-negative int", lambda v: v >= 0)
    if split not in ("test", "val"):
        raise ValueError(f"`split` must be 'test' or 'val', got {split!r}")
    runs = {parse_experiment(e).spatial_dims: e for e in family_experiments(family)}  # ValueError: unknown family
    if spatial_dims not in runs:
        raise ValueError(f"`spatial_dims` must be one of {sorted(runs)} for family {family!r}, got {spatial_dims!r}")
    experiment = runs[spatial_dims]
    metrics_file = layout.metrics(experiment, seed=int(seed), data=data)
    try:
        metrics = json.loads(metrics_file.read_text())
    except (OSError, ValueError) as error:
        raise RunError(f"{metrics_file}: the zoo's evaluation of {experiment} (seed {seed}) is missing or "
                       f"unreadable ({error})") from error
    if cohort not in metrics.get("cohorts", {}):
        raise ValueError(f"`cohort` must be one of {sorted(metrics.get('cohorts', {}))} (scored by {experiment}), "
                         f"got {cohort!r}")
    model, _ = load_run(layout.run(experiment, seed=int(seed)))
    dataset = load_dataset(metrics["data"])
    maps = predict(model, dataset, dataset.ids(cohort=cohort, split=split), progress=progress)
    return ZooMaps(experiment, maps, float(metrics["cohorts"][cohort]["threshold"]))


def run_notebooks(*, profile: str = "smoke", out: str | Path, notebooks: Sequence[str] | None = None,
                  progress: bool = False, seed: int = 0, kernel: str = "python3",
                  source_dir: str | Path | None = None, timeout: int | None = None) -> list[Path]:
    """Execute the lab notebooks in order with papermill and return the executed copies.

    Every notebook gets the parameters ``PROFILE=profile``, ``OUT_DIR=<out, absolute>``,
    ``SEED=seed`` and ``INTERACTIVE=False`` and runs with the notebook folder as working
    directory. Results accumulate in ``out`` (data, runs, per-notebook outputs), so a second call
    reuses finished work. ``PACK`` keeps its default, so the kernels read the course pack that
    ``$UADLAB_PACK`` names, if any (:mod:`uadlab.course`).

    Args:
        profile: ``smoke`` (CI: a few minutes on 2 CPU cores), ``lab`` or ``paper``.
        out: the shared output folder; executed notebooks go to ``out/executed/``.
        notebooks: subset of :data:`NOTEBOOKS` (run in :data:`NOTEBOOKS` order); ``None``: all of them.
            A later notebook needs the outputs of the earlier ones in ``out``.
        progress: show papermill's cell progress bar.
        seed: the ``SEED`` parameter.
        kernel: Jupyter kernel name.
        source_dir: folder holding the notebooks (default :data:`NOTEBOOK_DIR`).
        timeout: per-cell timeout in seconds, ``None`` for none.

    Returns:
        Paths of the executed notebooks, in run order.

    Raises:
        ValueError: an unknown profile or notebook name.
        NotebookError: a notebook file is missing, or a cell raised; the message names the notebook,
            the cell (its index in the executed copy, which holds papermill's injected-parameters
            cell, and its first source line), the error, and the executed copy kept for inspection.
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError

    prof = get_profile(profile)
    names = list(NOTEBOOKS) if notebooks is None else list(notebooks)
    unknown = [name for name in names if name not in NOTEBOOKS]
    if unknown:
        raise ValueError(f"`notebooks` must be names from {NOTEBOOKS}, got unknown {unknown!r}")
    names = [name for name in NOTEBOOKS if name in names]
    source = NOTEBOOK_DIR if source_dir is None else Path(source_dir)
    out = Path(out).resolve()
    executed_dir = out / "executed"
    executed_dir.mkdir(parents=True, exist_ok=True)
    parameters = {"PROFILE": prof.name, "OUT_DIR": str(out), "SEED": int(seed), "INTERACTIVE": False}
    executed = []
    for name in names:
        notebook = source / name
        if not notebook.is_file():
            raise NotebookError(f"{notebook}: notebook not found")
        target = executed_dir / name
        try:
            papermill.execute_notebook(str(notebook), str(target), parameters=parameters, kernel_name=kernel,
                                       progress_bar=progress, log_output=False, cwd=str(source),
                                       execution_timeout=timeout)
        except PapermillExecutionError as error:
            first_line = next((line for line in str(error.source).splitlines() if line.strip()), "")
            raise NotebookError(
                f"{name}: cell {error.cell_index} of the executed copy (execution count {error.exec_count}, "
                f"`{first_line[:80]}`) "
                f"failed with {error.ename}: {error.evalue}; executed copy: {target}"
            ) from error
        executed.append(target)
    return executed


def _load(path: str | Path) -> Any:
    import nbformat

    path = Path(path)
    try:
        return nbformat.read(path, as_version=4)
    except (OSError, ValueError) as error:  # nbformat raises NotJSONError (a ValueError) on bad files
        raise NotebookError(f"{path}: not a readable notebook ({error})") from error


def strip_outputs(path: str | Path) -> bool:
    """Remove outputs, execution counts, run metadata and saved widget state from a notebook file, in place.

    Args:
        path: an ``.ipynb`` file.

    Returns:
        True if the file changed.

    Raises:
        NotebookError: the file is missing or not a notebook.
    """
    import nbformat

    from uadlab.data.io import atomic_write

    nb = _load(path)
    before = json.dumps(nb, sort_keys=True)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)  # the explorers' state JupyterLab saves (`make lab`), pictures included
    if json.dumps(nb, sort_keys=True) == before:
        return False
    with atomic_write(path, overwrite=True) as tmp:
        nbformat.write(nb, str(tmp))
    return True


def notebook_problems(path: str | Path) -> list[str]:
    """What keeps a notebook from being committed or run by papermill (empty when fine).

    Checks the house rules for notebooks: the first cell is a code cell tagged ``parameters`` that holds
    ``PROFILE``, ``OUT_DIR``, ``SEED``, ``INTERACTIVE`` and ``PACK``; the notebook holds no saved widget
    state and no code cell outputs or an execution count; no code cell defines a class or a function
    (logic belongs in ``uadlab``) except an exercise's solution cell (nbgrader metadata ``solution: true``),
    where the student writes one; a cell that makes a figure (:func:`figure_calls`) shows it: it ends with
    the figure (``fig`` or the call) or calls ``display(fig)``.

    Args:
        path: an ``.ipynb`` file.

    Returns:
        One sentence per problem, in cell order after the parameters-cell checks.

    Raises:
        NotebookError: the file is missing or not a notebook.
    """
    nb = _load(path)
    problems = []
    first = nb.cells[0] if nb.cells else None
    if first is None or first.cell_type != "code" or "parameters" not in first.metadata.get("tags", []):
        problems.append("the first cell is not a code cell tagged 'parameters'")
    else:
        for name in ("PROFILE", "OUT_DIR", "SEED", "INTERACTIVE", "PACK"):
            if f"{name}:" not in first.source:
                problems.append(f"the parameters cell lacks a typed `{name}: ...` parameter")
    if "widgets" in nb.metadata:
        problems.append("the notebook holds saved widget state (strip it before committing)")
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.get("outputs") or cell.get("execution_count") is not None:
            problems.append(f"cell {index} holds outputs (strip them before committing)")
        exercise = cell.metadata.get("nbgrader", {}).get("solution", False)  # the student writes a function there
        for keyword, what in (("class ", "a class"), ("def ", "a function")):
            if not exercise and any(line.lstrip().startswith(keyword) for line in cell.source.splitlines()):
                problems.append(f"cell {index} defines {what} (logic belongs in uadlab)")
        if figure_calls(cell.source) and not _shows_figure(cell.source):
            problems.append(f"cell {index} makes a figure but does not show it (end the cell with it or "
                            "call display(fig))")
    return problems


#: Functions of :mod:`uadlab.viz.figures` that return no figure.
_NOT_FIGURES = frozenset({"display_slice", "operating_point", "save_figure", "new_figure", "DISPLAY_DPI"})


def figure_calls(source: str) -> list[str]:
    r"""The figure-making calls in a code cell's source, in source order.

    A figure-making call is ``viz.<name>(...)`` for a figure function of :mod:`uadlab.viz.figures` or
    ``widgets.<name>_explorer(...)`` (a widget box, or its static figure in headless runs), with the
    modules imported under those names as the labs do.

    Args:
        source: Python source of one cell (IPython magics are not supported).

    Returns:
        ``"module.function"`` names, e.g. ``["viz.show_slices"]``; empty for a cell that makes none or
        does not parse.

    >>> figure_calls("fig = viz.show_slices(v)\nviz.save_figure(fig, path)\nfig")
    ['viz.show_slices']
    """
    from uadlab.viz import figures as viz_figures

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    figures = set(viz_figures.__all__) - _NOT_FIGURES
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and isinstance(node.func.value, ast.Name)]
    calls.sort(key=lambda node: (node.lineno, node.col_offset))
    return [f"{node.func.value.id}.{node.func.attr}" for node in calls
            if (node.func.value.id == "viz" and node.func.attr in figures)
            or (node.func.value.id == "widgets" and node.func.attr.endswith("_explorer"))]


def _shows_figure(source: str) -> bool:
    """Whether a cell ends with its figure (``fig`` or a figure call) or calls ``display(fig)``."""
    body = ast.parse(source).body
    last = ast.unparse(body[-1]) if body and isinstance(body[-1], ast.Expr) else ""
    return last == "fig" or bool(figure_calls(last)) or "display(fig)" in source
