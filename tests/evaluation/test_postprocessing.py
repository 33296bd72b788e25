"""Tests for uadlab.evaluation.postprocessing: residual, erosion, median filter, closing, batches, validation."""

from __future__ import annotations

import numpy as np
import pytest

from uadlab.errors import VolumeError
from uadlab.evaluation.postprocessing import anomaly_map, residual


def test_residual_is_absolute_difference():
    image = np.array([[[0.2, 0.9], [0.5, 0.0]]])
    recon = np.array([[[0.5, 0.4], [0.5, 0.25]]])
    out = residual(image, recon)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[[0.3, 0.5], [0.0, 0.25]]], atol=1e-7)


def test_erosion_removes_the_mask_border_only():
    mask = np.zeros((9, 9, 9), bool)
    mask[2:7, 2:7, 2:7] = True
    out = anomaly_map(np.ones((9, 9, 9), np.float32), mask, erosion_iterations=1, median_size=0)
    expected = np.zeros((9, 9, 9), bool)
    expected[3:6, 3:6, 3:6] = True  # a 5^3 cube eroded by one voxel
    np.testing.assert_array_equal(out > 0, expected)
    # two iterations leave the centre voxel only; zero iterations keep the mask
    assert np.count_nonzero(anomaly_map(np.ones((9, 9, 9)), mask, erosion_iterations=2, median_size=0)) == 1
    np.testing.assert_array_equal(anomaly_map(np.ones((9, 9, 9)), mask, erosion_iterations=0, median_size=0) > 0, mask)


def test_erosion_uses_the_cross_structure():
    mask = np.ones((5, 5, 5), bool)
    out = anomaly_map(np.ones((5, 5, 5)), mask, erosion_iterations=1, median_size=0)
    # the array edge counts as background: the interior 3^3 survives (a full 3^3 structure would too,
    # so test a corner-only contact): a voxel whose only outside neighbour is diagonal survives
    assert np.count_nonzero(out) == 27
    mask = np.ones((7, 7, 7), bool)
    mask[0:3, 0:3, 0:3] = False  # carve a corner block; voxel (3,3,3) touches it only diagonally
    out = anomaly_map(np.ones((7, 7, 7)), mask, erosion_iterations=1, median_size=0)
    assert out[3, 3, 3] == 1.0
    assert out[3, 2, 2] == 0.0  # face-adjacent to the carved block


def test_median_removes_an_isolated_voxel_but_keeps_a_block():
    r = np.zeros((12, 12, 12), np.float32)
    r[2, 2, 2] = 5.0               # isolated outlier
    r[6:9, 6:9, 6:9] = 1.0         # a 3x3x3 anomaly
    mask = np.ones_like(r, bool)
    out = anomaly_map(r, mask, erosion_iterations=0, median_size=3)
    assert out[2, 2, 2] == 0.0
    assert out[7, 7, 7] == 1.0     # the block's centre survives
    assert out[6:9, 6:9, 6:9].max() == 1.0 and out.max() == 1.0
    # disabling the median (0 or 1) keeps the outlier
    for size in (0, 1):
        assert anomaly_map(r, mask, erosion_iterations=0, median_size=size)[2, 2, 2] == 5.0


def test_nothing_leaks_outside_the_eroded_mask():
    rng = np.random.default_rng(0)
    r = rng.random((10, 10, 10)).astype(np.float32)
    mask = np.zeros((10, 10, 10), bool)
    mask[1:9, 1:9, 1:5] = True
    eroded = np.zeros_like(mask)
    eroded[2:8, 2:8, 2:4] = True
    out = anomaly_map(r, mask, erosion_iterations=1, median_size=3, closing_iterations=1)
    assert np.all(out[~eroded] == 0)  # the mask is eroded before anything else
    assert np.count_nonzero(out[eroded]) == 4 * 4 * 2  # the median keeps the slab's interior


