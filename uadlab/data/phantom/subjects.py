"""One simulated subject: seeds, :func:`simulate_subject` and its result, :class:`PhantomSubject`."""

from __future__ import annotations

import numbers
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from uadlab._checks import check_int, check_positive_real
from uadlab.data.phantom.anatomy import (
    _apply_atrophy,
    _apply_jitter,
    _sample_atrophy,
    _sample_jitter,
    _sample_warp,
    _warp_anatomy,
)
from uadlab.data.phantom.lesions import _insert_lesion, _sample_lesion
from uadlab.data.phantom.params import PhantomParams
from uadlab.data.phantom.sources import SourceBrain, _at_grid

__all__ = ["KINDS", "PhantomSubject", "simulate_subject", "subject_seed"]

KINDS: tuple[str, ...] = ("healthy", "tumour", "stroke")
"""Subject kinds :func:`simulate_subject` can produce."""


# --------------------------------------------------------------------------------------------------
# Seeds and subjects


def subject_seed(base_seed: int, cohort: str, index: int) -> int:
    """The seed of subject ``index`` of ``cohort`` in a data set built with ``base_seed``.

    Derived with :class:`numpy.random.SeedSequence` from ``(base_seed, crc32(cohort), index)``, so a
    subject is the same whichever other subjects are built, in whatever order, and cohorts never
    share seeds. The data builder stores it per subject so any case can be regenerated alone.

    Args:
        base_seed: the data set's seed, ``>= 0``.
        cohort: cohort name, e.g. ``"healthy"``, ``"tumour"``, ``"stroke"``.
        index: position of the subject in its cohort, ``>= 0``.

    Returns:
        A non-negative integer below ``2**63`` for :func:`simulate_subject`.

    Raises:
        TypeError: ``cohort`` is not a string or a seed/index is not an integer.
        ValueError: ``base_seed`` or ``index`` is negative.

    Example:
        >>> subject_seed(0, "healthy", 3) == subject_seed(0, "healthy", 3) != subject_seed(0, "stroke", 3)
        True
    """
    if not isinstance(cohort, str):
        raise TypeError(f"`cohort` must be a str, got {cohort!r}")
    for name, value in (("base_seed", base_seed), ("index", index)):
        check_int(name, value, "an int >= 0", lambda v: v >= 0)
    sequence = np.random.SeedSequence([int(base_seed), zlib.crc32(cohort.encode()), int(index)])
    return int(sequence.generate_state(1, np.uint64)[0] >> np.uint64(1))


@dataclass(frozen=True, eq=False)
class PhantomSubject:
    """One simulated subject.

    Attributes:
        image: ``(X, Y, Z)`` float32 T1 intensities, ``>= 0``, zero outside the brain (not yet
            normalised to ``[0, 1]``: that is the preprocessing's job, Bengs et al. 2021 Sec. 2.1).
        brain_mask: ``(X, Y, Z)`` bool.
        lesion_mask: ``(X, Y, Z)`` bool inside ``brain_mask``, or ``None`` for a healthy subject.
        affine: ``(4, 4)`` voxel-to-RAS-mm matrix with isotropic ``voxel_mm`` voxels.
        lesion_volume_mm3: volume of ``lesion_mask``, mm³ (0.0 for a healthy subject).
        source: name of the :class:`SourceBrain` it was simulated from.
        kind: ``"healthy"``, ``"tumour"`` or ``"stroke"``.
    """

    image: np.ndarray
    brain_mask: np.ndarray
    lesion_mask: np.ndarray | None
    affine: np.ndarray
    lesion_volume_mm3: float
    source: str
    kind: str


