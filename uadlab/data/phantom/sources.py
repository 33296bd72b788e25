"""Source brains of the phantom: the MNI152 2009 template in nilearn, or real skull-stripped T1 scans."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from uadlab._checks import check_positive_real
from uadlab.data.io import load_volume
from uadlab.data.resampling import iso_grid, resample
from uadlab.errors import VolumeError

__all__ = ["SourceBrain", "load_sources"]

_TEMPLATE_NAME = "mni152_2009"
_TISSUES = ("csf", "gm", "wm")
_CLIP_PERCENTILE = 99.5


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
