"""Tests for uadlab.evaluation.metrics: known answers, scikit-learn references, naive re-implementations."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

from uadlab.evaluation.metrics import (
    UndefinedMetricWarning,
    auprc,
    binarize,
    bootstrap_ci,
    dice,
    dice_dataset,
    dice_subjects,
    fpr_threshold,
    greedy_threshold_search,
    grid_threshold_search,
    oracle_dice,
    pooled_auprc_statistic,
    pooled_dice_statistic,
    sensitivity,
    slice_auprc,
    slice_scores,
    specificity,
)


def _cube(shape, lo, hi):
    """A bool volume with the box ``[lo, hi)`` set."""
    v = np.zeros(shape, bool)
    v[tuple(slice(a, b) for a, b in zip(lo, hi))] = True
    return v


def _naive_greedy(scores, labels, iterations=10, lo=0.0, hi=1.0):
    """Bengs et al.'s search written out with a full DICE_D evaluation at every step."""
    best_t, best_d = None, -1.0
    for _ in range(iterations):
        t1, t2 = lo + (hi - lo) / 4, lo + 3 * (hi - lo) / 4
        d1, d2 = dice_dataset(scores > t1, labels), dice_dataset(scores > t2, labels)
        if d1 > best_d:
            best_t, best_d = t1, d1
        if d2 > best_d:
            best_t, best_d = t2, d2
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if d1 >= d2 else (mid, hi)
    return best_t


def _random_volumes(rng, n, shape=(6, 6, 4), ties=False):
    scores, labels = [], []
    for _ in range(n):
        y = rng.random(shape) < 0.15
        s = np.clip(rng.normal(0.2, 0.1, shape) + 0.25 * y, 0, 1)
        if ties:
            s = np.round(s * 16) / 16  # dyadic values: the searches' probes land exactly on scores
        scores.append(s)
        labels.append(y)
    return scores, labels



# ------------------------------------------------------------------ DICE

def test_dice_known_answers():
    shape = (6, 6, 6)
    pred = _cube(shape, (0, 0, 0), (2, 2, 2))       # 8 voxels
    target = _cube(shape, (1, 0, 0), (3, 2, 2))     # 8 voxels, 4 shared
    assert dice(pred, target) == pytest.approx(0.5)
    assert dice(target, target) == 1.0
    assert dice(pred, _cube(shape, (4, 4, 4), (6, 6, 6))) == 0.0
    assert dice(np.zeros(shape, bool), target) == 0.0  # empty prediction, non-empty label
    assert dice(pred.astype(np.uint8), target.astype(float)) == pytest.approx(0.5)  # 0/1 accepted


def test_dice_both_empty_is_nan_with_warning():
    with pytest.warns(UndefinedMetricWarning, match="both empty"):
        assert np.isnan(dice(np.zeros((3, 3, 3), bool), np.zeros((3, 3, 3), bool)))


def test_pooled_dice_differs_from_mean_of_subject_dice():
    shape = (10, 10, 10)
    big = _cube(shape, (0, 0, 0), (5, 5, 4))        # 100 voxels, found perfectly
    small_target = _cube(shape, (9, 9, 9), (10, 10, 10))
    small_pred = _cube(shape, (8, 9, 9), (10, 10, 10))  # 2 voxels, 1 correct
    preds, targets = [big, small_pred], [big, small_target]
    assert dice_dataset(preds, targets) == pytest.approx(2 * 101 / (102 + 101))
    per_subject = dice_subjects(preds, targets)
    np.testing.assert_allclose(per_subject, [1.0, 2 / 3])
    assert np.mean(per_subject) == pytest.approx(5 / 6)
    assert abs(dice_dataset(preds, targets) - np.mean(per_subject)) > 0.1
    # the stacked (N, X, Y, Z) form gives the same answers as the list form
    assert dice_dataset(np.stack(preds), np.stack(targets)) == dice_dataset(preds, targets)
    np.testing.assert_array_equal(dice_subjects(np.stack(preds), np.stack(targets)), per_subject)


