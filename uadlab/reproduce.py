"""The main job: reproduce a paper's study on one data set (Table 1 and Figs. 4–7 of Bengs et al. 2021 by default).

Studies (``--study``):

- ``bengs2021`` (default): the 14 Table 1 experiments of the dense VAE plus the ``mean-image``
  floor (:data:`TABLE1_BASELINES`), the data-set-size runs and Figs. 4–7, described below.
- ``lambert2021``: Lambert et al.'s four models (Spatial 2D, Spatial 3D, Dense 2D, Dense 3D, their
  Table 1), all trained with their collapse-robust loss, scored with their protocol
  (:mod:`uadlab.evaluation.lambert`) and with Bengs et al.'s; written to ``OUT/lambert2021/``
  (``lambert2021.csv``, ``lambert2021.md``, its runs and evaluations), on the data set in ``OUT/data``.
- ``behrendt2024``: Behrendt et al. 2024, reconstruction alone (dense VAE, spatial VAE, DDPM) against
  reconstruction plus a supervised segmenter trained on synthetic anomalies, weakly supervised with
  ``labelled_cases`` labelled validation cases per lesion cohort, and on an unseen pathology
  (:mod:`uadlab.behrendt2024`); written to ``OUT/behrendt2024/``.

``uadlab reproduce --profile smoke|lab|paper --data phantom|DIR --out results/`` runs, in order:

1. **Data** — build the phantom (``data_manifests/phantom.yaml``) or a real manifest into
   ``OUT/data`` with :func:`uadlab.data.dataset.build_dataset`, or reuse an already built folder.
2. **Training** — every Table 1 experiment (14 by default: 2D/3D × None, Patch/Cube, Multi, Half ×
   0/n) and the ``mean-image`` floor on 100 % of the healthy training split, plus the data-set-size
   runs (Fig. 5) for
   :data:`DATA_SIZE_EXPERIMENTS` at the profile's fractions. Runs live in ``OUT/runs/<name>`` and are
   resumed, so rerunning skips finished experiments and continues a stopped one.
3. **Evaluation** — each run on each lesion cohort's test split with the threshold from that
   cohort's validation split (:func:`uadlab.evaluation.protocol.evaluate_run`), written to
   ``OUT/evaluation/<name>/``.
4. **Tables and figures** — ``OUT/table1.csv`` (experiment, dataset, dice_d, dice_s_mean,
   dice_s_std, auprc, threshold), ``OUT/table1.md`` (laid out like the paper's Table 1) and
   ``OUT/figures/`` (Fig. 4 lesion size, Fig. 5 data size, Fig. 6 slice-wise detection, Fig. 7
   example cases).

On many machines, ``uadlab reproduce ... --plan`` (:func:`plan`, ``bengs2021``) prints the same study
as shell commands: one data build, then one self-contained command per run (``--only-run NAME``:
train with resume, then evaluate unless the evaluation is newer than the checkpoint), which a SLURM
array, GNU parallel or any job runner executes in any order and on any machine sharing ``OUT``; a
final ``uadlab reproduce`` with the same arguments then finds every run finished and evaluated and
only collects the tables and figures.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from uadlab import behrendt2024
from uadlab.data.dataset import build_dataset, load_dataset
from uadlab.data.io import atomic_write, folder_lock
from uadlab.errors import DatasetError, RunError
from uadlab.evaluation import analysis
from uadlab.evaluation.inference import predict
from uadlab.evaluation.lambert import lambert_markdown, lambert_scores
from uadlab.evaluation.protocol import evaluate_run
from uadlab.layout import RUN_CHECKPOINT, RUN_CONFIG, ResultsLayout, run_name
from uadlab.profiles import Profile, get_profile
from uadlab.training import TrainConfig, load_run, train
from uadlab.training.experiments import EXPERIMENTS, parse_experiment
from uadlab.viz import figures as viz

__all__ = ["DATA_SIZE_EXPERIMENTS", "FIGURE_EXPERIMENTS", "LAMBERT_EXPERIMENTS", "PHANTOM_MANIFEST", "STUDIES",
           "TABLE1_BASELINES", "plan", "reproduce", "run_name", "train_and_evaluate"]

#: Manifest of the default data set (shipped beside the package in the source tree).
PHANTOM_MANIFEST = Path(__file__).resolve().parents[1] / "data_manifests" / "phantom.yaml"

#: Experiments of Figs. 4–6 and of the data-set-size study (Fig. 5): the 2D and 3D baselines and
#: their erasing counterparts the paper draws (2D-Patch-n, 3D-Cube-n).
FIGURE_EXPERIMENTS: tuple[str, ...] = ("2D-None", "2D-Patch-n", "3D-None", "3D-Cube-n")
DATA_SIZE_EXPERIMENTS: tuple[str, ...] = FIGURE_EXPERIMENTS
#: Rows Table 1 gets beside the paper's 14: the no-learning floor every model must clear.
TABLE1_BASELINES: tuple[str, ...] = ("mean-image:3D-None",)
#: Lambert et al.'s Table 1 models, in their order, with their labels.
LAMBERT_EXPERIMENTS: dict[str, str] = {"spatial-vae:2D-None": "Spatial 2D", "spatial-vae:3D-None": "Spatial 3D",
                                       "2D-None": "Dense 2D", "3D-None": "Dense 3D"}
#: The studies ``reproduce`` runs.
STUDIES: tuple[str, ...] = ("bengs2021", "lambert2021", "behrendt2024")

_TABLE1_COLUMNS = ["experiment", "dataset", "dice_d", "dice_s_mean", "dice_s_std", "auprc", "threshold"]


def _planned_runs(profile: Profile, names: list[str]) -> list[tuple[str, float]]:
    """``(experiment, fraction)`` of every run: each experiment on all data, then the data-size runs."""
    runs = [(name, 1.0) for name in names]
    return runs + [(name, f) for name in DATA_SIZE_EXPERIMENTS if name in names for f in profile.fractions
                   if f != 1.0]


def plan(
    profile: str = "smoke",
    data: str | Path = "phantom",
    out: str | Path = "results",
    *,
    study: str = "bengs2021",
    experiments: list[str] | None = None,
    root: str | Path | None = None,
    seed: int = 0,
    workers: int = 1,
) -> list[str]:
    """The study as shell commands for a job runner: what :func:`reproduce` does, split per run.

    The lines, in order: a ``#`` comment, the data build (run it first, once; absent when ``data``
    is already a built folder), one ``uadlab reproduce ... --only-run NAME`` per run (any order, in
    parallel, on any machine that sees ``out``; each resumes a stopped run and does nothing for a
    finished and evaluated one), and last the ``uadlab reproduce`` that collects Table 1 and the
    figures. Relative paths stay relative: run the lines from the folder the plan was made in.

    Args:
        profile: a profile *name* (a custom :class:`~uadlab.profiles.Profile` cannot be written on a
            command line).
        data: as :func:`reproduce`.
        out: as :func:`reproduce`.
        study: ``"bengs2021"`` only (``lambert2021`` has four runs; run it with :func:`reproduce`).
        experiments: as :func:`reproduce`.
        root: as :func:`reproduce`.
        seed: as :func:`reproduce`.
        workers: as :func:`reproduce`.

    Returns:
        The lines, without newlines.

    Raises:
        TypeError: ``profile`` is not a name.
        ValueError: an unknown profile, study or experiment name, or a study other than ``bengs2021``.
        DatasetError: ``data`` is not ``phantom``, a manifest or a built folder.

    >>> lines = plan("smoke", experiments=["2D-None"])
    >>> [" ".join(line.split()[:2]) for line in lines]
    ['# uadlab', 'uadlab data', 'uadlab reproduce', 'uadlab reproduce', 'uadlab reproduce']
    >>> lines[-1]
    'uadlab reproduce --profile smoke --data phantom --out results --seed 0 --experiments 2D-None'
    """
    if not isinstance(profile, str):
        raise TypeError(f"`profile` must be a profile name for a plan of shell commands, got {profile!r}")
    if study != "bengs2021":
        raise ValueError(f"`study` must be 'bengs2021' for a plan, got {study!r}")
    prof = get_profile(profile)
    names = ([*EXPERIMENTS, *TABLE1_BASELINES] if experiments is None
             else [parse_experiment(e).name for e in experiments])
    layout = ResultsLayout(out)
    common = ["--profile", prof.name]
    lines = ["# uadlab reproduce plan: run the data line first, then the run lines in any order or in "
             "parallel (each is resumable and skips finished work), then the last line to collect"]
    data_path = Path(data)
    if str(data) == "phantom" or data_path.suffix in (".yaml", ".yml"):
        data_dir = layout.data
        manifest = PHANTOM_MANIFEST if str(data) == "phantom" else data_path
        build = ["uadlab", "data", "build", "--manifest", str(manifest), "--out", str(data_dir), *common,
                 "--workers", str(workers)]
        lines.append(shlex.join(build + (["--root", str(root)] if root is not None else [])))
    elif (data_path / "dataset.json").exists():
        data_dir = data_path
    else:
        raise DatasetError(f"{data_path}: not 'phantom', a manifest (.yaml) or a folder built by "
                           "`uadlab data build` (no dataset.json)")
    for experiment, fraction in _planned_runs(prof, names):
        run = ["uadlab", "reproduce", *common, "--data", str(data_dir), "--out", str(layout.root),
               "--seed", str(seed), "--only-run", _only_run(experiment, fraction)]
        lines.append(shlex.join(run))
    collect = ["uadlab", "reproduce", *common, "--data", str(data), "--out", str(layout.root), "--seed", str(seed)]
    if experiments is not None:
        collect += ["--experiments", ",".join(names)]
    lines.append(shlex.join(collect + (["--root", str(root)] if root is not None else [])))
    return lines


def _only_run(experiment: str, fraction: float) -> str:
    """``--only-run`` value of a run: the experiment name, with ``@<percent>`` for a fraction."""
    return experiment if fraction == 1.0 else f"{experiment}@{round(fraction * 100)}"


def _parse_run_name(name: str, profile: Profile) -> tuple[str, float]:
    """``(experiment, fraction)`` of an ``--only-run`` value (:func:`_only_run`, or a run folder's
    :func:`run_name`, which writes ``:`` as ``_``) for this profile's runs; ValueError otherwise.
    """
    experiment, _, percent = str(name).partition("@")
    fractions = {round(f * 100): f for f in profile.fractions}
    try:
        if ":" not in experiment and "_" in experiment:
            experiment = experiment.replace("_", ":", 1)
        experiment = parse_experiment(experiment).name
        fraction = 1.0 if not percent else fractions[int(percent)]
    except (ValueError, KeyError):
        raise ValueError(f"`only_run` must be a run name such as '3D-Cube-n' or '2D-None@20' with a "
                         f"fraction of the profile ({sorted(fractions)} %), got {name!r}") from None
    return experiment, fraction


def _resolve_data(data: str | Path, layout: ResultsLayout, profile: Profile, root: Path | None, progress: bool,
                  workers: int, overwrite: bool) -> Path:
    """Return a built data-set folder for ``data``: ``phantom``, a manifest YAML, or a built folder."""
    data_path = Path(data)
    if str(data) == "phantom":
        return build_dataset(PHANTOM_MANIFEST, layout.data, profile=profile, progress=progress, workers=workers,
                             overwrite=overwrite)
    if data_path.suffix in (".yaml", ".yml"):
        return build_dataset(data_path, layout.data, root=root, profile=profile, progress=progress,
                             workers=workers, overwrite=overwrite)
    if (data_path / "dataset.json").exists():
        return data_path
    raise DatasetError(
        f"{data_path}: not 'phantom', a manifest (.yaml) or a folder built by `uadlab data build` "
        "(no dataset.json)"
    )


def reproduce(
    profile: str | Profile = "smoke",
    data: str | Path = "phantom",
    out: str | Path = "results",
    *,
    study: str = "bengs2021",
    experiments: list[str] | None = None,
    root: str | Path | None = None,
    seed: int = 0,
    workers: int = 1,
    labelled_cases: int = behrendt2024.DEFAULT_LABELLED_CASES,
    val_data: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = False,
    only_run: str | None = None,
) -> dict[str, Path]:
    """Run a whole study: by default Table 1 and Figs. 4–7 of Bengs et al. 2021 (Sec. 3).

    Args:
        profile: ``smoke`` (CI, minutes on 2 CPU cores), ``lab`` or ``paper``, or a
            :class:`~uadlab.profiles.Profile`.
        data: ``"phantom"`` (default data set), a manifest YAML (then ``root`` is the data folder),
            or a folder built by ``uadlab data build``.
        out: output folder; existing data, runs and evaluations inside it are reused, never
            discarded: a finished run is not trained again, and its evaluation is redone only when
            its checkpoint is newer than its ``metrics.json``.
        study: ``"bengs2021"``, ``"lambert2021"`` or ``"behrendt2024"`` (:data:`STUDIES`, see the
            module docstring).
        experiments: ``bengs2021`` only: experiment names, Table 1 names or ``MODEL:NAME``, any
            letter case (default ``None``: all 14 in Table 1 order, then :data:`TABLE1_BASELINES`);
            an empty list or an empty name is refused.
        root: data root of a real manifest.
        seed: seed of every training run.
        workers: processes building the data set at once (see :func:`uadlab.data.dataset.build_dataset`;
            the output does not depend on it). Unused when ``data`` is an already built folder.
        labelled_cases: ``behrendt2024`` only: labelled validation cases per lesion cohort for the
            weakly supervised segmenter (0: none).
        val_data: ``behrendt2024`` only: a built data set whose labelled validation cases fit the
            thresholds of lesion cohorts without a validation split (e.g. the real sample's test-only
            cases), see :func:`uadlab.behrendt2024.run_study`.
        overwrite: replace outputs in ``out`` this function did not write (``table1.csv``,
            ``table1.md`` without the ``reproduce.json`` it writes last), rebuild ``out/data``
            (cheap, from the cache; repairs a damaged build), and restart a run or evaluation whose
            config no longer matches. Finished runs with the same config are always kept.
        progress: show tqdm progress bars (notebook bars in Jupyter): one over the runs, one per
            training run (epochs) and one per prediction.
        only_run: ``bengs2021`` only: train and evaluate this one run (``"2D-None"``, ``"2D-None@20"``,
            ``"spatial-vae:3D-None"``) and stop, one line of a :func:`plan`; ``experiments`` is then ignored.

    Returns:
        Paths of the outputs: ``table1.csv``, ``table1.md``, ``figures``, ``runs`` (``bengs2021``),
        ``lambert2021.csv``, ``lambert2021.md``, ``runs`` (``lambert2021``), or ``behrendt2024.csv``,
        ``behrendt2024.md``, ``runs``, ``segmenters`` (``behrendt2024``); with ``only_run``: ``run``
        and ``evaluation``, the run's folders.

    Raises:
        ValueError: an unknown study, experiment or run name, an empty ``experiments`` or name,
            experiments or ``only_run`` given to ``lambert2021``, ``val_data`` given to another study
            than ``behrendt2024``, or ``workers`` below 1.
        TypeError: ``workers`` is not an int.
        DatasetError: ``data`` is not a data set, or it has no lesion cohort to evaluate.
        RunError: ``out`` is a file, or holds a ``table1.csv``/``table1.md`` that ``reproduce`` did
            not write, without ``overwrite``; or a run there has another config, without ``overwrite``.
        uadlab.errors.UadlabError: another process is writing ``out``.
    """
    prof = get_profile(profile)
    if study not in STUDIES:
        raise ValueError(f"`study` must be one of {list(STUDIES)}, got {study!r}")
    if study != "behrendt2024" and val_data is not None:
        raise ValueError(f"`val_data` must be None for study {study!r} (behrendt2024 only), got {val_data!r}")
    if study != "bengs2021" and experiments is not None:
        raise ValueError(f"`experiments` must be None for study {study!r} (it trains its own models), "
                         f"got {experiments!r}")
    if study != "bengs2021" and only_run is not None:
        raise ValueError(f"`only_run` must be None for study {study!r}, got {only_run!r}")
    if experiments is not None and (isinstance(experiments, str) or not list(experiments)
                                    or any(not str(e).strip() for e in experiments)):
        raise ValueError(f"`experiments` must name at least one experiment (None: all of Table 1), "
                         f"got {experiments!r}")
    names = ([*EXPERIMENTS, *TABLE1_BASELINES] if experiments is None
             else list(dict.fromkeys(parse_experiment(e).name for e in experiments)))
    single = None if only_run is None else _parse_run_name(only_run, prof)
    layout = ResultsLayout(out)
    _check_out(layout, overwrite)
    if single is not None:  # one line of a plan, beside the others: only its run and evaluation are locked
        data_dir = _resolve_data(data, layout, prof, Path(root) if root else None, progress, workers, overwrite)
        run_dir, _ = train_and_evaluate(single[0], profile, data_dir, layout, fraction=single[1], seed=seed,
                                        progress=progress, overwrite=overwrite)
        return {"run": run_dir, "evaluation": layout.evaluation(*single)}
    with folder_lock(layout.root):
        _check_out(layout, overwrite)
        return _reproduce(prof, profile, data, layout, study, names, root, seed, workers, overwrite, progress,
                          labelled_cases=labelled_cases, val_data=val_data)


def _check_out(layout: ResultsLayout, overwrite: bool) -> None:
    """RunError unless ``layout.root`` is absent, a folder ``reproduce`` wrote, or one without its tables."""
    out = layout.root
    if out.exists() and not out.is_dir():
        raise RunError(f"{out}: exists and is not a folder; choose another --out")
    foreign = [name for name in ("dataset.json", "config.yaml", "checkpoint.pt") if (out / name).exists()]
    if foreign:
        what = "a built data set" if foreign[0] == "dataset.json" else "a training run"
        raise RunError(f"{out}: holds {what} ({foreign[0]}); reproduce never writes into one, choose another --out")
    tables = [path for path in (layout.table1_csv, layout.table1_md) if path.exists()]
    if tables and not layout.record.exists() and not overwrite:
        raise RunError(f"{tables[0]}: exists and was not written by `uadlab reproduce` (no {layout.record.name} "
                       "beside it); pass overwrite=True (--overwrite) to replace it")


def _reproduce(prof: Profile, profile: str | Profile, data: str | Path, layout: ResultsLayout, study: str,
               names: list[str], root: str | Path | None, seed: int, workers: int, overwrite: bool,
               progress: bool, *, labelled_cases: int = behrendt2024.DEFAULT_LABELLED_CASES,
               val_data: str | Path | None = None) -> dict[str, Path]:
    """:func:`reproduce` once the output folder is checked and locked."""
    layout.root.mkdir(parents=True, exist_ok=True)
    data_dir = _resolve_data(data, layout, prof, Path(root) if root else None, progress, workers, overwrite)
    dataset = load_dataset(data_dir)
    if not dataset.lesion_cohorts:
        raise DatasetError(f"{data_dir}: no lesion cohort to evaluate on")
    if study == "lambert2021":
        return _lambert2021(profile, data_dir, dataset, ResultsLayout(layout.root / study), seed, overwrite, progress)
    if study == "behrendt2024":
        return behrendt2024.run_study(profile, data_dir, dataset, layout.root / study, seed=seed,
                                      labelled_cases=labelled_cases, val_data=val_data, progress=progress)

    runs = _planned_runs(prof, names)

    rows, size_rows, subject_tables = [], [], {}
    for experiment, fraction in _runs_bar(runs, progress):
        _, metrics = train_and_evaluate(experiment, profile, data_dir, layout, fraction=fraction, seed=seed,
                                        progress=progress, overwrite=overwrite)
        for cohort, m in metrics["cohorts"].items():
            if fraction == 1.0:
                rows.append({"experiment": experiment, "dataset": cohort,
                             **{k: m[k] for k in _TABLE1_COLUMNS[2:]}})
            if experiment in DATA_SIZE_EXPERIMENTS:
                size_rows.append({"experiment": experiment, "fraction": fraction, "dataset": cohort,
                                  "auprc": m["auprc"], "dice_d": m["dice_d"]})
        if fraction == 1.0:
            subject_tables[experiment] = pd.read_csv(layout.subjects(experiment))

    table = pd.DataFrame(rows, columns=_TABLE1_COLUMNS)
    with atomic_write(layout.table1_csv, overwrite=True) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_write(layout.table1_md, overwrite=True) as tmp:
        tmp.write_text(analysis.table1_markdown(table))

    layout.figures.mkdir(exist_ok=True)
    _write_figures(layout, dataset, table, subject_tables, pd.DataFrame(size_rows), progress)
    with atomic_write(layout.record, overwrite=True) as tmp:
        tmp.write_text(json.dumps({"study": study, "profile": prof.name, "data": str(data_dir), "seed": seed,
                                   "experiments": names, "runs": [run_name(*r) for r in runs]}, indent=2))
    return {"table1.csv": layout.table1_csv, "table1.md": layout.table1_md, "figures": layout.figures,
            "runs": layout.runs}


def _lambert2021(profile: str | Profile, data_dir: Path, dataset, layout: ResultsLayout, seed: int,
                 overwrite: bool, progress: bool) -> dict[str, Path]:
    """Lambert et al.'s Table 1: four models with their loss, scored by their protocol and by Bengs et al.'s."""
    rows = []
    for experiment, label in LAMBERT_EXPERIMENTS.items():
        run_dir, ours = train_and_evaluate(experiment, profile, data_dir, layout, seed=seed, progress=progress,
                                           overwrite=overwrite, loss="lambert")
        ours = ours["cohorts"]
        model = load_run(run_dir)[0]
        for cohort in dataset.lesion_cohorts:
            maps = predict(model, dataset, dataset.ids(cohort=cohort, split="test"), progress=progress)
            rows.append({"model": label, "experiment": experiment, "dataset": cohort, **lambert_scores(maps, seed=seed),
                         **{f"bengs_{k}": ours[cohort][k] for k in ("dice_d", "dice_s_mean", "auprc")}})
    table = pd.DataFrame(rows)
    csv, md = layout.root / "lambert2021.csv", layout.root / "lambert2021.md"
    with atomic_write(csv, overwrite=True) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_write(md, overwrite=True) as tmp:
        tmp.write_text(lambert_markdown(table))
    return {"lambert2021.csv": csv, "lambert2021.md": md, "runs": layout.runs}


def _runs_bar(runs: list, progress: bool) -> Any:
    """``runs``, wrapped in a tqdm bar ("reproduce: runs", one step per run) when ``progress``."""
    if not progress:
        return runs
    from tqdm.auto import tqdm

    return tqdm(runs, desc="reproduce: runs", unit="run")


def _train(config: TrainConfig, run_dir: Path, overwrite: bool, progress: bool) -> Path:
    """Resume (or start) a run; with ``overwrite``, a run whose config differs is started afresh."""
    try:
        return train(config, run_dir, resume=True, progress=progress).run_dir
    except RunError:
        holds_run = any((run_dir / name).exists() for name in (RUN_CONFIG, RUN_CHECKPOINT))
        if not (overwrite and holds_run):  # never discard a folder that holds something else
            raise
    return train(config, run_dir, overwrite=True, progress=progress).run_dir


def train_and_evaluate(experiment: str, profile: str | Profile, data_dir: str | Path, layout: ResultsLayout, *,
                       fraction: float = 1.0, seed: int = 0, progress: bool = False, overwrite: bool = False,
                       **config: object) -> tuple[Path, dict]:
    """Train one run (resuming, or reusing a finished one) and evaluate it, in ``layout``'s folders.

    The step every study repeats: the run goes to ``layout.run(experiment, fraction)``; its
    ``metrics.json`` in ``layout.evaluation(...)`` is read back when newer than its checkpoint, else
    the run is evaluated anew (:func:`uadlab.evaluation.evaluate_run`: threshold on each lesion
    cohort's validation split, metrics on its test split).

    Args:
        experiment: experiment name (``3D-Cube-n``, ``spatial-vae:2D-None``...).
        profile: profile name or :class:`~uadlab.profiles.Profile`.
        data_dir: a built data set.
        layout: the output folder.
        fraction: share of the healthy training split.
        seed: the run's seed.
        progress: tqdm bars.
        overwrite: restart the run when its config differs from this one (otherwise a RunError);
            a finished run with the same config is always kept.
        **config: further :class:`~uadlab.training.TrainConfig` fields (e.g. ``loss="lambert"``).

    Returns:
        The run folder and its metrics (``metrics.json``'s content).

    Raises:
        ValueError, TypeError: a bad config; RunError, DatasetError: as :func:`~uadlab.training.train`.
    """
    train_config = TrainConfig(experiment=experiment, profile=profile, data=str(data_dir), fraction=fraction,
                               seed=seed, **config)
    run_dir = _train(train_config, layout.run(experiment, fraction), overwrite, progress)
    metrics_file = layout.metrics(experiment, fraction)
    if metrics_file.exists() and metrics_file.stat().st_mtime >= (run_dir / RUN_CHECKPOINT).stat().st_mtime:
        return run_dir, json.loads(metrics_file.read_text())
    return run_dir, evaluate_run(run_dir, data_dir, layout.evaluation(experiment, fraction), overwrite=True,
                                 progress=progress)


def _write_figures(layout: ResultsLayout, dataset, table: pd.DataFrame,
                   subject_tables: dict[str, pd.DataFrame], size_table: pd.DataFrame,
                   progress: bool) -> None:
    """Figs. 4–7 as the paper draws them (Sec. 3), for :data:`FIGURE_EXPERIMENTS` and the best run.

    The best run has the highest DICE_D averaged over the test sets. Fig. 4: DICE_S over lesion
    size with a cubic fit, one figure per test set. Fig. 5: AUPRC (and DICE_D) over the share of
    training data, averaged over the test sets. Fig. 6: slice-wise detection on all test sets
    pooled. Fig. 7: best, median and worst case of the best run, one figure per test set, also as
    interactive plotly HTML (orthogonal slices of the worst case with its anomaly map).
    """
    figures = layout.figures
    best = analysis.best_experiment(table)
    shown = [e for e in FIGURE_EXPERIMENTS if e in subject_tables] or [best]

    for cohort in dataset.lesion_cohorts:
        sizes = pd.concat([analysis.lesion_size_table(subject_tables[e]).assign(experiment=e) for e in shown],
                          ignore_index=True)
        sizes = sizes[sizes["cohort"] == cohort]
        if sizes.empty:
            continue
        fits = {e: analysis.lesion_size_fit(part) for e, part in sizes.groupby("experiment", sort=False)
                if part["log10_lesion_voxels"].nunique() >= 4}
        fig = viz.lesion_size_plot(sizes, fits)
        fig.axes[0].set_title(f"Fig. 4: DICE_S vs lesion size, {cohort} (cubic fit)", fontsize=10)
        _save(fig, figures / f"fig4_lesion_size_{cohort}.png")
    if not size_table.empty:
        averaged = size_table.groupby(["experiment", "fraction"], sort=False)[["auprc", "dice_d"]].mean().reset_index()
        for metric in ("auprc", "dice_d"):
            _save(viz.data_size_plot(averaged, metric=metric), figures / f"fig5_data_size_{metric}.png")

    test_ids = [i for cohort in dataset.lesion_cohorts for i in dataset.ids(cohort=cohort, split="test")]
    curves = {}
    for experiment in dict.fromkeys(shown + [best]):
        maps = predict(load_run(layout.run(experiment))[0], dataset, test_ids, progress=progress)
        if experiment in shown:
            curves[experiment] = analysis.slice_detection_curve(maps)
        if experiment == best:
            _write_examples(figures, experiment, maps, table)
    _save(viz.slice_detection_plot(curves), figures / "fig6_slice_detection.png")


def _write_examples(figures: Path, experiment: str, maps: dict, table: pd.DataFrame) -> None:
    """Fig. 7 of one run, per test set, at that test set's validation threshold."""
    rows = table.loc[table["experiment"] == experiment, ["dataset", "threshold"]]
    for cohort, threshold in rows.itertuples(index=False):
        cohort_maps = [m for m in maps.values() if m.cohort == cohort and m.lesion_voxels > 0]
        if not cohort_maps:
            continue
        cases = analysis.example_cases(cohort_maps, float(threshold), n=min(3, len(cohort_maps)))
        _save(viz.example_cases_plot(cases, threshold=float(threshold)),
              figures / f"fig7_examples_{cohort}_{run_name(experiment)}.png")
        worst = next(m for m in cohort_maps if m.subject_id == cases[-1].subject_id)
        centre = tuple(int(i) for i in np.argwhere(worst.lesion_mask).mean(axis=0))
        _save(viz.orthogonal_slices(worst.image, worst.anomaly_map, index=centre,
                                    title=f"{experiment}, {cohort}, {worst.subject_id}: anomaly map"),
              figures / f"fig7_examples_{cohort}_{run_name(experiment)}.html")


def _save(fig, path: Path) -> None:
    """Write a figure with :func:`uadlab.viz.figures.save_figure` and free a matplotlib figure's memory."""
    viz.save_figure(fig, path)
    if hasattr(fig, "clf"):
        fig.clf()
