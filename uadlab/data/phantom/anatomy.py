"""Healthy anatomy of a simulated subject: random warp (affine, elastic, folds), atrophy, bias, contrast, noise."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage as ndi

from uadlab.data.phantom.params import PhantomParams, _uniform
from uadlab.data.phantom.sources import (
    SourceBrain,
    _brain_depth_mm,
    _derived,
    _spline_coefficients,
    _tissue_stats,
)

if TYPE_CHECKING:
    from uadlab.data.phantom.lesions import _Lesion

__all__ = []



# --------------------------------------------------------------------------------------------------
# Healthy anatomy: warp, atrophy, intensity jitter


@dataclass
class _Warp:
    """A sampled pull-back map: output mm offset ``x`` -> source mm offset ``M x + t + u(x)``."""

    centre: np.ndarray  # (3,) brain centre, voxel index (source and output grids coincide)
    matrix: np.ndarray  # (3, 3) rotation @ scaling
    shift_mm: np.ndarray  # (3,)
    elastic: np.ndarray  # (3, *coarse) displacement, mm, on a coarse grid
    elastic_step_mm: float  # spacing of that coarse grid
    folds: np.ndarray | None = None  # (3, *coarse) fine displacement, mm (fold variety), or None
    folds_step_mm: float = 1.0


@dataclass
class _Atrophy:
    amount: float  # atrophy level a in [0, 1] (PhantomParams.atrophy_range)
    regional: np.ndarray  # (*coarse) factor in [0.5, 1.5] on a coarse grid
    regional_step_mm: float


@dataclass
class _Jitter:
    gamma: float
    bias: np.ndarray  # (*coarse) log bias field on a coarse grid
    bias_step_mm: float
    scale: float
    offset: float
    noise: float


def _rotation(angles_rad: np.ndarray) -> np.ndarray:
    """Rotation matrix from three angles about the X, Y and Z axes."""
    (cx, cy, cz), (sx, sy, sz) = np.cos(angles_rad), np.sin(angles_rad)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _coarse_noise(
    rng: np.random.Generator, shape: tuple[int, ...], voxel_mm: float, sigma_mm: float, channels: int = 1
) -> tuple[np.ndarray, float]:
    """Smooth noise, max |value| 1 per channel, on a coarse grid of step ``sigma_mm / 2`` covering ``shape``."""
    step = max(sigma_mm / 2, voxel_mm)
    coarse = tuple(int(math.ceil((n - 1) * voxel_mm / step)) + 2 for n in shape)
    noise = rng.standard_normal((channels, *coarse))
    noise = np.stack([ndi.gaussian_filter(c, sigma_mm / step, mode="reflect") for c in noise])
    noise /= np.abs(noise).reshape(channels, -1).max(axis=1).reshape(-1, 1, 1, 1)
    return noise.astype(np.float32), step


def _upsample(coarse: np.ndarray, step_mm: float, voxel_mm: float, lo, hi) -> np.ndarray:
    """A coarse field ``(*coarse)`` linearly interpolated on the output-grid box ``[lo, hi)``.

    Separable, one axis at a time: each output point weighs its two coarse neighbours.
    """
    out = coarse
    for axis in range(3):
        size = coarse.shape[axis]
        position = np.clip(np.arange(lo[axis], hi[axis]) * (voxel_mm / step_mm), 0, size - 1)
        left = np.minimum(np.floor(position).astype(int), size - 2)
        weight = (position - left).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        out = np.take(out, left, axis=axis) * (1 - weight) + np.take(out, left + 1, axis=axis) * weight
    return out


def _apply_3x3(matrix: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``matrix @ vectors`` for a ``(3, 3)`` matrix and vectors ``(3, *shape)``, as element-wise
    products and sums: unlike a BLAS product, the same bits whatever the number of threads, so a
    subject does not depend on the cores (or parallel workers) that built it.
    """
    matrix = matrix.astype(np.result_type(matrix, vectors))
    return np.stack([matrix[i, 0] * vectors[0] + matrix[i, 1] * vectors[1] + matrix[i, 2] * vectors[2]
                     for i in range(3)])