def test_dice_subjects_empty_cases():
    shape = (4, 4, 4)
    lesion = _cube(shape, (0, 0, 0), (2, 2, 2))
    empty = np.zeros(shape, bool)
    with pytest.warns(UndefinedMetricWarning, match=r"subjects \[2\]"):
        out = dice_subjects([lesion, empty, empty], [lesion, lesion, empty])
    assert out[0] == 1.0 and out[1] == 0.0 and np.isnan(out[2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when every subject is defined
        dice_subjects([lesion], [lesion])


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: dice(np.zeros(3), np.zeros(4)), ValueError, r"`targets` must have the shape of `preds` \(3,\)"),
        (lambda: dice(np.array([0, 2]), np.array([0, 1])), ValueError, "`preds` must be binary.*got value 2"),
        (lambda: dice(np.array([0, 1]), np.array(["a", "b"])), ValueError, "`targets` must be binary.*dtype"),
        (lambda: dice_dataset([np.zeros(2)], [np.zeros(2), np.zeros(2)]), ValueError, "as many volumes"),
        (lambda: dice_dataset([], []), ValueError, "at least one volume"),
        (lambda: dice_dataset({1: 2}, np.zeros(2)), TypeError, "`preds` must be a numpy array or a list"),
        (lambda: dice_subjects(np.zeros(3), np.zeros(3)), ValueError, r"must be an \(N, ...\) array"),
        (lambda: dice_subjects([np.zeros(2), np.zeros(3)], [np.zeros(2), np.zeros(2)]), ValueError,
         r"\(volume 1\)"),
    ],
)
def test_dice_validation(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_sensitivity_and_specificity():
    pred = np.array([1, 1, 0, 0, 1, 0], bool)
    target = np.array([1, 0, 1, 0, 0, 0], bool)
    assert sensitivity(pred, target) == 0.5
    assert specificity(pred, target) == 0.5
    brain = np.array([1, 1, 1, 1, 0, 0], bool)  # ignore the last two voxels
    assert specificity(pred, target, mask=brain) == 0.5 and sensitivity(pred, target, mask=brain) == 0.5
    assert specificity(pred, target, mask=np.array([1, 0, 1, 1, 0, 1], bool)) == 1.0
    with pytest.warns(UndefinedMetricWarning, match="sensitivity"):
        assert np.isnan(sensitivity(pred, np.zeros(6, bool)))
    with pytest.warns(UndefinedMetricWarning, match="specificity"):
        assert np.isnan(specificity(pred, np.ones(6, bool)))
    with pytest.raises(ValueError, match="`mask` must have the shape"):
        sensitivity(pred, target, mask=np.ones(5, bool))


# ------------------------------------------------------------------ AUPRC

@pytest.mark.parametrize("ties", [False, True])
def test_auprc_matches_scikit_learn(rng, ties):
    for n in (1, 3, 20):
        scores, labels = _random_volumes(rng, n, ties=ties)
        flat_s = np.concatenate([s.ravel() for s in scores])
        flat_y = np.concatenate([y.ravel() for y in labels])
        if ties:
            assert np.unique(flat_s).size <= 17  # really tied
        expected = average_precision_score(flat_y, flat_s)
        assert auprc(scores, labels) == pytest.approx(expected, abs=1e-9)  # list of volumes
        assert auprc(np.stack(scores), np.stack(labels)) == pytest.approx(expected, abs=1e-9)
        assert auprc(scores[0].astype(np.float32), labels[0]) == pytest.approx(
            average_precision_score(labels[0].ravel(), scores[0].astype(np.float32).ravel()), abs=1e-6)


def test_auprc_mask_selects_voxels(rng):
    scores, labels = _random_volumes(rng, 4)
    masks = [rng.random(s.shape) < 0.7 for s in scores]
    expected = average_precision_score(np.concatenate([y[m] for y, m in zip(labels, masks)]),
                                       np.concatenate([s[m] for s, m in zip(scores, masks)]))
    assert auprc(scores, labels, mask=masks) == pytest.approx(expected, abs=1e-9)


def test_auprc_known_values_and_undefined():
    assert auprc(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0])) == 1.0
    assert auprc(np.array([0.5, 0.5, 0.5, 0.5]), np.array([1, 0, 0, 0])) == 0.25  # all tied: prevalence
    with pytest.warns(UndefinedMetricWarning, match="AUPRC"):
        assert np.isnan(auprc(np.array([0.1, 0.2]), np.array([0, 0])))


