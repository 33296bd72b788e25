"""Score anomaly maps with an honest protocol (Bengs et al. 2021, Sec. 2.3).

The protocol, as ``fit``/``predict``:

1. **Fit** the binarisation threshold on a *labelled validation* split only
   (:func:`fit_threshold`: the paper's greedy search, or Lambert et al.'s grid).
2. **Score** the *test* split with that threshold unchanged (:func:`score`): DICE_D (pooled),
   DICE_S (per subject, mean ± sd), voxel AUPRC over brain voxels, slice-wise AUPRC, sensitivity and
   specificity inside the brain; DICE_D, DICE_S and AUPRC with a 95 % bootstrap interval over
   subjects (seeded).
3. **Beside it, clearly labelled**, two references that are *not* results:

   - the **oracle** (``oracle_dice_d``, ``oracle_threshold``): the best DICE_D any threshold reaches
     on the test split itself (maximum F1 of its precision-recall curve) — an upper bound that looks
     at the test labels;
   - the **unsupervised** thresholds that need no lesion labels at all: the score above which 1 %,
     5 % and 10 % of *healthy validation* brain voxels lie (``fpr_thresholds``), and the test
     DICE_D each gives (``fpr_dice_d``).

:func:`evaluate_maps` runs all three on maps already in memory; :func:`evaluate_run` (``uadlab
evaluate``) loads a run and a built data set, predicts, evaluates each lesion cohort and writes
``metrics.json`` and ``subjects.csv``.

Decisions (kept here, in one place):
    - DICE and the threshold search use whole volumes: the anomaly map is ``0`` outside the eroded
      brain and a voxel is anomalous only when its score is *strictly* above the threshold
      (:func:`uadlab.evaluation.metrics.binarize`), so background is never predicted; lesion voxels outside
      the eroded brain count as misses.
    - AUPRC, sensitivity, specificity and the FPR thresholds count brain-mask voxels only.
    - Slice-wise detection scores a slice by the l1 residual *summed* over its brain voxels, the l1
      distance between the slice and its reconstruction (Bengs et al. 2021, Sec. 2.3;
      :func:`uadlab.evaluation.metrics.slice_scores` with ``reduce="mean"`` discounts the brain's area).
    - DICE_S sd is the population sd (``ddof=0``) over subjects with a defined DICE.
    - Undefined values are NaN (with the metrics' warning); ``metrics.json`` writes them as ``null``.

Shape:
    - every map: ``(X, Y, Z)`` per subject, see :class:`uadlab.evaluation.inference.SubjectMaps`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from uadlab._checks import check_real
from uadlab.data.dataset import load_dataset
from uadlab.data.io import atomic_write, folder_lock
from uadlab.errors import DatasetError, UadlabWarning
from uadlab.evaluation import metrics
from uadlab.evaluation.inference import SubjectMaps, as_maps_list, predict
from uadlab.layout import EVAL_METRICS as _METRICS_FILE
from uadlab.layout import EVAL_SUBJECTS as _SUBJECTS_FILE
from uadlab.layout import check_output_folder
from uadlab.training.reconstruction import load_run, run_status

__all__ = [
    "FPRS",
    "SUBJECT_COLUMNS",
    "SUMMARY_KEYS",
    "EvaluationResult",
    "fit_threshold",
    "score",
    "fpr_thresholds",
    "evaluate_maps",
    "evaluate_run",
    "validation_source",
]

#: Target false-positive rates of the unsupervised thresholds (on healthy validation brain voxels).
FPRS: tuple[float, ...] = (0.01, 0.05, 0.10)

#: Columns of the per-subject table and of ``subjects.csv``.
SUBJECT_COLUMNS: tuple[str, ...] = ("subject_id", "cohort", "lesion_voxels", "predicted_voxels", "overlap_voxels",
                                   "dice", "auprc")

#: Keys of ``metrics.json`` at the top level (those of the first lesion cohort).
SUMMARY_KEYS: tuple[str, ...] = ("dice_d", "dice_s_mean", "dice_s_std", "auprc", "slice_auprc",
                                 "threshold", "n_subjects")

_HEALTHY = "healthy"  # the healthy cohort of a built data set (uadlab.data.dataset)

Maps = Mapping[str, SubjectMaps] | Sequence[SubjectMaps]


@dataclass
class EvaluationResult:
    """Test-split metrics at a validation threshold, plus the labelled oracle and FPR references.

    Metrics are fractions in ``[0, 1]`` (NaN when undefined); ``*_ci`` are ``(low, high)`` 95 %
    percentile bootstrap intervals over subjects.

    Attributes:
        threshold: the threshold fitted on validation data, in anomaly-map units.
        n_subjects: test subjects scored.
        dice_d: pooled DICE over all test voxels.
        dice_d_ci: its bootstrap interval.
        dice_s_mean: mean per-subject DICE (subjects with a defined DICE).
        dice_s_std: population sd of the per-subject DICE.
        dice_s_ci: bootstrap interval of ``dice_s_mean``.
        auprc: voxel-wise average precision over brain voxels.
        auprc_ci: its bootstrap interval.
        slice_auprc: average precision of axial-slice detection (Fig. 6).
        sensitivity: TP / (TP + FN) inside the brain at ``threshold``.
        specificity: TN / (TN + FP) inside the brain at ``threshold``.
        oracle_dice_d: best DICE_D of any threshold *on the test split* — an oracle, not a result.
        oracle_threshold: the threshold reaching it.
        fpr_thresholds: ``{fpr: threshold}`` from healthy validation brain voxels (empty without
            healthy maps).
        fpr_dice_d: ``{fpr: test DICE_D at that threshold}``.
        subjects: per-subject table, columns :data:`SUBJECT_COLUMNS`.
        threshold_source: where the threshold came from (free text, e.g. ``"val split of tumour"``).
        n_val_subjects: validation subjects the threshold was fitted on.
    """

    threshold: float
    n_subjects: int
    dice_d: float
    dice_d_ci: tuple[float, float]
    dice_s_mean: float
    dice_s_std: float
    dice_s_ci: tuple[float, float]
    auprc: float
    auprc_ci: tuple[float, float]
    slice_auprc: float
    sensitivity: float
    specificity: float
    oracle_dice_d: float = float("nan")
    oracle_threshold: float = float("nan")
    fpr_thresholds: dict[float, float] = field(default_factory=dict)
    fpr_dice_d: dict[float, float] = field(default_factory=dict)
    subjects: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(SUBJECT_COLUMNS)))
    threshold_source: str = ""
    n_val_subjects: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready metrics (no per-subject table): NaN becomes ``None``, FPR keys become strings.

        >>> r = EvaluationResult(0.5, 1, 0.8, (0.7, 0.9), 0.8, 0.0, (0.8, 0.8), float("nan"), (0.1, 0.2),
        ...                      0.9, 0.7, 0.99, fpr_thresholds={0.01: 0.3})
        >>> r.to_dict()["auprc"], r.to_dict()["fpr_thresholds"]
        (None, {'0.01': 0.3})
        """
        out: dict[str, Any] = {}
        for name in ("threshold", "threshold_source", "n_val_subjects", "n_subjects", "dice_d", "dice_d_ci",
                     "dice_s_mean", "dice_s_std", "dice_s_ci", "auprc", "auprc_ci", "slice_auprc",
                     "sensitivity", "specificity", "oracle_dice_d", "oracle_threshold"):
            out[name] = _json_value(getattr(self, name))
        out["fpr_thresholds"] = {_fpr_key(k): _json_value(v) for k, v in self.fpr_thresholds.items()}
        out["fpr_dice_d"] = {_fpr_key(k): _json_value(v) for k, v in self.fpr_dice_d.items()}
        return out


