"""Segmentation and detection metrics, threshold selection and bootstrap intervals.

Bengs et al. 2021, Sec. 2.3: DICE = 2|X ∩ Y| / (|X| + |Y|),
reported pooled over a data set (DICE_D, :func:`dice_dataset`) and per subject (DICE_S,
:func:`dice_subjects`); AUPRC is average precision over all brain voxels (:func:`auprc`, exact
and equal to scikit-learn's ``average_precision_score``); slice-wise detection AUPRC
(:func:`slice_auprc`); the greedy threshold search on a labelled validation set
(:func:`greedy_threshold_search`), Lambert et al.'s grid (:func:`grid_threshold_search`), an
unsupervised threshold from healthy data (:func:`fpr_threshold`) and the test-set optimum, called
an *oracle* everywhere (:func:`oracle_dice`).

Conventions:
    - A voxel is predicted anomalous when its score is strictly greater than the threshold
      (:func:`binarize`), so zero-score background is never predicted, whatever the threshold.
    - ``scores``/``labels``/``preds``/``targets`` are arrays of any shape or, for data-set forms,
      lists of volumes; they are flattened and concatenated. Per-subject forms take a list of
      volumes or an array whose first axis indexes subjects.
    - ``mask`` (where accepted) selects the voxels that count, usually the brain masks; it has the
      structure of ``scores`` (an array of the same shape or a list of such arrays).
    - Undefined values (no positives, empty prediction and label) are NaN with an
      :class:`UndefinedMetricWarning`, never a made-up number.

Shape:
    - scores: ``(*)`` float, finite, or a list of such arrays.
    - labels / preds / targets: ``(*)`` bool (or 0/1), matching ``scores``.
    - per-subject forms: ``(N, *)`` arrays or lists of ``N`` arrays; results ``(N,)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from uadlab._checks import check_int, check_real

__all__ = [
    "UndefinedMetricWarning",
    "binarize",
    "dice",
    "dice_dataset",
    "dice_subjects",
    "sensitivity",
    "specificity",
    "auprc",
    "slice_scores",
    "slice_auprc",
    "greedy_threshold_search",
    "grid_threshold_search",
    "oracle_dice",
    "fpr_threshold",
    "bootstrap_ci",
    "pooled_dice_statistic",
    "pooled_auprc_statistic",
]

ArrayOrVolumes = np.ndarray | Sequence[np.ndarray]


class UndefinedMetricWarning(UserWarning):
    """A metric is undefined on the data given (e.g. no positives) and NaN was returned."""


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------

def _volumes(x: ArrayOrVolumes, name: str) -> list[np.ndarray]:
    """A list of arrays: the items of a list/tuple, or ``[x]`` for a single array."""
    if isinstance(x, (list, tuple)):
        if len(x) == 0:
            raise ValueError(f"`{name}` must hold at least one volume, got an empty {type(x).__name__}")
        return [np.asarray(v) for v in x]
    if isinstance(x, np.ndarray) or np.isscalar(x):
        return [np.asarray(x)]
    raise TypeError(f"`{name}` must be a numpy array or a list of arrays, got {type(x).__name__}")


def _subjects(x: ArrayOrVolumes, name: str) -> list[np.ndarray]:
    """Per-subject arrays: the items of a list, or the slices along axis 0 of an ``(N, *)`` array."""
    if isinstance(x, np.ndarray):
        if x.ndim < 2:
            raise ValueError(f"`{name}` must be an (N, ...) array with subjects along axis 0 or a "
                             f"list of volumes, got shape {x.shape!r}")
        return list(x)
    return _volumes(x, name)


def _check_pair(a: list[np.ndarray], b: list[np.ndarray], name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` unless two volume lists have equal lengths and per-item shapes."""
    if len(a) != len(b):
        raise ValueError(f"`{name_b}` must hold as many volumes as `{name_a}` ({len(a)}), got {len(b)}")
    for i, (u, v) in enumerate(zip(a, b)):
        if u.shape != v.shape:
            where = f" (volume {i})" if len(a) > 1 else ""
            raise ValueError(f"`{name_b}` must have the shape of `{name_a}` {u.shape}{where}, got {v.shape!r}")


def _as_bool(v: np.ndarray, name: str) -> np.ndarray:
    """``v`` as bool; accepts bool or numeric arrays holding only 0 and 1."""
    if v.dtype == bool:
        return v
    if not np.issubdtype(v.dtype, np.number):
        raise ValueError(f"`{name}` must be binary (bool or 0/1), got dtype {v.dtype!r}")
    if not ((v == 0) | (v == 1)).all():
        bad = v[(v != 0) & (v != 1)].flat[0]
        raise ValueError(f"`{name}` must be binary (bool or 0/1), got value {bad.item()!r}")
    return v.astype(bool)