@pytest.mark.parametrize(
    ("scores", "labels", "kwargs", "match"),
    [
        (np.array([0.1, np.nan]), np.array([0, 1]), {}, "`scores` must be finite"),
        (np.array([True, False]), np.array([0, 1]), {}, "`scores` must be a real-valued"),
        (np.array([0.1, 0.2]), np.array([0, 1, 1]), {}, "`labels` must have the shape"),
        (np.array([0.1, 0.2]), np.array([0, 0.5]), {}, "`labels` must be binary"),
        (np.array([0.1, 0.2]), np.array([0, 1]), {"mask": np.zeros(2, bool)}, "at least one"),
    ],
)
def test_auprc_validation(scores, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        auprc(scores, labels, **kwargs)


# ------------------------------------------------------------------ slice-wise detection

def test_slice_scores_and_auprc_known_answer():
    shape = (2, 2, 5)
    r = np.zeros(shape)
    r[:, :, 0], r[:, :, 1], r[:, :, 2], r[:, :, 3] = 0.1, 0.4, 0.35, 0.8
    r[0, 0, 4] = 9.0          # slice 4 has no brain: excluded despite its lesion and score
    brain = np.ones(shape, bool)
    brain[:, :, 4] = False
    brain[1, 1, 1] = False    # slice 1: 3 brain voxels; its residual outside the brain is ignored
    lesion = np.zeros(shape, bool)
    lesion[0, 0, 2] = lesion[1, 1, 3] = lesion[0, 0, 4] = True
    scores, labels = slice_scores(r, lesion, brain, reduce="mean")
    np.testing.assert_allclose(scores, [0.1, 0.4, 0.35, 0.8])
    np.testing.assert_array_equal(labels, [False, False, True, True])
    sums, _ = slice_scores(r, lesion, brain, reduce="sum")
    np.testing.assert_allclose(sums, [0.4, 1.2, 1.4, 3.2])
    # mean: abnormal slices rank 2nd and 4th -> AP = (1/2)(1) + (1/2)(2/3) = 5/6
    assert slice_auprc(r, lesion, brain, reduce="mean") == pytest.approx(5 / 6)
    assert slice_auprc(r, lesion, brain) == pytest.approx(1.0)  # sums (the default, the paper's l1) rank them first
    # batched and list forms pool the slices of all subjects
    assert slice_auprc(np.stack([r, r]), np.stack([lesion, lesion]), np.stack([brain, brain]),
                       reduce="mean") == pytest.approx(5 / 6)
    assert slice_scores([r, r], [lesion, lesion], [brain, brain])[0].shape == (8,)


def test_slice_auprc_validation():
    v, m = np.zeros((2, 2, 3)), np.ones((2, 2, 3), bool)
    with pytest.raises(ValueError, match="`reduce` must be 'mean' or 'sum'"):
        slice_auprc(v, m, m, reduce="max")
    with pytest.raises(ValueError, match="`brain_masks` must have the shape"):
        slice_auprc(v, m, np.ones((2, 2, 4), bool))
    with pytest.raises(ValueError, match=r"must hold \(X, Y, Z\) volumes"):
        slice_auprc(np.zeros((2, 2)), np.ones((2, 2), bool), np.ones((2, 2), bool))
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(slice_auprc(v, ~m, m))


# ------------------------------------------------------------------ thresholds

def _planted(n=3000):
    """Negatives evenly in [0, 0.3), positives evenly in [0.3, 0.6): DICE_D peaks (= 1) at 0.3."""
    scores = np.r_[np.linspace(0, 0.3, n, endpoint=False), np.linspace(0.3, 0.6, n, endpoint=False)]
    labels = np.r_[np.zeros(n, bool), np.ones(n, bool)]
    return scores.reshape(2, 30, -1), labels.reshape(2, 30, -1)


def test_greedy_search_finds_a_planted_optimum():
    scores, labels = _planted()
    t = greedy_threshold_search(scores, labels)
    assert abs(t - 0.3) < 2 / 2**10  # within the search's resolution
    assert dice_dataset(scores > t, labels) > 0.99
    # fewer iterations, coarser answer; a shifted interval still finds it
    assert abs(greedy_threshold_search(scores, labels, iterations=3) - 0.3) > 2 / 2**10
    assert abs(greedy_threshold_search(scores, labels, lo=0.2, hi=0.5) - 0.3) < 1e-3


@pytest.mark.parametrize("ties", [False, True])
def test_greedy_search_equals_naive_implementation(rng, ties):
    for _ in range(5):
        scores, labels = _random_volumes(rng, 3, ties=ties)
        s, y = np.stack(scores), np.stack(labels)
        for lo, hi, it in ((0.0, 1.0, 10), (0.1, 0.6, 7)):
            assert greedy_threshold_search(scores, labels, it, lo, hi) == _naive_greedy(s, y, it, lo, hi)


def test_greedy_search_has_no_hidden_state(rng):
    val_scores, val_labels = _random_volumes(rng, 3)
    test_scores, test_labels = _random_volumes(rng, 3)
    copies = [v.copy() for v in val_scores]
    first = greedy_threshold_search(val_scores, val_labels)
    other = greedy_threshold_search(test_scores, test_labels)
    assert first != other  # the data matter ...
    assert greedy_threshold_search(val_scores, val_labels) == first  # ... and only the data given
    for v, c in zip(val_scores, copies):
        np.testing.assert_array_equal(v, c)  # inputs untouched


def test_greedy_ties_go_to_the_lower_half():
    # every score is far below the first probes (DICE 0 at both): the search must move down
    scores = np.r_[np.full(50, 0.001), np.full(50, 0.01)]
    labels = np.r_[np.zeros(50, bool), np.ones(50, bool)]
    t = greedy_threshold_search(scores, labels, iterations=10)
    assert 0.001 <= t < 0.01
    assert dice(scores > t, labels) == 1.0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"iterations": 0}, "`iterations` must be a positive int"),
        ({"lo": 0.5, "hi": 0.5}, "`hi` must be greater than `lo`"),
        ({"hi": float("nan")}, "`hi` must be a finite number"),
    ],
)
def test_greedy_search_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        greedy_threshold_search(np.array([0.1, 0.9]), np.array([0, 1]), **kwargs)