def _sample_warp(source: SourceBrain, rng: np.random.Generator, params: PhantomParams) -> _Warp:
    centre = np.argwhere(source.brain_mask).mean(axis=0)
    angles = np.deg2rad(rng.uniform(-params.rotation_deg, params.rotation_deg, 3))
    scales = 1 + rng.uniform(-params.scale_fraction, params.scale_fraction, 3)
    shift = rng.uniform(-params.translation_mm, params.translation_mm, 3)
    elastic, step = _displacement(rng, source, params.elastic_sigma_mm, params.elastic_max_mm)
    warp = _Warp(centre, _rotation(angles) @ np.diag(scales), shift, elastic, step)
    if params.fold_max_mm[1] > 0:  # drawn only when asked, so that (0, 0) keeps the former subjects
        warp.folds, warp.folds_step_mm = _displacement(rng, source, params.fold_sigma_mm, params.fold_max_mm)
    return warp


def _displacement(
    rng: np.random.Generator, source: SourceBrain, sigma_mm: float, largest_mm: tuple[float, float]
) -> tuple[np.ndarray, float]:
    """A smooth displacement field ``(3, *coarse)``, mm, whose largest length is drawn from ``largest_mm``."""
    field, step = _coarse_noise(rng, source.shape, source.voxel_mm, sigma_mm, channels=3)
    largest = float(np.sqrt((field**2).sum(axis=0)).max())
    field *= _uniform(rng, largest_mm) / max(largest, 1e-12)
    return field, step


def _sample_atrophy(source: SourceBrain, rng: np.random.Generator, params: PhantomParams) -> _Atrophy | None:
    """The subject's atrophy, or ``None`` when ``atrophy_range`` is ``(0, 0)`` (nothing drawn then)."""
    if params.atrophy_range[1] <= 0:
        return None
    amount = _uniform(rng, params.atrophy_range)
    regional, step = _coarse_noise(rng, source.shape, source.voxel_mm, _ATROPHY_REGION_MM)
    return _Atrophy(amount, 1 + 0.5 * regional[0], step)


_ATROPHY_REGION_MM = 30.0  # smoothness of the regional modulation of atrophy


def _sample_jitter(source: SourceBrain, rng: np.random.Generator, params: PhantomParams) -> _Jitter:
    lo, hi = np.log(params.gamma_range)
    gamma = float(np.exp(rng.uniform(lo, hi)))
    bias, step = _coarse_noise(rng, source.shape, source.voxel_mm, params.bias_sigma_mm)
    bias = bias[0] * np.float32(np.log1p(_uniform(rng, params.bias_range)))
    return _Jitter(
        gamma=gamma, bias=bias, bias_step_mm=step, scale=float(_uniform(rng, params.scale_range)),
        offset=float(_uniform(rng, params.offset_range)), noise=float(_uniform(rng, params.noise_range)),
    )


def _box_grid(lo, hi) -> np.ndarray:
    """Voxel indices ``(3, *shape)`` float32 of the output-grid box ``[lo, hi)``."""
    return np.stack(np.meshgrid(*[np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi)], indexing="ij"))


def _source_points(source: SourceBrain, warp: _Warp, lo, hi, lesion: _Lesion | None) -> np.ndarray:
    """Pull-back: source voxel coordinates ``(3, *shape)`` of every output voxel of the box ``[lo, hi)``.

    ``source = centre + (M (x - push(x)) + t + u(x)) / voxel_mm`` with ``x`` the output voxel's
    offset from the brain centre in mm, ``M`` the random rotation-scaling, ``t`` the shift, ``u``
    the elastic field and ``push`` a tumour's mass effect (evaluating ``u`` at ``x`` rather than at
    ``x - push`` is a sub-voxel approximation for a field this smooth).
    """
    v = source.voxel_mm
    grid = _box_grid(lo, hi)
    offset_mm = (grid - warp.centre.reshape(3, 1, 1, 1).astype(np.float32)) * np.float32(v)
    if lesion is not None and lesion.push_mm > 0:
        _push(offset_mm, grid, source, lesion)
    moved = _apply_3x3(warp.matrix.astype(np.float32), offset_mm)
    moved += warp.shift_mm.astype(np.float32).reshape(3, 1, 1, 1)
    for field, step in ((warp.elastic, warp.elastic_step_mm), (warp.folds, warp.folds_step_mm)):
        for axis, component in enumerate(() if field is None else field):
            moved[axis] += _upsample(component, step, v, lo, hi)
    return warp.centre.reshape(3, 1, 1, 1).astype(np.float32) + moved / np.float32(v)