def _as_scores(v: np.ndarray, name: str) -> np.ndarray:
    """``v`` as a finite real float array (float32 kept, other types to float64)."""
    if v.dtype == bool or not np.issubdtype(v.dtype, np.number) or np.iscomplexobj(v):
        raise ValueError(f"`{name}` must be a real-valued array of scores, got dtype {v.dtype!r}")
    if v.dtype not in (np.float32, np.float64):
        v = v.astype(np.float64)
    if not np.isfinite(v).all():
        raise ValueError(f"`{name}` must be finite, got {int((~np.isfinite(v)).sum())} NaN/inf values")
    return v


def _pooled_binary(x: ArrayOrVolumes, y: ArrayOrVolumes, name_x: str, name_y: str) -> tuple[np.ndarray, np.ndarray]:
    """Flatten and concatenate two matching collections of binary volumes."""
    xs, ys = _volumes(x, name_x), _volumes(y, name_y)
    _check_pair(xs, ys, name_x, name_y)
    return (np.concatenate([_as_bool(v, name_x).ravel() for v in xs]),
            np.concatenate([_as_bool(v, name_y).ravel() for v in ys]))


def _pooled_scores(scores: ArrayOrVolumes, labels: ArrayOrVolumes,
                   mask: ArrayOrVolumes | None) -> tuple[np.ndarray, np.ndarray]:
    """Flatten, concatenate and mask scores and labels -> ``(scores (n,), labels (n,) bool)``."""
    ss, ys = _volumes(scores, "scores"), _volumes(labels, "labels")
    _check_pair(ss, ys, "scores", "labels")
    ms = None
    if mask is not None:
        ms = _volumes(mask, "mask")
        _check_pair(ss, ms, "scores", "mask")
    flat_s, flat_y = [], []
    for i, (s, y) in enumerate(zip(ss, ys)):
        s, y = _as_scores(s, "scores"), _as_bool(y, "labels")
        if ms is not None:
            m = _as_bool(ms[i], "mask")
            s, y = s[m], y[m]
        flat_s.append(s.ravel())
        flat_y.append(y.ravel())
    out_s = np.concatenate(flat_s)
    if out_s.size == 0:
        raise ValueError("`scores` must hold at least one (masked) value, got none")
    return out_s, np.concatenate(flat_y)


def _undefined(message: str) -> float:
    """Warn that a metric is undefined and return NaN."""
    warnings.warn(message, UndefinedMetricWarning, stacklevel=3)
    return float("nan")


# --------------------------------------------------------------------------------------------
# Overlap metrics
# --------------------------------------------------------------------------------------------

