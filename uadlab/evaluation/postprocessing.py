"""Anomaly maps from reconstructions (Bengs et al. 2021, Sec. 2.3).

The residual ``|image - recon|`` is multiplied by the brain mask eroded by a voxel or two (the
reconstruction is least reliable at the brain border), then a 3 x 3 x 3 median filter removes small
isolated outliers. An optional grey morphological closing (Chatterjee et al., MOOD VAE) fills small
gaps inside anomalous regions. The same code serves 2D and 3D models: both are scored on the
stacked 64^3 volume.

Shape:
    - image, recon, residual: ``(X, Y, Z)`` or batched ``(N, X, Y, Z)``, float, finite.
    - brain_mask: the same shape as the residual, ``bool``.
    - anomaly_map: the same shape as the residual, ``float32``, ``0`` outside the eroded brain.

Every filter runs on one volume at a time, so neighbouring subjects of a batch never mix.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from uadlab._checks import check_int
from uadlab.errors import VolumeError

__all__ = ["residual", "anomaly_map", "STRUCTURE"]

#: Structuring element of the erosion and the closing: the 3D cross (6-connectivity). One
#: iteration removes exactly the voxels with a face-neighbour outside the mask, the gentlest 3D
#: erosion, which matches the paper's "slightly eroded" mask at 64^3 (1-2 voxels).
STRUCTURE: np.ndarray = ndimage.generate_binary_structure(3, 1)


def residual(image: np.ndarray, recon: np.ndarray) -> np.ndarray:
    """Voxel-wise l1 residual ``|image - recon|`` (Bengs et al. 2021, Sec. 2.3).

    Args:
        image: ``(X, Y, Z)`` or ``(N, X, Y, Z)`` preprocessed intensities in ``[0, 1]``.
        recon: the model's reconstruction, same shape as ``image``.

    Returns:
        ``float32`` array of the same shape, non-negative.

    Raises:
        ValueError: if the shapes differ, an array is not 3D/4D, or holds NaN/inf.

    >>> residual(np.array([[[0.5, 1.0]]]), np.array([[[0.25, 1.0]]]))
    array([[[0.25, 0.  ]]], dtype=float32)
    """
    image = _check_volume(image, "image")
    recon = _check_volume(recon, "recon")
    if image.shape != recon.shape:
        raise ValueError(f"`recon` must have the shape of `image` {image.shape}, got {recon.shape!r}")
    return np.abs(image.astype(np.float32) - recon.astype(np.float32))


def anomaly_map(
    residual: np.ndarray,
    brain_mask: np.ndarray,
    *,
    erosion_iterations: int = 1,
    median_size: int = 3,
    closing_iterations: int = 0,
) -> np.ndarray:
    """Post-process a residual into an anomaly map (Bengs et al. 2021, Sec. 2.3).

    Steps, per volume: (1) erode ``brain_mask`` ``erosion_iterations`` times with the 3D cross
    :data:`STRUCTURE` (voxels outside the array count as background, so a mask touching the array
    edge is eroded there too); (2) multiply the residual by the eroded mask; (3) median filter of
    ``median_size`` voxels per axis (outside the array counts as 0); (4) optionally a grey closing:
    ``closing_iterations`` grey dilations then as many grey erosions with :data:`STRUCTURE`
    (Chatterjee et al.); (5) multiply by the eroded mask again, so no score leaks outside the eroded
    brain (a median over a concave border could otherwise light up background voxels).

    Args:
        residual: ``(X, Y, Z)`` or ``(N, X, Y, Z)`` non-negative residual ``|x - x_hat|``.
        brain_mask: ``bool`` array of the same shape.
        erosion_iterations: voxels to erode the mask by; ``0`` keeps it (paper: 1-2 at 64^3).
        median_size: edge of the cubic median window in voxels; ``0`` or ``1`` disables it.
        closing_iterations: grey closing iterations; ``0`` (default) disables it.

    Returns:
        ``float32`` anomaly map of the same shape, ``0`` outside the eroded brain mask.

    Raises:
        ValueError: if the shapes differ, the mask is not ``bool``, the residual holds NaN/inf or
            is not 3D/4D, or an option is negative.
        TypeError: if an option is not an integer.
        VolumeError: if a brain mask is empty.

    >>> r = np.zeros((5, 5, 5), np.float32); r[2, 2, 2] = 1.0   # an isolated hot voxel
    >>> float(anomaly_map(r, np.ones((5, 5, 5), bool), erosion_iterations=0).max())
    0.0
    """
    residual = _check_volume(residual, "residual")
    brain_mask = np.asarray(brain_mask)
    if brain_mask.dtype != bool:
        raise ValueError(f"`brain_mask` must be a bool array, got dtype {brain_mask.dtype!r}")
    if brain_mask.shape != residual.shape:
        raise ValueError(f"`brain_mask` must have the shape of `residual` {residual.shape}, "
                         f"got {brain_mask.shape!r}")
    for name, value in (("erosion_iterations", erosion_iterations), ("median_size", median_size),
                        ("closing_iterations", closing_iterations)):
        check_int(name, value, "a non-negative int", lambda v: v >= 0)

    batched = residual.ndim == 4
    residuals = residual if batched else residual[None]
    masks = brain_mask if batched else brain_mask[None]
    out = np.empty(residuals.shape, dtype=np.float32)
    for i, (volume, mask) in enumerate(zip(residuals, masks)):
        if not mask.any():
            where = f" (volume {i} of the batch)" if batched else ""
            raise VolumeError(f"`brain_mask` is empty{where}; an anomaly map needs brain voxels")
        out[i] = _postprocess_one(volume.astype(np.float32), mask, erosion_iterations,
                                  median_size, closing_iterations)
    return out if batched else out[0]


def _postprocess_one(volume: np.ndarray, mask: np.ndarray, erosion_iterations: int,
                     median_size: int, closing_iterations: int) -> np.ndarray:
    """Erode, mask, median-filter, close and re-mask one ``(X, Y, Z)`` volume."""
    if erosion_iterations > 0:
        mask = ndimage.binary_erosion(mask, structure=STRUCTURE, iterations=erosion_iterations)
    result = volume * mask
    if median_size > 1:
        result = ndimage.median_filter(result, size=median_size, mode="constant", cval=0.0)
    for _ in range(closing_iterations):
        result = ndimage.grey_dilation(result, footprint=STRUCTURE, mode="nearest")
    for _ in range(closing_iterations):
        result = ndimage.grey_erosion(result, footprint=STRUCTURE, mode="nearest")
    return result * mask


def _check_volume(array: np.ndarray, name: str) -> np.ndarray:
    """Return ``array`` as a 3D/4D finite float array, or raise ``ValueError``."""
    array = np.asarray(array)
    if array.ndim not in (3, 4):
        raise ValueError(f"`{name}` must be a (X, Y, Z) or (N, X, Y, Z) array, got shape {array.shape!r}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"`{name}` must be a real numeric array, got dtype {array.dtype!r}")
    if not np.isfinite(array).all():
        raise ValueError(f"`{name}` must be finite, got {int((~np.isfinite(array)).sum())} NaN/inf voxels")
    return array
