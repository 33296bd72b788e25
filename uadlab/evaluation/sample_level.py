"""Sample-level outputs of Chatterjee et al. (MOOD): where the anomaly is, and is this subject abnormal?

MOOD scores a method twice: voxel-wise (the segmentation metrics of :mod:`uadlab.evaluation.metrics`)
and per sample, where each subject gets one anomaly score and healthy vs lesion subjects are
separated by it. Chatterjee et al. also report the location of the maximum anomaly. This module
computes, from anomaly maps (:func:`uadlab.evaluation.postprocessing.anomaly_map`):

- :func:`max_anomaly_location`: the voxel of the largest score (index, and mm through the affine);
- :func:`subject_score`: one score per subject, a high percentile of the map inside the brain;
- :func:`sample_level_metrics`: AUROC and average precision (scikit-learn) over subjects;
- :func:`sample_level_table` / :func:`sample_level_summary`: all of it for a set of subjects.

Decisions, fixed here once:

- **Subject score = the 99th percentile of the anomaly map over the brain voxels** (linear
  interpolation, numpy's default). The maximum is decided by one voxel, which the median filter
  already tries to suppress as noise; the mean over the brain dilutes a small lesion in ~10^5
  healthy voxels (a 1 cm^3 lesion is about 0.1 % of a brain). The 99th percentile responds to any
  anomaly covering more than ~1 % of the brain and ignores isolated outliers; ``percentile`` changes
  it (100 gives the maximum).
- **Ties of the maximum** go to the first voxel in C (row-major) order, as ``numpy.argmax``.
- **Labels**: a subject is positive when its lesion mask holds a voxel; subjects without a mask
  (healthy cohorts) are negative.
- **Post-processing** (Chatterjee et al.: binary threshold plus morphological closing): that is
  ``anomaly_map(..., closing_iterations=k)`` followed by :func:`~uadlab.evaluation.metrics.binarize`.
  The grey closing there uses a flat structuring element, and flat grey morphology commutes with
  thresholding, so thresholding the grey-closed map equals binary closing of the thresholded map
  (tested in ``tests/evaluation/test_sample_level.py``); no second implementation is needed.

Shape:
    - anomaly_map, brain_mask, lesion_mask: ``(X, Y, Z)`` (or ``(X, Y)`` for a slice).
    - affine: ``(4, 4)`` voxel-to-world in mm (``(3, 3)`` for a slice).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from uadlab._checks import check_real
from uadlab.errors import VolumeError
from uadlab.evaluation.metrics import UndefinedMetricWarning

__all__ = [
    "AnomalyLocation",
    "DEFAULT_PERCENTILE",
    "SAMPLE_COLUMNS",
    "SampleLevelResult",
    "max_anomaly_location",
    "sample_level_metrics",
    "sample_level_summary",
    "sample_level_table",
    "subject_score",
]

#: Percentile of the brain's anomaly-map values that scores a subject (see the module docstring).
DEFAULT_PERCENTILE: float = 99.0
#: Columns of :func:`sample_level_table`.
SAMPLE_COLUMNS: tuple[str, ...] = ("subject_id", "cohort", "split", "label", "score", "max_value",
                                   "max_x", "max_y", "max_z", "max_x_mm", "max_y_mm", "max_z_mm")


class AnomalyLocation(NamedTuple):
    """The voxel of the largest anomaly score.

    Attributes:
        index: voxel index, one int per axis.
        mm: world coordinates of that voxel's centre in mm (``affine @ [index, 1]``), or ``None``
            without an affine.
        value: the anomaly score there.
    """

    index: tuple[int, ...]
    mm: tuple[float, ...] | None
    value: float


class SampleLevelResult(NamedTuple):
    """Sample-level detection over subjects (MOOD's sample-level task).

    Attributes:
        auroc: area under the ROC curve, scikit-learn's ``roc_auc_score``; NaN with one class only.
        average_precision: scikit-learn's ``average_precision_score`` (step-wise, lesion subjects
            positive); NaN without positive subjects.
        n_healthy: negative subjects.
        n_lesion: positive subjects.
    """

    auroc: float
    average_precision: float
    n_healthy: int
    n_lesion: int


def max_anomaly_location(anomaly_map: np.ndarray, *, affine: np.ndarray | None = None,
                         brain_mask: np.ndarray | None = None) -> AnomalyLocation:
    """Location of the maximum anomaly (Chatterjee et al.).

    Args:
        anomaly_map: ``(X, Y, Z)`` or ``(X, Y)`` finite scores.
        affine: optional ``(4, 4)`` (``(3, 3)`` in 2D) voxel-to-world matrix, mm.
        brain_mask: optional ``bool`` mask of the map's shape; only its voxels are searched.

    Returns:
        The first voxel (C order) holding the largest score, its position in mm, and the score.

    Raises:
        ValueError: a map that is not a finite 2D/3D array, an affine or mask of the wrong shape,
            a mask that is not ``bool``.
        VolumeError: ``brain_mask`` is empty.

    >>> m = np.zeros((4, 4, 4)); m[1, 2, 3] = 0.7
    >>> max_anomaly_location(m, affine=np.diag([2.0, 2.0, 2.0, 1.0]))
    AnomalyLocation(index=(1, 2, 3), mm=(2.0, 4.0, 6.0), value=0.7)
    """
    anomaly_map = _check_map(anomaly_map)
    scores = anomaly_map
    if brain_mask is not None:
        brain_mask = _check_mask(brain_mask, anomaly_map.shape, "brain_mask")
        scores = np.where(brain_mask, anomaly_map, -np.inf)
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(scores)), scores.shape))
    mm = None
    if affine is not None:
        affine = np.asarray(affine, dtype=np.float64)
        ndim = anomaly_map.ndim
        if affine.shape != (ndim + 1, ndim + 1) or not np.isfinite(affine).all():
            raise ValueError(f"`affine` must be a finite ({ndim + 1}, {ndim + 1}) matrix, got shape {affine.shape}")
        mm = tuple(float(v) for v in (affine @ np.array([*index, 1.0]))[:ndim])
    return AnomalyLocation(index, mm, float(anomaly_map[index]))


def subject_score(anomaly_map: np.ndarray, brain_mask: np.ndarray, *,
                  percentile: float = DEFAULT_PERCENTILE) -> float:
    """One anomaly score per subject: a high percentile of the anomaly map inside the brain.

    Args:
        anomaly_map: ``(X, Y, Z)`` or ``(X, Y)`` finite scores.
        brain_mask: ``bool`` of the same shape, not empty.
        percentile: in ``[0, 100]``; 99 by default (why: module docstring), 100 is the maximum.

    Returns:
        The percentile (numpy's linear interpolation) of ``anomaly_map[brain_mask]``.

    Raises:
        TypeError: ``percentile`` is not a number.
        ValueError: a bad map or mask, or ``percentile`` outside ``[0, 100]``.
        VolumeError: ``brain_mask`` is empty.

    >>> m = np.arange(8, dtype=float).reshape(2, 2, 2)
    >>> subject_score(m, m >= 4, percentile=50.0)
    5.5
    """
    anomaly_map = _check_map(anomaly_map)
    brain_mask = _check_mask(brain_mask, anomaly_map.shape, "brain_mask")
    percentile = check_real("percentile", percentile, "a number in [0, 100]", lambda v: 0.0 <= v <= 100.0)
    return float(np.percentile(anomaly_map[brain_mask], percentile))


def sample_level_metrics(scores: Sequence[float] | np.ndarray,
                         labels: Sequence[bool] | np.ndarray) -> SampleLevelResult:
    """Sample-level AUROC and average precision over subjects (MOOD's sample-level task).

    Args:
        scores: ``(N,)`` finite subject scores (higher = more anomalous).
        labels: ``(N,)`` bool (or 0/1): ``True`` for a subject with a lesion.

    Returns:
        AUROC, average precision and the class counts; a metric that is undefined (one class
        only) is NaN with an :class:`~uadlab.evaluation.metrics.UndefinedMetricWarning`.

    Raises:
        ValueError: lengths differ, no subjects, scores not finite, labels not binary.

    >>> sample_level_metrics([0.1, 0.2, 0.3, 0.9], [False, True, False, True])
    SampleLevelResult(auroc=0.75, average_precision=0.8333333333333333, n_healthy=2, n_lesion=2)
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if scores.shape != labels.shape:
        raise ValueError(f"`labels` must have one entry per score ({scores.size}), got {labels.size}")
    if scores.size == 0:
        raise ValueError("`scores` must hold at least one subject, got none")
    if not np.isfinite(scores).all():
        raise ValueError(f"`scores` must be finite, got {int((~np.isfinite(scores)).sum())} NaN/inf")
    if labels.dtype != bool:
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"`labels` must be bool or 0/1, got values {np.unique(labels)[:5]!r}")
        labels = labels.astype(bool)
    n_lesion = int(labels.sum())
    n_healthy = int(labels.size - n_lesion)
    if n_lesion == 0 or n_healthy == 0:
        missing = "lesion" if n_lesion == 0 else "healthy"
        warnings.warn(f"sample-level AUROC is undefined without {missing} subjects; returning NaN",
                      UndefinedMetricWarning, stacklevel=2)
        auroc = float("nan")
    else:
        auroc = float(roc_auc_score(labels, scores))
    if n_lesion == 0:
        warnings.warn("sample-level average precision is undefined without lesion subjects; returning NaN",
                      UndefinedMetricWarning, stacklevel=2)
        ap = float("nan")
    else:
        ap = float(average_precision_score(labels, scores))
    return SampleLevelResult(auroc, ap, n_healthy, n_lesion)


def sample_level_table(maps: Iterable[Any] | Mapping[str, Any], *,
                       percentile: float = DEFAULT_PERCENTILE) -> pd.DataFrame:
    """Per-subject score, label and maximum location for a set of subjects.

    Args:
        maps: :class:`~uadlab.evaluation.inference.SubjectMaps` (or any objects with ``subject_id``,
            ``anomaly_map``, ``brain_mask``, ``lesion_mask``, ``affine`` and optionally ``cohort``,
            ``split``), as an iterable or a mapping whose values they are (``predict``'s result).
        percentile: of :func:`subject_score`.

    Returns:
        One row per subject, columns :data:`SAMPLE_COLUMNS`; ``max_*`` is the voxel index of the
        maximum inside the brain and ``max_*_mm`` its position in mm (NaN for the axes a 2D map
        lacks).

    Raises:
        ValueError / VolumeError: as :func:`subject_score` and :func:`max_anomaly_location`.
    """
    items = maps.values() if isinstance(maps, Mapping) else maps
    rows = []
    for item in items:
        lesion_mask = item.lesion_mask
        label = lesion_mask is not None and bool(np.asarray(lesion_mask).any())
        where = max_anomaly_location(item.anomaly_map, affine=item.affine, brain_mask=item.brain_mask)
        index = list(where.index) + [np.nan] * (3 - len(where.index))
        mm = list(where.mm if where.mm is not None else ()) + [np.nan] * (3 - len(where.mm or ()))
        rows.append([item.subject_id, getattr(item, "cohort", None), getattr(item, "split", None), label,
                     subject_score(item.anomaly_map, item.brain_mask, percentile=percentile), where.value,
                     *index, *mm])
    return pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))


