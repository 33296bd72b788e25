"""Isotropic voxel grids and resampling onto them, shared by the preprocessing and the phantom.

Both functions work in world millimetres through ``(4, 4)`` voxel-to-world affines, as nibabel does;
the interpolation itself is :func:`scipy.ndimage.affine_transform`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

__all__ = ["iso_grid", "resample"]


def iso_grid(affine: np.ndarray, shape: tuple[int, ...], spacing_mm: float) -> tuple[np.ndarray, tuple[int, ...]]:
    """An axis-aligned RAS+ grid of ``spacing_mm`` voxels covering the voxel centres of ``(affine, shape)``.

    Its first voxel sits on the lowest corner of that field of view, so an input grid that is already
    axis-aligned RAS+ with ``spacing_mm`` voxels is reproduced exactly.

    Args:
        affine: ``(4, 4)`` voxel-to-world matrix (mm) of the input grid, any orientation.
        shape: ``(I, J, K)`` voxels of the input grid.
        spacing_mm: voxel edge of the output grid, mm.

    Returns:
        ``(out_affine, out_shape)``: the ``(4, 4)`` diagonal affine and the ``(X, Y, Z)`` shape.
    """
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(3, -1)
    world = affine[:3, :3] @ corners + affine[:3, 3:]
    lo, hi = world.min(axis=1), world.max(axis=1)
    out_shape = tuple(int(n) for n in np.floor((hi - lo) / spacing_mm + 1e-4).astype(int) + 1)
    out_affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    out_affine[:3, 3] = lo
    return out_affine, out_shape


def resample(
    array: np.ndarray, affine: np.ndarray, out_affine: np.ndarray, out_shape: tuple[int, ...], *, order: int
) -> np.ndarray:
    """``array`` interpolated onto the grid ``(out_affine, out_shape)``; zero outside its field of view.

    Axes whose voxels get coarser are first smoothed with a Gaussian of sigma ``(ratio - 1) / 2``
    input voxels (anti-aliasing, the convention of ``skimage.transform.resize``). When the output
    grid is the input grid, the array is copied, not interpolated.

    Args:
        array: ``(I, J, K)`` values on the grid of ``affine``.
        affine: ``(4, 4)`` voxel-to-world matrix (mm) of ``array``.
        out_affine: ``(4, 4)`` voxel-to-world matrix of the output grid, isotropic (as from
            :func:`iso_grid`).
        out_shape: ``(X, Y, Z)`` voxels of the output grid.
        order: spline order of the interpolation (3 cubic for images, 1 linear for masks).

    Returns:
        ``out_shape`` float32 array.
    """
    array = np.asarray(array, dtype=np.float32)
    to_input = np.linalg.solve(affine, out_affine)  # output voxel -> input voxel
    if tuple(out_shape) == array.shape and np.allclose(to_input, np.eye(4), atol=1e-5):
        return array.copy()
    in_mm = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    out_mm = float(abs(out_affine[0, 0]))
    sigma = np.maximum(0.0, (out_mm / in_mm - 1.0) / 2.0)
    if sigma.max() > 0:
        array = ndi.gaussian_filter(array, sigma, mode="constant")
    return ndi.affine_transform(
        array, to_input[:3, :3], offset=to_input[:3, 3], output_shape=tuple(out_shape), order=order,
        mode="constant", cval=0.0, output=np.float32,
    )