def _push(offset_mm: np.ndarray, grid: np.ndarray, source: SourceBrain, lesion: _Lesion) -> None:
    """Subtract a tumour's mass-effect displacement from ``offset_mm`` ``(3, *shape)`` (in place).

    Tissue at distance ``r`` from the tumour centre is pushed radially outwards by
    ``push * r / R`` inside the tumour radius ``R`` (compressed tissue under the mass) and
    ``push * exp(-(r - R)² / 2R²)`` outside it. The push fades to 0 within ``2.5 push`` of the brain
    surface (the skull holds the surface in place, sulci are compressed instead). With
    ``push <= 0.4 R`` the map stays one-to-one. Only voxels within ``5 R`` are touched.
    """
    v, radius = source.voxel_mm, lesion.radius_mm
    reach = int(math.ceil(5 * radius / v))
    centre = np.round(lesion.centre).astype(int)
    lo = grid[:, 0, 0, 0].astype(int)
    near = tuple(
        slice(max(c - reach, a), max(min(c + reach + 1, a + n), a)) for c, a, n in zip(centre, lo, grid.shape[1:])
    )
    local = tuple(slice(s.start - a, s.stop - a) for s, a in zip(near, lo))
    offset = (grid[(slice(None), *local)] - lesion.centre.reshape(3, 1, 1, 1).astype(np.float32)) * np.float32(v)
    r = np.sqrt((offset**2).sum(axis=0))
    amount = np.where(r <= radius, r / radius, np.exp(-((r - radius) ** 2) / (2 * radius**2))) * lesion.push_mm
    amount *= np.clip(_brain_depth_mm(source)[near] / (2.5 * lesion.push_mm), 0, 1)
    offset_mm[(slice(None), *local)] -= offset * (amount / np.maximum(r, 1e-6)).astype(np.float32)[None]


def _warp_anatomy(
    source: SourceBrain, warp: _Warp, lesion: _Lesion | None, *, csf: bool = False
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray] | None]:
    """Warped source image, brain mask and (with ``csf``) distances to the CSF spaces on the output grid.

    Only a box around the source brain (plus a margin for the warp) is interpolated: outside it the
    brain mask is empty and the image zero. The image is interpolated inside the warped brain only
    (cubic). With ``csf`` the third item maps ``"ventricles"`` and ``"sulci"`` (distances, mm,
    :func:`_csf_distances`) to ``(X, Y, Z)`` float32 arrays, interpolated linearly inside the warped
    brain; without it, ``None``.
    """
    lo, hi = _brain_box(source)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    points = _source_points(source, warp, lo, hi, lesion)
    brain_box = ndi.map_coordinates(source.brain_mask.astype(np.float32), points, order=1, output=np.float32) > 0.5
    values = ndi.map_coordinates(
        _spline_coefficients(source), points[:, brain_box], order=3, prefilter=False, mode="grid-constant",
        output=np.float32,
    )
    image = np.zeros(source.shape, np.float32)
    brain = np.zeros(source.shape, bool)
    image_box = np.zeros(brain_box.shape, np.float32)
    image_box[brain_box] = np.clip(values, 0, None)
    image[box] = image_box
    brain[box] = brain_box
    if not csf:
        return image, brain, None
    maps = {}
    for name, field in _csf_distances(source).items():
        maps[name] = np.zeros(source.shape, np.float32)
        inside = np.zeros(brain_box.shape, np.float32)
        inside[brain_box] = ndi.map_coordinates(field, points[:, brain_box], order=1, output=np.float32)
        maps[name][box] = inside
    return image, brain, maps