def test_median_over_a_concave_border_is_masked_again():
    # a one-voxel hole in the mask, surrounded by hot brain: the median of its window (26 hot, 1
    # masked) is hot, so only the final re-masking keeps the hole at 0
    r = np.ones((7, 7, 7), np.float32)
    mask = np.ones_like(r, bool)
    mask[3, 3, 3] = False
    for closing in (0, 1):
        out = anomaly_map(r, mask, erosion_iterations=0, median_size=3, closing_iterations=closing)
        assert out[3, 3, 3] == 0.0
        assert out[3, 3, 2] == 1.0  # its neighbours keep their score


def test_closing_fills_a_one_voxel_gap():
    r = np.zeros((9, 9, 9), np.float32)
    r[2:7, 2:7, 2:7] = 1.0
    r[4, 4, 4] = 0.0  # a hole inside an anomaly
    mask = np.ones_like(r, bool)
    assert anomaly_map(r, mask, erosion_iterations=0, median_size=0)[4, 4, 4] == 0.0
    closed = anomaly_map(r, mask, erosion_iterations=0, median_size=0, closing_iterations=1)
    assert closed[4, 4, 4] == 1.0
    np.testing.assert_array_equal(np.delete(closed.ravel(), 4 * 81 + 4 * 9 + 4),
                                  np.delete(r.ravel(), 4 * 81 + 4 * 9 + 4))  # nothing else changes


def test_batches_are_filtered_per_volume():
    rng = np.random.default_rng(1)
    r = rng.random((3, 8, 8, 8)).astype(np.float32)
    masks = np.ones((3, 8, 8, 8), bool)
    masks[1, :, :, :4] = False
    batched = anomaly_map(r, masks)
    assert batched.shape == (3, 8, 8, 8) and batched.dtype == np.float32
    for i in range(3):
        np.testing.assert_array_equal(batched[i], anomaly_map(r[i], masks[i]))
    # a hot volume next to a cold one: a filter across subjects would change the cold one
    hot = np.stack([np.zeros((6, 6, 6)), np.ones((6, 6, 6))]).astype(np.float32)
    out = anomaly_map(hot, np.ones((2, 6, 6, 6), bool), erosion_iterations=0)
    assert out[0].max() == 0.0


@pytest.mark.parametrize(
    ("res", "mask", "kwargs", "error", "match"),
    [
        (np.zeros((4, 4, 4)), np.ones((4, 4, 5), bool), {}, ValueError, "`brain_mask` must have the shape"),
        (np.zeros((4, 4, 4)), np.ones((4, 4, 4)), {}, ValueError, "`brain_mask` must be a bool array"),
        (np.full((4, 4, 4), np.nan), np.ones((4, 4, 4), bool), {}, ValueError, "`residual` must be finite"),
        (np.zeros((4, 4)), np.ones((4, 4), bool), {}, ValueError, r"`residual` must be a \(X, Y, Z\)"),
        (np.zeros((4, 4, 4), bool), np.ones((4, 4, 4), bool), {}, ValueError, "real numeric"),
        (np.zeros((4, 4, 4)), np.ones((4, 4, 4), bool), {"median_size": -1}, ValueError, "`median_size` must be"),
        (np.zeros((4, 4, 4)), np.ones((4, 4, 4), bool), {"erosion_iterations": 1.5}, TypeError,
         "`erosion_iterations` must be"),
        (np.zeros((4, 4, 4)), np.ones((4, 4, 4), bool), {"closing_iterations": True}, TypeError,
         "`closing_iterations` must be"),
        (np.zeros((4, 4, 4)), np.zeros((4, 4, 4), bool), {}, VolumeError, "`brain_mask` is empty"),
    ],
)
def test_anomaly_map_validation(res, mask, kwargs, error, match):
    with pytest.raises(error, match=match):
        anomaly_map(res, mask, **kwargs)


def test_empty_mask_in_a_batch_is_named():
    masks = np.ones((2, 4, 4, 4), bool)
    masks[1] = False
    with pytest.raises(VolumeError, match="volume 1 of the batch"):
        anomaly_map(np.zeros((2, 4, 4, 4)), masks)


def test_residual_validation():
    with pytest.raises(ValueError, match="`recon` must have the shape of `image`"):
        residual(np.zeros((4, 4, 4)), np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="`recon` must be finite"):
        residual(np.zeros((2, 2, 2)), np.full((2, 2, 2), np.inf))
