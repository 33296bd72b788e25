"""Tests of uadlab.evaluation.sample_level: maximum location (index and mm), subject scores,
sample-level AUROC/AP against scikit-learn, the per-subject table, and Chatterjee et al.'s closing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from uadlab.errors import VolumeError
from uadlab.evaluation.inference import SubjectMaps
from uadlab.evaluation.metrics import UndefinedMetricWarning, binarize
from uadlab.evaluation.postprocessing import STRUCTURE, anomaly_map
from uadlab.evaluation.sample_level import (
    SAMPLE_COLUMNS,
    max_anomaly_location,
    sample_level_metrics,
    sample_level_summary,
    sample_level_table,
    subject_score,
)

AFFINE = np.array([[0.0, -2.0, 0.0, 10.0],
                   [1.5, 0.0, 0.0, -3.0],
                   [0.0, 0.0, 1.0, 5.0],
                   [0.0, 0.0, 0.0, 1.0]])


def test_max_location_index_and_mm_through_the_affine():
    m = np.zeros((5, 6, 7), np.float32)
    m[1, 2, 3] = 0.9
    m[4, 4, 4] = 0.5
    where = max_anomaly_location(m, affine=AFFINE)
    assert where.index == (1, 2, 3)
    assert where.mm == (6.0, -1.5, 8.0)  # (-2 * 2 + 10, 1.5 * 1 - 3, 3 + 5)
    assert where.value == pytest.approx(0.9)
    assert max_anomaly_location(m).mm is None


def test_max_location_ties_brain_mask_and_2d():
    m = np.zeros((4, 4, 4))
    m[3, 0, 0] = m[0, 1, 0] = 1.0
    assert max_anomaly_location(m).index == (0, 1, 0)  # first in C order
    brain = np.ones((4, 4, 4), bool)
    brain[0] = False  # hides (0, 1, 0)
    assert max_anomaly_location(m, brain_mask=brain).index == (3, 0, 0)
    slice_map = np.zeros((3, 5))
    slice_map[2, 4] = 2.0
    where = max_anomaly_location(slice_map, affine=np.array([[1.0, 0, -1], [0, 3.0, 0], [0, 0, 1]]))
    assert where.index == (2, 4) and where.mm == (1.0, 12.0)


def test_subject_score_is_the_percentile_inside_the_brain():
    m = np.zeros((10, 10, 2))
    m[:, :, 0] = np.arange(100).reshape(10, 10)
    m[:, :, 1] = 1000.0  # outside the brain: never counts
    brain = np.zeros_like(m, dtype=bool)
    brain[:, :, 0] = True
    assert subject_score(m, brain) == pytest.approx(98.01)  # numpy's linear interpolation of 0..99
    assert subject_score(m, brain, percentile=100) == 99.0
    assert subject_score(m, brain, percentile=50) == pytest.approx(49.5)


def test_sample_level_metrics_match_scikit_learn_and_known_answers():
    rng = np.random.default_rng(0)
    labels = rng.random(40) < 0.4
    scores = rng.random(40) + 0.3 * labels
    result = sample_level_metrics(scores, labels)
    assert result.auroc == pytest.approx(roc_auc_score(labels, scores))
    assert result.average_precision == pytest.approx(average_precision_score(labels, scores))
    assert (result.n_healthy, result.n_lesion) == (int((~labels).sum()), int(labels.sum()))
    perfect = sample_level_metrics([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1])
    assert perfect.auroc == 1.0 and perfect.average_precision == 1.0
    assert sample_level_metrics([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]).auroc == 0.0


def test_sample_level_metrics_undefined_is_nan_with_a_warning():
    with pytest.warns(UndefinedMetricWarning, match="without lesion subjects"):
        result = sample_level_metrics([0.1, 0.2], [False, False])
    assert math.isnan(result.auroc) and math.isnan(result.average_precision)
    with pytest.warns(UndefinedMetricWarning, match="without healthy subjects"):
        result = sample_level_metrics([0.1, 0.2], [True, True])
    assert math.isnan(result.auroc) and result.average_precision == 1.0


def _subject(subject_id, cohort, hot=None, seed=0):
    shape = (8, 8, 8)
    brain = np.zeros(shape, bool)
    brain[1:7, 1:7, 1:7] = True
    amap = np.where(brain, 0.05 * np.random.default_rng(seed).random(shape), 0).astype(np.float32)
    lesion = None if cohort == "healthy" else np.zeros(shape, bool)
    if hot is not None:
        amap[hot[0]:hot[0] + 2, hot[1]:hot[1] + 2, hot[2]:hot[2] + 2] = 0.8
        amap[hot] = 0.9
        lesion[hot[0]:hot[0] + 2, hot[1]:hot[1] + 2, hot[2]:hot[2] + 2] = True
    return SubjectMaps(subject_id, amap, amap, amap, amap, brain, lesion, AFFINE, cohort, "test")


def test_table_and_summary_on_known_subjects():
    maps = {s.subject_id: s for s in [_subject("h0", "healthy", seed=0), _subject("h1", "healthy", seed=1),
                                      _subject("t0", "tumour", hot=(2, 3, 4), seed=2),
                                      _subject("s0", "stroke", hot=(4, 4, 2), seed=3)]}
    table = sample_level_table(maps, percentile=100)
    assert list(table.columns) == list(SAMPLE_COLUMNS)
    assert table["label"].tolist() == [False, False, True, True]
    assert table["score"].tolist()[2:] == pytest.approx([0.9, 0.9])
    assert table["score"].max() == pytest.approx(0.9) and (table["score"][:2] < 0.05).all()
    t0 = table.set_index("subject_id").loc["t0"]
    assert (t0.max_x, t0.max_y, t0.max_z) == (2, 3, 4)
    assert (t0.max_x_mm, t0.max_y_mm, t0.max_z_mm) == (4.0, 0.0, 9.0)
    summary = sample_level_summary(table)
    assert set(summary) == {"all", "stroke", "tumour"}
    assert summary["all"].auroc == 1.0 and summary["all"].n_lesion == 2
    assert summary["tumour"] == (1.0, 1.0, 2, 1)
    assert len(sample_level_table(list(maps.values()))) == 4


def test_chatterjee_threshold_plus_closing_is_the_existing_grey_closing():
    """Thresholding the grey-closed map (postprocessing's ``closing_iterations``) equals binary closing
    of the thresholded map, so Chatterjee et al.'s post-processing needs no second implementation."""
    rng = np.random.default_rng(5)
    residual = ndimage.uniform_filter(rng.random((14, 14, 14)), 3).astype(np.float32)
    brain = np.ones(residual.shape, bool)
    for iterations in (1, 2):
        closed = anomaly_map(residual, brain, erosion_iterations=0, median_size=1, closing_iterations=iterations)
        for threshold in (0.45, 0.5, 0.55):
            binary = binarize(residual, threshold)
            expected = ndimage.binary_erosion(ndimage.binary_dilation(binary, STRUCTURE, iterations),
                                              STRUCTURE, iterations, border_value=1)
            np.testing.assert_array_equal(binarize(closed, threshold), expected)
            assert binarize(closed, threshold).sum() > binary.sum()  # closing filled something


def test_validation():
    m = np.zeros((4, 4, 4))
    brain = np.ones((4, 4, 4), bool)
    with pytest.raises(ValueError, match=r"`anomaly_map` must be \(X, Y\) or \(X, Y, Z\)"):
        max_anomaly_location(np.zeros(4))
    with pytest.raises(ValueError, match="`anomaly_map` must be finite"):
        subject_score(np.full((4, 4, 4), np.nan), brain)
    with pytest.raises(ValueError, match="`affine` must be a finite \\(4, 4\\) matrix"):
        max_anomaly_location(m, affine=np.eye(3))
    with pytest.raises(ValueError, match="`brain_mask` must be a bool array"):
        subject_score(m, brain.astype(int))
    with pytest.raises(ValueError, match="`brain_mask` must have the shape of `anomaly_map`"):
        subject_score(m, brain[:2])
    with pytest.raises(VolumeError, match="`brain_mask` is empty"):
        subject_score(m, ~brain)
    with pytest.raises(TypeError, match="`percentile` must be a number in \\[0, 100\\]"):
        subject_score(m, brain, percentile="99")
    with pytest.raises(ValueError, match="`percentile` must be a number in \\[0, 100\\]"):
        subject_score(m, brain, percentile=101)
    with pytest.raises(ValueError, match="`labels` must have one entry per score"):
        sample_level_metrics([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="`scores` must hold at least one subject"):
        sample_level_metrics([], [])
    with pytest.raises(ValueError, match="`scores` must be finite"):
        sample_level_metrics([0.1, np.inf], [True, False])
    with pytest.raises(ValueError, match="`labels` must be bool or 0/1"):
        sample_level_metrics([0.1, 0.2], [2, 0])
    with pytest.raises(ValueError, match="`table` must have the columns of sample_level_table"):
        import pandas as pd
        sample_level_summary(pd.DataFrame({"score": [0.1]}))

