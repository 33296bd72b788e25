"""Evaluation: from a trained model to anomaly maps, thresholds, metrics and the papers' tables.

Modules, lowest first: :mod:`~uadlab.evaluation.postprocessing` (residual -> anomaly map, Sec. 2.3),
:mod:`~uadlab.evaluation.metrics` (DICE, AUPRC, threshold searches),
:mod:`~uadlab.evaluation.sample_level` (Chatterjee et al.: maximum-anomaly location, subject scores,
sample-level AUROC/AP), :mod:`~uadlab.evaluation.inference`
(reconstruct a data set), :mod:`~uadlab.evaluation.protocol` (``uadlab evaluate``: threshold on
validation, metrics on test), :mod:`~uadlab.evaluation.lambert` (Lambert et al.'s protocol),
:mod:`~uadlab.evaluation.supervised` (Behrendt et al. 2024: the segmenter's probability as the anomaly map),
:mod:`~uadlab.evaluation.analysis` (Table 1 and Figs. 4-7 as tables).
"""

from uadlab.evaluation.protocol import (
    FPRS,
    SUBJECT_COLUMNS,
    SUMMARY_KEYS,
    EvaluationResult,
    evaluate_maps,
    evaluate_run,
    fit_threshold,
    fpr_thresholds,
    score,
)

__all__ = ["FPRS", "SUBJECT_COLUMNS", "SUMMARY_KEYS", "EvaluationResult", "fit_threshold", "score",
           "fpr_thresholds", "evaluate_maps", "evaluate_run"]