def simulate_subject(
    source: SourceBrain,
    kind: str,
    seed_or_rng: int | np.random.SeedSequence | np.random.Generator,
    *,
    params: PhantomParams | Mapping | None = None,
    voxel_mm: float | None = None,
    target_volume_mm3: float | None = None,
) -> PhantomSubject:
    """Simulate one healthy subject or lesion case from a source brain.

    Steps (all randomness from ``seed_or_rng``): a random affine (rotation, scaling, translation
    about the brain centre) and an elastic displacement field (Gaussian-smoothed noise, built on a
    coarse grid and interpolated; optionally a second, fine one, ``fold_max_mm``) are combined into
    one pull-back map and applied in one :func:`scipy.ndimage.map_coordinates` pass (cubic for the
    image, linear then ``> 0.5`` for the brain mask). A tumour adds a radial mass-effect
    displacement to that same map. Optional age-like atrophy (``atrophy_range``) then widens the
    ventricles and sulci. The lesion is blended in (intensities from the source's tissue
    statistics, see the module docstring), then a gamma contrast change, a smooth multiplicative
    bias field, a global scale and offset, and Rician noise are applied; voxels outside the brain
    are set to 0.

    The anatomy/noise stream and the lesion stream are separate children of the seed, so the
    healthy subject with the same seed is the exact lesion-free counterpart of a lesion case.

    Args:
        source: a brain from :func:`load_sources`.
        kind: ``"healthy"``, ``"tumour"`` or ``"stroke"``.
        seed_or_rng: an int seed (e.g. from :func:`subject_seed`), a ``SeedSequence`` or a
            ``Generator`` (consumed: it spawns the child streams).
        params: :class:`PhantomParams`, a mapping of overrides, or ``None`` for the defaults.
        voxel_mm: output voxel size, mm; ``None`` keeps the source's grid. Loading the sources at
            the target size (``load_sources(voxel_mm=...)``) is faster than resampling here.
        target_volume_mm3: force the main lesion's volume, mm³, instead of drawing it (lesion-size
            studies); the final volume can be slightly smaller where the brain boundary clips it.

    Returns:
        A :class:`PhantomSubject` on the source's (or the ``voxel_mm``) grid.

    Raises:
        TypeError: ``source``, ``seed_or_rng`` or ``params`` has the wrong type.
        ValueError: unknown ``kind``, bad ``params`` keys or values, a non-positive ``voxel_mm`` or
            ``target_volume_mm3``, or ``target_volume_mm3`` for a healthy subject.
    """
    if not isinstance(source, SourceBrain):
        raise TypeError(f"`source` must be a SourceBrain from load_sources(), got {type(source).__name__}")
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}")
    params = _as_params(params)
    if voxel_mm is not None:
        source = _at_grid(source, check_positive_real("voxel_mm", voxel_mm))
    if target_volume_mm3 is not None:
        if kind == "healthy":
            raise ValueError(f"`target_volume_mm3` must be None for a healthy subject, got {target_volume_mm3!r}")
        target_volume_mm3 = check_positive_real("target_volume_mm3", target_volume_mm3)
    anatomy_rng, lesion_rng = _child_rngs(seed_or_rng)

    warp = _sample_warp(source, anatomy_rng, params)
    jitter = _sample_jitter(source, anatomy_rng, params)
    atrophy = _sample_atrophy(source, anatomy_rng, params)
    lesion = None
    if kind != "healthy":
        lesion = _sample_lesion(source, warp, lesion_rng, kind, params, target_volume_mm3)

    image, brain, csf = _warp_anatomy(source, warp, lesion, csf=atrophy is not None)
    if atrophy is not None:
        _apply_atrophy(image, brain, csf, atrophy, source, params)
    lesion_mask = None
    if lesion is not None:
        lesion_mask = _insert_lesion(image, brain, source, warp, lesion, lesion_rng, params)
    image = _apply_jitter(image, brain, jitter, source.voxel_mm, anatomy_rng)
    volume = 0.0 if lesion_mask is None else float(lesion_mask.sum()) * source.voxel_mm**3
    return PhantomSubject(
        image=image, brain_mask=brain, lesion_mask=lesion_mask, affine=source.affine.copy(),
        lesion_volume_mm3=volume, source=source.name, kind=kind,
    )


# --------------------------------------------------------------------------------------------------
# Validation helpers


def _as_params(params: PhantomParams | Mapping | None) -> PhantomParams:
    if params is None:
        return PhantomParams()
    if isinstance(params, PhantomParams):
        return params
    if isinstance(params, Mapping):
        return PhantomParams(**params)
    raise TypeError(f"`params` must be a PhantomParams, a mapping or None, got {type(params).__name__}")


def _child_rngs(seed_or_rng: object) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent anatomy and lesion generators from a seed, SeedSequence or Generator."""
    if isinstance(seed_or_rng, np.random.Generator):
        anatomy, lesion = seed_or_rng.spawn(2)
        return anatomy, lesion
    if isinstance(seed_or_rng, numbers.Integral) and not isinstance(seed_or_rng, bool):
        if seed_or_rng < 0:
            raise ValueError(f"`seed_or_rng` must be >= 0, got {seed_or_rng!r}")
        seed_or_rng = np.random.SeedSequence(int(seed_or_rng))
    if not isinstance(seed_or_rng, np.random.SeedSequence):
        raise TypeError(f"`seed_or_rng` must be an int, SeedSequence or Generator, got {seed_or_rng!r}")
    # The children SeedSequence.spawn would give, built without mutating the caller's sequence.
    children = (
        np.random.SeedSequence(seed_or_rng.entropy, spawn_key=(*seed_or_rng.spawn_key, i),
                               pool_size=seed_or_rng.pool_size)
        for i in range(2)
    )
    return tuple(np.random.default_rng(child) for child in children)
