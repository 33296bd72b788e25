"""Lesions of the phantom: a BraTS-like tumour (core, oedema, mass effect) or ATLAS-like stroke lesions."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from uadlab.data.phantom.anatomy import _apply_3x3, _box_grid, _source_points, _Warp
from uadlab.data.phantom.params import PhantomParams, _uniform
from uadlab.data.phantom.sources import SourceBrain, _brain_depth_mm, _tissue_stats

__all__ = []



# --------------------------------------------------------------------------------------------------
# Lesions


@dataclass
class _Lesion:
    kind: str
    centre: np.ndarray  # (3,) output voxel index
    radius_mm: float  # equivalent-sphere radius of the main lesion
    volume_mm3: float
    push_mm: float  # tumour mass effect at the border (0 for strokes)


def _sample_lesion(
    source: SourceBrain, warp: _Warp, rng: np.random.Generator, kind: str, params: PhantomParams,
    target_volume_mm3: float | None,
) -> _Lesion:
    """Draw the main lesion's volume and centre (a tissue voxel deep enough in the source brain)."""
    if target_volume_mm3 is not None:
        volume = target_volume_mm3
    elif kind == "tumour":
        volume = _uniform(rng, params.tumour_volume_cm3) * 1000.0
    else:
        volume = float(np.exp(_uniform(rng, np.log(params.stroke_volume_cm3)))) * 1000.0
    radius = (3 * volume / (4 * np.pi)) ** (1 / 3)
    depth = _brain_depth_mm(source)
    if kind == "tumour":  # white matter, far enough from the surface for most of the mass
        tissue, min_depth = source.wm >= 0.5, 0.9 * radius
    else:  # grey or white matter, not CSF; cortical lesions may reach the surface
        tissue, min_depth = (source.csf <= 0.2) & (source.gm + source.wm >= 0.8), min(0.5 * radius, 10.0)
    tissue &= source.brain_mask
    if not tissue.any():
        tissue = source.brain_mask
    min_depth = min(min_depth, 0.8 * float(depth[tissue].max()))
    candidates = np.flatnonzero(tissue & (depth >= min_depth))
    picked = np.array(np.unravel_index(candidates[rng.integers(candidates.size)], source.shape), float)
    # Output voxel whose affine image is the picked source voxel (the small elastic part is ignored).
    offset = np.linalg.solve(warp.matrix, (picked - warp.centre) * source.voxel_mm - warp.shift_mm)
    centre = np.clip(warp.centre + offset / source.voxel_mm, 0, np.array(source.shape) - 1)
    push = params.tumour_mass_effect * radius if kind == "tumour" else 0.0
    return _Lesion(kind=kind, centre=centre, radius_mm=float(radius), volume_mm3=float(volume), push_mm=push)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: float) -> np.ndarray:
    """Gaussian-smoothed white noise of unit standard deviation; coarse grid + linear zoom for large sigma."""
    factor = max(1.0, sigma_vox / 2)
    coarse = tuple(max(2, int(math.ceil(n / factor)) + 1) for n in shape)
    noise = ndi.gaussian_filter(rng.standard_normal(coarse, dtype=np.float32), sigma_vox / factor, mode="reflect")
    if factor > 1:
        points = np.meshgrid(*[np.arange(n, dtype=np.float32) / factor for n in shape], indexing="ij", sparse=True)
        noise = ndi.map_coordinates(noise, np.broadcast_arrays(*points), order=1, mode="nearest", output=np.float32)
    else:
        noise = noise[tuple(slice(0, n) for n in shape)]
    return (noise - noise.mean()) / max(float(noise.std()), 1e-6)