def sample_level_summary(table: pd.DataFrame, *, healthy_cohort: str = "healthy") -> dict[str, SampleLevelResult]:
    """Sample-level AUROC / AP of a :func:`sample_level_table`, for all subjects and per lesion cohort.

    Args:
        table: from :func:`sample_level_table`.
        healthy_cohort: the cohort of the negatives that every lesion cohort is compared against.

    Returns:
        ``{"all": ..., cohort: ...}``: ``"all"`` uses every row with its label; each other cohort
        compares its lesion subjects (label ``True``) with the healthy cohort's subjects.

    Raises:
        ValueError: ``table`` lacks a column of :data:`SAMPLE_COLUMNS`.
    """
    missing = [c for c in ("cohort", "label", "score") if c not in table.columns]
    if missing:
        raise ValueError(f"`table` must have the columns of sample_level_table, missing {missing}")
    out = {"all": sample_level_metrics(table["score"].to_numpy(), table["label"].to_numpy(bool))}
    healthy = table[table["cohort"] == healthy_cohort]
    for cohort in sorted(c for c in table["cohort"].dropna().unique() if c != healthy_cohort):
        lesion = table[(table["cohort"] == cohort) & table["label"]]
        both = pd.concat([healthy, lesion])
        out[cohort] = sample_level_metrics(both["score"].to_numpy(), both["label"].to_numpy(bool))
    return out


def _check_map(anomaly_map: Any) -> np.ndarray:
    anomaly_map = np.asarray(anomaly_map)
    if anomaly_map.ndim not in (2, 3):
        raise ValueError(f"`anomaly_map` must be (X, Y) or (X, Y, Z), got shape {anomaly_map.shape}")
    if not np.issubdtype(anomaly_map.dtype, np.number) or np.issubdtype(anomaly_map.dtype, np.complexfloating):
        raise ValueError(f"`anomaly_map` must be a real numeric array, got dtype {anomaly_map.dtype}")
    if not np.isfinite(anomaly_map).all():
        raise ValueError(f"`anomaly_map` must be finite, got {int((~np.isfinite(anomaly_map)).sum())} NaN/inf voxels")
    return anomaly_map


def _check_mask(mask: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != bool:
        raise ValueError(f"`{name}` must be a bool array, got dtype {mask.dtype}")
    if mask.shape != shape:
        raise ValueError(f"`{name}` must have the shape of `anomaly_map` {shape}, got {mask.shape}")
    if not mask.any():
        raise VolumeError(f"`{name}` is empty; a subject score needs brain voxels")
    return mask
