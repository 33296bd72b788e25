"""The model zoo: every registered family, in 2D and in 3D, trained and scored by one honest protocol.

The benchmarks the field compares against (UPD study, MedIAnomaly, UAD-IMAG) train every method in
2D only, and most pick thresholds on the test set. This study asks Bengs et al. 2021's question (does
3D context help?) across families: each family of :data:`uadlab.models.MODELS` in each dimension it
supports (the floors are 3D only: see :mod:`uadlab.models.mean_image`), on the healthy training set,
scored on every lesion cohort with three thresholds side by side:

- ``dice_d``: the threshold fitted on the labelled validation split (Bengs et al.'s protocol);
- ``dice_d_fpr1``: the threshold above which 1 % of healthy validation brain voxels lie (label-free,
  as UAD-IMAG);
- ``oracle_dice_d``: the best threshold on the test labels, an upper bound and never a result; the
  ``optimism_gap`` (oracle - validation) is what a benchmark that tunes on its test set would add.

Beside them: AUPRC, DICE_S mean and sd over subjects, training seconds per epoch and inference
seconds per volume (reconstruction, score and post-processing; measured while the study ran, so
runs executed side by side share the cores).

Each family's experiment is its ``None`` one (``ae-dense:2D-None``), or its own erasing for a model
that learns from erased inputs (``cevae:2D-Patch-n``, ``cevae:3D-Cube-n``).

Outputs, into ``OUT/zoo/``: ``zoo_seeds.csv`` (one row per run, cohort and seed), ``zoo.csv`` /
``zoo.md`` (mean over seeds, ``*_seed_sd`` beside), ``paired.csv`` (each family's 3D run against its
2D run, and each run of the ranking against the next one, in per-subject DICE and AUPRC, resampling
seeds and subjects), ``figures/zoo_3d_vs_2d.png`` and ``report.md`` (the ranking, where an interval
allows it to say that one run beats the next).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from uadlab.layout import RUN_HISTORY
from uadlab.models.registry import MODELS, get_spec
from uadlab.studies import tables
from uadlab.studies.context import StudyContext, cohort_labels
from uadlab.studies.spec import DataSource, RunSpec, Study, experiment_names
from uadlab.training.erasing import METHODS
from uadlab.training.experiments import parse_experiment
from uadlab.viz import figures as viz

__all__ = ["Zoo", "ZOO_COLUMNS", "family_experiments", "zoo_experiments", "zoo_markdown"]

#: Columns of ``zoo_seeds.csv`` after the keys ``family, spatial_dims, experiment, data, dataset, seed``.
ZOO_COLUMNS: tuple[str, ...] = ("dice_d", "dice_d_fpr1", "oracle_dice_d", "optimism_gap", "auprc", "dice_s_mean",
                                "dice_s_std", "train_seconds_per_epoch", "seconds_per_volume")
_KEYS = ("family", "spatial_dims", "experiment", "dataset")


def family_experiments(family: str) -> list[str]:
    """The zoo's experiments of one registered family, one per dimension it supports.

    >>> family_experiments("ae-dense"), family_experiments("cevae"), family_experiments("zscore")
    (['ae-dense:2D-None', 'ae-dense:3D-None'], ['cevae:2D-Patch-n', 'cevae:3D-Cube-n'], ['zscore:3D-None'])

    Raises:
        ValueError: an unknown family.
    """
    spec = get_spec(family)
    return [f"{spec.name}:{d}D-{METHODS[d][0] + '-n' if spec.requires_erasing else 'None'}"
            for d in spec.spatial_dims]


def zoo_experiments() -> list[str]:
    """Every registered family's experiments (:func:`family_experiments`), in registry order."""
    return [e for family in MODELS for e in family_experiments(family)]