def test_searches_need_a_lesion():
    with pytest.raises(ValueError, match="at least one lesion voxel"):
        greedy_threshold_search(np.array([0.1, 0.9]), np.array([0, 0]))
    with pytest.raises(ValueError, match="at least one lesion voxel"):
        grid_threshold_search(np.array([0.1, 0.9]), np.array([0, 0]))


def test_searches_threshold_strictly():
    scores, labels = np.array([0.25, 0.25, 0.5, 0.5]), np.array([0, 0, 1, 1])
    # at 0.25, "score > t" keeps the two lesion voxels only (DICE 1); at 0.5 nothing (DICE 0)
    assert grid_threshold_search(scores, labels, [0.5, 0.25]) == 0.25
    assert greedy_threshold_search(scores, labels, iterations=1) == 0.25


def test_grid_search_equals_naive_argmax(rng):
    scores, labels = _random_volumes(rng, 4)
    grid = np.linspace(0, 0.5, 23)
    naive = grid[int(np.argmax([dice_dataset([s > t for s in scores], labels) for t in grid]))]
    assert grid_threshold_search(scores, labels, grid) == naive
    assert grid_threshold_search(scores, labels) in np.linspace(0, 0.15, 15)  # Lambert et al.'s grid
    with pytest.raises(ValueError, match="`thresholds` must be a non-empty 1D array"):
        grid_threshold_search(scores, labels, [])


