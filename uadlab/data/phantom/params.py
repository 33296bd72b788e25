"""Phantom parameters: every knob of the simulation, with units and validated ranges (:class:`PhantomParams`)."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields

import numpy as np

from uadlab._checks import check_int, check_real

__all__ = ["PhantomParams"]



# --------------------------------------------------------------------------------------------------
# Parameters


@dataclass(frozen=True, init=False)
class PhantomParams:
    """Every random range of the phantom, with its unit, in one place.

    Ranges ``(lo, hi)`` are sampled uniformly per subject unless stated otherwise. Build with keyword
    overrides, e.g. from a phantom manifest's ``params`` mapping:
    ``PhantomParams(**manifest.phantom.params)``; lists are accepted where tuples are expected (YAML
    has no tuples).

    Attributes:
        rotation_deg: largest rotation about each axis, degrees (uniform in ``±rotation_deg``).
        scale_fraction: largest relative scaling along each axis (uniform in ``1 ± scale_fraction``).
        translation_mm: largest shift along each axis, mm (uniform in ``±translation_mm``).
        elastic_sigma_mm: smoothness (Gaussian sigma) of the elastic displacement field, mm.
        elastic_max_mm: largest elastic displacement, mm, range; the field is scaled so that its
            largest displacement is a value drawn from this range.
        fold_sigma_mm: smoothness of a second, fine elastic field that moves gyri and sulci against
            each other (folding variety that one smooth warp of one template lacks), mm.
        fold_max_mm: largest displacement of that fine field, mm, range (``(0, 0)``: none).
        atrophy_range: age-like atrophy level ``a``, range in ``[0, 1]``: the ventricles widen by
            ``a * atrophy_ventricles_mm`` and the sulci by ``a * atrophy_sulci_mm`` (times a smooth
            regional factor in 0.5-1.5), the tissue there turning CSF-like. Real healthy cohorts
            span large differences here (IXI: 20-86 years); the MNI152 average has small ventricles
            and narrow sulci.
        atrophy_ventricles_mm: how far the ventricles (CSF deeper than 15 mm) widen at ``a = 1``, mm.
        atrophy_sulci_mm: how far the other CSF spaces (sulci, cisterns) widen at ``a = 1``, mm.
        bias_sigma_mm: smoothness (Gaussian sigma) of the multiplicative bias field, mm.
        bias_range: largest relative bias amplitude, range (0.15: intensities scaled by up to
            ``1.15`` or ``1 / 1.15``).
        gamma_range: contrast exponent ``gamma`` applied to the normalised image, range; sampled
            log-uniformly so that ``gamma`` and ``1 / gamma`` are equally likely.
        scale_range: global intensity factor, range.
        offset_range: global intensity offset inside the brain, fraction of the brain's 99.5th
            percentile intensity, range.
        noise_range: Rician noise sigma, fraction of the brain's 99.5th percentile intensity, range.
        tumour_volume_cm3: whole-tumour volume, cm³, range (BraTS: ~15-120 cm³).
        tumour_core_fraction: share of the tumour volume taken by the necrotic core, range.
        tumour_mass_effect: radial push of the surrounding tissue at the tumour border, as a
            fraction of the tumour's equivalent-sphere radius (at most 0.4); decays with a Gaussian
            profile of that radius outside the tumour and fades out at the brain surface.
        tumour_irregularity: amplitude of the smooth noise that perturbs the tumour's ellipsoid
            (0: a smooth ellipsoid), in units of the tumour radius.
        tumour_elongation: largest log axis ratio of the tumour's ellipsoid (each semi-axis is
            scaled by ``exp(u)``, ``u`` uniform in ``±tumour_elongation``, volume kept).
        tumour_core_level: intensity of the necrotic core as the fraction of the way from the
            subject's CSF mean to its grey-matter mean, range (0: CSF-dark, 1: as bright as GM).
        tumour_oedema_darkening: how far the oedema darkens the local tissue towards the CSF mean,
            fraction, range (0: no change, 1: CSF-dark).
        stroke_volume_cm3: main stroke lesion volume, cm³, range; sampled log-uniformly
            (ATLAS spans ~0.1-150 cm³).
        stroke_irregularity: as ``tumour_irregularity`` for stroke lesions (more irregular).
        stroke_elongation: as ``tumour_elongation`` for stroke lesions (more elongated).
        stroke_satellites: largest number of small satellite lesions beside the main stroke
            (uniform in ``0..stroke_satellites``), each 3-15 % of the main volume.
        stroke_level: intensity of a stroke lesion as the fraction of the way from the subject's CSF
            mean to its grey-matter mean, range (0: CSF-like cavity).
        stroke_tissue_mix: share of the local tissue's own intensity kept in the lesion (residual
            gliotic tissue), range.
        lesion_edge_mm: Gaussian sigma, mm, that blends lesion intensities into the tissue
            (partial volume at the lesion border).
        texture_sigma_mm: Gaussian sigma, mm, of the lesions' heterogeneous texture.

    Raises:
        ValueError: an unknown key, a range that is not two numbers ``lo <= hi``, or a value out of
            its domain (negative sizes, non-positive volumes or gamma).
    """

    # Pose, size and shape variety: docs/phantom_realism.md measured that it, not lesion contrast or
    # size, made the former defaults (5 deg, 5 %, 3 mm, elastic 2-4 mm at sigma 10 mm) far easier
    # than a phantom from 17 real brains; these values bring its floors close to that phantom's.
    rotation_deg: float = 10.0
    scale_fraction: float = 0.12
    translation_mm: float = 5.0
    elastic_sigma_mm: float = 20.0
    elastic_max_mm: tuple[float, float] = (6.0, 12.0)
    fold_sigma_mm: float = 6.0
    fold_max_mm: tuple[float, float] = (0.0, 0.0)
    atrophy_range: tuple[float, float] = (0.0, 0.0)
    atrophy_ventricles_mm: float = 6.0
    atrophy_sulci_mm: float = 3.0
    bias_sigma_mm: float = 50.0
    bias_range: tuple[float, float] = (0.10, 0.20)
    gamma_range: tuple[float, float] = (0.8, 1.25)
    scale_range: tuple[float, float] = (0.9, 1.1)
    offset_range: tuple[float, float] = (-0.02, 0.02)
    noise_range: tuple[float, float] = (0.01, 0.03)
    tumour_volume_cm3: tuple[float, float] = (15.0, 120.0)
    tumour_core_fraction: tuple[float, float] = (0.15, 0.45)
    tumour_mass_effect: float = 0.35
    tumour_irregularity: float = 0.25
    tumour_elongation: float = 0.2
    tumour_core_level: tuple[float, float] = (0.0, 0.4)
    tumour_oedema_darkening: tuple[float, float] = (0.15, 0.35)
    stroke_volume_cm3: tuple[float, float] = (0.1, 150.0)
    stroke_irregularity: float = 0.45
    stroke_elongation: float = 0.5
    stroke_satellites: int = 2
    stroke_level: tuple[float, float] = (0.0, 0.35)
    stroke_tissue_mix: tuple[float, float] = (0.0, 0.3)
    lesion_edge_mm: float = 1.0
    texture_sigma_mm: float = 1.5

    def __init__(self, **overrides: object) -> None:
        names = [f.name for f in fields(self)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ValueError(f"`params` keys must be among {names}, got unknown {unknown!r}")
        for name in names:
            value = overrides.get(name, getattr(type(self), name))
            object.__setattr__(self, name, _checked_param(name, value))

    def to_dict(self) -> dict[str, object]:
        """All parameters as a plain mapping (tuples as lists), e.g. for ``dataset.json``."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}