def fit_threshold(
    val_maps: Maps,
    *,
    method: Literal["greedy", "grid"] = "greedy",
    iterations: int = 10,
    lo: float = 0.0,
    hi: float | None = None,
    thresholds: Sequence[float] | None = None,
) -> float:
    """Fit the binarisation threshold on a labelled validation split (Bengs et al. 2021, Sec. 2.3).

    Maximises DICE_D of ``anomaly_map > t`` over the validation subjects. Pass validation maps
    only: the test split must never reach this function (:func:`evaluate_maps` checks that the
    two share no subject).

    Args:
        val_maps: validation :class:`~uadlab.evaluation.inference.SubjectMaps` (a dict from
            :func:`uadlab.evaluation.inference.predict` or a list), each with a lesion mask.
        method: ``"greedy"`` (the paper's interval search, :func:`uadlab.evaluation.metrics.greedy_threshold_search`)
            or ``"grid"`` (Lambert et al., :func:`uadlab.evaluation.metrics.grid_threshold_search`).
        iterations: interval halvings of the greedy search.
        lo: lower end of the greedy search interval, in anomaly-map units.
        hi: upper end of the greedy search interval; ``None``: 1 (the paper's interval for residuals
            in [0, 1]), or the largest validation score when a model's anomaly score reaches past 1
            (the z-score floor), so the search always covers the map's range.
        thresholds: candidate grid for ``"grid"``; ``None``: the default of
            :func:`uadlab.evaluation.metrics.grid_threshold_search` (15 values in ``[0, 0.15]``).

    Returns:
        The threshold, in anomaly-map units.

    Raises:
        ValueError: an unknown ``method``, ``thresholds`` with ``method="greedy"``, no maps, a
            subject without a lesion mask, or no lesion voxel in the whole split.
        TypeError: an element is not a :class:`SubjectMaps`.
    """
    if method not in ("greedy", "grid"):
        raise ValueError(f"`method` must be 'greedy' or 'grid', got {method!r}")
    if method == "greedy" and thresholds is not None:
        raise ValueError(f"`thresholds` must be None with method='greedy' (it is the grid of "
                         f"method='grid'), got {thresholds!r}")
    items = as_maps_list(val_maps, "val_maps", labelled=True)
    scores = [m.anomaly_map for m in items]
    labels = [m.lesion_mask for m in items]
    if method == "greedy":
        if hi is None:
            hi = max(1.0, max(float(s.max()) for s in scores))
        return metrics.greedy_threshold_search(scores, labels, iterations, lo, hi)
    if thresholds is None:
        return metrics.grid_threshold_search(scores, labels)
    return metrics.grid_threshold_search(scores, labels, thresholds)


