"""Behrendt et al. 2024's study: reconstruction alone against reconstruction plus a supervised segmenter.

``uadlab reproduce --study behrendt2024`` (:func:`uadlab.reproduce.reproduce`) runs this on a built
data set and writes ``OUT/behrendt2024/``:

1. **Reconstruction only** — each model of :data:`RECON_EXPERIMENTS` (dense VAE, spatial VAE, DDPM;
   2D on axial slices, as Behrendt et al.) is trained on the healthy training split and scored with
   the residual as the anomaly map (:func:`uadlab.evaluation.protocol.evaluate_run`): threshold on
   each lesion cohort's validation split, metrics on its test split.
2. **Segmenter on synthetic anomalies** — for each model of :data:`SEGMENTER_EXPERIMENTS` (the DDPM,
   their pseudo-healthy generator), a segmenter on ``(image, recon)`` is trained on synthetic
   anomalies in the healthy training split (:func:`uadlab.training.segmenter.train_segmenter`) and its
   post-processed probability is scored by the same protocol.
3. **Weakly supervised** — per lesion cohort, ``K`` labelled validation cases join the segmenter's
   training (:func:`~uadlab.training.segmenter.split_labelled`); the threshold is fitted on the
   cohort's remaining validation cases, the test split is untouched ("in-domain").
4. **Unseen pathology** — the segmenter trained with one cohort's labels is tested on every other
   cohort, with the threshold from that other cohort's validation split (which it never trained on),
   as every other row.

Every row also carries Chatterjee et al.'s sample-level scores (MOOD's sample-level task,
:mod:`uadlab.evaluation.sample_level`): the 99th percentile of the anomaly map in the brain as each
subject's score, and the AUROC / average precision of those scores with the cohort's test subjects
as positives and the healthy *validation* subjects as negatives (the only healthy subjects not
trained on; they did choose the reconstruction model's epoch, so read these as slightly optimistic).

Files: ``behrendt2024.csv`` (:data:`COLUMNS`), ``behrendt2024.md``, ``runs/`` (reconstruction
models, resumed), ``evaluation/``, ``segmenters/*.pt`` (reused when present) and ``timings.json``
(wall-clock seconds of training each model, summed over its epochs, and each segmenter,
kept across reruns).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from uadlab._checks import check_int
from uadlab.data.dataset import load_dataset
from uadlab.data.io import atomic_write
from uadlab.evaluation.inference import predict
from uadlab.evaluation.protocol import evaluate_maps, evaluate_run
from uadlab.evaluation.sample_level import sample_level_metrics, subject_score
from uadlab.evaluation.supervised import predict_segmented
from uadlab.layout import ResultsLayout, run_name
from uadlab.profiles import Profile, get_profile
from uadlab.training import (
    SegmenterConfig,
    TrainConfig,
    load_run,
    load_segmenter,
    split_labelled,
    train,
    train_segmenter,
)

__all__ = ["RECON_EXPERIMENTS", "SEGMENTER_EXPERIMENTS", "COLUMNS", "DEFAULT_LABELLED_CASES", "run_study",
           "study_markdown"]

#: Reconstruction models of the study (2D, as Behrendt et al.), in table order.
RECON_EXPERIMENTS: tuple[str, ...] = ("2D-None", "spatial-vae:2D-None", "ddpm:2D-None")
#: Reconstruction models a segmenter is trained on (the DDPM: Behrendt et al.'s generator).
SEGMENTER_EXPERIMENTS: tuple[str, ...] = ("ddpm:2D-None",)
#: Labelled validation cases of a cohort the weakly supervised segmenter trains on (at most the
#: cohort's validation cases minus one, which then fit the threshold).
DEFAULT_LABELLED_CASES = 2
#: Columns of ``behrendt2024.csv``.
COLUMNS: tuple[str, ...] = ("method", "model", "labels", "dataset", "view", "dice_d", "dice_s_mean", "dice_s_std",
                            "auprc", "threshold", "n_val", "sample_auroc", "sample_ap", "train_seconds")


def run_study(profile: str | Profile, data_dir: Path, dataset: Any, out: str | Path, *, seed: int = 0,
              labelled_cases: int = DEFAULT_LABELLED_CASES, recon_experiments: tuple[str, ...] = RECON_EXPERIMENTS,
              segmenter_experiments: tuple[str, ...] = SEGMENTER_EXPERIMENTS, val_data: str | Path | None = None,
              max_epochs: int | None = None, progress: bool = False) -> dict[str, Path]:
    """Run the study on a built data set and write ``out`` (see the module docstring).

    Args:
        profile: a profile name or :class:`~uadlab.profiles.Profile` (schedules, backbones).
        data_dir: the built data set's folder.
        dataset: it, loaded (:func:`uadlab.data.dataset.load_dataset`).
        out: the study's folder (``OUT/behrendt2024``).
        seed: seed of every model, segmenter and labelled-case draw.
        labelled_cases: ``K`` per lesion cohort, clipped to its validation cases minus one; 0 skips the
            weakly supervised and unseen-pathology rows.
        recon_experiments: reconstruction models (``MODEL:2D-None`` names).
        segmenter_experiments: those of them a segmenter is trained on.
        val_data: another built data set whose labelled validation cases fit the threshold of a lesion
            cohort without a validation split of its own (a real sample with test cases only): its
            validation split of the same cohort, else of all its lesion cohorts pooled, as
            :func:`uadlab.evaluation.protocol.evaluate_run`. Weakly supervised rows need the cohort's
            own validation split.
        max_epochs: epoch limit of every reconstruction model and segmenter; ``None``: the profile's.
            (Lab 07 caps it so that it runs in minutes; a run folder trained with another limit is
            refused on resume, so use a fresh ``out`` when changing it.)
        progress: tqdm bars.

    Returns:
        ``{"behrendt2024.csv", "behrendt2024.md", "runs", "segmenters"}`` paths.

    Raises:
        ValueError: ``labelled_cases`` negative, or a segmenter model not among ``recon_experiments``.
    """
    prof = get_profile(profile)
    check_int("labelled_cases", labelled_cases, "an int >= 0", lambda v: v >= 0)
    missing = [e for e in segmenter_experiments if e not in recon_experiments]
    if missing:
        raise ValueError(f"`segmenter_experiments` must be among `recon_experiments`, got {missing!r}")
    layout = ResultsLayout(out)
    layout.root.mkdir(parents=True, exist_ok=True)
    segmenter_dir = layout.root / "segmenters"
    segmenter_dir.mkdir(exist_ok=True)
    timings_file = layout.root / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    val_dataset = load_dataset(val_data) if val_data is not None else None
    sources = {c: _validation_source(c, dataset, val_dataset) for c in dataset.lesion_cohorts
               if dataset.ids(cohort=c, split="test")}
    cohorts = [c for c, source in sources.items() if source is not None]
    healthy_ids = dataset.ids(cohort="healthy", split="val")
    rows = []

    for experiment in recon_experiments:
        config = TrainConfig(experiment=experiment, profile=profile, data=str(data_dir), seed=seed,
                             max_epochs=max_epochs)
        result = train(config, layout.run(experiment), resume=True, progress=progress)
        timings[run_name(experiment)] = float(result.history["seconds"].sum())  # every epoch, also before a resume
        metrics = _evaluation(result.run_dir, data_dir, layout.evaluation(experiment), val_data, progress)
        model = load_run(result.run_dir)[0]
        healthy = list(predict(model, dataset, healthy_ids).values())
        for cohort in cohorts:
            tests = list(predict(model, dataset, dataset.ids(cohort=cohort, split="test")).values())
            rows.append(_row("reconstruction", experiment, "healthy", cohort, "", metrics["cohorts"][cohort],
                             timings[run_name(experiment)], _sample_level(healthy, tests)))

    for experiment in segmenter_experiments:
        recon_model = load_run(layout.run(experiment))[0]
        image_size = int(recon_model.image_size)
        plans = [("synthetic", [], None)]
        if labelled_cases:
            for cohort in cohorts:
                k = min(labelled_cases, len(dataset.ids(cohort=cohort, split="val")) - 1)  # own val split only
                if k > 0:
                    plans.append((f"synthetic + {k} {cohort}", *split_labelled(dataset, cohort, k, seed), cohort))
        for plan in plans:
            labels, labelled = plan[0], plan[1]
            trained_cohort = plan[-1]
            name = f"{run_name(experiment)}__{labels.replace(' + ', '+').replace(' ', '-')}"
            path = segmenter_dir / f"{name}.pt"
            if path.exists() and name in timings:
                segmenter = load_segmenter(path)
            else:
                start = time.perf_counter()
                options = {"seed": seed} | ({} if max_epochs is None else {"max_epochs": max_epochs})
                config = SegmenterConfig.from_profile(prof, 2, image_size, **options)
                trained = train_segmenter(recon_model, dataset, config, labelled_ids=labelled, progress=progress)
                save_segmenter(trained, path, overwrite=True)
                segmenter = trained.segmenter
                timings[name] = time.perf_counter() - start
                _write_json(timings_file, timings)
            healthy_maps = list(predict_segmented(recon_model, segmenter, dataset, healthy_ids).values())
            for cohort in cohorts:
                source, val_ids, note = sources[cohort]
                if cohort == trained_cohort:
                    val_ids = plan[2]  # the cohort's validation cases the segmenter did not train on
                view = ("" if trained_cohort is None
                        else "in-domain" if cohort == trained_cohort else "unseen pathology")
                test_ids = dataset.ids(cohort=cohort, split="test")
                val_maps = list(predict_segmented(recon_model, segmenter, source, val_ids).values())
                if source is not dataset:  # ids of another data set may repeat ours
                    val_maps = [dataclasses.replace(m, subject_id=f"val_data:{m.subject_id}") for m in val_maps]
                test_maps = list(predict_segmented(recon_model, segmenter, dataset, test_ids).values())
                result = evaluate_maps(val_maps, test_maps, seed=seed,
                                       threshold_source=f"{note} ({len(val_ids)} cases)")
                rows.append(_row("segmenter", experiment, labels, cohort, view, result.to_dict(), timings[name],
                                 _sample_level(healthy_maps, test_maps)))

    _write_json(timings_file, timings)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    csv, md = layout.root / "behrendt2024.csv", layout.root / "behrendt2024.md"
    with atomic_write(csv, overwrite=True) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_write(md, overwrite=True) as tmp:
        tmp.write_text(study_markdown(table))
    return {"behrendt2024.csv": csv, "behrendt2024.md": md, "runs": layout.runs, "segmenters": segmenter_dir}


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


def _row(method: str, model: str, labels: str, cohort: str, view: str, metrics: dict, seconds: float,
         sample: tuple[float, float]) -> dict:
    return {"method": method, "model": model, "labels": labels, "dataset": cohort, "view": view,
            **{k: metrics.get(k) for k in ("dice_d", "dice_s_mean", "dice_s_std", "auprc", "threshold")},
            "n_val": metrics.get("n_val_subjects"), "sample_auroc": sample[0], "sample_ap": sample[1],
            "train_seconds": seconds}


def _sample_level(healthy: list, lesion: list) -> tuple[float, float]:
    """Chatterjee et al.'s sample-level AUROC and AP: lesion subjects against healthy ones (NaN without healthy)."""
    if not healthy:
        return float("nan"), float("nan")
    scores = [subject_score(m.anomaly_map, m.brain_mask) for m in [*healthy, *lesion]]
    result = sample_level_metrics(scores, [False] * len(healthy) + [True] * len(lesion))
    return result.auroc, result.average_precision


