"""The default data set: healthy subjects, tumour and stroke cases simulated from real brain MRI.

Bengs et al. 2021 (Sec. 2.1, 3) train on T1 scans of 2008 healthy subjects (a private clinical
data set) and test on BraTS 2019 (glioma) and ATLAS R1.2 (chronic stroke). None of these can ship
with a library (private, or registration and a data use agreement), so the default data set is
*simulated from real MRI that does ship*: the MNI152 2009 T1 template and its tissue maps inside
nilearn (or, when passed, real skull-stripped healthy T1 scans); see :func:`load_sources` for why.

A **healthy subject** is a source brain under a seeded smooth random deformation (a small affine
plus an elastic field, applied in one interpolation pass), a multiplicative bias field, gamma
contrast jitter, a global intensity scale and offset, and Rician noise. A **lesion case** is a
healthy subject with one inserted lesion and its mask:

- ``tumour`` (BraTS-like): one large irregular mass in white matter with a hypointense necrotic core,
  a mildly hypointense oedema ring, heterogeneous texture and mass effect (tissue pushed radially
  away). The lesion mask is the whole tumour (core + oedema), as BraTS ``seg > 0``.
- ``stroke`` (ATLAS-like): a CSF-like hypointense lesion (plus up to a few small satellites) in grey
  or white matter, volume drawn log-uniformly so that a lesion-size analysis has a spread.

Lesion intensities are drawn from the source's own tissue statistics and mixed with the local
tissue, then undergo the same bias, contrast and noise as the rest of the subject, so a global
intensity threshold cannot pick them out.

Seeds: a subject is a pure function of ``(source, kind, seed, params, grid)``. A lesion case and the
healthy subject with the same seed share their anatomy, intensity jitter and noise exactly: the
healthy subject is the lesion case's *paired healthy counterpart* (useful for tests and teaching).
:func:`subject_seed` derives a subject's seed from ``(base_seed, cohort, index)`` so that a subject
does not depend on how many others were built before it.

Shape:
    - ``image``: ``(X, Y, Z)`` float32, ``>= 0``, zero outside the brain; RAS+ orientation.
    - ``brain_mask``, ``lesion_mask``: ``(X, Y, Z)`` bool.
    - ``affine``: ``(4, 4)`` float64, voxel to RAS mm, isotropic voxels of ``voxel_mm``.
"""

from __future__ import annotations

import functools
import math
import numbers
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from uadlab._checks import check_int, check_positive_real, check_real
from uadlab.data.io import load_volume
from uadlab.data.resampling import iso_grid, resample
from uadlab.errors import VolumeError

__all__ = [
    "KINDS",
    "PhantomParams",
    "PhantomSubject",
    "SourceBrain",
    "load_sources",
    "simulate_subject",
    "subject_seed",
]

KINDS: tuple[str, ...] = ("healthy", "tumour", "stroke")
"""Subject kinds :func:`simulate_subject` can produce."""