@pytest.mark.parametrize("ties", [False, True])
def test_oracle_is_the_exact_best_dice(rng, ties):
    scores, labels = _random_volumes(rng, 2, shape=(5, 5, 3), ties=ties)
    s, y = np.concatenate([v.ravel() for v in scores]), np.concatenate([v.ravel() for v in labels])
    best, threshold = oracle_dice(scores, labels)
    candidates = np.r_[np.unique(s), -1.0]
    brute = max(dice(s >= c, y) for c in candidates)  # every distinct cut
    assert best == pytest.approx(brute, abs=1e-12)
    assert dice(binarize(s, threshold), y) == pytest.approx(best, abs=1e-12)  # the threshold reproduces it
    assert best == pytest.approx(f1_score(y, s > threshold), abs=1e-12)
    for t in np.linspace(-0.1, 1.1, 61):
        assert dice(s > t, y) <= best + 1e-12
    assert best >= dice(s > greedy_threshold_search(scores, labels), y)


def test_oracle_undefined_and_adjacent_floats():
    with pytest.warns(UndefinedMetricWarning, match="oracle"):
        best, t = oracle_dice(np.array([0.1, 0.2]), np.array([0, 0]))
    assert np.isnan(best) and np.isnan(t)
    a = 0.5
    b = np.nextafter(a, 0.0)  # no float strictly between: the threshold must still separate them
    best, t = oracle_dice(np.array([b, a]), np.array([0, 1]))
    assert best == 1.0 and b <= t < a
    best, t = oracle_dice(np.array([0.3, 0.3]), np.array([1, 1]))  # predict all: threshold below the minimum
    assert best == 1.0 and t < 0.3


def test_fpr_threshold_gives_the_stated_rate(rng):
    healthy = [rng.random((20, 20, 20)) for _ in range(3)]
    flat = np.concatenate([h.ravel() for h in healthy])
    for fpr in (0.001, 0.01, 0.05, 0.2):
        t = fpr_threshold(healthy, fpr)
        rate = np.mean(flat > t)
        assert rate <= fpr and rate == pytest.approx(fpr, abs=1e-4)
    brain = [h > 0.5 for h in healthy]  # only the masked voxels count
    t = fpr_threshold(healthy, 0.1, mask=brain)
    assert np.mean(flat[flat > 0.5] > t) == pytest.approx(0.1, abs=1e-3)
    assert fpr_threshold(np.zeros(10), 0.0) == 0.0
    for bad, error in ((-0.1, ValueError), (1.5, ValueError), (float("nan"), ValueError), (True, TypeError),
                       ("0.1", TypeError)):
        with pytest.raises(error, match="`fpr` must be a number in"):
            fpr_threshold(healthy, bad)


def test_binarize_is_strict():
    np.testing.assert_array_equal(binarize(np.array([0.0, 0.3, 0.31]), 0.3), [False, False, True])
    with pytest.raises(ValueError, match="`threshold` must be a finite number"):
        binarize(np.zeros(2), float("inf"))


# ------------------------------------------------------------------ bootstrap

def test_bootstrap_per_subject_values(rng):
    values = rng.normal(0.3, 0.1, 40)
    low, high = bootstrap_ci(values, n_resamples=500)
    assert low < values.mean() < high
    assert (low, high) == bootstrap_ci(values, n_resamples=500)            # seeded, deterministic
    assert (low, high) != bootstrap_ci(values, n_resamples=500, seed=1)
    wide = bootstrap_ci(rng.normal(0.3, 0.1, 10), n_resamples=500)
    narrow = bootstrap_ci(rng.normal(0.3, 0.1, 1000), n_resamples=500)
    assert narrow[1] - narrow[0] < 0.5 * (wide[1] - wide[0])
    # a 95 % interval of the mean is about +-1.96 sd / sqrt(n)
    assert (high - low) == pytest.approx(2 * 1.96 * values.std() / np.sqrt(40), rel=0.2)
    # NaN subjects (undefined DICE_S) are skipped
    assert bootstrap_ci(np.r_[values, np.nan], n_resamples=500) == pytest.approx((low, high), abs=0.02)


