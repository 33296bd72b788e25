"""The main job: reproduce Table 1 and Figs. 4–7 of Bengs et al. 2021 on one data set.

``uadlab reproduce --profile smoke|lab|paper --data phantom|DIR --out results/`` runs, in order:

1. **Data** — build the phantom (``data_manifests/phantom.yaml``) or a real manifest into
   ``OUT/data`` with :func:`uadlab.data.build_dataset`, or reuse an already built folder.
2. **Training** — every Table 1 experiment (14 by default: 2D/3D × None, Patch/Cube, Multi, Half ×
   0/n) on 100 % of the healthy training split, plus the data-set-size runs (Fig. 5) for
   :data:`DATA_SIZE_EXPERIMENTS` at the profile's fractions. Runs live in ``OUT/runs/<name>`` and are
   resumed, so rerunning skips finished experiments and continues a stopped one.
3. **Evaluation** — each run on each lesion cohort's test split with the threshold from that
   cohort's validation split (:func:`uadlab.evaluation.evaluate_run`), written to
   ``OUT/evaluation/<name>/``.
4. **Tables and figures** — ``OUT/table1.csv`` (experiment, dataset, dice_d, dice_s_mean,
   dice_s_std, auprc, threshold), ``OUT/table1.md`` (laid out like the paper's Table 1) and
   ``OUT/figures/`` (Fig. 4 lesion size, Fig. 5 data size, Fig. 6 slice-wise detection, Fig. 7
   example cases).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from uadlab import analysis, viz
from uadlab.data import build_dataset, load_dataset
from uadlab.erasing import EXPERIMENTS, parse_experiment
from uadlab.errors import DatasetError
from uadlab.evaluation import evaluate_run
from uadlab.inference import predict
from uadlab.io import atomic_write
from uadlab.profiles import Profile, get_profile
from uadlab.training import TrainConfig, load_run, train

__all__ = ["DATA_SIZE_EXPERIMENTS", "PHANTOM_MANIFEST", "reproduce", "run_name"]

#: Manifest of the default data set (shipped beside the package in the source tree).
PHANTOM_MANIFEST = Path(__file__).resolve().parents[1] / "data_manifests" / "phantom.yaml"

#: Experiments of the data-set-size study (Fig. 5): the 2D and 3D baselines and the best 3D erasing.
DATA_SIZE_EXPERIMENTS: tuple[str, ...] = ("2D-None", "3D-None", "3D-Cube-n")

_TABLE1_COLUMNS = ["experiment", "dataset", "dice_d", "dice_s_mean", "dice_s_std", "auprc", "threshold"]


def run_name(experiment: str, fraction: float = 1.0) -> str:
    """Folder name of a run: the experiment name, with ``@<percent>`` for a training-set fraction.

    >>> run_name("3D-Cube-n"), run_name("2D-None", 0.2)
    ('3D-Cube-n', '2D-None@20')
    """
    return experiment if fraction == 1.0 else f"{experiment}@{round(fraction * 100)}"


def _resolve_data(data: str | Path, out: Path, profile: Profile, root: Path | None, progress: bool) -> Path:
    """Return a built data-set folder for ``data``: ``phantom``, a manifest YAML, or a built folder."""
    data_path = Path(data)
    if str(data) == "phantom":
        return build_dataset(PHANTOM_MANIFEST, out / "data", profile=profile, progress=progress)
    if data_path.suffix in (".yaml", ".yml"):
        return build_dataset(data_path, out / "data", root=root, profile=profile, progress=progress)
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
    experiments: list[str] | None = None,
    root: str | Path | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Path]:
    """Run the whole study and write Table 1 and Figs. 4–7 (Bengs et al. 2021, Sec. 3).

    Args:
        profile: ``smoke`` (CI, minutes on 2 CPU cores), ``lab`` or ``paper``, or a
            :class:`~uadlab.profiles.Profile`.
        data: ``"phantom"`` (default data set), a manifest YAML (then ``root`` is the data folder),
            or a folder built by ``uadlab data build``.
        out: output folder; existing data, runs and evaluations inside it are reused, never
            discarded: a finished run is not trained again, and its evaluation is redone only when
            its checkpoint is newer than its ``metrics.json``.
        experiments: subset of Table 1 names (default: all 14, in Table 1 order).
        root: data root of a real manifest.
        seed: seed of every training run.
        progress: show tqdm progress bars.

    Returns:
        Paths of the outputs: ``table1.csv``, ``table1.md``, ``figures``, ``runs``.

    Raises:
        ValueError: an unknown experiment name.
        DatasetError: ``data`` is not a data set, or it has no lesion cohort to evaluate.
    """
    prof = get_profile(profile)
    names = list(EXPERIMENTS) if experiments is None else [parse_experiment(e).name for e in experiments]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = _resolve_data(data, out, prof, Path(root) if root else None, progress)
    dataset = load_dataset(data_dir)
    if not dataset.lesion_cohorts:
        raise DatasetError(f"{data_dir}: no lesion cohort to evaluate on")

    runs = [(name, 1.0) for name in names]
    runs += [(name, f) for name in DATA_SIZE_EXPERIMENTS if name in names for f in prof.fractions if f != 1.0]

    rows, size_rows, subject_tables = [], [], {}
    for experiment, fraction in runs:
        name = run_name(experiment, fraction)
        config = TrainConfig(experiment=experiment, profile=profile, data=str(data_dir), fraction=fraction, seed=seed)
        run_dir = train(config, out / "runs" / name, resume=True, progress=progress).run_dir
        metrics = _evaluation(run_dir, data_dir, out / "evaluation" / name, progress)
        for cohort, m in metrics["cohorts"].items():
            if fraction == 1.0:
                rows.append({"experiment": experiment, "dataset": cohort,
                             **{k: m[k] for k in _TABLE1_COLUMNS[2:]}})
            if experiment in DATA_SIZE_EXPERIMENTS:
                size_rows.append({"experiment": experiment, "fraction": fraction, "dataset": cohort,
                                  "auprc": m["auprc"], "dice_d": m["dice_d"]})
        if fraction == 1.0:
            subject_tables[experiment] = pd.read_csv(out / "evaluation" / name / "subjects.csv")

    table = pd.DataFrame(rows, columns=_TABLE1_COLUMNS)
    with atomic_write(out / "table1.csv", overwrite=True) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_write(out / "table1.md", overwrite=True) as tmp:
        tmp.write_text(analysis.table1_markdown(table))

    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    _write_figures(figures, dataset, out, table, subject_tables, pd.DataFrame(size_rows), progress)
    with atomic_write(out / "reproduce.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps({"profile": prof.name, "data": str(data_dir), "seed": seed,
                                   "experiments": names, "runs": [run_name(*r) for r in runs]}, indent=2))
    return {"table1.csv": out / "table1.csv", "table1.md": out / "table1.md", "figures": figures,
            "runs": out / "runs"}


def _evaluation(run_dir: Path, data_dir: Path, eval_dir: Path, progress: bool) -> dict:
    """The run's ``metrics.json``: read back when newer than its checkpoint, else evaluated anew."""
    metrics_file = eval_dir / "metrics.json"
    if metrics_file.exists() and metrics_file.stat().st_mtime >= (run_dir / "checkpoint.pt").stat().st_mtime:
        return json.loads(metrics_file.read_text())
    return evaluate_run(run_dir, data_dir, eval_dir, overwrite=True, progress=progress)