_TEMPLATE_NAME = "mni152_2009"
_TISSUES = ("csf", "gm", "wm")
_CLIP_PERCENTILE = 99.5


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
        stroke_volume_cm3: main stroke lesion volume, cm³, range; sampled log-uniformly
            (ATLAS spans ~0.1-150 cm³).
        stroke_irregularity: as ``tumour_irregularity`` for stroke lesions (more irregular).
        stroke_elongation: as ``tumour_elongation`` for stroke lesions (more elongated).
        stroke_satellites: largest number of small satellite lesions beside the main stroke
            (uniform in ``0..stroke_satellites``), each 3-15 % of the main volume.
        lesion_edge_mm: Gaussian sigma, mm, that blends lesion intensities into the tissue
            (partial volume at the lesion border).
        texture_sigma_mm: Gaussian sigma, mm, of the lesions' heterogeneous texture.

    Raises:
        ValueError: an unknown key, a range that is not two numbers ``lo <= hi``, or a value out of
            its domain (negative sizes, non-positive volumes or gamma).
    """

    rotation_deg: float = 5.0
    scale_fraction: float = 0.05
    translation_mm: float = 3.0
    elastic_sigma_mm: float = 10.0
    elastic_max_mm: tuple[float, float] = (2.0, 4.0)
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
    stroke_volume_cm3: tuple[float, float] = (0.1, 150.0)
    stroke_irregularity: float = 0.45
    stroke_elongation: float = 0.5
    stroke_satellites: int = 2
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
    "elastic_max_mm": 0.0, "bias_range": 0.0, "gamma_range": 1e-6, "scale_range": 1e-6,
    "offset_range": -math.inf, "noise_range": 0.0, "tumour_volume_cm3": 1e-6,
    "tumour_core_fraction": 0.0, "stroke_volume_cm3": 1e-6,
}


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
        return (lo, hi)
    if name == "stroke_satellites":
        return check_int(name, value, "an integer >= 0", lambda v: v >= 0)
    value = check_real(name, value, "a finite number >= 0", lambda v: math.isfinite(v) and v >= 0)
    if name in ("elastic_sigma_mm", "bias_sigma_mm") and value <= 0:
        raise ValueError(f"`{name}` must be > 0, got {value!r}")
    if name == "tumour_mass_effect" and value > 0.4:
        raise ValueError(f"`{name}` must be <= 0.4 (larger pushes fold the tissue), got {value!r}")
    return float(value)


# --------------------------------------------------------------------------------------------------
# Source brains


@dataclass(frozen=True, eq=False)
class SourceBrain:
    """A real brain the phantom deforms: a skull-stripped T1 image with tissue maps.

    Arrays are read-only (they are shared by a cache); all live on one isotropic RAS+ grid.

    Attributes:
        name: short identifier, e.g. ``"mni152_2009"`` or the file's stem.
        image: ``(X, Y, Z)`` float32 T1 intensities, zero outside the brain, scaled so that the
            brain's 99.5th percentile is 1.
        brain_mask: ``(X, Y, Z)`` bool.
        gm, wm, csf: ``(X, Y, Z)`` float32 tissue probabilities in ``[0, 1]``, zero outside the
            brain and summing to 1 inside it.
        affine: ``(4, 4)`` voxel-to-RAS-mm matrix; diagonal with ``voxel_mm`` spacing.
    """

    name: str
    image: np.ndarray
    brain_mask: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    affine: np.ndarray
    _derived: dict = field(default_factory=dict, init=False, repr=False)

    @property
    def voxel_mm(self) -> float:
        """Isotropic voxel size, mm."""
        return float(abs(self.affine[0, 0]))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape ``(X, Y, Z)``."""
        return tuple(self.image.shape)