def _shape_score(
    rng: np.random.Generator, offsets_mm: np.ndarray, radius_mm: float, *, irregularity: float, elongation: float,
    voxel_mm: float,
) -> np.ndarray:
    """Irregular-blob score ``(*shape)``: low near the centre, ~1 at ``radius_mm``.

    Distance in a randomly oriented ellipsoid metric (semi-axes scaled by ``exp(±elongation)``,
    volume kept), in units of ``radius_mm``, plus smooth noise (sigma ``0.35 radius_mm``) of
    amplitude ``irregularity``. Thresholding it gives a lumpy, irregular shape.
    """
    rotation, _ = np.linalg.qr(rng.standard_normal((3, 3)))
    axes = np.exp(rng.uniform(-elongation, elongation, 3))
    axes /= np.prod(axes) ** (1 / 3)
    local = _apply_3x3(rotation.T, offsets_mm) / axes.reshape(3, 1, 1, 1)
    noise = _smooth_noise(rng, offsets_mm.shape[1:], 0.35 * radius_mm / voxel_mm)
    return (np.sqrt((local**2).sum(axis=0)) / radius_mm + irregularity * noise).astype(np.float32)


def _lowest(score: np.ndarray, count: int, allowed: np.ndarray, *, connected: bool = True) -> np.ndarray:
    """Mask of the ``count`` allowed voxels with the lowest ``score`` (largest connected part if asked)."""
    score = np.where(allowed, score, np.inf)
    count = int(min(count, allowed.sum()))
    mask = np.zeros(score.shape, bool)
    if count > 0:
        mask.flat[np.argpartition(score.ravel(), count - 1)[:count]] = True
        labels, n = ndi.label(mask)
        if connected and n > 1:
            mask = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    return mask


def _voxels(volume_mm3: float, voxel_mm: float) -> int:
    return max(1, int(round(volume_mm3 / voxel_mm**3)))