_RANGE_DOMAIN = {  # lowest allowed value of a range's lower end
    "elastic_max_mm": 0.0, "fold_max_mm": 0.0, "atrophy_range": 0.0, "bias_range": 0.0, "gamma_range": 1e-6,
    "scale_range": 1e-6,
    "offset_range": -math.inf, "noise_range": 0.0, "tumour_volume_cm3": 1e-6,
    "tumour_core_fraction": 0.0, "stroke_volume_cm3": 1e-6, "tumour_core_level": 0.0,
    "tumour_oedema_darkening": 0.0, "stroke_level": 0.0, "stroke_tissue_mix": 0.0,
}
_FRACTIONS = (  # ranges inside [0, 1] (tumour_core_fraction: [0, 1), checked on its own)
    "tumour_core_level", "tumour_oedema_darkening", "stroke_level", "stroke_tissue_mix", "atrophy_range",
)


def _checked_param(name: str, value: object) -> object:
    """Validate and normalise one :class:`PhantomParams` value (lists become tuples)."""
    if name in _RANGE_DOMAIN:
        if (
            not isinstance(value, (tuple, list))
            or len(value) != 2
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in value)
        ):
            raise ValueError(f"`{name}` must be a pair of numbers (lo, hi), got {value!r}")
        lo, hi = float(value[0]), float(value[1])
        if not (_RANGE_DOMAIN[name] <= lo <= hi) or not math.isfinite(hi):
            raise ValueError(f"`{name}` must satisfy {_RANGE_DOMAIN[name]} <= lo <= hi < inf, got {value!r}")
        if name == "tumour_core_fraction" and hi >= 1.0:
            raise ValueError(f"`{name}` must lie in [0, 1), got {value!r}")
        if name in _FRACTIONS and hi > 1.0:
            raise ValueError(f"`{name}` must lie in [0, 1], got {value!r}")
        return (lo, hi)
    if name == "stroke_satellites":
        return check_int(name, value, "an integer >= 0", lambda v: v >= 0)
    value = check_real(name, value, "a finite number >= 0", lambda v: math.isfinite(v) and v >= 0)
    if name in ("elastic_sigma_mm", "fold_sigma_mm", "bias_sigma_mm") and value <= 0:
        raise ValueError(f"`{name}` must be > 0, got {value!r}")
    if name == "tumour_mass_effect" and value > 0.4:
        raise ValueError(f"`{name}` must be <= 0.4 (larger pushes fold the tissue), got {value!r}")
    return float(value)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """One draw from the range ``bounds = (lo, hi)`` of a parameter."""
    return float(rng.uniform(bounds[0], bounds[1]))