def load_sources(paths: Iterable[str | Path] | None = None, *, voxel_mm: float = 1.0) -> list[SourceBrain]:
    """Load the source brains of the phantom, resampled onto an isotropic ``voxel_mm`` grid.

    The default (``paths=None``) is the ICBM 2009a nonlinear *symmetric* MNI152 T1 template at 1 mm
    (``mni_icbm152_t1_tal_nlin_sym_09a``, skull-stripped, 197 x 233 x 189 voxels) with its
    grey/white-matter probability maps, read from the copy that ships inside nilearn. Why this
    one: it works offline with nothing to download, its licence allows redistribution of derived
    images (see ``data_manifests/phantom.yaml``), it is real MRI (an average of 152 healthy adults,
    so it looks like a clean, high-SNR scan), and it comes with tissue maps, which the lesion
    models need. The price: every subject shares one anatomy up to its random warp, and that
    anatomy is exactly left-right mirror-symmetric (each subject's random pose and elastic warp make
    it only approximately so), which may make the Half-Slice/Half-Volume in-painting task easier
    than on real brains. Passing real healthy skull-stripped T1 scans (e.g.
    ``../shared/data/real/healthy/*.nii.gz``, via a manifest's ``phantom.sources``) gives more,
    and asymmetric, anatomical variety between subjects.

    A real scan is read with :func:`uadlab.data.io.load_volume` and reoriented with
    :func:`nibabel.as_closest_canonical`. Its brain mask is ``image != 0`` (holes filled); its tissues
    come from a 3-class k-means clustering of the brain intensities (scikit-learn, fixed seed): on
    T1 the darkest cluster is CSF, the middle one grey matter, the brightest white matter. Tissue
    labels are resampled linearly, so they become partial-volume probabilities on coarse grids.

    Resampling: images with cubic splines (order 3) after a Gaussian anti-aliasing filter when the
    grid gets coarser; masks and tissue maps linearly, masks then thresholded at 0.5. Intensities are
    finally clipped at 0 and divided by the brain's 99.5th percentile. Results are cached per
    ``(paths, voxel_mm)``: calling again is free.

    Args:
        paths: NIfTI files of skull-stripped T1 scans, or ``None`` for the MNI152 template.
        voxel_mm: isotropic voxel size of the output grid, mm (profiles: smoke 4, lab 2, paper 1).

    Returns:
        One :class:`SourceBrain` per path (or the template), in the order given.

    Raises:
        TypeError: ``paths`` is a single string/path instead of a collection, or holds non-paths.
        ValueError: ``paths`` is empty, or ``voxel_mm`` is not a positive number.
        uadlab.errors.VolumeError: a file is unreadable, not 3D, or holds no brain voxels.
    """
    voxel_mm = check_positive_real("voxel_mm", voxel_mm)
    if paths is None:
        return list(_cached_sources(None, voxel_mm))
    if isinstance(paths, (str, Path)) or not isinstance(paths, Iterable):
        raise TypeError(f"`paths` must be a collection of paths or None, got {paths!r}")
    paths = list(paths)
    if not paths:
        raise ValueError(f"`paths` must name at least one file, got {paths!r}")
    for path in paths:
        if not isinstance(path, (str, Path)):
            raise TypeError(f"`paths` must hold str or Path items, got {path!r}")
    key = tuple(str(Path(p).expanduser().resolve()) for p in paths)
    return list(_cached_sources(key, voxel_mm))


@functools.lru_cache(maxsize=8)
def _cached_sources(paths: tuple[str, ...] | None, voxel_mm: float) -> tuple[SourceBrain, ...]:
    if paths is None:
        return (_load_template(voxel_mm),)
    return tuple(_load_real_source(Path(p), voxel_mm) for p in paths)


def _load_template(voxel_mm: float) -> SourceBrain:
    """The nilearn MNI152 2009 template and its tissue probability maps on the requested grid."""
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=1)
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=1).dataobj) > 0
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).get_fdata(), dtype=np.float32)
    wm = np.asarray(datasets.load_mni152_wm_template(resolution=1).get_fdata(), dtype=np.float32)
    image = np.asarray(t1.get_fdata(), dtype=np.float32)
    return _make_source(_TEMPLATE_NAME, image, brain, {"gm": gm, "wm": wm}, t1.affine, voxel_mm)


def _load_real_source(path: Path, voxel_mm: float) -> SourceBrain:
    """A real skull-stripped T1 scan with k-means tissue classes on the requested grid."""
    from sklearn.cluster import (
        KMeans,  # imported here: slow to import, needed for real sources only
    )

    data, affine = load_volume(path)
    canonical = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine))
    image = np.asarray(canonical.dataobj, dtype=np.float32)
    brain = ndi.binary_fill_holes(image != 0)
    if brain.sum() < 100:
        raise VolumeError(f"{path}: fewer than 100 non-zero voxels; expected a skull-stripped T1 brain")
    values = image[brain]
    sample = np.random.default_rng(0).choice(values, size=min(values.size, 50_000), replace=False)
    centres = np.sort(
        KMeans(n_clusters=3, n_init=4, random_state=0).fit(sample[:, None]).cluster_centers_.ravel()
    )
    cuts = (centres[:-1] + centres[1:]) / 2  # 1D k-means = nearest centre = thresholds at midpoints
    label = np.digitize(image, cuts)  # 0 CSF, 1 GM, 2 WM on T1
    gm = ((label == 1) & brain).astype(np.float32)
    wm = ((label == 2) & brain).astype(np.float32)
    name = path.name.removesuffix(".gz").removesuffix(".nii")
    return _make_source(name, image, brain, {"gm": gm, "wm": wm}, canonical.affine, voxel_mm)