def score(maps: Maps, threshold: float, *, n_resamples: int = 1000, seed: int = 0,
          confidence: float = 0.95) -> EvaluationResult:
    """Metrics of test maps at a fixed threshold (Bengs et al. 2021, Sec. 2.3).

    Args:
        maps: test :class:`~uadlab.evaluation.inference.SubjectMaps`, each with a lesion mask.
        threshold: threshold from :func:`fit_threshold` on validation data.
        n_resamples: bootstrap resamples of subjects.
        seed: seed of the bootstrap (same seed, same intervals).
        confidence: coverage of the intervals.

    Returns:
        An :class:`EvaluationResult` without the oracle and FPR references (see :func:`evaluate_maps`).

    Raises:
        ValueError: no maps, a subject without a lesion mask, a non-finite threshold, bad bootstrap
            options.
        TypeError: an element is not a :class:`SubjectMaps`.
    """
    items = as_maps_list(maps, "maps", labelled=True)
    threshold = check_real("threshold", threshold, "a finite number")
    scores = [m.anomaly_map for m in items]
    labels = [m.lesion_mask for m in items]
    brains = [m.brain_mask for m in items]
    preds = [metrics.binarize(s, threshold) for s in scores]
    n = len(items)
    boot = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}

    dice_d = metrics.dice_dataset(preds, labels)
    dice_d_ci = metrics.bootstrap_ci(metrics.pooled_dice_statistic(preds, labels), n_subjects=n, **boot)
    dice_s = metrics.dice_subjects(preds, labels)
    defined = dice_s[~np.isnan(dice_s)]
    dice_s_mean = float(defined.mean()) if defined.size else float("nan")
    dice_s_std = float(defined.std()) if defined.size else float("nan")
    dice_s_ci = metrics.bootstrap_ci(dice_s, **boot) if defined.size else (float("nan"), float("nan"))
    voxel_auprc = metrics.auprc(scores, labels, mask=brains)
    auprc_ci = metrics.bootstrap_ci(metrics.pooled_auprc_statistic(scores, labels, mask=brains),
                                    n_subjects=n, **boot)
    with warnings.catch_warnings():  # a subject without lesion: NaN, reported once by the pooled metrics
        warnings.simplefilter("ignore", metrics.UndefinedMetricWarning)
        per_subject_auprc = [metrics.auprc(s, y, mask=b) for s, y, b in zip(scores, labels, brains)]
    subjects = pd.DataFrame({
        "subject_id": [m.subject_id for m in items],
        "cohort": [m.cohort for m in items],
        "lesion_voxels": [m.lesion_voxels for m in items],
        "predicted_voxels": [int(np.count_nonzero(p)) for p in preds],
        "overlap_voxels": [int(np.count_nonzero(p & y)) for p, y in zip(preds, labels)],  # DICE_D pools these
        "dice": dice_s,
        "auprc": per_subject_auprc,
    }, columns=list(SUBJECT_COLUMNS))
    return EvaluationResult(
        threshold=threshold, n_subjects=n, dice_d=dice_d, dice_d_ci=dice_d_ci, dice_s_mean=dice_s_mean,
        dice_s_std=dice_s_std, dice_s_ci=dice_s_ci, auprc=voxel_auprc, auprc_ci=auprc_ci,
        slice_auprc=metrics.slice_auprc([m.residual for m in items], labels, brains),
        sensitivity=metrics.sensitivity(preds, labels, mask=brains),
        specificity=metrics.specificity(preds, labels, mask=brains),
        subjects=subjects,
    )