def _write_figures(figures: Path, dataset, out: Path, table: pd.DataFrame,
                   subject_tables: dict[str, pd.DataFrame], size_table: pd.DataFrame,
                   progress: bool) -> None:
    """Figs. 4–7 for the two baselines and the best run (highest mean DICE_D over cohorts).

    Fig. 4 (DICE_S over lesion size, cubic fit per experiment) and Fig. 5 (AUPRC over the share of
    training data) come from the tables; Figs. 6 (slice-wise detection) and 7 (best / median /
    worst case) reconstruct each cohort's test split again with the chosen models. Fig. 7 is also
    written as interactive plotly HTML (orthogonal slices of the worst case with its anomaly map).
    """
    ranking = table.groupby("experiment", sort=False)["dice_d"].mean().sort_values(ascending=False, kind="stable")
    best = str(ranking.index[0])
    shown = list(dict.fromkeys([e for e in ("2D-None", "3D-None") if e in subject_tables] + [best]))

    sizes = pd.concat([analysis.lesion_size_table(subject_tables[e]).assign(experiment=e) for e in shown],
                      ignore_index=True)
    fits = {e: analysis.lesion_size_fit(part) for e, part in sizes.groupby("experiment", sort=False)
            if part["log10_lesion_voxels"].nunique() >= 4}
    _save(viz.lesion_size_plot(sizes, fits), figures / "fig4_lesion_size.png")
    if not size_table.empty:
        for metric in ("auprc", "dice_d"):
            _save(viz.data_size_plot(size_table, metric=metric), figures / f"fig5_data_size_{metric}.png")

    models = {e: load_run(out / "runs" / run_name(e))[0] for e in shown}
    for cohort in dataset.lesion_cohorts:
        ids = dataset.ids(cohort=cohort, split="test")
        if not ids:
            continue
        curves = {}
        for experiment, model in models.items():
            maps = predict(model, dataset, ids, progress=progress)
            curves[experiment] = analysis.slice_detection_curve(maps)
            if experiment == best:
                threshold = float(table.query("experiment == @experiment and dataset == @cohort")["threshold"].iloc[0])
                cases = analysis.example_cases(maps, threshold, n=min(3, sum(m.lesion_voxels > 0 for m in maps.values())))
                _save(viz.example_cases_plot(cases, threshold=threshold),
                      figures / f"fig7_examples_{cohort}_{experiment}.png")
                worst = maps[cases[-1].subject_id]
                index = (*np.argwhere(worst.lesion_mask).mean(axis=0).astype(int),) if worst.lesion_voxels else None
                _save(viz.orthogonal_slices(worst.image, worst.anomaly_map, index=index,
                                            title=f"{experiment}, {cohort}, {worst.subject_id}: anomaly map"),
                      figures / f"fig7_examples_{cohort}_{experiment}.html")
        _save(viz.slice_detection_plot(curves), figures / f"fig6_slice_detection_{cohort}.png")


def _save(fig, path: Path) -> None:
    """Write a figure with :func:`uadlab.viz.save_figure` and free a matplotlib figure's memory."""
    viz.save_figure(fig, path)
    if hasattr(fig, "clf"):
        fig.clf()