def _make_source(
    name: str, image: np.ndarray, brain: np.ndarray, tissues: dict[str, np.ndarray], affine: np.ndarray,
    voxel_mm: float,
) -> SourceBrain:
    """Resample a source onto the isotropic grid, derive CSF, normalise intensities, freeze arrays."""
    out_affine, out_shape = iso_grid(affine, image.shape, voxel_mm)
    brain = resample(brain.astype(np.float32), affine, out_affine, out_shape, order=1) > 0.5
    if not brain.any():
        raise VolumeError(f"{name}: the brain mask is empty on a {voxel_mm} mm grid")
    image = np.clip(resample(image, affine, out_affine, out_shape, order=3), 0, None) * brain
    gm = np.clip(resample(tissues["gm"], affine, out_affine, out_shape, order=1), 0, 1) * brain
    wm = np.clip(resample(tissues["wm"], affine, out_affine, out_shape, order=1), 0, 1) * brain
    total = gm + wm
    over = total > 1
    gm[over] /= total[over]
    wm[over] /= total[over]
    csf = (1 - gm - wm) * brain
    scale = np.percentile(image[brain], _CLIP_PERCENTILE)
    arrays = {
        "image": (image / scale).astype(np.float32), "brain_mask": brain,
        "gm": gm.astype(np.float32), "wm": wm.astype(np.float32), "csf": csf.astype(np.float32),
        "affine": out_affine,
    }
    for array in arrays.values():
        array.setflags(write=False)
    return SourceBrain(name=name, **arrays)


def _at_grid(source: SourceBrain, voxel_mm: float) -> SourceBrain:
    """``source`` itself, or its resampling onto a ``voxel_mm`` grid (cached on the source)."""
    if math.isclose(source.voxel_mm, voxel_mm):
        return source
    key = ("grid", voxel_mm)
    if key not in source._derived:
        tissues = {"gm": np.asarray(source.gm), "wm": np.asarray(source.wm)}
        source._derived[key] = _make_source(
            source.name, np.asarray(source.image), np.asarray(source.brain_mask), tissues, source.affine, voxel_mm
        )
    return source._derived[key]


def _derived(source: SourceBrain, key: str, compute) -> object:
    """A per-source cached quantity (spline coefficients, tissue statistics, ...)."""
    if key not in source._derived:
        source._derived[key] = compute()
    return source._derived[key]


def _spline_coefficients(source: SourceBrain) -> np.ndarray:
    return _derived(source, "spline", lambda: ndi.spline_filter(source.image, order=3, output=np.float32))


def _tissue_stats(source: SourceBrain) -> dict[str, tuple[float, float]]:
    """Mean and standard deviation of the source intensity in each (mostly pure) tissue."""

    def compute() -> dict[str, tuple[float, float]]:
        stats = {}
        for name in _TISSUES:
            prob = getattr(source, name)
            values = source.image[source.brain_mask & (prob >= min(0.8, float(prob.max()) * 0.9))]
            stats[name] = (float(values.mean()), float(values.std()))
        return stats

    return _derived(source, "stats", compute)


def _brain_depth_mm(source: SourceBrain) -> np.ndarray:
    """Distance of each brain voxel to the outside of the brain, mm."""
    return _derived(source, "depth", lambda: ndi.distance_transform_edt(source.brain_mask) * source.voxel_mm)


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
    coarse grid and interpolated) are combined into one pull-back map and applied in one
    :func:`scipy.ndimage.map_coordinates` pass (cubic for the image, linear then ``> 0.5`` for the
    brain mask). A tumour adds a radial mass-effect displacement to that same map. The lesion is
    blended in (intensities from the source's tissue statistics, see the module docstring), then a
    gamma contrast change, a smooth multiplicative bias field, a global scale and offset, and
    Rician noise are applied; voxels outside the brain are set to 0.

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
    lesion = None
    if kind != "healthy":
        lesion = _sample_lesion(source, warp, lesion_rng, kind, params, target_volume_mm3)

    image, brain = _warp_anatomy(source, warp, lesion)
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
        np.random.SeedSequence(seed_or_rng.entropy, spawn_key=(*seed_or_rng.spawn_key, i), pool_size=seed_or_rng.pool_size)
        for i in range(2)
    )
    return tuple(np.random.default_rng(child) for child in children)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