def test_bootstrap_pooled_dice_resamples_subjects(rng):
    preds = [rng.random((6, 6, 6)) < 0.2 for _ in range(30)]
    targets = [p ^ (rng.random(p.shape) < 0.1) for p in preds]
    statistic = pooled_dice_statistic(preds, targets)
    point = dice_dataset(preds, targets)
    assert statistic(np.ones(30, int)) == pytest.approx(point, abs=1e-12)
    only_first = np.zeros(30, int)
    only_first[0] = 3
    assert statistic(only_first) == pytest.approx(dice(preds[0], targets[0]), abs=1e-12)
    low, high = bootstrap_ci(statistic, n_subjects=30, n_resamples=300)
    assert low < point < high


def test_bootstrap_pooled_auprc(rng):
    scores, labels = _random_volumes(rng, 12)
    masks = [rng.random(s.shape) < 0.8 for s in scores]
    point = auprc(scores, labels, mask=masks)
    exact = pooled_auprc_statistic(scores, labels, mask=masks, n_bins=10**6)  # every value its own bin
    assert exact(np.ones(12, int)) == pytest.approx(point, abs=1e-12)
    counts = np.bincount(rng.integers(0, 12, 12), minlength=12)
    resampled = auprc([s for s, c in zip(scores, counts) for _ in range(c)],
                      [y for y, c in zip(labels, counts) for _ in range(c)],
                      mask=[m for m, c in zip(masks, counts) for _ in range(c)])
    assert exact(counts) == pytest.approx(resampled, abs=1e-12)  # recomputes the pooled metric
    binned = pooled_auprc_statistic(scores, labels, mask=masks, n_bins=300)  # ~1400 values: 300 mixed bins
    assert binned(np.ones(12, int)) == pytest.approx(point, abs=1e-3)
    assert binned(np.ones(12, int)) != point
    low, high = bootstrap_ci(binned, n_subjects=12, n_resamples=300)
    assert low < point < high
    assert np.isnan(exact(np.zeros(12, int)))


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((np.ones(3),), {"n_resamples": 0}, ValueError, "`n_resamples` must be a positive int"),
        ((np.ones(3),), {"confidence": 1.0}, ValueError, r"`confidence` must be a float in \(0, 1\)"),
        ((np.ones(3),), {"n_subjects": 4}, ValueError, "`n_subjects` must equal"),
        ((np.array([]),), {}, ValueError, "non-empty 1D array"),
        ((np.array([np.nan, np.nan]),), {}, ValueError, "non-empty 1D array"),
        ((lambda counts: 0.0,), {}, TypeError, "`n_subjects` must be a positive int"),
        ((lambda counts: 0.0,), {"n_subjects": 0}, ValueError, "`n_subjects` must be a positive int"),
        ((np.ones(3),), {"n_resamples": 10.0}, TypeError, "`n_resamples` must be a positive int"),
        (("abc",), {}, TypeError, "per-subject values or a callable"),
    ],
)
def test_bootstrap_validation(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        bootstrap_ci(*args, **kwargs)


def test_pooled_auprc_statistic_validation():
    with pytest.raises(ValueError, match="`n_bins` must be an int >= 2"):
        pooled_auprc_statistic([np.zeros(2)], [np.zeros(2)], n_bins=1)
    with pytest.raises(ValueError, match="as many volumes"):
        pooled_auprc_statistic([np.zeros(2)], [np.zeros(2), np.zeros(2)])
