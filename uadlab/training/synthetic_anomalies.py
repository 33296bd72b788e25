"""Synthetic anomalies pasted into healthy brains, the segmenter's training data (Behrendt et al. 2024).

A supervised segmenter on ``(input, reconstruction)`` needs labelled anomalies, and the healthy
training split has none; so anomalies are drawn and pasted into healthy images, with their masks as
labels. Seven kinds, from two sources:

==================  ===================================================================================
kind                what is pasted (region ∩ brain)
==================  ===================================================================================
``perlin-tissue``   DRAEM-style (Zavrtanik et al. 2021, as in Behrendt et al.'s code): a Perlin-noise
                    region blended with another subject's tissue, rolled by a random offset
``perlin-shift``    a Perlin-noise region with its intensities shifted by a constant
``perlin-noise``    a Perlin-noise region blended with uniform noise
``local-shift``     MOOD-style (the toy anomalies Chatterjee et al. test on): a ball whose
                    intensities are shifted by a constant
``uniform-blob``    a ball painted with one uniform intensity
``sink``            a ball whose content is pulled towards its centre (shrinks)
``source``          a ball whose content is pushed out from its centre (swells)
==================  ===================================================================================

Randomness follows "sample, then apply", as :mod:`uadlab.training.erasing`:
:meth:`SyntheticAnomaly.get_params` draws an :class:`AnomalyParams` from an explicit
``numpy.random.Generator``; :func:`apply_anomaly` applies it deterministically (the noise of
``perlin-noise`` comes from a seed stored in the params). Inputs are never modified in place.

Decisions the sources leave open, fixed here once:

- **Regions lie inside the brain.** Every region is intersected with ``brain_mask``; voxels outside
  the brain never change.
- **Perlin regions have an exact size.** DRAEM thresholds the noise at 0.5, which gives a random
  area; here a fraction ``f ~ U(size_range)`` of the brain voxels is drawn and the region is the
  ``max(1, round(f * n_brain))`` brain voxels with the highest noise (ties broken by voxel order), so
  the region size is known in advance. The noise is one octave of gradient (Perlin) noise whose
  period per axis is drawn from ``periods`` (voxels; DRAEM draws powers of two per axis too), on a
  lattice shifted by a random phase.
- **Balls.** The centre is a brain voxel drawn uniformly; the radius ``r ~ U(radius_range)`` voxels;
  the ball holds the voxels at Euclidean distance ``<= r`` from the centre.
- **Sink/source.** A voxel at distance ``d < r`` from the centre takes the (linearly interpolated)
  intensity at distance ``r * (d / r) ** e`` on the same ray, ``e = 1 + s`` for ``source`` (content
  from near the centre spreads out) and ``e = 1 / (1 + s)`` for ``sink``, ``s ~ U(strength_range)``.
  The map is the identity at the centre and on the ball's surface, so the image stays continuous.
- **The mask is exactly the changed voxels**: ``mask = region & (out != image)``. For the intensity
  kinds this is the whole region except voxels whose value happens not to change (a shift clipped at
  0 or 1 on a voxel already there, a blob value equal to the voxel's, a blend with a texture equal to
  the image); for ``sink``/``source`` it also drops the centre and voxels whose sampled neighbourhood
  is flat. So ``out`` differs from ``image`` exactly on ``mask`` and the mask can be empty (a label
  "no visible anomaly"), which :attr:`AnomalyParams.region` (the drawn support) is not.
- **Intensities** are in the preprocessed ``[0, 1]`` units; shifts are clipped to ``[0, 1]``.

Shape:
    - image, brain_mask, texture: ``(X, Y)`` (an axial slice) or ``(X, Y, Z)`` (a volume).
    - returned image: same shape and dtype as ``image``; returned mask: same shape, ``bool``.

Example:
    >>> import numpy as np
    >>> image = np.full((16, 16), 0.5, dtype=np.float32)
    >>> brain = np.zeros((16, 16), dtype=bool); brain[2:14, 2:14] = True
    >>> out, mask = SyntheticAnomaly("uniform-blob")(image, brain, np.random.default_rng(0))
    >>> bool(np.array_equal(mask, out != image)), bool((mask <= brain).all()), float(image.max())
    (True, True, 0.5)
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from uadlab._checks import check_real
from uadlab.errors import VolumeError

__all__ = [
    "AnomalyParams",
    "KINDS",
    "MOOD_KINDS",
    "PERLIN_KINDS",
    "SyntheticAnomaly",
    "apply_anomaly",
    "perlin_noise",
]

#: DRAEM-style kinds: a Perlin-noise region filled with foreign texture.
PERLIN_KINDS: tuple[str, ...] = ("perlin-tissue", "perlin-shift", "perlin-noise")
#: MOOD-style kinds (Chatterjee et al.'s test anomalies): a ball shifted, painted or deformed.
MOOD_KINDS: tuple[str, ...] = ("local-shift", "uniform-blob", "sink", "source")
#: Every kind, DRAEM-style first.
KINDS: tuple[str, ...] = PERLIN_KINDS + MOOD_KINDS


# ---------------------------------------------------------------------------------------------------
# Perlin noise


def perlin_noise(shape: tuple[int, ...], periods: tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """One octave of gradient (Perlin) noise on a grid.

    Random unit gradients sit on a lattice with spacing ``periods`` (voxels, per axis) shifted by a
    random phase; each voxel blends the dot products of its cell's corner gradients with its offsets
    to them, weighted by the quintic fade ``6t^5 - 15t^4 + 10t^3`` (Perlin 2002).

    Args:
        shape: grid ``(X, Y)`` or ``(X, Y, Z)``, voxels.
        periods: lattice spacing per axis, voxels (> 0), one per axis of ``shape``.
        rng: generator of the gradients and the phase.

    Returns:
        ``float64`` array of ``shape``, smooth, zero on the lattice points, roughly in ``[-1, 1]``.

    Raises:
        TypeError: ``rng`` is not a ``numpy.random.Generator`` or a period is not a number.
        ValueError: ``periods`` does not have one entry per axis or one is not positive.
    """
    _check_rng(rng)
    shape = tuple(int(s) for s in shape)
    if len(periods) != len(shape):
        raise ValueError(f"`periods` must have one entry per axis of {shape}, got {periods!r}")
    periods = tuple(check_real("periods", p, "positive numbers of voxels", lambda v: v > 0) for p in periods)
    ndim = len(shape)
    phase = rng.uniform(0.0, 1.0, size=ndim)
    coords = [np.arange(s) / p + f for s, p, f in zip(shape, periods, phase)]
    lattice = tuple(int(math.floor(c[-1])) + 2 for c in coords)
    gradients = rng.normal(size=lattice + (ndim,))
    gradients /= np.maximum(np.linalg.norm(gradients, axis=-1, keepdims=True), 1e-12)
    grid = np.meshgrid(*coords, indexing="ij")
    cell = [np.floor(g).astype(np.intp) for g in grid]
    frac = [g - c for g, c in zip(grid, cell)]
    fade = [t * t * t * (t * (6.0 * t - 15.0) + 10.0) for t in frac]
    out = np.zeros(shape)
    for corner in itertools.product((0, 1), repeat=ndim):
        g = gradients[tuple(c + k for c, k in zip(cell, corner))]
        dot = sum(g[..., a] * (frac[a] - corner[a]) for a in range(ndim))
        weight = np.prod([fade[a] if corner[a] else 1.0 - fade[a] for a in range(ndim)], axis=0)
        out += weight * dot
    return out


# ---------------------------------------------------------------------------------------------------
# Sample


@dataclass(frozen=True, eq=False)
class AnomalyParams:
    """One drawn anomaly: where it goes and what it does there. Only the fields of its kind are set.

    Attributes:
        kind: one of :data:`KINDS`.
        region: ``bool`` array of the image's shape, the drawn support, inside the brain mask.
        center: ball kinds: the centre voxel index.
        radius: ball kinds: the radius, voxels.
        shift: ``perlin-shift`` / ``local-shift``: the signed intensity shift, ``[0, 1]`` units.
        value: ``uniform-blob``: the painted intensity in ``[0, 1]``.
        opacity: ``perlin-tissue`` / ``perlin-noise``: the texture's weight ``a`` in
            ``(1 - a) * image + a * texture``.
        offset: ``perlin-tissue``: the roll of the donor image per axis, voxels.
        exponent: ``sink`` / ``source``: ``e`` of the radial map ``d -> r (d / r) ** e``.
        noise_seed: ``perlin-noise``: seed of the uniform noise.
    """

    kind: str
    region: np.ndarray
    center: tuple[int, ...] | None = None
    radius: float | None = None
    shift: float | None = None
    value: float | None = None
    opacity: float | None = None
    offset: tuple[int, ...] | None = None
    exponent: float | None = None
    noise_seed: int | None = None


class SyntheticAnomaly:
    """Draw and paste one kind of synthetic anomaly (see the module docstring for every kind).

    Args:
        kind: one of :data:`KINDS`.
        size_range: Perlin kinds: region size as a fraction of the brain voxels, ``0 < lo <= hi <= 1``.
        periods: Perlin kinds: lattice spacings (voxels) each axis draws from, uniformly.
        radius_range: ball kinds: radius in voxels, ``1 <= lo <= hi``.
        shift_range: shift kinds: magnitude of the intensity shift, ``0 < lo <= hi <= 1``; the sign
            is drawn with probability 1/2 each.
        value_range: ``uniform-blob``: the painted intensity, ``0 <= lo <= hi <= 1``.
        opacity_range: ``perlin-tissue`` / ``perlin-noise``: the texture's weight, ``0 < lo <= hi <= 1``
            (DRAEM: 0.2 to 1).
        strength_range: ``sink`` / ``source``: ``s`` of the exponent, ``0 < lo <= hi``.

    Raises:
        TypeError: a range bound or period is not a number.
        ValueError: an unknown ``kind``, a range not ``(lo, hi)`` with ``lo <= hi`` inside its bounds,
            or an empty ``periods``.
    """

    def __init__(self, kind: str, *, size_range: tuple[float, float] = (0.01, 0.1),
                 periods: tuple[float, ...] = (4.0, 8.0, 16.0),
                 radius_range: tuple[float, float] = (2.0, 8.0),
                 shift_range: tuple[float, float] = (0.1, 0.5),
                 value_range: tuple[float, float] = (0.0, 1.0),
                 opacity_range: tuple[float, float] = (0.2, 1.0),
                 strength_range: tuple[float, float] = (0.5, 2.0)) -> None:
        if kind not in KINDS:
            raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}")
        self.kind = kind
        self.size_range = _check_range("size_range", size_range, "in (0, 1]", lambda v: 0 < v <= 1)
        self.radius_range = _check_range("radius_range", radius_range, ">= 1 voxel", lambda v: v >= 1)
        self.shift_range = _check_range("shift_range", shift_range, "in (0, 1]", lambda v: 0 < v <= 1)
        self.value_range = _check_range("value_range", value_range, "in [0, 1]", lambda v: 0 <= v <= 1)
        self.opacity_range = _check_range("opacity_range", opacity_range, "in (0, 1]", lambda v: 0 < v <= 1)
        self.strength_range = _check_range("strength_range", strength_range, "> 0",
                                           lambda v: 0 < v < math.inf)
        if isinstance(periods, (str, bytes)) or not hasattr(periods, "__len__") or len(periods) == 0:
            raise ValueError(f"`periods` must be a non-empty tuple of voxel spacings, got {periods!r}")
        self.periods = tuple(check_real("periods", p, "positive numbers of voxels", lambda v: v > 0)
                             for p in periods)

    def __repr__(self) -> str:
        return f"SyntheticAnomaly({self.kind!r})"

    def get_params(self, brain_mask: np.ndarray, rng: np.random.Generator) -> AnomalyParams:
        """Draw one anomaly for a brain of this mask.

        Args:
            brain_mask: ``(X, Y)`` or ``(X, Y, Z)`` ``bool``, not empty.
            rng: the generator every random choice is drawn from.

        Returns:
            The anomaly, its ``region`` non-empty and inside ``brain_mask``.

        Raises:
            TypeError: ``rng`` is not a ``numpy.random.Generator``.
            ValueError: ``brain_mask`` is not a 2D/3D ``bool`` array.
            VolumeError: ``brain_mask`` is empty.
        """
        brain_mask = _check_mask(brain_mask)
        _check_rng(rng)
        if self.kind in PERLIN_KINDS:
            return self._draw_perlin(brain_mask, rng)
        return self._draw_ball(brain_mask, rng)

    def __call__(self, image: np.ndarray, brain_mask: np.ndarray, rng: np.random.Generator, *,
                 texture: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw an anomaly and paste it into a copy of ``image``.

        Args:
            image: ``(X, Y)`` or ``(X, Y, Z)`` float intensities in ``[0, 1]``.
            brain_mask: ``bool`` of ``image``'s shape, not empty.
            rng: generator of the draw.
            texture: ``perlin-tissue`` only (required there): another subject's image, same shape.

        Returns:
            ``(image, mask)``: the new image (``image``'s dtype) and the changed voxels (``bool``).

        Raises:
            TypeError: ``image`` is not a numpy array or ``rng`` not a ``numpy.random.Generator``.
            ValueError: bad shapes, dtypes or non-finite values, or ``texture`` missing where needed.
            VolumeError: ``brain_mask`` is empty.
        """
        _check_image(image, "image")
        brain_mask = _check_mask(brain_mask)
        if brain_mask.shape != image.shape:
            raise ValueError(f"`brain_mask` must have the shape of `image` {image.shape}, got {brain_mask.shape}")
        if self.kind == "perlin-tissue" and texture is None:
            raise ValueError("`texture` must be another subject's image for kind 'perlin-tissue', got None")
        return apply_anomaly(image, self.get_params(brain_mask, rng), texture=texture)

    def _draw_perlin(self, brain_mask: np.ndarray, rng: np.random.Generator) -> AnomalyParams:
        periods = tuple(float(rng.choice(self.periods)) for _ in brain_mask.shape)
        noise = perlin_noise(brain_mask.shape, periods, rng)
        n_brain = int(brain_mask.sum())
        n_region = max(1, round(rng.uniform(*self.size_range) * n_brain))
        inside = np.flatnonzero(brain_mask)
        top = inside[np.argsort(-noise.ravel()[inside], kind="stable")[:n_region]]
        region = np.zeros(brain_mask.shape, dtype=bool)
        region.flat[top] = True
        if self.kind == "perlin-shift":
            return AnomalyParams(self.kind, region, shift=self._draw_shift(rng))
        opacity = float(rng.uniform(*self.opacity_range))
        if self.kind == "perlin-noise":
            return AnomalyParams(self.kind, region, opacity=opacity,
                                 noise_seed=int(rng.integers(0, 2**31 - 1)))
        offset = tuple(int(rng.integers(-(s // 4), s // 4 + 1)) for s in brain_mask.shape)
        return AnomalyParams(self.kind, region, opacity=opacity, offset=offset)

    def _draw_ball(self, brain_mask: np.ndarray, rng: np.random.Generator) -> AnomalyParams:
        inside = np.flatnonzero(brain_mask)
        center = tuple(int(i) for i in np.unravel_index(inside[rng.integers(inside.size)], brain_mask.shape))
        radius = float(rng.uniform(*self.radius_range))
        region = _ball(brain_mask.shape, center, radius) & brain_mask
        fields: dict[str, Any] = {}
        if self.kind == "local-shift":
            fields["shift"] = self._draw_shift(rng)
        elif self.kind == "uniform-blob":
            fields["value"] = float(rng.uniform(*self.value_range))
        else:
            s = float(rng.uniform(*self.strength_range))
            fields["exponent"] = 1.0 + s if self.kind == "source" else 1.0 / (1.0 + s)
        return AnomalyParams(self.kind, region, center=center, radius=radius, **fields)

    def _draw_shift(self, rng: np.random.Generator) -> float:
        sign = 1.0 if rng.random() < 0.5 else -1.0
        return sign * float(rng.uniform(*self.shift_range))


# ---------------------------------------------------------------------------------------------------
# Apply


def apply_anomaly(image: np.ndarray, params: AnomalyParams, *,
                  texture: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Paste a drawn anomaly into a copy of ``image``; deterministic.

    Args:
        image: ``(X, Y)`` or ``(X, Y, Z)`` float intensities in ``[0, 1]``, the shape of
            ``params.region``.
        params: from :meth:`SyntheticAnomaly.get_params`.
        texture: ``perlin-tissue`` only: the donor image (another subject), same shape; it is rolled
            by ``params.offset`` voxels before blending.

    Returns:
        ``(image, mask)``: a new array of ``image``'s dtype that differs from ``image`` exactly on
        ``mask``, and ``mask = params.region & (new != image)`` (``bool``).

    Raises:
        TypeError: ``image`` or ``texture`` is not a numpy array, or ``params`` not an
            :class:`AnomalyParams`.
        ValueError: ``image`` is not a finite float 2D/3D array of the region's shape, or
            ``texture`` is missing or malformed for ``perlin-tissue``.
    """
    _check_image(image, "image")
    if not isinstance(params, AnomalyParams):
        raise TypeError(f"`params` must be an AnomalyParams, got {params!r}")
    region = params.region
    if image.shape != region.shape:
        raise ValueError(f"`image` must have the shape of the anomaly's region {region.shape}, got {image.shape}")
    values = image[region].astype(np.float64)
    if params.kind in ("perlin-shift", "local-shift"):
        new = np.clip(values + params.shift, 0.0, 1.0)
    elif params.kind == "uniform-blob":
        new = np.full_like(values, params.value)
    elif params.kind == "perlin-noise":
        noise = np.random.default_rng(params.noise_seed).random(values.size)
        new = (1.0 - params.opacity) * values + params.opacity * noise
    elif params.kind == "perlin-tissue":
        if texture is None:
            raise ValueError("`texture` must be another subject's image for kind 'perlin-tissue', got None")
        _check_image(texture, "texture")
        if texture.shape != image.shape:
            raise ValueError(f"`texture` must have the shape of `image` {image.shape}, got {texture.shape}")
        donor = np.roll(texture, params.offset, axis=tuple(range(texture.ndim)))[region]
        new = (1.0 - params.opacity) * values + params.opacity * donor
    else:
        new = _radial_deform(image, params)
    out = np.array(image, copy=True)
    out[region] = new.astype(image.dtype)
    return out, region & (out != image)


def _radial_deform(image: np.ndarray, params: AnomalyParams) -> np.ndarray:
    """Sink/source: the region's new values, sampled along rays from the centre (linear interpolation)."""
    points = np.stack(np.nonzero(params.region)).astype(np.float64)
    center = np.asarray(params.center, dtype=np.float64)[:, None]
    delta = points - center
    d = np.sqrt((delta ** 2).sum(0))
    rho = np.clip(d / params.radius, 0.0, 1.0)
    scale = np.ones_like(rho)
    moved = d > 0  # the centre stays where it is (any exponent maps 0 to 0)
    scale[moved] = rho[moved] ** (params.exponent - 1.0)
    return ndimage.map_coordinates(image.astype(np.float64), center + delta * scale, order=1, mode="nearest")


def _ball(shape: tuple[int, ...], center: tuple[int, ...], radius: float) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    return sum((g - c) ** 2 for g, c in zip(grid, center)) <= radius ** 2


def _check_range(name: str, value: Any, expected: str, valid) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(f"`{name}` must be a (lo, hi) pair {expected}, got {value!r}")
    lo, hi = (check_real(name, v, f"a (lo, hi) pair {expected}", valid) for v in value)
    if lo > hi:
        raise ValueError(f"`{name}` must be a (lo, hi) pair with lo <= hi, got {value!r}")
    return lo, hi


def _check_image(image: Any, name: str) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"`{name}` must be a numpy array, got {type(image).__name__}")
    if image.ndim not in (2, 3):
        raise ValueError(f"`{name}` must be (X, Y) or (X, Y, Z), got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"`{name}` must be a float array, got dtype {image.dtype}")
    if not np.isfinite(image).all():
        raise ValueError(f"`{name}` must be finite, got {int((~np.isfinite(image)).sum())} NaN/inf voxels")


def _check_mask(brain_mask: Any) -> np.ndarray:
    if not isinstance(brain_mask, np.ndarray):
        raise TypeError(f"`brain_mask` must be a numpy array, got {type(brain_mask).__name__}")
    if brain_mask.dtype != bool or brain_mask.ndim not in (2, 3):
        raise ValueError(f"`brain_mask` must be a (X, Y) or (X, Y, Z) bool array, "
                         f"got dtype {brain_mask.dtype} shape {brain_mask.shape}")
    if not brain_mask.any():
        raise VolumeError("`brain_mask` is empty; a synthetic anomaly needs brain voxels")
    return brain_mask


def _check_rng(rng: Any) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy.random.Generator, got {rng!r}")