def _insert_lesion(
    image: np.ndarray, brain: np.ndarray, source: SourceBrain, warp: _Warp, lesion: _Lesion,
    rng: np.random.Generator, params: PhantomParams,
) -> np.ndarray:
    """Shape the lesion around its centre and blend its intensities into ``image`` (in place).

    Works in a box around the lesion centre. Shape: the lowest voxels of :func:`_shape_score`
    among the allowed ones (brain; for strokes also not CSF), so the volume is met exactly unless
    the brain boundary clips it. Intensities: see :func:`_tumour_values` and :func:`_stroke_values`;
    the lesion is blended in with a Gaussian-blurred mask (partial volume at the border).

    Returns:
        The lesion mask ``(X, Y, Z)`` bool, inside ``brain``.
    """
    v = source.voxel_mm
    is_tumour = lesion.kind == "tumour"
    style = {
        "irregularity": params.tumour_irregularity if is_tumour else params.stroke_irregularity,
        "elongation": params.tumour_elongation if is_tumour else params.stroke_elongation,
        "voxel_mm": v,
    }
    reach_mm = lesion.radius_mm * np.exp(style["elongation"]) * (1.5 + 2 * style["irregularity"])
    half = int(math.ceil((reach_mm + 3 * params.lesion_edge_mm) / v)) + 1
    centre = np.round(lesion.centre).astype(int)
    lo, hi = np.maximum(centre - half, 0), np.minimum(centre + half + 1, source.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    offsets_mm = (_box_grid(lo, hi) - lesion.centre.reshape(3, 1, 1, 1).astype(np.float32)) * np.float32(v)
    allowed = brain[box].copy()
    if not is_tumour:  # strokes stay in grey/white matter, never inside a ventricle
        points = _source_points(source, warp, lo, hi, lesion)
        allowed &= ndi.map_coordinates(source.csf, points, order=1, output=np.float32) < 0.5

    score = _shape_score(rng, offsets_mm, lesion.radius_mm, **style)
    mask = _lowest(score, _voxels(lesion.volume_mm3, v), allowed)
    local = image[box]
    if is_tumour:
        core_score = _shape_score(rng, offsets_mm, lesion.radius_mm, **style)
        core = _lowest(core_score, int(mask.sum() * _uniform(rng, params.tumour_core_fraction)), mask, connected=False)
        value = _tumour_values(rng, local, core, source, params)
    else:
        for _ in range(rng.integers(0, params.stroke_satellites + 1)):
            direction = rng.standard_normal(3)
            shift_mm = direction / np.linalg.norm(direction) * lesion.radius_mm * rng.uniform(1.2, 1.8)
            volume = lesion.volume_mm3 * rng.uniform(0.03, 0.15)
            shifted = offsets_mm - shift_mm.reshape(3, 1, 1, 1).astype(np.float32)
            satellite_score = _shape_score(rng, shifted, (3 * volume / (4 * np.pi)) ** (1 / 3), **style)
            mask |= _lowest(satellite_score, _voxels(volume, v), allowed & ~mask)
        value = _stroke_values(rng, local, source, params)
    alpha = _blur(mask, params.lesion_edge_mm / v)
    image[box] = np.clip((1 - alpha) * local + alpha * value, 0, None) * brain[box]
    lesion_mask = np.zeros(source.shape, bool)
    lesion_mask[box] = mask
    return lesion_mask


def _blur(mask: np.ndarray, sigma_vox: float) -> np.ndarray:
    """A mask as float32, Gaussian-blurred (partial-volume weights in ``[0, 1]``)."""
    mask = mask.astype(np.float32)
    return ndi.gaussian_filter(mask, sigma_vox) if sigma_vox > 0 else mask


def _tumour_values(
    rng: np.random.Generator, local: np.ndarray, core: np.ndarray, source: SourceBrain, params: PhantomParams
) -> np.ndarray:
    """T1 intensities of a glioma over the lesion box ``local`` ``(*shape)`` (source units).

    Necrotic core: a level between the subject's CSF and GM means (``tumour_core_level`` of the way
    to GM; default at most 40 %, so darker than a CSF/GM mix) with strong heterogeneous texture
    (1-2 x the tissue SD). Oedema: the local tissue darkened ``tumour_oedema_darkening`` of the way
    towards CSF (default 15-35 %), with mild texture; the two are blended by the blurred core mask.
    """
    stats = _tissue_stats(source)
    (mu_csf, sd_csf), (mu_gm, sd_gm) = stats["csf"], stats["gm"]
    sigma_vox = params.texture_sigma_mm / source.voxel_mm
    core_level = mu_csf + _uniform(rng, params.tumour_core_level) * (mu_gm - mu_csf)
    core_value = core_level + rng.uniform(1.0, 2.0) * max(sd_gm, sd_csf) * _smooth_noise(rng, local.shape, sigma_vox)
    darkening = _uniform(rng, params.tumour_oedema_darkening)
    oedema_value = local - darkening * (local - mu_csf) + sd_gm * _smooth_noise(rng, local.shape, sigma_vox)
    alpha_core = _blur(core, params.lesion_edge_mm / source.voxel_mm)
    return (1 - alpha_core) * oedema_value + alpha_core * core_value


def _stroke_values(
    rng: np.random.Generator, local: np.ndarray, source: SourceBrain, params: PhantomParams
) -> np.ndarray:
    """T1 intensities of a chronic stroke lesion over the lesion box ``local`` ``(*shape)`` (source units).

    CSF-like: a level between the subject's CSF and GM means (``stroke_level`` of the way to GM;
    default at most 35 %), mixed with ``stroke_tissue_mix`` of the local tissue (residual gliotic
    tissue; default 0-30 %), plus texture of 0.5-1.5 x the CSF SD.
    """
    stats = _tissue_stats(source)
    (mu_csf, sd_csf), (mu_gm, _) = stats["csf"], stats["gm"]
    level = mu_csf + _uniform(rng, params.stroke_level) * (mu_gm - mu_csf)
    mix = _uniform(rng, params.stroke_tissue_mix)
    texture = _smooth_noise(rng, local.shape, params.texture_sigma_mm / source.voxel_mm)
    return (1 - mix) * level + mix * local + rng.uniform(0.5, 1.5) * sd_csf * texture