# --------------------------------------------------------------------------------------------------
# Healthy anatomy: warp, intensity jitter


@dataclass
class _Warp:
    """A sampled pull-back map: output mm offset ``x`` -> source mm offset ``M x + t + u(x)``."""

    centre: np.ndarray  # (3,) brain centre, voxel index (source and output grids coincide)
    matrix: np.ndarray  # (3, 3) rotation @ scaling
    shift_mm: np.ndarray  # (3,)
    elastic: np.ndarray  # (3, *coarse) displacement, mm, on a coarse grid
    elastic_step_mm: float  # spacing of that coarse grid


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
    elastic, step = _coarse_noise(rng, source.shape, source.voxel_mm, params.elastic_sigma_mm, channels=3)
    largest = float(np.sqrt((elastic**2).sum(axis=0)).max())
    elastic *= _uniform(rng, params.elastic_max_mm) / max(largest, 1e-12)
    return _Warp(centre, _rotation(angles) @ np.diag(scales), shift, elastic, step)


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
    for axis, component in enumerate(warp.elastic):
        moved[axis] += _upsample(component, warp.elastic_step_mm, v, lo, hi)
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


def _warp_anatomy(source: SourceBrain, warp: _Warp, lesion: _Lesion | None) -> tuple[np.ndarray, np.ndarray]:
    """Warped source image and brain mask on the output grid, one interpolation pass.

    Only a box around the source brain (plus a margin for the warp) is interpolated: outside it the
    brain mask is empty and the image zero. The image is interpolated inside the warped brain only.
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
    return image, brain


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

    Necrotic core: a level between the subject's CSF and GM means (at most 40 % of the way to GM,
    so darker than a CSF/GM mix) with strong heterogeneous texture (1-2 x the tissue SD).
    Oedema: the local tissue darkened 15-35 % of the way towards CSF, with mild texture; the two
    are blended by the blurred core mask.
    """
    stats = _tissue_stats(source)
    (mu_csf, sd_csf), (mu_gm, sd_gm) = stats["csf"], stats["gm"]
    sigma_vox = params.texture_sigma_mm / source.voxel_mm
    core_level = mu_csf + rng.uniform(0.0, 0.4) * (mu_gm - mu_csf)
    core_value = core_level + rng.uniform(1.0, 2.0) * max(sd_gm, sd_csf) * _smooth_noise(rng, local.shape, sigma_vox)
    darkening = rng.uniform(0.15, 0.35)
    oedema_value = local - darkening * (local - mu_csf) + sd_gm * _smooth_noise(rng, local.shape, sigma_vox)
    alpha_core = _blur(core, params.lesion_edge_mm / source.voxel_mm)
    return (1 - alpha_core) * oedema_value + alpha_core * core_value


def _stroke_values(
    rng: np.random.Generator, local: np.ndarray, source: SourceBrain, params: PhantomParams
) -> np.ndarray:
    """T1 intensities of a chronic stroke lesion over the lesion box ``local`` ``(*shape)`` (source units).

    CSF-like: a level between the subject's CSF and GM means (at most 35 % of the way to GM), mixed
    with 0-30 % of the local tissue (residual gliotic tissue), plus texture of 0.5-1.5 x the CSF SD.
    """
    stats = _tissue_stats(source)
    (mu_csf, sd_csf), (mu_gm, _) = stats["csf"], stats["gm"]
    level = mu_csf + rng.uniform(0.0, 0.35) * (mu_gm - mu_csf)
    mix = rng.uniform(0.0, 0.3)
    texture = _smooth_noise(rng, local.shape, params.texture_sigma_mm / source.voxel_mm)
    return (1 - mix) * level + mix * local + rng.uniform(0.5, 1.5) * sd_csf * texture
