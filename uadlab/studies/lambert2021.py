"""Lambert et al. 2021: spatial against dense VAEs in 2D and 3D, scored by their protocol and by Bengs et al.'s.

Their four models (Spatial 2D, Spatial 3D, Dense 2D, Dense 3D, their Table 1), all trained with
their collapse-robust loss (``loss="lambert"``), are scored with their protocol
(:mod:`uadlab.evaluation.lambert`: threshold on one half of each test set, central slices) and with
Bengs et al.'s (``bengs_*`` columns: threshold on the validation split). Written to
``OUT/lambert2021/``: ``lambert2021.csv``, ``lambert2021.md``, its runs and evaluations; with several
seeds also ``lambert2021_seeds.csv`` and ``paired.csv`` (each spatial model against the dense one of
its dimension, per-subject DICE and AUPRC of Bengs et al.'s protocol).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from uadlab.evaluation.inference import predict
from uadlab.evaluation.lambert import LAMBERT_COLUMNS, lambert_markdown, lambert_scores
from uadlab.studies import tables
from uadlab.studies.context import StudyContext
from uadlab.studies.spec import DataSource, RunSpec, Study, experiment_names
from uadlab.training import load_run
from uadlab.training.experiments import parse_experiment

__all__ = ["Lambert2021", "LAMBERT_EXPERIMENTS"]

#: Lambert et al.'s Table 1 models, in their order, with their labels.
LAMBERT_EXPERIMENTS: dict[str, str] = {"spatial-vae:2D-None": "Spatial 2D", "spatial-vae:3D-None": "Spatial 3D",
                                       "2D-None": "Dense 2D", "3D-None": "Dense 3D"}
_BENGS = ("dice_d", "dice_s_mean", "auprc")


class Lambert2021(Study):
    """Lambert et al. 2021 (ISBI), Sec. 3-4, on any data sets.

    Args:
        sources: the data sets, the training one first.
        experiments: the models (``None``: :data:`LAMBERT_EXPERIMENTS`); labelled by their names when
            not among Lambert et al.'s four.
        name, argument, profile, seeds, description: as :class:`~uadlab.studies.spec.Study`.
        folder: the study's folder under ``OUT`` (``"lambert2021"``; ``None`` for a study file: ``OUT``).
    """

    protocol = "lambert2021"
    tables = ("lambert2021.csv", "lambert2021.md", "lambert2021_seeds.csv", "paired.csv")

    def __init__(self, sources: tuple[DataSource, ...], experiments: list[str] | None = None, *,
                 name: str = "lambert2021", argument: str = "lambert2021", folder: str | None = "lambert2021",
                 profile: str | None = None, seeds: tuple[int, ...] | None = None, description: str = "") -> None:
        self.sources, self.name, self.argument, self.folder = sources, name, argument, folder
        self.profile, self.seeds, self.description = profile, seeds, description
        names = list(LAMBERT_EXPERIMENTS) if experiments is None else experiment_names(experiments)
        self.labels = {e: LAMBERT_EXPERIMENTS.get(e, e) for e in names}

    def options(self) -> list[str]:
        """``--experiments`` when the study runs other models than Lambert et al.'s four."""
        return [] if list(self.labels) == list(LAMBERT_EXPERIMENTS) else ["--experiments", ",".join(self.labels)]

    def runs(self, ctx: StudyContext, seed: int) -> list[RunSpec]:
        """The models, each trained with Lambert et al.'s loss."""
        return [RunSpec(e, seed, options=(("loss", "lambert"),)) for e in self.labels]

    def score(self, ctx: StudyContext, spec: RunSpec) -> list[dict[str, Any]]:
        """One row per scored data set and cohort: their scores on the test split, and Bengs et al.'s."""
        run_dir = ctx.train(spec).run_dir
        model, rows = None, []
        for data in ctx.scored():
            ours = ctx.evaluate(spec, run_dir, data)["cohorts"]
            dataset = ctx.dataset(data)
            model = model or load_run(run_dir, device=ctx.device)[0]
            for cohort in dataset.lesion_cohorts:
                maps = predict(model, dataset, dataset.ids(cohort=cohort, split="test"), progress=ctx.progress,
                               device=ctx.device)
                rows.append({"model": self.labels[spec.experiment], "experiment": spec.experiment, "dataset": cohort,
                             **lambert_scores(maps, seed=spec.seed),
                             **{f"bengs_{k}": ours[cohort][k] for k in _BENGS}, "data": data, "seed": spec.seed})
        return rows

    def collect(self, ctx: StudyContext, rows: pd.DataFrame, seeds: list[int]) -> dict[str, Path]:
        """``lambert2021.csv`` / ``.md``; with several seeds, the mean and sd over seeds and ``paired.csv``."""
        root, keys = ctx.layout.root, ["model", "experiment", "dataset"] + (["data"] if len(ctx.scored()) > 1 else [])
        if len(seeds) == 1:
            table = rows[keys + [c for c in rows.columns if c not in (*keys, "data", "seed")]]
            return {**tables.write_table(root, "lambert2021", table, lambert_markdown), "runs": ctx.layout.runs}
        outputs = tables.write_seed_table(root, "lambert2021", rows, keys=keys,
                                          means=(*LAMBERT_COLUMNS, *(f"bengs_{k}" for k in _BENGS)),
                                          spread=("dice_mean", "bengs_dice_d", "bengs_auprc"),
                                          markdown=lambert_markdown)
        subjects = {e: {s: ctx.subjects(RunSpec(e, s)) for s in seeds} for e in self.labels}
        pairs = [(a, b, subjects[a], subjects[b]) for a, b in _spatial_dense_pairs(list(self.labels))]
        tables.paired_table(ctx.layout.paired, pairs)
        return {**outputs, "paired.csv": ctx.layout.paired, "runs": ctx.layout.runs}


def _spatial_dense_pairs(experiments: list[str]) -> list[tuple[str, str]]:
    """``(spatial model, dense model)`` of the same dimension and erasing, both in the study."""
    dense = {parse_experiment(e).table1_name: e for e in experiments if parse_experiment(e).model == "dense-vae"}
    return [(e, dense[parse_experiment(e).table1_name]) for e in experiments
            if parse_experiment(e).model == "spatial-vae" and parse_experiment(e).table1_name in dense]