def fpr_thresholds(healthy_maps: Maps, fprs: Iterable[float] = FPRS) -> dict[float, float]:
    """Unsupervised thresholds: the anomaly-map scores exceeded by a share ``fpr`` of healthy voxels.

    No lesion label is needed: on healthy validation subjects (the ``healthy`` cohort's ``val``
    split), at most a fraction ``fpr`` of brain voxels score above each threshold
    (:func:`uadlab.evaluation.metrics.fpr_threshold`).

    Args:
        healthy_maps: :class:`~uadlab.evaluation.inference.SubjectMaps` of healthy validation subjects.
        fprs: target false-positive rates in ``[0, 1]``.

    Returns:
        ``{fpr: threshold}``, thresholds non-increasing as ``fpr`` grows.

    Raises:
        ValueError: no maps, or an ``fpr`` outside ``[0, 1]``.
        TypeError: an element is not a :class:`SubjectMaps`.
    """
    items = as_maps_list(healthy_maps, "healthy_maps", labelled=False)
    scores = [m.anomaly_map for m in items]
    brains = [m.brain_mask for m in items]
    return {float(f): metrics.fpr_threshold(scores, f, mask=brains) for f in fprs}


def evaluate_maps(
    val_maps: Maps,
    test_maps: Maps,
    healthy_val_maps: Maps | None = None,
    *,
    method: Literal["greedy", "grid"] = "greedy",
    fprs: Iterable[float] = FPRS,
    n_resamples: int = 1000,
    seed: int = 0,
    threshold_source: str = "",
) -> EvaluationResult:
    """The whole protocol on maps in memory: threshold on validation, metrics on test, references.

    Args:
        val_maps: labelled validation maps (the threshold is fitted on these only).
        test_maps: labelled test maps (scored; also give the oracle, named as such).
        healthy_val_maps: healthy validation maps for the unsupervised FPR thresholds; ``None``
            skips them.
        method: threshold search, see :func:`fit_threshold`.
        fprs: target false-positive rates of the unsupervised thresholds.
        n_resamples: bootstrap resamples.
        seed: bootstrap seed.
        threshold_source: free-text note of where ``val_maps`` came from, kept in the result.

    Returns:
        The :class:`EvaluationResult` with ``oracle_*`` and ``fpr_*`` filled in.

    Raises:
        ValueError: validation and test share a subject id (the threshold would see test data), a
            healthy map shares an id with the test maps, or as :func:`fit_threshold` / :func:`score`.
    """
    val_items = as_maps_list(val_maps, "val_maps", labelled=True)
    test_items = as_maps_list(test_maps, "test_maps", labelled=True)
    test_ids = {m.subject_id for m in test_items}
    leaked = sorted(test_ids & {m.subject_id for m in val_items})
    if leaked:
        raise ValueError(f"`val_maps` must not contain test subjects, got {leaked!r}")
    healthy_items = None
    if healthy_val_maps is not None:
        healthy_items = as_maps_list(healthy_val_maps, "healthy_val_maps", labelled=False)
        leaked = sorted(test_ids & {m.subject_id for m in healthy_items})
        if leaked:
            raise ValueError(f"`healthy_val_maps` must not contain test subjects, got {leaked!r}")
    threshold = fit_threshold(val_items, method=method)
    result = score(test_items, threshold, n_resamples=n_resamples, seed=seed)
    result.threshold_source = threshold_source
    result.n_val_subjects = len(val_items)
    result.oracle_dice_d, result.oracle_threshold = metrics.oracle_dice(
        [m.anomaly_map for m in test_items], [m.lesion_mask for m in test_items])
    if healthy_items is not None:
        result.fpr_thresholds = fpr_thresholds(healthy_items, fprs)
        preds_labels = [(m.anomaly_map, m.lesion_mask) for m in test_items]
        result.fpr_dice_d = {
            f: metrics.dice_dataset([metrics.binarize(s, t) for s, _ in preds_labels],
                                    [y for _, y in preds_labels])
            for f, t in result.fpr_thresholds.items()
        }
    return result