def _apply_atrophy(
    image: np.ndarray, brain: np.ndarray, tissue: dict[str, np.ndarray], atrophy: _Atrophy, source: SourceBrain,
    params: PhantomParams,
) -> None:
    """Widen the ventricles and sulci (in place): tissue near the CSF spaces turns CSF-like.

    ``tissue`` holds the warped distances, mm, to the source's ventricles and to its other CSF
    spaces (:func:`_csf_distances`), each ``(X, Y, Z)``. A voxel within ``a * atrophy_ventricles_mm``
    of a ventricle, or ``a * atrophy_sulci_mm * r`` of a sulcus (``r`` the regional factor), moves
    ``w`` of the way down to the source's CSF mean, ``w`` ramping from 1 to 0 over the last voxel
    before that distance (partial volume at the new border); voxels already darker stay as they are.
    """
    lo, hi = np.zeros(3, int), np.array(source.shape)
    regional = _upsample(atrophy.regional, atrophy.regional_step_mm, source.voxel_mm, lo, hi)[brain]
    reach_v = atrophy.amount * params.atrophy_ventricles_mm
    reach_s = atrophy.amount * params.atrophy_sulci_mm * regional
    v = np.float32(source.voxel_mm)
    weight = np.maximum(np.clip((reach_v - tissue["ventricles"][brain]) / v, 0, 1),
                        np.clip((reach_s - tissue["sulci"][brain]) / v, 0, 1))
    csf_mean = np.float32(_tissue_stats(source)["csf"][0])
    image[brain] -= weight * np.maximum(image[brain] - csf_mean, 0)


def _csf_distances(source: SourceBrain) -> dict[str, np.ndarray]:
    """Distance, mm, of each source voxel to the ventricles and to the other CSF spaces ``(X, Y, Z)``.

    CSF is ``csf >= 0.5`` inside the brain; ventricles are its nearly pure voxels (``csf >= 0.8``)
    deeper than 15 mm below the brain surface (in the MNI152 template: the lateral and third
    ventricles and the deep cisterns).
    """

    def compute() -> dict[str, np.ndarray]:
        csf = (source.csf >= 0.5) & source.brain_mask
        deep = (source.csf >= 0.8) & source.brain_mask & (_brain_depth_mm(source) >= _VENTRICLE_DEPTH_MM)

        def distance(mask: np.ndarray) -> np.ndarray:
            if not mask.any():  # no such space: nothing is near it
                return np.full(source.shape, 1e6, np.float32)
            return ndi.distance_transform_edt(~mask, sampling=source.voxel_mm).astype(np.float32)

        return {"ventricles": distance(deep), "sulci": distance(csf & ~deep)}

    return _derived(source, "csf_distances", compute)


_VENTRICLE_DEPTH_MM = 15.0


def _brain_box(source: SourceBrain) -> tuple[np.ndarray, np.ndarray]:
    """Bounds ``[lo, hi)`` of the source brain plus a 20 mm margin for the warp, clipped to the grid."""

    def compute():
        margin = int(math.ceil(20.0 / source.voxel_mm))
        where = np.argwhere(source.brain_mask)
        return np.maximum(where.min(axis=0) - margin, 0), np.minimum(where.max(axis=0) + margin + 1, source.shape)

    return _derived(source, "box", compute)


def _apply_jitter(
    image: np.ndarray, brain: np.ndarray, jitter: _Jitter, voxel_mm: float, rng: np.random.Generator
) -> np.ndarray:
    """Gamma contrast, bias field, global scale/offset and Rician noise inside the brain (in place).

    The image is in source units (brain 99.5th percentile ~1), so gamma acts on ``[0, ~1]`` and the
    noise sigma is relative to the brain's bright end. Voxels outside the brain stay 0.
    """
    lo, hi = (np.array(bound) for bound in zip(*[(w.min(), w.max() + 1) for w in np.nonzero(brain)]))
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    bias = np.exp(_upsample(jitter.bias, jitter.bias_step_mm, voxel_mm, lo, hi))
    inside = brain[box]
    values = image[box][inside] ** np.float32(jitter.gamma) * bias[inside]
    values = values * np.float32(jitter.scale) + np.float32(jitter.offset)
    noise = rng.standard_normal((2, values.size), dtype=np.float32) * np.float32(jitter.noise)
    image_box = image[box]
    image_box[inside] = np.sqrt((values + noise[0]) ** 2 + noise[1] ** 2)  # Rician magnitude
    return image