class Zoo(Study):
    """Every family in 2D and 3D on one protocol, with honest, label-free and oracle thresholds.

    Args:
        sources: the data sets, the training one first.
        experiments: the runs (``None``: :func:`zoo_experiments`); any registered model's experiments.
        name, argument, profile, seeds, description: as :class:`~uadlab.studies.spec.Study`.
        folder: the study's folder under ``OUT`` (``"zoo"``; ``None`` for a study file: ``OUT``).

    Raises:
        ValueError: an empty or repeated experiment list, an unknown experiment.
    """

    protocol = "zoo"
    tables = ("zoo.csv", "zoo.md", "zoo_seeds.csv", "paired.csv", "report.md")

    def __init__(self, sources: tuple[DataSource, ...], experiments: list[str] | None = None, *,
                 name: str = "zoo", argument: str = "zoo", folder: str | None = "zoo", profile: str | None = None,
                 seeds: tuple[int, ...] | None = None, description: str = "") -> None:
        self.sources, self.name, self.argument, self.folder = sources, name, argument, folder
        self.profile, self.seeds, self.description = profile, seeds, description
        self.experiments = zoo_experiments() if experiments is None else experiment_names(experiments)

    def options(self) -> list[str]:
        """``--experiments`` when the study runs a subset of the zoo."""
        return [] if self.experiments == zoo_experiments() else ["--experiments", ",".join(self.experiments)]

    def runs(self, ctx: StudyContext, seed: int) -> list[RunSpec]:
        """One run per experiment on all of the healthy training split."""
        return [RunSpec(e, seed) for e in self.experiments]

    def score(self, ctx: StudyContext, spec: RunSpec) -> list[dict[str, Any]]:
        """One row per scored data set and lesion cohort (columns: the keys and :data:`ZOO_COLUMNS`)."""
        run_dir = ctx.train(spec).run_dir
        experiment = parse_experiment(spec.experiment)
        seconds = float(pd.read_csv(run_dir / RUN_HISTORY)["seconds"].mean())
        rows = []
        for data in ctx.scored():
            metrics = ctx.evaluate(spec, run_dir, data)
            for cohort, m in metrics["cohorts"].items():
                rows.append({"family": experiment.model, "spatial_dims": experiment.spatial_dims,
                             "experiment": spec.experiment, "data": data, "dataset": cohort, "seed": spec.seed,
                             **_scores(m), "train_seconds_per_epoch": seconds,
                             "seconds_per_volume": metrics.get("inference_seconds_per_subject", np.nan)})
        return rows

    def collect(self, ctx: StudyContext, rows: pd.DataFrame, seeds: list[int]) -> dict[str, Path]:
        """``zoo_seeds.csv``, ``zoo.csv`` / ``.md``, ``paired.csv``, the 3D-against-2D figure and ``report.md``."""
        root = ctx.layout.root
        per_seed = rows.reset_index(drop=True)
        per_seed["dataset"] = cohort_labels(per_seed)
        per_seed = per_seed[[*_KEYS[:3], "data", "dataset", "seed", *ZOO_COLUMNS]]
        outputs = tables.write_seed_table(root, "zoo", per_seed, keys=_KEYS, means=ZOO_COLUMNS,
                                          spread=("dice_d", "dice_d_fpr1", "auprc"), markdown=zoo_markdown)
        summary = pd.read_csv(outputs["zoo.csv"])
        subjects = {e: {s: ctx.subjects(RunSpec(e, s)) for s in seeds} for e in self.experiments}
        pairs = [(a, b, subjects[a], subjects[b]) for a, b in _distinct(dimension_pairs(self.experiments)
                                                                        + rank_pairs(summary))]
        paired, skipped = tables.paired_table(ctx.layout.paired, pairs)
        ctx.layout.figures.mkdir(exist_ok=True)
        figure = tables.save_figure(viz.dimension_plot(summary), ctx.layout.figures / "zoo_3d_vs_2d.png")
        report = tables.write_text(ctx.layout.report, _report(self, ctx, seeds, summary, paired, skipped))
        return {**outputs, "paired.csv": ctx.layout.paired, "report.md": report, "figure": figure,
                "runs": ctx.layout.runs}


def _scores(m: dict[str, Any]) -> dict[str, float]:
    """The zoo's metrics of one cohort's ``metrics.json`` entry (None becomes NaN)."""
    def value(v: Any) -> float:
        return np.nan if v is None else float(v)

    honest, oracle = value(m["dice_d"]), value(m.get("oracle_dice_d"))
    return {"dice_d": honest, "dice_d_fpr1": value(m.get("fpr_dice_d", {}).get("0.01")), "oracle_dice_d": oracle,
            "optimism_gap": oracle - honest, "auprc": value(m["auprc"]), "dice_s_mean": value(m["dice_s_mean"]),
            "dice_s_std": value(m["dice_s_std"])}


def dimension_pairs(experiments: list[str]) -> list[tuple[str, str]]:
    """``(3D run, 2D run)`` of every family with both in ``experiments``.

    >>> dimension_pairs(["ae-dense:2D-None", "ae-dense:3D-None", "zscore:3D-None"])
    [('ae-dense:3D-None', 'ae-dense:2D-None')]
    """
    by_family: dict[str, dict[int, str]] = {}
    for e in experiments:
        parsed = parse_experiment(e)
        by_family.setdefault(parsed.model, {}).setdefault(parsed.spatial_dims, e)
    return [(dims[3], dims[2]) for dims in by_family.values() if 2 in dims and 3 in dims]


