"""Behrendt et al. 2024: reconstruction alone against reconstruction plus a supervised segmenter.

``uadlab reproduce --study behrendt2024`` writes ``OUT/behrendt2024/``:

1. **Reconstruction only** — each model of :data:`RECON_EXPERIMENTS` (dense VAE, spatial VAE, DDPM;
   2D on axial slices, as Behrendt et al., and the same in 3D on volumes) is trained on the healthy
   training split and scored with the residual as the anomaly map
   (:func:`uadlab.evaluation.protocol.evaluate_run`): threshold on each lesion cohort's validation
   split, metrics on its test split.
2. **Segmenter on synthetic anomalies** — for each model of :data:`SEGMENTER_EXPERIMENTS` (the DDPM,
   their pseudo-healthy generator), a segmenter on ``(image, recon)`` is trained on synthetic
   anomalies in the healthy training split (a 2D segmenter on the 2D DDPM, a 3D one on the 3D DDPM;
   :func:`uadlab.training.train_segmenter`, a run of its own that depends on the reconstruction run)
   and its post-processed probability is scored by the same protocol.
3. **Weakly supervised** — per lesion cohort, ``K`` labelled validation cases join the segmenter's
   training (:func:`uadlab.training.split_labelled`); the threshold is fitted on the cohort's
   remaining validation cases, the test split is untouched ("in-domain").
4. **Unseen pathology** — the segmenter trained with one cohort's labels is tested on every other
   cohort, with the threshold from that other cohort's validation split (which it never trained on),
   as every other row.

Every row also carries Chatterjee et al.'s sample-level scores (MOOD's sample-level task,
:mod:`uadlab.evaluation.sample_level`): the 99th percentile of the anomaly map in the brain as each
subject's score, and the AUROC / average precision of those scores with the cohort's test subjects
as positives and the healthy *validation* subjects as negatives (the only healthy subjects not
trained on; they did choose the reconstruction model's epoch, so read these as slightly optimistic).

Files: ``behrendt2024.csv`` (:data:`COLUMNS`; ``train_seconds`` is the wall-clock training time
summed over each run's epochs, from its ``history.csv``), ``behrendt2024.md``, ``runs/``
(reconstruction models and segmenters, resumed) and ``evaluation/`` (with each run's rows,
``rows.json``, read back by a rerun while newer than the run's checkpoint); with several seeds also
``behrendt2024_seeds.csv`` and ``paired.csv`` (each segmenter on synthetic anomalies against its
reconstruction model).
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from uadlab._checks import check_int
from uadlab.data.io import atomic_write
from uadlab.errors import UadlabWarning
from uadlab.evaluation.inference import predict
from uadlab.evaluation.protocol import evaluate_maps, validation_source
from uadlab.evaluation.sample_level import sample_level_metrics, subject_score
from uadlab.evaluation.supervised import predict_segmented
from uadlab.layout import DATASET_RECORD, EVAL_SUBJECTS, RUN_CHECKPOINT
from uadlab.studies import tables
from uadlab.studies.context import StudyContext
from uadlab.studies.spec import DataSource, RunSpec, Study, experiment_names
from uadlab.training import SegmenterConfig, load_run, split_labelled, train_segmenter
from uadlab.training.experiments import parse_experiment

__all__ = ["Behrendt2024", "RECON_EXPERIMENTS", "SEGMENTER_EXPERIMENTS", "COLUMNS", "DEFAULT_LABELLED_CASES",
           "study_markdown"]

_ROWS = "rows.json"  # a run's rows of the table, in its evaluation folder (:func:`_reuse_rows`)

#: Reconstruction models of the study (2D, as Behrendt et al., then 3D), in table order.
RECON_EXPERIMENTS: tuple[str, ...] = ("2D-None", "spatial-vae:2D-None", "ddpm:2D-None",
                                      "3D-None", "spatial-vae:3D-None", "ddpm:3D-None")
#: Reconstruction models a segmenter is trained on (the DDPM: Behrendt et al.'s generator), 2D and 3D.
SEGMENTER_EXPERIMENTS: tuple[str, ...] = ("ddpm:2D-None", "ddpm:3D-None")
#: Labelled validation cases of a cohort the weakly supervised segmenter trains on (at most the
#: cohort's validation cases minus one, which then fit the threshold).
DEFAULT_LABELLED_CASES = 2
#: Columns of ``behrendt2024.csv``.
COLUMNS: tuple[str, ...] = ("method", "model", "labels", "dataset", "view", "dice_d", "dice_s_mean", "dice_s_std",
                            "auprc", "threshold", "n_val", "sample_auroc", "sample_ap", "train_seconds")
_METRICS = ("dice_d", "dice_s_mean", "dice_s_std", "auprc", "threshold")


class Behrendt2024(Study):
    """Behrendt et al. 2024 (reconstruction plus a supervised segmenter) on any data sets.

    Args:
        sources: the data sets, the training one first; its lesion cohorts give the labelled cases.
        experiments: the reconstruction models (``MODEL:2D-None`` names; ``None``: :data:`RECON_EXPERIMENTS`).
        labelled_cases: ``K`` per lesion cohort, clipped to its validation cases minus one (a
            :class:`~uadlab.errors.UadlabWarning` says so); 0 skips the weakly supervised and
            unseen-pathology rows.
        segmenter_experiments: those of them a segmenter is trained on (``None``: those of
            :data:`SEGMENTER_EXPERIMENTS` among ``experiments``).
        name, argument, folder, profile, seeds, description: as :class:`~uadlab.studies.spec.Study`.

    Raises:
        TypeError, ValueError: ``labelled_cases`` not an int >= 0, no experiment, or a segmenter model not
            among ``experiments``.
    """

    protocol = "behrendt2024"
    tables = ("behrendt2024.csv", "behrendt2024.md", "behrendt2024_seeds.csv", "paired.csv")

    def __init__(self, sources: tuple[DataSource, ...], experiments: list[str] | None = None, *,
                 labelled_cases: int = DEFAULT_LABELLED_CASES, segmenter_experiments: tuple[str, ...] | None = None,
                 name: str = "behrendt2024", argument: str = "behrendt2024", folder: str | None = "behrendt2024",
                 profile: str | None = None, seeds: tuple[int, ...] | None = None, description: str = "") -> None:
        self.sources, self.name, self.argument, self.folder = sources, name, argument, folder
        self.profile, self.seeds, self.description = profile, seeds, description
        self.labelled_cases = check_int("labelled_cases", labelled_cases, "an int >= 0", lambda v: v >= 0)
        self.recon = tuple(experiment_names(RECON_EXPERIMENTS if experiments is None else experiments))
        self.segmenters = tuple(e for e in SEGMENTER_EXPERIMENTS if e in self.recon) \
            if segmenter_experiments is None else tuple(parse_experiment(e).name for e in segmenter_experiments)
        missing = [e for e in self.segmenters if e not in self.recon]
        if missing:
            raise ValueError(f"`segmenter_experiments` must be among the experiments {list(self.recon)}, "
                             f"got {missing!r}")

    def runs(self, ctx: StudyContext, seed: int) -> list[RunSpec]:
        """The reconstruction models, then per segmenter model: synthetic only, and weakly supervised per cohort.

        Warns (:class:`~uadlab.errors.UadlabWarning`, for the first seed) where a cohort has too few
        validation cases for ``labelled_cases``: it gets all but one, which fits its threshold.
        """
        runs = [RunSpec(e, seed) for e in self.recon]
        dataset = ctx.dataset(ctx.train_data)
        cases = {c: len(dataset.ids(cohort=c, split="val")) for c in dataset.lesion_cohorts}
        for cohort, n_val in cases.items():
            if self.segmenters and n_val - 1 < self.labelled_cases and seed == ctx.seeds[0]:
                trains = f"trains on {n_val - 1} labelled case(s)" if n_val > 1 else "is left out"
                warnings.warn(f"{cohort}: the weakly supervised segmenter {trains}, not {self.labelled_cases}: the "
                              f"cohort's validation split holds {n_val}, and one must remain to fit the threshold",
                              UadlabWarning, stacklevel=2)
        for experiment in self.segmenters:
            runs.append(RunSpec(experiment, seed, labels="synthetic"))
            for cohort in dataset.lesion_cohorts if self.labelled_cases else ():
                k = min(self.labelled_cases, cases[cohort] - 1)  # own val split
                if k > 0 and dataset.ids(cohort=cohort, split="test"):
                    runs.append(RunSpec(experiment, seed, labels=f"synthetic + {k} {cohort}", labelled=(cohort, k)))
        return runs

    def score(self, ctx: StudyContext, spec: RunSpec) -> list[dict[str, Any]]:
        """Rows of one reconstruction model or one segmenter on every scored cohort."""
        return _score_segmenter(ctx, spec) if spec.labels else _score_reconstruction(ctx, spec)

    def collect(self, ctx: StudyContext, rows: pd.DataFrame, seeds: list[int]) -> dict[str, Path]:
        """``behrendt2024.csv`` / ``.md``; with several seeds, the mean and sd over seeds and ``paired.csv``."""
        root, multi = ctx.layout.root, len(ctx.scored()) > 1
        if len(seeds) == 1:
            table = rows[list(COLUMNS) + (["data"] if multi else [])]
            return {**tables.write_table(root, "behrendt2024", table, study_markdown), "runs": ctx.layout.runs}
        keys = ["method", "model", "labels", "dataset", "view"] + (["data"] if multi else [])
        outputs = tables.write_seed_table(root, "behrendt2024", rows, keys=keys, means=COLUMNS[5:],
                                          spread=("dice_d", "auprc", "sample_auroc"), markdown=study_markdown)
        pairs = []
        for experiment in self.segmenters:
            segmenter, recon = RunSpec(experiment, labels="synthetic"), RunSpec(experiment)
            pairs.append((segmenter.name, recon.name,
                          {s: ctx.subjects(dataclasses.replace(segmenter, seed=s)) for s in seeds},
                          {s: ctx.subjects(dataclasses.replace(recon, seed=s)) for s in seeds}))
        tables.paired_table(ctx.layout.paired, pairs)
        return {**outputs, "paired.csv": ctx.layout.paired, "runs": ctx.layout.runs}

    def options(self) -> list[str]:
        """``--experiments`` and ``--labelled-cases K`` when not the defaults."""
        experiments = [] if self.recon == RECON_EXPERIMENTS else ["--experiments", ",".join(self.recon)]
        cases = [] if self.labelled_cases == DEFAULT_LABELLED_CASES else ["--labelled-cases", str(self.labelled_cases)]
        return experiments + cases


def study_markdown(table: pd.DataFrame) -> str:
    """The study's table as Markdown: one row per method, model and labels; DICE_D / AUPRC / sample AUROC per test set.

    >>> t = pd.DataFrame([{"method": "reconstruction", "model": "2D-None", "labels": "healthy", "dataset": "tumour",
    ...                    "view": "", "dice_d": 0.5, "auprc": 0.25, "sample_auroc": 1.0, "train_seconds": 60.0}])
    >>> print(study_markdown(t).splitlines()[2])
    | reconstruction | 2D-None | healthy | 0.500 / 0.250 / 1.000 | 60 |
    """
    cohorts = list(dict.fromkeys(table["dataset"]))
    header = ("| method | model | labels | " + " | ".join(f"{c} DICE_D / AUPRC / sample AUROC" for c in cohorts)
              + " | train s |")
    lines = [header, "|" + "---|" * (4 + len(cohorts))]
    for (method, model, labels), part in table.groupby(["method", "model", "labels"], sort=False):
        cells = []
        for cohort in cohorts:
            row = part[part["dataset"] == cohort]
            if row.empty:
                cells.append("")
                continue
            r = row.iloc[0]
            mark = " (unseen)" if r["view"] == "unseen pathology" else ""
            cells.append(f"{r['dice_d']:.3f} / {r['auprc']:.3f} / {r['sample_auroc']:.3f}{mark}")
        seconds = f"{part['train_seconds'].iloc[0]:.0f}"
        lines.append(f"| {method} | {model} | {labels} | " + " | ".join(cells) + f" | {seconds} |")
    return "\n".join(lines) + "\n"


def _score_reconstruction(ctx: StudyContext, spec: RunSpec) -> list[dict[str, Any]]:
    """Rows of a reconstruction model: the residual scored by the protocol, and sample-level scores."""
    result = ctx.train(spec)
    return _reuse_rows(ctx, spec, result.run_dir, lambda: _reconstruction_rows(ctx, spec, result))


def _reconstruction_rows(ctx: StudyContext, spec: RunSpec, result: Any) -> list[dict[str, Any]]:
    seconds = float(result.history["seconds"].sum())  # every epoch, also those before a resume
    model = load_run(result.run_dir, device=ctx.device)[0]
    healthy = _healthy_maps(ctx, lambda dataset, ids: predict(model, dataset, ids, device=ctx.device))
    rows = []
    for data in ctx.scored():
        metrics, dataset = ctx.evaluate(spec, result.run_dir, data)["cohorts"], ctx.dataset(data)
        for cohort in metrics:
            tests = list(predict(model, dataset, dataset.ids(cohort=cohort, split="test"), device=ctx.device).values())
            rows.append(_row("reconstruction", spec, "healthy", cohort, "", metrics[cohort], seconds,
                             _sample_level(healthy, tests), data))
    return rows


def _score_segmenter(ctx: StudyContext, spec: RunSpec) -> list[dict[str, Any]]:
    """Rows of a segmenter: its probability scored by the protocol on every cohort, and sample-level scores."""
    recon_model = load_run(ctx.run_dir(dataclasses.replace(spec, labels="", labelled=None)), device=ctx.device)[0]
    train_set = ctx.dataset(ctx.train_data)
    labelled, remaining = ([], None) if spec.labelled is None else split_labelled(train_set, *spec.labelled, spec.seed)
    config = SegmenterConfig.from_profile(ctx.resolved_profile, parse_experiment(spec.experiment).spatial_dims,
                                          int(recon_model.image_size), seed=spec.seed, device=ctx.device,
                                          **ctx.train_options(spec))
    run_dir = ctx.run_dir(spec)
    result = ctx.resume_or_restart(run_dir, lambda restart: train_segmenter(
        recon_model, train_set, config, run_dir, labelled_ids=labelled, resume=not restart, overwrite=restart,
        progress=ctx.progress))
    return _reuse_rows(ctx, spec, run_dir, lambda: _segmenter_rows(ctx, spec, recon_model, result, remaining))


def _segmenter_rows(ctx: StudyContext, spec: RunSpec, recon_model: Any, result: Any,
                    remaining: list[str] | None) -> list[dict[str, Any]]:
    seconds = float(result.history["seconds"].sum())

    def maps(dataset: Any, ids: list[str]) -> dict:
        return predict_segmented(recon_model, result.segmenter, dataset, ids, device=ctx.device)

    healthy, rows, subjects = _healthy_maps(ctx, maps), [], []
    for data in ctx.scored():
        dataset, val = ctx.dataset(data), ctx.sources[data].val_data
        for cohort in [c for c in dataset.lesion_cohorts if dataset.ids(cohort=c, split="test")]:
            source, val_ids, note = validation_source(cohort, dataset, None if val is None else ctx.dataset(val),
                                                      data, val)
            own = spec.labelled is not None and data == ctx.train_data and cohort == spec.labelled[0]
            val_ids = remaining if own else val_ids  # the validation cases the segmenter did not train on
            view = "" if spec.labelled is None else "in-domain" if own else "unseen pathology"
            val_maps = list(maps(source, val_ids).values())
            if source is not dataset:  # ids of another data set may repeat ours
                val_maps = [dataclasses.replace(m, subject_id=f"val_data:{m.subject_id}") for m in val_maps]
            test_maps = list(maps(dataset, dataset.ids(cohort=cohort, split="test")).values())
            scores = evaluate_maps(val_maps, test_maps, seed=spec.seed,
                                   threshold_source=f"{note} ({len(val_ids)} cases)")
            subjects.append(scores.subjects.assign(data=data))
            rows.append(_row("segmenter", spec, spec.labels, cohort, view, scores.to_dict(), seconds,
                             _sample_level(healthy, test_maps), data))
    for data in ctx.scored():  # per-subject scores for the paired comparisons over seeds
        frame = pd.concat([s for s in subjects if s["data"].iloc[0] == data], ignore_index=True).drop(columns="data")
        with ctx.lock(ctx.evaluation_dir(spec, data)):
            ctx.evaluation_dir(spec, data).mkdir(parents=True, exist_ok=True)
            tables.write_csv(ctx.evaluation_dir(spec, data) / EVAL_SUBJECTS, frame)
    return rows


def _reuse_rows(ctx: StudyContext, spec: RunSpec, run_dir: Path, make: Callable[[], list[dict[str, Any]]]) \
        -> list[dict[str, Any]]:
    """A trained run's rows, read back while newer than its checkpoint (the rule of ``metrics.json``), else made.

    Scoring predicts every healthy validation and test subject again (and a segmenter's every validation
    case), so a rerun of a finished study would take as long as its evaluation; the rows are saved as
    ``rows.json`` beside the run's per-subject table instead, with what they were scored on (each data
    set's real folder, links resolved, and build time, and its threshold source): other data sets,
    another ``val_data`` or a rebuilt data set score again.
    """
    path = ctx.evaluation_dir(spec, ctx.train_data) / _ROWS
    # The data set's real folder: a course pack lends its data set to a student's OUT_DIR by a link, and the
    # rows it holds were scored on the same data under the pack's path.
    key = {name: {"data": os.path.realpath(ctx.data_dir(name)),
                  "built": (ctx.data_dir(name) / DATASET_RECORD).stat().st_mtime,
                  "val_data": ctx.sources[name].val_data} for name in ctx.sources}
    with ctx.lock(path.parent):  # another study scoring this run: wait, then reuse its rows
        if path.exists() and path.stat().st_mtime >= (run_dir / RUN_CHECKPOINT).stat().st_mtime:
            saved = json.loads(path.read_text())
            if saved.get("key") == key:
                return saved["rows"]
        rows = make()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, overwrite=True) as tmp:
            tmp.write_text(json.dumps({"key": key, "rows": rows}, default=_json_number))
    return rows


def _json_number(value: Any) -> Any:
    """A numpy scalar of a row as a Python number, for ``json.dumps``."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"a row holds {type(value).__name__}, which JSON cannot hold")


