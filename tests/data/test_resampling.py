"""Tests of uadlab.data.resampling: isotropic grids and resampling in world millimetres."""

from __future__ import annotations

import numpy as np

from uadlab.data.resampling import iso_grid, resample


def test_iso_grid_reproduces_an_axis_aligned_grid():
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-10.0, 4.0, 7.0]
    out_affine, out_shape = iso_grid(affine, (5, 6, 7), 2.0)
    np.testing.assert_array_equal(out_affine, affine)
    assert out_shape == (5, 6, 7)


def test_iso_grid_covers_a_flipped_anisotropic_grid():
    affine = np.diag([-1.0, 3.0, 1.5, 1.0])  # L-A-S voxels of 1 x 3 x 1.5 mm
    affine[:3, 3] = [20.0, 0.0, 0.0]
    out_affine, out_shape = iso_grid(affine, (21, 5, 9), 1.0)
    np.testing.assert_allclose(out_affine[:3, 3], [0.0, 0.0, 0.0])  # the lowest corner in RAS
    assert out_shape == (21, 13, 13)  # 20, 12 and 12 mm between the outer voxel centres, at 1 mm


def test_resample_same_grid_is_a_copy():
    array = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    affine = np.eye(4)
    out = resample(array, affine, affine, array.shape, order=3)
    assert out.dtype == np.float32 and out is not array
    np.testing.assert_array_equal(out, array)


def test_resample_linear_ramp_in_world_coordinates():
    """A ramp along world X, stored on a grid flipped along X, comes out as the same ramp in RAS."""
    flipped = np.diag([-1.0, 1.0, 1.0, 1.0])
    flipped[0, 3] = 9.0  # voxel i sits at x = 9 - i mm
    ramp = np.broadcast_to((9.0 - np.arange(10))[:, None, None], (10, 4, 4))  # value = x
    out_affine, out_shape = iso_grid(flipped, ramp.shape, 1.0)
    out = resample(ramp, flipped, out_affine, out_shape, order=1)
    np.testing.assert_allclose(out[:, 1, 1], np.arange(10.0), atol=1e-5)


def test_resample_coarser_grid_is_anti_aliased():
    """A one-voxel checkerboard averages out at 2 mm instead of aliasing to one of its values."""
    index = np.indices((16, 16, 16)).sum(axis=0)
    checker = (index % 2).astype(np.float32)
    coarse_affine, coarse_shape = iso_grid(np.eye(4), checker.shape, 2.0)
    out = resample(checker, np.eye(4), coarse_affine, coarse_shape, order=1)
    interior = out[2:-2, 2:-2, 2:-2]
    assert np.abs(interior - 0.5).max() < 0.2  # point sampling would give all 0 or all 1