def evaluate_run(
    run_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    val_data: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = False,
    device: str | None = None,
    method: Literal["greedy", "grid"] = "greedy",
    postprocess_kwargs: Mapping[str, Any] | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Score one trained run on every lesion cohort of a built data set (``uadlab evaluate``).

    For each lesion cohort of ``data_dir`` with test subjects, the threshold is fitted on that
    cohort's own validation split (tumour threshold from tumour val, stroke from stroke val). When
    ``data_dir`` has no validation subject of the cohort (e.g. the real sample set, test cases
    only), the threshold comes from ``val_data``: its validation split of the cohort of the same
    name if it has one, otherwise all its lesion cohorts' validation subjects pooled (a
    domain-shifted but still honest threshold: no test label is used). ``threshold_source`` in
    each cohort's metrics records which. The unsupervised FPR thresholds use the healthy
    validation split of ``data_dir``, else of ``val_data``, else of the run's own training data
    (``config.data`` of the run, so a run scores a data set of lesion cohorts only); they are
    omitted, with a note in ``healthy_val_note``, when none has one or the training data is gone.

    Writes, atomically, ``OUT/metrics.json`` — the :data:`SUMMARY_KEYS` of the first lesion cohort
    at the top level plus ``"cohort"`` (its name), ``"run"``, ``"experiment"``, ``"data"``,
    ``"val_data"``, ``"healthy_val_data"`` and ``"healthy_val_note"`` (where the FPR thresholds
    came from, or why they were skipped), ``"training"`` (:func:`uadlab.training.run_status`:
    epochs trained, best epoch, whether training finished; an unfinished run is evaluated with a
    :class:`~uadlab.errors.UadlabWarning`), ``"unscored_subjects"`` (test subjects whose lesion has
    no voxel on the built grid: left out, not scored as DICE 0), ``"data_warnings"`` (those the
    data set recorded) and ``"cohorts": {name: every metric incl. CIs, oracle and FPR
    thresholds}`` — and ``OUT/subjects.csv`` (one row per scored test subject,
    :data:`SUBJECT_COLUMNS`). ``OUT`` is locked while it is written
    (:func:`uadlab.data.io.folder_lock`).

    Args:
        run_dir: folder written by :func:`uadlab.training.train`.
        data_dir: folder built by ``uadlab data build`` holding the test split.
        out_dir: output folder, created if needed.
        val_data: another built data set with labelled validation cases, for cohorts ``data_dir``
            has no validation cases of.
        overwrite: replace an existing ``OUT/metrics.json`` and ``OUT/subjects.csv``.
        progress: show progress bars.
        device: where the model runs; ``None``: CUDA when available, else CPU.
        method: threshold search, see :func:`fit_threshold`.
        postprocess_kwargs: options of :func:`uadlab.evaluation.postprocessing.anomaly_map`; ``None``: the
            paper's (erode 1 voxel, 3 x 3 x 3 median).
        n_resamples: bootstrap resamples of the intervals.
        seed: bootstrap seed.

    Returns:
        The dict written to ``metrics.json``.

    Raises:
        RunError: ``OUT/metrics.json`` or ``OUT/subjects.csv`` exists and ``overwrite`` is False,
            or ``OUT`` is a file, a built data set or a training run (checked before any work); the
            run is missing or unreadable.
        uadlab.errors.UadlabError: another process is writing ``OUT``.
        DatasetError: a data set is missing, has no lesion test subjects, its volumes do not fit
            the model, or a cohort has no labelled validation subject in ``data_dir`` nor in
            ``val_data``.
    """
    out_dir = Path(out_dir)
    _check_out(out_dir, overwrite)
    with folder_lock(out_dir):
        _check_out(out_dir, overwrite)  # again, now that no other process can write it
        return _evaluate_run(run_dir, data_dir, out_dir, val_data=val_data, overwrite=overwrite,
                             progress=progress, device=device, method=method,
                             postprocess_kwargs=postprocess_kwargs, n_resamples=n_resamples, seed=seed)


def _check_out(out_dir: Path, overwrite: bool) -> None:
    """:func:`uadlab.layout.check_output_folder` for an evaluation folder."""
    check_output_folder(out_dir, writer="an evaluation", owned=(out_dir / _METRICS_FILE, out_dir / _SUBJECTS_FILE),
                        overwrite=overwrite)


def _evaluate_run(run_dir: str | Path, data_dir: str | Path, out_dir: Path, *, val_data: str | Path | None,
                  overwrite: bool, progress: bool, device: str | None, method: Literal["greedy", "grid"],
                  postprocess_kwargs: Mapping[str, Any] | None, n_resamples: int, seed: int) -> dict[str, Any]:
    """:func:`evaluate_run` once ``out_dir`` is checked and locked."""
    model, config = load_run(run_dir, device=device)
    status = run_status(run_dir)
    if not status["finished"]:
        warnings.warn(f"{run_dir}: training did not finish (stopped after epoch {status['epochs']} of at most "
                      f"{status['max_epochs']}); evaluating its best epoch {status['best_epoch']} all the same "
                      "(resume it with --resume)", UadlabWarning, stacklevel=3)
    dataset = load_dataset(data_dir)
    val_dataset = load_dataset(val_data) if val_data is not None else None
    cohorts = [c for c in dataset.lesion_cohorts if dataset.ids(cohort=c, split="test")]
    if not cohorts:
        raise DatasetError(f"{data_dir}: no lesion cohort has test subjects to evaluate")
    plans = {c: validation_source(c, dataset, val_dataset, data_dir, val_data) for c in cohorts}
    _check_grid(model, run_dir, dataset, data_dir)
    if val_dataset is not None:
        _check_grid(model, run_dir, val_dataset, val_data)

    cache: dict[tuple[int, str], SubjectMaps] = {}
    clock = {"seconds": 0.0, "subjects": 0}  # inference time per subject, for the model cards and the zoo

    def maps_of(source: Any, ids: list[str]) -> list[SubjectMaps]:
        missing = [i for i in ids if (id(source), i) not in cache]
        if missing:
            start = time.perf_counter()
            for subject_id, m in predict(model, source, missing, postprocess_kwargs=postprocess_kwargs,
                                          progress=progress, device=device).items():
                # another data set may reuse the test ids (two phantom builds): keep them apart
                cache[(id(source), subject_id)] = m if source is dataset else \
                    dataclasses.replace(m, subject_id=f"val_data:{subject_id}")
            clock["seconds"] += time.perf_counter() - start
            clock["subjects"] += len(missing)
        return [cache[(id(source), i)] for i in ids]

    healthy_source, healthy_path, healthy_note = _healthy_plan(
        [(dataset, data_dir), (val_dataset, val_data)], getattr(config, "data", None))
    if healthy_source is not None:
        _check_grid(model, run_dir, healthy_source, healthy_path)
    healthy = (maps_of(healthy_source, healthy_source.ids(cohort=_HEALTHY, split="val"))
               if healthy_source is not None else None)

    results: dict[str, EvaluationResult] = {}
    unscored: list[str] = []
    for cohort in cohorts:
        source, val_ids, note = plans[cohort]
        test_ids = dataset.ids(cohort=cohort, split="test")
        test_maps = maps_of(dataset, test_ids)
        unscored += [m.subject_id for m in test_maps if m.lesion_voxels == 0]
        test_maps = [m for m in test_maps if m.lesion_voxels > 0]  # no lesion: no DICE, not a DICE of 0
        if test_maps:
            results[cohort] = evaluate_maps(
                maps_of(source, val_ids), test_maps, healthy,
                method=method, n_resamples=n_resamples, seed=seed, threshold_source=note)
        for i in test_ids:  # keep memory flat across cohorts
            cache.pop((id(dataset), i), None)
    if unscored:
        warnings.warn(f"{data_dir}: {len(unscored)} test subject(s) without a lesion voxel are not scored: "
                      f"{', '.join(unscored[:5])}{' ...' if len(unscored) > 5 else ''}", UadlabWarning,
                      stacklevel=3)
    if not results:
        raise DatasetError(f"{data_dir}: no test subject has a lesion voxel to score")
    cohorts = list(results)

    first = results[cohorts[0]].to_dict()
    summary: dict[str, Any] = {key: first[key] for key in SUMMARY_KEYS}
    summary.update({"cohort": cohorts[0], "experiment": config.experiment, "run": str(run_dir),
                    "data": str(data_dir), "val_data": None if val_data is None else str(val_data),
                    "healthy_val_data": None if healthy_path is None else str(healthy_path),
                    "healthy_val_note": healthy_note,
                    "training": status, "unscored_subjects": unscored,
                    "inference_seconds_per_subject": clock["seconds"] / max(clock["subjects"], 1),
                    "data_warnings": list(getattr(dataset, "info", {}).get("warnings", [])),
                    "cohorts": {c: r.to_dict() for c, r in results.items()}})
    subjects = pd.concat([r.subjects for r in results.values()], ignore_index=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(out_dir / _SUBJECTS_FILE, overwrite=overwrite) as tmp:
        subjects.to_csv(tmp, index=False)
    with atomic_write(out_dir / _METRICS_FILE, overwrite=overwrite) as tmp:
        Path(tmp).write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    return summary


def _check_grid(model: Any, run_dir: Any, dataset: Any, data_dir: Any) -> None:
    """``DatasetError`` when the data set's volumes do not match the model's input size."""
    size = getattr(model, "image_size", None)
    ids = dataset.ids()
    if size is None or not ids:
        return
    shape = tuple(np.shape(dataset.subject(ids[0]).image))
    if shape != (size,) * 3:
        raise DatasetError(f"{data_dir}: volumes are {shape}, but the run {run_dir} was trained on "
                           f"{size}^3 volumes; build the data set with the run's profile")


def _healthy_plan(candidates: list[tuple[Any, Any]], train_data: Any) -> tuple[Any, Any, str]:
    """``(data set, its path, note)`` whose healthy validation split gives the FPR thresholds.

    The first of ``candidates`` (``(data set or None, path)``: the evaluated data set, then
    ``val_data``) with healthy validation subjects; else the run's own training data set
    (``config.data``) when it can still be opened; else ``(None, None, why)``.
    """
    for source, path in candidates:
        if source is not None and _HEALTHY in source.cohorts and source.ids(cohort=_HEALTHY, split="val"):
            return source, path, f"healthy val split of {path}"
    if train_data is not None:
        try:
            source = load_dataset(train_data)
        except (DatasetError, OSError) as error:
            return None, None, f"FPR thresholds skipped: no healthy val split here, and the run's " \
                               f"training data cannot be opened ({error})"
        if _HEALTHY in source.cohorts and source.ids(cohort=_HEALTHY, split="val"):
            return source, train_data, f"healthy val split of the run's training data {train_data}"
    return None, None, "FPR thresholds skipped: no healthy val split in the evaluated data or the run's " \
                       "training data"


def validation_source(cohort: str, dataset: Any, val_dataset: Any, data_dir: Any,
                      val_data: Any) -> tuple[Any, list[str], str]:
    """Where the threshold of a lesion cohort comes from: the one rule of every study (Bengs et al. 2021, Sec. 2.3).

    The cohort's own validation split in ``dataset``; else ``val_dataset``'s validation split of the
    same cohort; else all of ``val_dataset``'s lesion validation cases, pooled. The test split is
    never a source.

    Args:
        cohort: the lesion cohort.
        dataset: the evaluated :class:`~uadlab.data.BuiltDataset`, at ``data_dir``.
        val_dataset: another built data set with labelled validation cases (``None``: none), at ``val_data``.
        data_dir, val_data: their paths, for the note and the message.

    Returns:
        ``(data set, validation subject ids, note)``; the note says where they came from.

    Raises:
        DatasetError: no labelled validation subject for the cohort in either.
    """
    own = dataset.ids(cohort=cohort, split="val")
    if own:
        return dataset, own, f"val split of {cohort} in {data_dir}"
    if val_dataset is not None:
        same = val_dataset.ids(cohort=cohort, split="val") if cohort in val_dataset.lesion_cohorts else []
        if same:
            return val_dataset, same, f"val split of {cohort} in {val_data}"
        pooled_cohorts = [c for c in val_dataset.lesion_cohorts if val_dataset.ids(cohort=c, split="val")]
        pooled = [i for c in pooled_cohorts for i in val_dataset.ids(cohort=c, split="val")]
        if pooled:
            return val_dataset, pooled, f"val splits of {', '.join(pooled_cohorts)} in {val_data} (pooled)"
    where = f"{data_dir}" if val_data is None else f"{data_dir} nor in {val_data}"
    hint = "" if val_data is not None else "; pass --val-data with a labelled validation set (e.g. a phantom build)"
    raise DatasetError(f"no labelled validation subjects to fit the {cohort!r} threshold in {where}{hint}")


def _fpr_key(fpr: float) -> str:
    """``0.01 -> '0.01'``, a stable JSON key."""
    return f"{fpr:g}"


def _json_value(value: Any) -> Any:
    """Plain JSON value: floats (NaN -> None), tuples -> lists, numpy scalars -> Python."""
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(value) else float(value)
    return value