def binarize(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Segmentation from an anomaly map: ``scores > threshold`` (strict, see module docstring).

    Args:
        scores: ``(*)`` anomaly map(s).
        threshold: scalar threshold in score units.

    Returns:
        ``bool`` array of the shape of ``scores``.

    Raises:
        ValueError: if ``threshold`` is not a finite number.

    >>> binarize(np.array([0.0, 0.2, 0.5]), 0.2)
    array([False, False,  True])
    """
    _check_threshold(threshold, "threshold")
    return np.asarray(scores) > threshold


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """DICE = 2|X ∩ Y| / (|X| + |Y|) of one binary segmentation (Bengs et al. 2021, Sec. 2.3).

    Args:
        pred: ``(*)`` predicted segmentation, bool or 0/1.
        target: ground-truth ``lesion_mask`` of the same shape.

    Returns:
        DICE in ``[0, 1]``; ``0`` for an empty prediction of a non-empty label; NaN with an
        :class:`UndefinedMetricWarning` when both are empty.

    Raises:
        ValueError: if the shapes differ or an array is not binary.

    >>> dice(np.array([1, 1, 0]), np.array([1, 0, 0]))
    0.6666666666666666
    """
    return dice_dataset(np.asarray(pred), np.asarray(target))


def dice_dataset(preds: ArrayOrVolumes, targets: ArrayOrVolumes) -> float:
    """DICE_D: one DICE over all voxels of a data set (Bengs et al. 2021, Sec. 2.3).

    Intersections and sizes are summed over subjects before dividing, so large lesions weigh more
    than in :func:`dice_subjects`.

    Args:
        preds: predicted segmentations, an array or a list of volumes (bool or 0/1).
        targets: lesion masks with the structure of ``preds``.

    Returns:
        pooled DICE in ``[0, 1]``; NaN with an :class:`UndefinedMetricWarning` when both are empty.

    Raises:
        ValueError: if shapes or list lengths differ, or a volume is not binary.

    >>> dice_dataset([np.array([1, 0]), np.array([1, 1])], [np.array([1, 1]), np.array([0, 0])])
    0.4
    """
    pred, target = _pooled_binary(preds, targets, "preds", "targets")
    intersection = np.count_nonzero(pred & target)
    size = np.count_nonzero(pred) + np.count_nonzero(target)
    if size == 0:
        return _undefined("DICE is undefined when prediction and target are both empty; returning NaN")
    return float(2.0 * intersection / size)


def dice_subjects(preds: ArrayOrVolumes, targets: ArrayOrVolumes) -> np.ndarray:
    """DICE_S: one DICE per subject (Bengs et al. 2021, Sec. 2.3; report mean ± sd).

    Args:
        preds: ``(N, *)`` array or list of ``N`` predicted segmentations (bool or 0/1).
        targets: lesion masks with the structure of ``preds``.

    Returns:
        ``(N,)`` float64: ``0`` for an empty prediction of a non-empty label; NaN (one
        :class:`UndefinedMetricWarning` naming the subjects) where both are empty; use
        ``np.nanmean`` to average.

    Raises:
        ValueError: if shapes or lengths differ, or a volume is not binary.

    >>> dice_subjects(np.array([[1, 0], [0, 0]]), np.array([[1, 1], [1, 0]]))
    array([0.66666667, 0.        ])
    """
    ps, ts = _subjects(preds, "preds"), _subjects(targets, "targets")
    _check_pair(ps, ts, "preds", "targets")
    out = np.empty(len(ps))
    for i, (p, t) in enumerate(zip(ps, ts)):
        p, t = _as_bool(p, "preds"), _as_bool(t, "targets")
        size = np.count_nonzero(p) + np.count_nonzero(t)
        out[i] = 2.0 * np.count_nonzero(p & t) / size if size else np.nan
    empty = np.flatnonzero(np.isnan(out))
    if empty.size:
        _undefined(f"DICE is undefined for subjects {empty.tolist()} (empty prediction and target); "
                   "their DICE_S is NaN")
    return out


def sensitivity(preds: ArrayOrVolumes, targets: ArrayOrVolumes, *, mask: ArrayOrVolumes | None = None) -> float:
    """Sensitivity (recall) TP / (TP + FN), pooled over all voxels (Lambert et al.).

    Args:
        preds: predicted segmentations, an array or a list of volumes.
        targets: lesion masks with the structure of ``preds``.
        mask: optional voxels that count (e.g. brain masks), same structure.

    Returns:
        sensitivity in ``[0, 1]``; NaN with an :class:`UndefinedMetricWarning` without positives.

    Raises:
        ValueError: if shapes or lengths differ, or an array is not binary.

    >>> sensitivity(np.array([1, 0, 1, 0]), np.array([1, 1, 0, 0]))
    0.5
    """
    pred, target = _masked_binary(preds, targets, mask)
    positives = np.count_nonzero(target)
    if positives == 0:
        return _undefined("sensitivity is undefined without positive voxels; returning NaN")
    return float(np.count_nonzero(pred & target) / positives)


def specificity(preds: ArrayOrVolumes, targets: ArrayOrVolumes, *, mask: ArrayOrVolumes | None = None) -> float:
    """Specificity TN / (TN + FP), pooled over all voxels (Lambert et al.).

    Pass the brain masks as ``mask``: otherwise the background outside the head, trivially
    negative, inflates the value.

    Args:
        preds: predicted segmentations, an array or a list of volumes.
        targets: lesion masks with the structure of ``preds``.
        mask: optional voxels that count (e.g. brain masks), same structure.

    Returns:
        specificity in ``[0, 1]``; NaN with an :class:`UndefinedMetricWarning` without negatives.

    Raises:
        ValueError: if shapes or lengths differ, or an array is not binary.

    >>> specificity(np.array([1, 0, 1, 0]), np.array([1, 1, 0, 0]))
    0.5
    """
    pred, target = _masked_binary(preds, targets, mask)
    negatives = np.count_nonzero(~target)
    if negatives == 0:
        return _undefined("specificity is undefined without negative voxels; returning NaN")
    return float(np.count_nonzero(~pred & ~target) / negatives)


def _masked_binary(preds, targets, mask) -> tuple[np.ndarray, np.ndarray]:
    """Pooled binary predictions and targets, restricted to ``mask`` when given."""
    pred, target = _pooled_binary(preds, targets, "preds", "targets")
    if mask is not None:
        _, m = _pooled_binary(preds, mask, "preds", "mask")
        pred, target = pred[m], target[m]
    return pred, target


# --------------------------------------------------------------------------------------------
# Sorted scores: the one precomputation behind AUPRC, the oracle and the threshold searches
# --------------------------------------------------------------------------------------------

class _SortedScores:
    """Scores of positive and negative voxels, each sorted once.

    Counting the voxels above any threshold is then two binary searches, O(log n), so a
    threshold search evaluates DICE_D without touching the voxels again.
    """

    def __init__(self, scores: np.ndarray, labels: np.ndarray) -> None:
        self.pos = np.sort(scores[labels])
        self.neg = np.sort(scores[~labels])
        self.n_pos = self.pos.size
        self.n_neg = self.neg.size

    def counts_above(self, threshold: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(tp, fp)``: positives and negatives with ``score > threshold``."""
        tp = self.n_pos - np.searchsorted(self.pos, threshold, side="right")
        fp = self.n_neg - np.searchsorted(self.neg, threshold, side="right")
        return tp, fp

    def dice_at(self, threshold: float | np.ndarray) -> np.ndarray:
        """Pooled DICE of ``score > threshold``: 2 TP / (P + TP + FP); requires ``n_pos > 0``."""
        tp, fp = self.counts_above(threshold)
        return 2.0 * tp / (self.n_pos + tp + fp)

    def positive_cuts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(values, tp, fp)`` at each distinct positive score ``v``, counting ``score >= v``.

        These are the points of the precision-recall curve where recall changes, i.e. all that
        average precision and the best F1 depend on. ``values`` is descending.
        """
        values = np.unique(self.pos)[::-1]
        tp = self.n_pos - np.searchsorted(self.pos, values, side="left")
        fp = self.n_neg - np.searchsorted(self.neg, values, side="left")
        return values, tp, fp

    def next_lower(self, value: float) -> float | None:
        """The largest score strictly below ``value`` (positive or negative), or ``None``."""
        below = []
        for arr in (self.pos, self.neg):
            i = np.searchsorted(arr, value, side="left")
            if i > 0:
                below.append(float(arr[i - 1]))
        return max(below) if below else None


# --------------------------------------------------------------------------------------------
# Precision-recall metrics
# --------------------------------------------------------------------------------------------

def auprc(scores: ArrayOrVolumes, labels: ArrayOrVolumes, *, mask: ArrayOrVolumes | None = None) -> float:
    """AUPRC as average precision over voxels (Bengs et al. 2021, Sec. 2.3).

    AP = Σₙ (Rₙ − Rₙ₋₁) Pₙ over the thresholds of the precision-recall curve, tied scores forming
    one threshold: exactly scikit-learn's ``average_precision_score`` (step-wise, not the
    optimistic trapezoidal area), computed from two sorts instead of an argsort of all voxels.

    Args:
        scores: anomaly maps, an array or a list of volumes.
        labels: lesion masks (bool or 0/1) with the structure of ``scores``.
        mask: optional voxels that count, e.g. the brain masks (the paper scores brain voxels).

    Returns:
        AUPRC in ``[0, 1]``; NaN with an :class:`UndefinedMetricWarning` without positives.

    Raises:
        ValueError: if shapes or lengths differ, scores are not finite, labels not binary.

    >>> auprc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.8333333333333333
    """
    s, y = _pooled_scores(scores, labels, mask)
    sorted_scores = _SortedScores(s, y)
    if sorted_scores.n_pos == 0:
        return _undefined("AUPRC is undefined without positive voxels; returning NaN")
    _, tp, fp = sorted_scores.positive_cuts()
    recall_steps = np.diff(tp, prepend=0) / sorted_scores.n_pos
    return float(np.sum(recall_steps * tp / (tp + fp)))


def oracle_dice(scores: ArrayOrVolumes, labels: ArrayOrVolumes, *,
                mask: ArrayOrVolumes | None = None) -> tuple[float, float]:
    """Oracle DICE_D: the best pooled DICE any threshold reaches on these data, and that threshold.

    DICE of ``score > t`` equals the F1 score, so the oracle is the maximum F1 over the
    precision-recall curve, found exactly. It is an upper bound that *looks at the labels it is
    scored on*: report it as an oracle, never as a result (thresholds for results come from
    :func:`greedy_threshold_search` on validation data).

    The returned threshold lies midway between the lowest score the optimum predicts and the next
    lower score in the data, so ``binarize(scores, threshold)`` reproduces the optimum.

    Args:
        scores: anomaly maps, an array or a list of volumes.
        labels: lesion masks with the structure of ``scores``.
        mask: optional voxels that count, e.g. brain masks.

    Returns:
        ``(oracle_dice, oracle_threshold)``; ``(nan, nan)`` with an :class:`UndefinedMetricWarning`
        without positives.

    Raises:
        ValueError: if shapes or lengths differ, scores are not finite, labels not binary.

    >>> best, threshold = oracle_dice(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    >>> best, round(threshold, 3)
    (0.8, 0.225)
    """
    s, y = _pooled_scores(scores, labels, mask)
    sorted_scores = _SortedScores(s, y)
    if sorted_scores.n_pos == 0:
        nan = _undefined("oracle DICE is undefined without positive voxels; returning NaN")
        return nan, nan
    values, tp, fp = sorted_scores.positive_cuts()
    f1 = 2.0 * tp / (sorted_scores.n_pos + tp + fp)
    best = int(np.argmax(f1))
    return float(f1[best]), _threshold_below(sorted_scores, float(values[best]))


def _threshold_below(sorted_scores: _SortedScores, value: float) -> float:
    """A threshold ``t`` with ``score > t`` ⟺ ``score >= value`` on the data."""
    lower = sorted_scores.next_lower(value)
    if lower is None:
        return float(np.nextafter(value, -np.inf))
    t = 0.5 * (value + lower)
    return t if t < value else lower  # adjacent floats: the midpoint rounds to an end


# --------------------------------------------------------------------------------------------
# Slice-wise detection
# --------------------------------------------------------------------------------------------

def slice_scores(residuals: ArrayOrVolumes, lesion_masks: ArrayOrVolumes, brain_masks: ArrayOrVolumes,
                 *, reduce: Literal["mean", "sum"] = "sum") -> tuple[np.ndarray, np.ndarray]:
    """Score and label every axial slice (Bengs et al. 2021, Sec. 2.3, Fig. 6).

    Slice ``k`` of a volume is ``volume[:, :, k]`` (last axis). Its label is True when it holds any
    lesion voxel; its score is the residual summed (``"sum"``, the paper's l1 distance between the
    slice and its reconstruction) or averaged (``"mean"``, which discounts the brain's area in the
    slice) over the slice's brain voxels. Slices without brain voxels are excluded: they carry no brain to judge
    and would add trivially-normal zero-score slices that inflate precision.

    Args:
        residuals: ``(X, Y, Z)``, ``(N, X, Y, Z)`` or a list of ``(X, Y, Z)`` residuals / anomaly maps.
        lesion_masks: lesion masks, same structure.
        brain_masks: brain masks, same structure.
        reduce: ``"sum"`` (default, the paper's) or ``"mean"`` over the slice's brain voxels.

    Returns:
        ``(scores, labels)``, ``(S,)`` float64 and bool, the kept slices of all volumes in order.

    Raises:
        ValueError: on shape mismatch, non-3D volumes, non-finite residuals, non-binary masks or an
            unknown ``reduce``.

    >>> r = np.ones((2, 2, 3)); brain = np.ones((2, 2, 3), bool); brain[:, :, 2] = False
    >>> lesion = np.zeros((2, 2, 3), bool); lesion[0, 0, 1] = True
    >>> slice_scores(r, lesion, brain, reduce="sum")
    (array([4., 4.]), array([False,  True]))
    """
    if reduce not in ("mean", "sum"):
        raise ValueError(f"`reduce` must be 'mean' or 'sum', got {reduce!r}")
    rs = _subjects(residuals, "residuals") if _is_batch(residuals) else _volumes(residuals, "residuals")
    ls = _subjects(lesion_masks, "lesion_masks") if _is_batch(lesion_masks) else _volumes(lesion_masks, "lesion_masks")
    bs = _subjects(brain_masks, "brain_masks") if _is_batch(brain_masks) else _volumes(brain_masks, "brain_masks")
    _check_pair(rs, ls, "residuals", "lesion_masks")
    _check_pair(rs, bs, "residuals", "brain_masks")
    all_scores, all_labels = [], []
    for r, lesion, brain in zip(rs, ls, bs):
        if r.ndim != 3:
            raise ValueError(f"`residuals` must hold (X, Y, Z) volumes, got shape {r.shape!r}")
        r = _as_scores(r, "residuals")
        lesion, brain = _as_bool(lesion, "lesion_masks"), _as_bool(brain, "brain_masks")
        n_brain = brain.sum(axis=(0, 1))
        score = (r * brain).sum(axis=(0, 1), dtype=np.float64)
        keep = n_brain > 0
        if reduce == "mean":
            score = score[keep] / n_brain[keep]
        else:
            score = score[keep]
        all_scores.append(score)
        all_labels.append(lesion.any(axis=(0, 1))[keep])
    return np.concatenate(all_scores), np.concatenate(all_labels)


def _is_batch(x: ArrayOrVolumes) -> bool:
    """True for a 4D ``(N, X, Y, Z)`` array."""
    return isinstance(x, np.ndarray) and x.ndim == 4


def slice_auprc(residuals: ArrayOrVolumes, lesion_masks: ArrayOrVolumes, brain_masks: ArrayOrVolumes,
                *, reduce: Literal["mean", "sum"] = "sum") -> float:
    """Slice-wise detection AUPRC (Bengs et al. 2021, Sec. 2.3, Fig. 6).

    :func:`auprc` of the axial-slice scores and labels of :func:`slice_scores` (slices without
    brain voxels excluded).

    Args:
        residuals: ``(X, Y, Z)``, ``(N, X, Y, Z)`` or a list of residuals / anomaly maps.
        lesion_masks: lesion masks, same structure.
        brain_masks: brain masks, same structure.
        reduce: ``"sum"`` (default: the slice's l1 distance, as the paper) or ``"mean"`` of the
            residual over a slice's brain voxels.

    Returns:
        AUPRC in ``[0, 1]``; NaN with an :class:`UndefinedMetricWarning` if no slice is abnormal.

    Raises:
        ValueError: as :func:`slice_scores`.

    >>> r = np.zeros((2, 2, 3)); r[:, :, 1] = 1.0; lesion = r > 0
    >>> slice_auprc(r, lesion, np.ones((2, 2, 3), bool))
    1.0
    """
    scores, labels = slice_scores(residuals, lesion_masks, brain_masks, reduce=reduce)
    return auprc(scores, labels)


# --------------------------------------------------------------------------------------------
# Thresholds
# --------------------------------------------------------------------------------------------

def _check_threshold(value: float, name: str) -> float:
    """``value`` as a finite float; ``TypeError`` for a non-number, ``ValueError`` for NaN/inf."""
    return check_real(name, value, "a finite number")


def _search_data(scores, labels, mask) -> _SortedScores:
    """Sorted scores for a threshold search; ``ValueError`` without lesion voxels."""
    sorted_scores = _SortedScores(*_pooled_scores(scores, labels, mask))
    if sorted_scores.n_pos == 0:
        raise ValueError("`labels` must contain at least one lesion voxel to choose a threshold, got none")
    return sorted_scores


def greedy_threshold_search(scores: ArrayOrVolumes, labels: ArrayOrVolumes, iterations: int = 10,
                            lo: float = 0.0, hi: float = 1.0, *,
                            mask: ArrayOrVolumes | None = None) -> float:
    """The paper's greedy threshold search maximising DICE_D (Bengs et al. 2021, Sec. 2.3).

    Each iteration evaluates DICE_D at t₁ = lo + ¼(hi − lo) and t₂ = lo + ¾(hi − lo); if t₁ is at
    least as good the interval becomes [lo, mid], else [mid, hi]. The best threshold seen (the
    first on ties) is returned. Ties go to the lower half: equal DICE happens mostly when both
    thresholds lie above every score (DICE 0 at both), where only a lower threshold can help.

    Run it on a labelled *validation* set and apply the threshold unchanged to the test set. The
    function is pure: the result depends only on the arguments. The scores are sorted once, so
    each DICE_D evaluation is O(log n) and identical to ``dice_dataset(scores > t, labels)``.

    Args:
        scores: validation anomaly maps, an array or a list of volumes.
        labels: validation lesion masks, same structure.
        iterations: halvings of the interval (paper: 10, resolution (hi − lo)/2¹⁰ ≈ 0.001).
        lo: lower end of the initial interval, in score units.
        hi: upper end, ``> lo``.
        mask: optional voxels that count (e.g. brain masks).

    Returns:
        The threshold with the best DICE_D seen.

    Raises:
        TypeError: ``iterations`` is not an int, or ``lo``/``hi`` not a number.
        ValueError: on bad arguments, shape mismatch, non-finite scores, or no lesion voxels.

    >>> s = np.array([0.1, 0.2, 0.6, 0.7]); y = np.array([0, 0, 1, 1])
    >>> t = greedy_threshold_search(s, y); bool(0.2 <= t < 0.6)
    True
    """
    check_int("iterations", iterations, "a positive int", lambda v: v >= 1)
    lo, hi = _check_threshold(lo, "lo"), _check_threshold(hi, "hi")
    if not hi > lo:
        raise ValueError(f"`hi` must be greater than `lo` ({lo!r}), got {hi!r}")
    sorted_scores = _search_data(scores, labels, mask)
    best_t, best_d = np.nan, -np.inf
    for _ in range(iterations):
        t1, t2 = lo + 0.25 * (hi - lo), lo + 0.75 * (hi - lo)
        d1, d2 = (float(d) for d in sorted_scores.dice_at(np.array([t1, t2])))
        for t, d in ((t1, d1), (t2, d2)):
            if d > best_d:
                best_t, best_d = t, d
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if d1 >= d2 else (mid, hi)
    return best_t


def grid_threshold_search(scores: ArrayOrVolumes, labels: ArrayOrVolumes,
                          thresholds: np.ndarray | Sequence[float] = np.linspace(0, 0.15, 15), *,
                          mask: ArrayOrVolumes | None = None) -> float:
    """Threshold with the best DICE_D among a fixed grid (Lambert et al.: 15 values in [0, 0.15]).

    Args:
        scores: validation anomaly maps, an array or a list of volumes.
        labels: validation lesion masks, same structure.
        thresholds: ``(K,)`` finite candidate thresholds; the first best one is returned.
        mask: optional voxels that count (e.g. brain masks).

    Returns:
        The best threshold of the grid.

    Raises:
        ValueError: on an empty or non-finite grid, shape mismatch, or no lesion voxels.

    >>> grid_threshold_search(np.array([0.01, 0.02, 0.1, 0.12]), np.array([0, 0, 1, 1]))
    0.02142857142857143
    """
    grid = np.asarray(thresholds, dtype=np.float64)
    if grid.ndim != 1 or grid.size == 0 or not np.isfinite(grid).all():
        raise ValueError(f"`thresholds` must be a non-empty 1D array of finite numbers, got {thresholds!r}")
    sorted_scores = _search_data(scores, labels, mask)
    return float(grid[int(np.argmax(sorted_scores.dice_at(grid)))])


def fpr_threshold(healthy_scores: ArrayOrVolumes, fpr: float, *, mask: ArrayOrVolumes | None = None) -> float:
    """Unsupervised threshold: the (1 − fpr) quantile of healthy brain-voxel scores.

    Needs no lesion labels: on healthy validation data, at most a fraction ``fpr`` of the voxels
    score above the returned threshold (the quantile is taken at an observed score, rounding up,
    so ties never push the rate above ``fpr``).

    Args:
        healthy_scores: anomaly maps of healthy subjects, an array or a list of volumes.
        fpr: target false-positive rate in ``[0, 1]``.
        mask: optional voxels that count (pass the brain masks).

    Returns:
        The threshold, in score units.

    Raises:
        TypeError: if ``fpr`` is not a number.
        ValueError: if ``fpr`` is outside ``[0, 1]``, or the scores are empty or not finite.

    >>> fpr_threshold(np.arange(100) / 100, 0.1)
    0.9
    """
    check_real("fpr", fpr, "a number in [0, 1]", lambda v: 0 <= v <= 1)
    vs = _volumes(healthy_scores, "healthy_scores")
    dummy = [np.zeros(v.shape, bool) for v in vs]
    s, _ = _pooled_scores(vs, dummy, mask)
    return float(np.quantile(s, 1.0 - fpr, method="higher"))


# --------------------------------------------------------------------------------------------
# Bootstrap over subjects
# --------------------------------------------------------------------------------------------

def bootstrap_ci(values_or_fn: np.ndarray | Sequence[float] | Callable[[np.ndarray], float], *,
                 n_subjects: int | None = None, n_resamples: int = 1000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval, resampling subjects with replacement.

    Two forms:

    - **per-subject statistic** — ``values_or_fn`` is ``(N,)`` per-subject values (e.g. DICE_S);
      the statistic is their mean (``nanmean``: subjects with undefined DICE are skipped).
    - **pooled statistic** — ``values_or_fn`` is a function ``fn(counts) -> float`` where
      ``counts`` is ``(N,)`` int, how many times each subject is drawn; it recomputes the pooled
      metric with subject ``i`` weighted ``counts[i]`` times. :func:`pooled_dice_statistic` and
      :func:`pooled_auprc_statistic` build such functions for DICE_D and AUPRC (subjects, not
      voxels, are the independent units). ``n_subjects`` is then required.

    Args:
        values_or_fn: per-subject values, or a statistic of the resampling counts.
        n_subjects: number of subjects; required with a function, checked against values.
        n_resamples: bootstrap resamples.
        confidence: interval coverage in ``(0, 1)``.
        seed: seed of the ``numpy.random.Generator`` drawing the resamples (deterministic).

    Returns:
        ``(low, high)``, the ``(1 − c)/2`` and ``(1 + c)/2`` percentiles of the resampled statistic.

    Raises:
        ValueError: on bad option values, or empty/infinite/all-NaN values.
        TypeError: if ``values_or_fn`` is neither array-like nor callable, an option has the wrong
            type, or ``n_subjects`` is missing with a function.

    >>> low, high = bootstrap_ci(np.array([0.2, 0.4, 0.6]), n_resamples=200)
    >>> bool(0.2 <= low <= 0.4 <= high <= 0.6)
    True
    """
    check_int("n_resamples", n_resamples, "a positive int", lambda v: v >= 1)
    check_real("confidence", confidence, "a float in (0, 1)", lambda v: 0 < v < 1)
    if callable(values_or_fn):
        statistic = values_or_fn
        n = check_int("n_subjects", n_subjects, "a positive int when a statistic function is given", lambda v: v >= 1)
    else:
        if isinstance(values_or_fn, (str, bytes)) or not isinstance(values_or_fn, (np.ndarray, list, tuple)):
            raise TypeError(f"`values_or_fn` must be per-subject values or a callable, "
                            f"got {type(values_or_fn).__name__}")
        values = np.asarray(values_or_fn, dtype=np.float64)
        if values.ndim != 1 or values.size == 0 or np.isinf(values).any() or np.isnan(values).all():
            raise ValueError(f"`values_or_fn` must be a non-empty 1D array of per-subject values "
                             f"(NaN allowed, not all), got {values_or_fn!r}")
        if n_subjects is not None and n_subjects != values.size:
            raise ValueError(f"`n_subjects` must equal the number of values ({values.size}), got {n_subjects!r}")
        n = values.size

        def statistic(counts: np.ndarray) -> float:
            keep = ~np.isnan(values) & (counts > 0)
            return float(np.sum(counts[keep] * values[keep]) / np.sum(counts[keep])) if keep.any() else np.nan

    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    for b in range(n_resamples):
        counts = np.bincount(rng.integers(0, n, size=n), minlength=n)
        stats[b] = statistic(counts)
    alpha = 100.0 * (1.0 - confidence) / 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(stats, [alpha, 100.0 - alpha])
    return float(low), float(high)


def pooled_dice_statistic(preds: ArrayOrVolumes, targets: ArrayOrVolumes) -> Callable[[np.ndarray], float]:
    """A :func:`bootstrap_ci` statistic: DICE_D of a resample of subjects, exact.

    Per-subject intersections and sizes are counted once; a resample's DICE_D is their
    ``counts``-weighted sums' ratio, so ``fn(np.ones(N))`` equals :func:`dice_dataset`.

    Args:
        preds: ``(N, *)`` array or list of ``N`` predicted segmentations.
        targets: lesion masks, same structure.

    Returns:
        ``fn(counts: (N,) int) -> float`` (NaN when the resample has no foreground).

    Raises:
        ValueError: as :func:`dice_subjects`.

    >>> fn = pooled_dice_statistic([np.array([1, 0]), np.array([1, 1])], [np.array([1, 1]), np.array([0, 0])])
    >>> fn(np.array([1, 1])), fn(np.array([2, 0]))
    (0.4, 0.6666666666666666)
    """
    ps, ts = _subjects(preds, "preds"), _subjects(targets, "targets")
    _check_pair(ps, ts, "preds", "targets")
    inter, size = np.empty(len(ps)), np.empty(len(ps))
    for i, (p, t) in enumerate(zip(ps, ts)):
        p, t = _as_bool(p, "preds"), _as_bool(t, "targets")
        inter[i] = np.count_nonzero(p & t)
        size[i] = np.count_nonzero(p) + np.count_nonzero(t)

    def statistic(counts: np.ndarray) -> float:
        total = counts @ size
        return float(2.0 * (counts @ inter) / total) if total else float("nan")

    return statistic


def pooled_auprc_statistic(scores: ArrayOrVolumes, labels: ArrayOrVolumes, *,
                           mask: ArrayOrVolumes | None = None,
                           n_bins: int = 10_000) -> Callable[[np.ndarray], float]:
    """A :func:`bootstrap_ci` statistic: voxel AUPRC of a resample of subjects.

    Re-sorting all voxels for each of 1000 resamples would take hours on a real test set, so each
    subject's positive and negative scores are binned once into at most ``n_bins`` shared bins
    whose edges are quantiles of all scores; a resample's AUPRC is average precision on the
    ``counts``-weighted histograms. A bin holding a single score value is one tie group, exactly as
    in :func:`auprc`; within a bin holding several values the precision is taken at the bin's
    midpoint (half its positives and negatives counted), which assumes they interleave evenly.
    With at most ``n_bins`` distinct scores the result is therefore exact; otherwise it differs
    from :func:`auprc` by well under 1e-3 at the default (about 1e-5 to 1e-4 on continuous
    anomaly maps of 200 subjects at 64^3), far below the bootstrap spread.

    Args:
        scores: ``(N, *)`` array or list of ``N`` anomaly maps.
        labels: lesion masks, same structure.
        mask: optional voxels that count (brain masks), same structure.
        n_bins: maximum number of quantile bins, ``>= 2``.

    Returns:
        ``fn(counts: (N,) int) -> float`` (NaN when the resample has no positive voxel).

    Raises:
        TypeError: ``n_bins`` is not an int.
        ValueError: as :func:`auprc`, or ``n_bins`` below 2.

    >>> fn = pooled_auprc_statistic([np.array([0.1, 0.4]), np.array([0.35, 0.8])], [np.array([0, 0]), np.array([1, 1])])
    >>> fn(np.array([1, 1]))
    0.8333333333333333
    """
    check_int("n_bins", n_bins, "an int >= 2", lambda v: v >= 2)
    ss, ys = _subjects(scores, "scores"), _subjects(labels, "labels")
    _check_pair(ss, ys, "scores", "labels")
    ms: list[np.ndarray | None] = [None] * len(ss)
    if mask is not None:
        ms = _subjects(mask, "mask")
        _check_pair(ss, ms, "scores", "mask")
    per_subject = [_pooled_scores(s, y, m) for s, y, m in zip(ss, ys, ms)]
    all_scores = np.concatenate([s for s, _ in per_subject])
    uniq = np.unique(all_scores)
    if uniq.size <= n_bins:
        edges = uniq  # one bin per distinct value: exact
    else:
        edges = np.unique(np.quantile(all_scores, np.linspace(0.0, 1.0, n_bins + 1)[:-1], method="lower"))
    # histograms ordered from the highest bin down, as the precision-recall curve is traversed
    pos = np.zeros((len(ss), edges.size))
    neg = np.zeros((len(ss), edges.size))
    n_values = np.zeros(edges.size)
    n_at_edge = np.zeros(edges.size)
    for i, (s, y) in enumerate(per_subject):
        bins = np.searchsorted(edges, s, side="right") - 1
        pos[i] = np.bincount(bins[y], minlength=edges.size)[::-1]
        neg[i] = np.bincount(bins[~y], minlength=edges.size)[::-1]
        n_values += np.bincount(bins, minlength=edges.size)[::-1]
        n_at_edge += np.bincount(bins, weights=s == edges[bins], minlength=edges.size)[::-1]
    single_valued = n_values == n_at_edge

    def statistic(counts: np.ndarray) -> float:
        d_tp, d_fp = counts @ pos, counts @ neg
        tp, fp = np.cumsum(d_tp), np.cumsum(d_fp)
        n_pos = tp[-1]
        if n_pos == 0:
            return float("nan")
        hit = d_tp > 0  # only bins that add recall contribute
        d_tp, d_fp, tp, fp = d_tp[hit], d_fp[hit], tp[hit], fp[hit]
        tp_mid, fp_mid = tp - d_tp / 2, fp - d_fp / 2
        precision = np.where(single_valued[hit], tp / (tp + fp), tp_mid / (tp_mid + fp_mid))
        return float(np.sum(d_tp / n_pos * precision))

    return statistic