def _healthy_maps(ctx: StudyContext, maps: Any) -> list:
    """Maps of the training data set's healthy validation subjects (the negatives of the sample-level scores)."""
    dataset = ctx.dataset(ctx.train_data)
    return list(maps(dataset, dataset.ids(cohort="healthy", split="val")).values())


def _row(method: str, spec: RunSpec, labels: str, cohort: str, view: str, metrics: dict, seconds: float,
         sample: tuple[float, float], data: str) -> dict[str, Any]:
    return {"method": method, "model": spec.experiment, "labels": labels, "dataset": cohort, "view": view,
            **{k: metrics.get(k) for k in _METRICS}, "n_val": metrics.get("n_val_subjects"),
            "sample_auroc": sample[0], "sample_ap": sample[1], "train_seconds": seconds, "data": data,
            "seed": spec.seed}


def _sample_level(healthy: list, lesion: list) -> tuple[float, float]:
    """Chatterjee et al.'s sample-level AUROC and AP: lesion subjects against healthy ones (NaN without healthy)."""
    if not healthy:
        return float("nan"), float("nan")
    scores = [subject_score(m.anomaly_map, m.brain_mask) for m in [*healthy, *lesion]]
    result = sample_level_metrics(scores, [False] * len(healthy) + [True] * len(lesion))
    return result.auroc, result.average_precision