def rank_pairs(summary: pd.DataFrame) -> list[tuple[str, str]]:
    """``(run, next run)`` down the ranking by validation-threshold DICE_D averaged over the cohorts.

    >>> summary = pd.DataFrame({"experiment": ["a", "a", "b", "b", "c", "c"], "dice_d": [.2, .4, .5, .5, .1, .1]})
    >>> rank_pairs(summary)
    [('b', 'a'), ('a', 'c')]
    """
    order = list(ranking(summary).index)
    return list(zip(order[:-1], order[1:]))


def ranking(summary: pd.DataFrame) -> pd.Series:
    """Mean DICE_D over the cohorts per experiment, best first (ties keep the table's order)."""
    means = summary.groupby("experiment", sort=False)["dice_d"].mean()
    return means.sort_values(ascending=False, kind="stable")


def _distinct(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``pairs`` without repeats, a reversed pair counting as a repeat (the first kept).

    >>> _distinct([("a", "b"), ("b", "a"), ("a", "c"), ("a", "b")])
    [('a', 'b'), ('a', 'c')]
    """
    seen: set[frozenset[str]] = set()
    return [p for p in pairs if not (frozenset(p) in seen or seen.add(frozenset(p)))]


def zoo_markdown(table: pd.DataFrame) -> str:
    """The zoo table in percent, one block per cohort, ranked by validation-threshold DICE_D.

    Args:
        table: ``zoo.csv`` (columns :data:`ZOO_COLUMNS` and the keys; ``*_seed_sd`` optional).
    """
    def pct(row: Any, metric: str) -> str:
        value, sd = row.get(metric, np.nan), row.get(f"{metric}_seed_sd", np.nan)
        if pd.isna(value):
            return "-"
        return f"{100 * value:.1f}" + ("" if pd.isna(sd) else f" ± {100 * sd:.1f}")

    lines = []
    for cohort, part in table.groupby("dataset", sort=False):
        lines += [f"### {cohort}", "", "| rank | family | dims | DICE_D (val thr.) | DICE_D (1 % FPR) "
                  "| oracle DICE_D | optimism gap | AUPRC | DICE_S | s / epoch | s / volume |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        part = part.sort_values("dice_d", ascending=False, kind="stable")
        for rank, (_, row) in enumerate(part.iterrows(), start=1):
            dice_s = ("-" if pd.isna(row["dice_s_mean"])
                      else f"{100 * row['dice_s_mean']:.1f} ± {100 * row['dice_s_std']:.1f}")
            lines.append(f"| {rank} | {row['family']} | {int(row['spatial_dims'])}D | {pct(row, 'dice_d')} | "
                         f"{pct(row, 'dice_d_fpr1')} | {pct(row, 'oracle_dice_d')} | {pct(row, 'optimism_gap')} | "
                         f"{pct(row, 'auprc')} | {dice_s} | {row['train_seconds_per_epoch']:.1f} | "
                         f"{row['seconds_per_volume']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def _report(study: Zoo, ctx: StudyContext, seeds: list[int], summary: pd.DataFrame, paired: pd.DataFrame,
            skipped: list[str]) -> str:
    """``report.md``: the data, the table, 3D against 2D per family, the ranking with its verdicts."""
    lines = [f"# Study {study.name}", ""] + ([study.description.strip(), ""] if study.description.strip() else [])
    lines += [f"Profile `{ctx.resolved_profile.name}`, {len(study.experiments)} runs, training seeds "
              f"{', '.join(map(str, seeds))}. Percent; `±` is the sd over seeds. The oracle looks at the test "
              "labels: an upper bound, never a result.", "", "## The zoo", "", zoo_markdown(summary),
              "## 3D against 2D, and each run against the next in the ranking", "",
              "Per-subject DICE (DICE_S) and AUPRC, paired over subjects, resampling seeds and subjects. "
              "\"A beats B\" only where the 95 % interval excludes 0.", ""]
    if paired.empty:
        lines.append("No pair to compare.")
    else:
        lines += ["| run | against | test set | metric | difference | 95 % interval | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for row in paired.itertuples(index=False):
            verdict = ("beats" if row.ci_low > 0 else "loses to" if row.ci_high < 0 else "not distinguishable from")
            lines.append(f"| {row.experiment} | {row.baseline} | {row.cohort} | "
                         f"{'DICE_S' if row.metric == 'dice' else 'AUPRC'} | {100 * row.difference:+.1f} | "
                         f"[{100 * row.ci_low:+.1f}, {100 * row.ci_high:+.1f}] | {row.experiment} {verdict} "
                         f"{row.baseline} |")
    lines += [f"\nNot compared: {why}" for why in skipped]
    lines += ["", "![DICE_D of 3D against 2D](figures/zoo_3d_vs_2d.png)", ""]
    return "\n".join(lines)
