"""Bengs et al. 2021: Table 1 (2D/3D VAEs, spatial erasing) and Figs. 4–7, the default study.

Runs: every experiment (14 by default: 2D/3D × None, Patch/Cube, Multi, Half × 0/n, then the
``mean-image`` floor of :data:`TABLE1_BASELINES`) on all of the healthy training split; with one seed
and the built-in data, also the data-set-size runs (Fig. 5) of :data:`DATA_SIZE_EXPERIMENTS` at the
profile's fractions. Each run is scored on every lesion cohort's test split with the threshold from
that cohort's validation split (:func:`uadlab.evaluation.protocol.evaluate_run`).

Outputs, into ``OUT``:

- one seed: ``table1.csv`` (experiment, dataset, dice_d, dice_s_mean, dice_s_std, auprc, threshold),
  ``table1.md`` (laid out like the paper's Table 1) and ``figures/`` (Fig. 4 lesion size, Fig. 5 data
  size, Fig. 6 slice-wise detection, Fig. 7 example cases of the best run);
- several seeds, or a study file: ``table1_seeds.csv`` (one row per experiment, cohort and seed),
  ``table1.csv`` / ``table1.md`` (mean over seeds, sd over seeds beside the per-subject sd),
  ``paired.csv`` (each erasing experiment against its ``None`` baseline, resampling seeds and
  subjects), ``figures/seeds_*.png`` (every seed's score) and ``report.md`` (all of it on one page).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from uadlab.evaluation import analysis
from uadlab.evaluation.inference import predict
from uadlab.layout import run_name
from uadlab.studies import tables
from uadlab.studies.context import StudyContext, cohort_labels
from uadlab.studies.spec import DataSource, RunSpec, Study, experiment_names
from uadlab.training import load_run
from uadlab.training.experiments import EXPERIMENTS
from uadlab.viz import figures as viz

__all__ = ["Bengs2021", "DATA_SIZE_EXPERIMENTS", "FIGURE_EXPERIMENTS", "TABLE1_BASELINES", "TABLE1_COLUMNS",
           "TABLE1_SEED_COLUMNS"]

#: Experiments of Figs. 4–6 and of the data-set-size study (Fig. 5): the 2D and 3D baselines and
#: their erasing counterparts the paper draws (2D-Patch-n, 3D-Cube-n).
FIGURE_EXPERIMENTS: tuple[str, ...] = ("2D-None", "2D-Patch-n", "3D-None", "3D-Cube-n")
DATA_SIZE_EXPERIMENTS: tuple[str, ...] = FIGURE_EXPERIMENTS
#: Rows Table 1 gets beside the paper's 14: the no-learning floor every model must clear.
TABLE1_BASELINES: tuple[str, ...] = ("mean-image:3D-None",)
#: Columns of ``table1.csv`` with one seed.
TABLE1_COLUMNS: tuple[str, ...] = ("experiment", "dataset", "dice_d", "dice_s_mean", "dice_s_std", "auprc",
                                   "threshold")
#: Columns of ``table1_seeds.csv``: ``data`` is the data set, ``dataset`` the cohort (Table 1's column).
TABLE1_SEED_COLUMNS: tuple[str, ...] = ("experiment", "data", "dataset", "seed", "dice_d", "dice_s_mean",
                                        "dice_s_std", "auprc", "threshold")


class Bengs2021(Study):
    """Table 1 and Figs. 4–7 of Bengs et al. 2021 (Sec. 3) on any data sets.

    Args:
        sources: the data sets, the training one first (see :class:`~uadlab.studies.spec.DataSource`).
        experiments: experiment names, any letter case (``None``: the 14 of Table 1, then
            :data:`TABLE1_BASELINES`); distinct, at least one.
        name, argument, profile, seeds, description: as :class:`~uadlab.studies.spec.Study` (a study file's).
        from_file: the study comes from a study file: always the seed tables, no data-size runs.

    Raises:
        ValueError: an empty or repeated experiment list, an unknown experiment.
    """

    protocol = "bengs2021"
    tables = ("table1.csv", "table1.md", "table1_seeds.csv", "paired.csv", "report.md")

    def __init__(self, sources: tuple[DataSource, ...], experiments: list[str] | None = None, *,
                 name: str = "bengs2021", argument: str = "bengs2021", profile: str | None = None,
                 seeds: tuple[int, ...] | None = None, description: str = "", from_file: bool = False) -> None:
        self.sources, self.name, self.argument = sources, name, argument
        self.profile, self.seeds, self.description, self.from_file = profile, seeds, description, from_file
        self.experiments = ([*EXPERIMENTS, *TABLE1_BASELINES] if experiments is None
                            else experiment_names(experiments))

    def runs(self, ctx: StudyContext, seed: int) -> list[RunSpec]:
        """Every experiment on all data; with one seed and built-in data, then the data-size runs."""
        runs = [RunSpec(e, seed) for e in self.experiments]
        if self.from_file or len(ctx.seeds) > 1:
            return runs
        return runs + [RunSpec(e, seed, f) for e in DATA_SIZE_EXPERIMENTS if e in self.experiments
                       for f in ctx.resolved_profile.fractions if f != 1.0]

    def score(self, ctx: StudyContext, spec: RunSpec) -> list[dict[str, Any]]:
        """One row per scored data set and lesion cohort: Table 1's metrics at the validation threshold."""
        run_dir = ctx.train(spec).run_dir
        return [{"experiment": spec.experiment, "fraction": spec.fraction, "seed": spec.seed, "data": data,
                 "dataset": cohort, **{k: m[k] for k in TABLE1_COLUMNS[2:]}}
                for data in ctx.scored() for cohort, m in ctx.evaluate(spec, run_dir, data)["cohorts"].items()]

    def collect(self, ctx: StudyContext, rows: pd.DataFrame, seeds: list[int]) -> dict[str, Path]:
        """Table 1 and Figs. 4–7 with one seed; the seed tables, figures and report otherwise."""
        if self.from_file or len(seeds) > 1:
            return self._collect_seeds(ctx, rows, seeds)
        table = rows.loc[rows["fraction"] == 1.0, list(TABLE1_COLUMNS)].reset_index(drop=True)
        outputs = tables.write_table(ctx.layout.root, "table1", table, analysis.table1_markdown)
        ctx.layout.figures.mkdir(exist_ok=True)
        sizes = rows[rows["experiment"].isin(DATA_SIZE_EXPERIMENTS)]
        _write_figures(ctx, table, sizes[["experiment", "fraction", "dataset", "auprc", "dice_d"]], seeds[0])
        return {**outputs, "figures": ctx.layout.figures, "runs": ctx.layout.runs}

    def _collect_seeds(self, ctx: StudyContext, rows: pd.DataFrame, seeds: list[int]) -> dict[str, Path]:
        root = ctx.layout.root
        per_seed = rows.loc[rows["fraction"] == 1.0, list(TABLE1_SEED_COLUMNS)].reset_index(drop=True)
        per_seed["dataset"] = cohort_labels(per_seed)
        outputs = tables.write_seed_table(root, "table1", per_seed, keys=("experiment", "dataset"),
                                          means=("dice_d", "dice_s_mean", "dice_s_std", "auprc", "threshold"),
                                          spread=("dice_d", "dice_s_mean", "auprc"), markdown=analysis.table1_markdown)
        by_seed = {e: {s: ctx.subjects(RunSpec(e, s)) for s in seeds} for e in self.experiments}
        pairs = [(a, b, by_seed[a], by_seed[b]) for a, b in analysis.baseline_pairs(by_seed)]
        paired, skipped = tables.paired_table(ctx.layout.paired, pairs)
        ctx.layout.figures.mkdir(exist_ok=True)
        for metric in ("dice_d", "auprc"):
            tables.save_figure(viz.seed_spread_plot(per_seed, metric=metric),
                               ctx.layout.figures / f"seeds_{metric}.png")
        summary = pd.read_csv(outputs["table1.csv"])
        report = tables.write_text(ctx.layout.report, _report(self, ctx, seeds, summary, paired, skipped))
        return {**outputs, "paired.csv": ctx.layout.paired, "report.md": report, "figures": ctx.layout.figures,
                "runs": ctx.layout.runs, "data": ctx.out.data}

    def options(self) -> list[str]:
        """``--experiments`` when the study runs a subset."""
        return [] if self.experiments == [*EXPERIMENTS, *TABLE1_BASELINES] else \
            ["--experiments", ",".join(self.experiments)]


def _write_figures(ctx: StudyContext, table: pd.DataFrame, size_table: pd.DataFrame, seed: int) -> None:
    """Figs. 4–7 as the paper draws them (Sec. 3), for :data:`FIGURE_EXPERIMENTS` and the best run.

    The best run has the highest DICE_D averaged over the test sets. Fig. 4: DICE_S over lesion
    size with a cubic fit (a lower degree with fewer than 5 sizes), one figure per test set. Fig. 5:
    AUPRC (and DICE_D) over the share of training data, averaged over the test sets. Fig. 6:
    slice-wise detection on all test sets pooled. Fig. 7: best, median and worst case of the best
    run, one figure per test set, also as interactive plotly HTML (orthogonal slices of the worst case
    with its anomaly map).
    """
    figures, dataset = ctx.layout.figures, ctx.dataset(ctx.train_data)
    best = analysis.best_experiment(table)
    experiments = list(dict.fromkeys(table["experiment"]))
    shown = [e for e in FIGURE_EXPERIMENTS if e in experiments] or [best]
    subject_tables = {e: pd.read_csv(ctx.layout.subjects(e, 1.0, seed)) for e in shown}
    for cohort in dataset.lesion_cohorts:
        sizes = pd.concat([analysis.lesion_size_table(subject_tables[e]).assign(experiment=e) for e in shown],
                          ignore_index=True)
        sizes = sizes[sizes["cohort"] == cohort]
        if sizes.empty:
            continue
        fits = {e: analysis.lesion_size_fit(part) for e, part in sizes.groupby("experiment", sort=False)
                if part["log10_lesion_voxels"].nunique() >= analysis.LESION_SIZE_FIT_MIN_SIZES}
        fig = viz.lesion_size_plot(sizes, fits, title=f"Fig. 4: DICE_S vs lesion size, {cohort}")
        tables.save_figure(fig, figures / f"fig4_lesion_size_{cohort}.png")
    if not size_table.empty:
        averaged = size_table.groupby(["experiment", "fraction"], sort=False)[["auprc", "dice_d"]].mean().reset_index()
        for metric in ("auprc", "dice_d"):
            tables.save_figure(viz.data_size_plot(averaged, metric=metric), figures / f"fig5_data_size_{metric}.png")
    test_ids = [i for cohort in dataset.lesion_cohorts for i in dataset.ids(cohort=cohort, split="test")]
    curves = {}
    for experiment in dict.fromkeys(shown + [best]):
        maps = predict(load_run(ctx.layout.run(experiment, 1.0, seed))[0], dataset, test_ids, progress=ctx.progress)
        if experiment in shown:
            curves[experiment] = analysis.slice_detection_curve(maps)
        if experiment == best:
            _write_examples(figures, experiment, maps, table)
    tables.save_figure(viz.slice_detection_plot(curves), figures / "fig6_slice_detection.png")


def _write_examples(figures: Path, experiment: str, maps: dict, table: pd.DataFrame) -> None:
    """Fig. 7 of one run, per test set, at that test set's validation threshold."""
    rows = table.loc[table["experiment"] == experiment, ["dataset", "threshold"]]
    for cohort, threshold in rows.itertuples(index=False):
        cohort_maps = [m for m in maps.values() if m.cohort == cohort and m.lesion_voxels > 0]
        if not cohort_maps:
            continue
        cases = analysis.example_cases(cohort_maps, float(threshold), n=min(3, len(cohort_maps)))
        tables.save_figure(viz.example_cases_plot(cases, threshold=float(threshold)),
                           figures / f"fig7_examples_{cohort}_{run_name(experiment)}.png")
        worst = next(m for m in cohort_maps if m.subject_id == cases[-1].subject_id)
        centre = tuple(int(i) for i in np.argwhere(worst.lesion_mask).mean(axis=0))
        tables.save_figure(viz.orthogonal_slices(worst.image, worst.anomaly_map, index=centre,
                                                 title=f"{experiment}, {cohort}, {worst.subject_id}: anomaly map"),
                           figures / f"fig7_examples_{cohort}_{run_name(experiment)}.html")


def _report(study: Bengs2021, ctx: StudyContext, seeds: list[int], summary: pd.DataFrame, paired: pd.DataFrame,
            skipped: list[str]) -> str:
    """``report.md``: the data sets, Table 1 with seed spread, the paired comparisons, the figures."""
    lines = [f"# Study {study.name}", ""] + ([study.description.strip(), ""] if study.description.strip() else [])
    lines += [f"Profile `{ctx.resolved_profile.name}`, experiments {', '.join(study.experiments)}, training seeds "
              f"{', '.join(map(str, seeds))}.", "", "| data set | role | manifest | root |", "|---|---|---|---|"]
    lines += [f"| {d.name} | {d.role} | `{d.manifest or d.built}` | `{d.root or '-'}` |" for d in study.sources]
    lines += ["", "## Table 1 (percent)", "", analysis.table1_markdown(summary).rstrip(), "",
              "## Erasing against its baseline (per-subject DICE and AUPRC, paired over subjects, resampling seeds)",
              "", *_paired_lines(paired)]
    lines += [f"\nNot compared: {why}" for why in skipped]
    lines += ["", "## Every seed", "", "![DICE_D per seed](figures/seeds_dice_d.png)",
              "![AUPRC per seed](figures/seeds_auprc.png)", ""]
    return "\n".join(lines)


def _paired_lines(paired: pd.DataFrame) -> list[str]:
    """The comparisons as Markdown rows, each with its verdict: beyond seed and subject noise or not."""
    if paired.empty:
        return ["No erasing experiment with its `None` baseline in this study."]
    lines = ["| experiment | baseline | test set | metric | subjects | difference | 95 % interval "
             "| beyond seed and subject noise? |", "|---|---|---|---|---|---|---|---|"]
    for row in paired.itertuples(index=False):
        verdict = ("no (under 0.01 points)" if abs(100 * row.difference) < 0.005
                   else "yes, better" if row.ci_low > 0 else "yes, worse" if row.ci_high < 0 else "no")
        label = "DICE_S" if row.metric == "dice" else "AUPRC"
        lines.append(f"| {row.experiment} | {row.baseline} | {row.cohort} | {label} | {row.n_subjects} | "
                     f"{100 * row.difference:+.2f} | [{100 * row.ci_low:+.2f}, {100 * row.ci_high:+.2f}] | {verdict} |")
    if min(paired["n_seeds_a"].min(), paired["n_seeds_b"].min()) < 3 or paired["n_subjects"].min() < 5:
        lines += ["", "With fewer than 3 seeds per method or 5 test subjects, a bootstrap has few distinct "
                      "resamples: read these intervals as rough."]
    return lines