def _validation_source(cohort: str, dataset: Any, val_dataset: Any) -> tuple[Any, list[str], str] | None:
    """Where ``cohort``'s threshold comes from: its own val split, else ``val_dataset``'s (same cohort or pooled)."""
    own = dataset.ids(cohort=cohort, split="val")
    if own:
        return dataset, own, f"val split of {cohort}"
    if val_dataset is None:
        return None
    same = val_dataset.ids(cohort=cohort, split="val") if cohort in val_dataset.lesion_cohorts else []
    if same:
        return val_dataset, same, f"val split of {cohort} in val_data"
    pooled = [i for c in val_dataset.lesion_cohorts for i in val_dataset.ids(cohort=c, split="val")]
    return (val_dataset, pooled, "val splits of val_data's lesion cohorts (pooled)") if pooled else None


def _evaluation(run_dir: Path, data_dir: Path, eval_dir: Path, val_data: Any, progress: bool) -> dict:
    """The run's ``metrics.json``: read back when newer than its checkpoint, else evaluated anew."""
    metrics_file = eval_dir / "metrics.json"
    if metrics_file.exists() and metrics_file.stat().st_mtime >= (run_dir / "checkpoint.pt").stat().st_mtime:
        return json.loads(metrics_file.read_text())
    return evaluate_run(run_dir, data_dir, eval_dir, val_data=val_data, overwrite=True, progress=progress)


def _write_json(path: Path, value: dict) -> None:
    with atomic_write(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(value, indent=2))
