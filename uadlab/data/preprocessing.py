"""Preprocessing of Bengs et al. 2021, Sec. 2.1, and an on-disk cache of its results.

One pipeline, applied identically to real scans and to the phantom, and to an image together with
its brain mask and lesion mask so that all three stay voxel-aligned:

1. **Reorient** to the RAS+ canonical orientation (:func:`nibabel.as_closest_canonical`).
2. **Resample** to isotropic ``spacing_mm`` voxels on an axis-aligned grid covering the input's field
   of view (:func:`scipy.ndimage.affine_transform`): cubic splines (order 3) for the image, linear
   interpolation then ``> 0.5`` for masks. When the grid gets coarser, image and masks are first
   smoothed with a Gaussian (anti-aliasing, see step 7). A grid that already matches is not interpolated at all.
3. **Skull strip**: voxels outside the brain mask are set to 0.
4. **Standardise** intensities to ``[0, 1]`` inside the brain: clip at the ``clip_percentile``-th
   percentile of the brain voxels, then min–max over the brain. The paper also denoises; it does not
   say how, so this step is skipped (the phantom's noise is part of what the models must handle).
5. **Crop** to the bounding box of the brain mask.
6. **Zero-pad** (centred) to a common physical box, ``pad_shape_mm`` (paper: 191 × 158 × 163 mm, the
   largest brain of its data), i.e. ``round(pad_shape_mm / spacing_mm)`` voxels. The paper does not
   say which axis is which; a brain is longest front to back (MNI152 brain: 145 × 181 × 155 mm in
   RAS X, Y, Z), so the default box is ``(X, Y, Z) = (158, 191, 163)`` mm: 191 along Y
   (posterior-anterior), 158 along X (left-right). Read as ``(191, 158, 163)`` in RAS, the box would
   cut 10-25 mm off the front and back of every brain. A brain box larger than the pad box along an
   axis is centre-cropped to it (tissue at its two ends is lost), so every output covers the same
   physical extent.
7. **Downsample** to ``out_size``³ voxels (paper: 64³) with :func:`scipy.ndimage.zoom` in grid mode
   (the box's outer edges are kept): cubic for the image after a Gaussian anti-aliasing filter of
   sigma ``(factor - 1) / 2`` voxels (the convention of ``skimage.transform.resize``), clipped back to
   ``[0, 1]`` and zeroed outside the brain; masks with the same filter, linear, then ``> 0.5``.

Masks are smoothed and interpolated linearly as fractions, then thresholded at 0.5 (a voxel is in
the mask when more than about half of its neighbourhood is); without the smoothing, point sampling
would drop thin structures between grid points. A lesion smaller than about half an output voxel would
vanish that way; it is kept instead as the voxel(s) it overlaps most, so a lesion case always has
a lesion (the metrics need one). A lesion is not clipped to the brain mask.

The affine is carried through every step, so the output is a valid NIfTI grid (voxel size
``pad_shape_mm / out_size`` mm, slightly anisotropic for the paper's box) in which anomaly maps can be
written back with :func:`uadlab.data.io.save_volume`.

Shape:
    - input ``image``, ``brain_mask``, ``lesion_mask``: ``(I, J, K)`` in any orientation; one
      ``(4, 4)`` voxel-to-world (mm) ``affine`` for all three.
    - output ``image``: ``(S, S, S)`` float32 in ``[0, 1]``, zero outside the brain, RAS+;
      ``brain_mask``, ``lesion_mask``: ``(S, S, S)`` bool; ``affine``: ``(4, 4)`` float64;
      ``S = out_size``.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import numbers
import os
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from uadlab._checks import check_positive_real
from uadlab.data.io import MAX_VOXELS, atomic_write
from uadlab.data.resampling import iso_grid, resample
from uadlab.errors import UadlabWarning, VolumeError
from uadlab.profiles import Profile, get_profile

__all__ = [
    "PreprocessingParams",
    "Preprocessed",
    "STEPS",
    "preprocess",
    "PreprocessCache",
    "default_cache_dir",
]

_IMAGE_ORDER = 3  # cubic splines for intensities (Sec. 2.1)
_MASK_ORDER = 1  # masks: linear interpolation, then > 0.5
STEPS = ("reorient", "resample", "standardise", "crop", "pad", "downsample")
"""Names of the pipeline's steps, in order, as :func:`preprocess` passes them to ``on_step``
(``"standardise"`` is steps 3-4 of the module docstring: skull strip, then standardise)."""
_CACHE_FORMAT = 3  # bump when the pipeline (or the phantom simulation, whose code is not in the phantom
# keys) or the entry layout changes: old entries are then ignored


@dataclasses.dataclass(frozen=True)
class PreprocessingParams:
    """Settings of :func:`preprocess` (Bengs et al. 2021, Sec. 2.1).

    Attributes:
        spacing_mm: isotropic voxel size of the resampling step, mm (paper: 1.0).
        pad_shape_mm: ``(X, Y, Z)`` extent, in RAS+ axes, of the common box the cropped brain is
            padded to, mm (paper: 191 × 158 × 163 with the axes unnamed; here 158 left-right,
            191 posterior-anterior, 163 inferior-superior, see the module docstring).
        out_size: edge of the final cubic volume, voxels (paper: 64).
        clip_percentile: intensities are clipped at this percentile of the brain voxels before the
            min–max scaling, in ``(0, 100]``.

    Raises:
        TypeError: a field has the wrong type.
        ValueError: a non-positive size or spacing, ``out_size < 2``, or a percentile outside
            ``(0, 100]``.
    """

    spacing_mm: float = 1.0
    pad_shape_mm: tuple[float, float, float] = (158.0, 191.0, 163.0)  # RAS X, Y, Z; Sec. 2.1
    out_size: int = 64
    clip_percentile: float = 99.5

    def __post_init__(self) -> None:
        spacing = check_positive_real("spacing_mm", self.spacing_mm)
        if not isinstance(self.pad_shape_mm, (tuple, list)) or len(self.pad_shape_mm) != 3:
            raise TypeError(f"`pad_shape_mm` must be a tuple of 3 numbers, got {self.pad_shape_mm!r}")
        pad = tuple(check_positive_real("pad_shape_mm", v) for v in self.pad_shape_mm)
        if not isinstance(self.out_size, numbers.Integral) or isinstance(self.out_size, bool):
            raise TypeError(f"`out_size` must be an int, got {self.out_size!r}")
        if self.out_size < 2:
            raise ValueError(f"`out_size` must be >= 2, got {self.out_size!r}")
        percentile = check_positive_real("clip_percentile", self.clip_percentile)
        if percentile > 100:
            raise ValueError(f"`clip_percentile` must lie in (0, 100], got {self.clip_percentile!r}")
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "pad_shape_mm", pad)
        object.__setattr__(self, "out_size", int(self.out_size))
        object.__setattr__(self, "clip_percentile", percentile)

    @classmethod
    def from_profile(cls, profile: str | Profile, **overrides: object) -> PreprocessingParams:
        """Parameters for a run profile: its ``spacing_mm`` and ``image_size`` (as ``out_size``).

        Args:
            profile: a profile name (``"smoke"``, ``"lab"``, ``"paper"``) or a :class:`Profile`.
            **overrides: any other field, e.g. ``clip_percentile=99.0``.

        Raises:
            ValueError: unknown profile name or bad override values.
        """
        profile = get_profile(profile)
        fields = {"spacing_mm": profile.spacing_mm, "out_size": profile.image_size, **overrides}
        return cls(**fields)

    @property
    def pad_shape(self) -> tuple[int, int, int]:
        """The pad box in voxels of the resampling grid: ``round(pad_shape_mm / spacing_mm)``."""
        return tuple(max(1, round(mm / self.spacing_mm)) for mm in self.pad_shape_mm)

    def to_dict(self) -> dict[str, object]:
        """All fields as JSON-friendly values (tuples as lists), e.g. for ``dataset.json``."""
        return {"spacing_mm": self.spacing_mm, "pad_shape_mm": list(self.pad_shape_mm),
                "out_size": self.out_size, "clip_percentile": self.clip_percentile}


class Preprocessed(NamedTuple):
    """Output of :func:`preprocess`.

    Attributes:
        image: ``(S, S, S)`` float32 in ``[0, 1]``, zero outside the brain.
        brain_mask: ``(S, S, S)`` bool.
        lesion_mask: ``(S, S, S)`` bool, or ``None`` when no lesion mask was given.
        affine: ``(4, 4)`` float64 voxel-to-RAS-mm matrix of the output grid.
    """

    image: np.ndarray
    brain_mask: np.ndarray
    lesion_mask: np.ndarray | None
    affine: np.ndarray


def preprocess(
    image: np.ndarray,
    affine: np.ndarray,
    brain_mask: np.ndarray,
    lesion_mask: np.ndarray | None = None,
    *,
    params: PreprocessingParams | None = None,
    on_step: Callable[[str, Preprocessed], None] | None = None,
) -> Preprocessed:
    """Resample, skull strip, standardise, crop, pad and downsample one subject (Sec. 2.1).

    See the module docstring for the steps. Everything is deterministic.

    Args:
        image: ``(I, J, K)`` real-valued intensities (any units), on the grid of ``affine``.
        affine: ``(4, 4)`` voxel-to-world matrix (mm) shared by the image and its masks.
        brain_mask: ``(I, J, K)`` brain mask; nonzero/True is brain.
        lesion_mask: ``(I, J, K)`` lesion ground truth (nonzero/True is lesion), or ``None``.
        params: :class:`PreprocessingParams`; ``None`` means the paper's defaults.
        on_step: called after each step as ``on_step(name, state)``, ``name`` from :data:`STEPS`
            and ``state`` a :class:`Preprocessed` with that step's arrays on that step's grid
            (their shapes change from step to step; the image is in ``[0, 1]`` from
            ``"standardise"`` on). For showing the pipeline (lab 0); the arrays may be views into
            the next step's inputs, so copy them to modify them.

    Returns:
        :class:`Preprocessed` with ``(out_size,) * 3`` arrays and the output affine; the state
        passed with ``"downsample"``.

    Raises:
        TypeError: an array is not a numpy array, or ``params`` is not a
            :class:`PreprocessingParams`.
        ValueError: ``affine`` is not a finite, invertible ``(4, 4)`` matrix.
        uadlab.errors.VolumeError: the image is not 3D or holds NaN/inf, a mask's shape differs from
            the image's, the brain mask is empty (before or after resampling), or the resampled
            grid would exceed :data:`uadlab.io.MAX_VOXELS` voxels (absurd voxel sizes in a header).
    """
    params = PreprocessingParams() if params is None else params
    if not isinstance(params, PreprocessingParams):
        raise TypeError(f"`params` must be a PreprocessingParams or None, got {type(params).__name__}")
    if on_step is not None and not callable(on_step):
        raise TypeError(f"`on_step` must be callable or None, got {type(on_step).__name__}")
    image, affine, brain_mask, lesion_mask = _checked_inputs(image, affine, brain_mask, lesion_mask)

    def report(step: str, *arrays: np.ndarray | None) -> None:
        if on_step is not None:
            on_step(step, Preprocessed(*arrays, affine=affine))

    # 1. RAS+ canonical orientation (a permutation/flip of the axes, no interpolation).
    image, canonical_affine = _canonical(image, affine)
    brain_mask, _ = _canonical(brain_mask, affine)
    if lesion_mask is not None:
        lesion_mask, _ = _canonical(lesion_mask, affine)
    affine = canonical_affine
    report("reorient", image, brain_mask > 0.5, None if lesion_mask is None else lesion_mask > 0.5)

    # 2. Isotropic resampling.
    iso_affine, iso_shape = iso_grid(affine, image.shape, params.spacing_mm)
    if math.prod(iso_shape) > MAX_VOXELS:  # e.g. 1000 mm voxels: refuse before allocating
        extent = np.round(np.array(iso_shape) * params.spacing_mm).astype(int).tolist()
        raise VolumeError(f"field of view {extent} mm would need {math.prod(iso_shape)} voxels at "
                          f"{params.spacing_mm:g} mm (at most {MAX_VOXELS}); check the voxel sizes in the header")
    image = resample(image, affine, iso_affine, iso_shape, order=_IMAGE_ORDER)
    brain_mask = resample(brain_mask, affine, iso_affine, iso_shape, order=_MASK_ORDER) > 0.5
    if lesion_mask is not None:
        lesion_mask = _lesion_threshold(resample(lesion_mask, affine, iso_affine, iso_shape, order=_MASK_ORDER))
    if not brain_mask.any():
        raise VolumeError(f"the brain mask is empty after resampling to {params.spacing_mm} mm voxels")
    affine = iso_affine
    report("resample", image, brain_mask, lesion_mask)

    # 3.-4. Skull strip and standardise to [0, 1] inside the brain.
    image = _standardise(image, brain_mask, params.clip_percentile)
    report("standardise", image, brain_mask, lesion_mask)

    # 5.-6. Crop to the brain's bounding box, then pad (or centre-crop) to the common box.
    where = np.argwhere(brain_mask)
    start, stop = where.min(axis=0), where.max(axis=0) + 1
    box = tuple(slice(a, b) for a, b in zip(start, stop))
    affine = _shifted(affine, start)
    arrays = [image[box], brain_mask[box]] + ([lesion_mask[box]] if lesion_mask is not None else [])
    report("crop", arrays[0], arrays[1], arrays[2] if lesion_mask is not None else None)
    arrays, offset = _fit_to_box(arrays, params.pad_shape)
    affine = _shifted(affine, offset)
    report("pad", arrays[0], arrays[1], arrays[2] if lesion_mask is not None else None)

    # 7. Downsample to out_size^3.
    out_shape = (params.out_size,) * 3
    image = _zoom(arrays[0], out_shape, order=_IMAGE_ORDER)
    brain_mask = _zoom(arrays[1], out_shape, order=_MASK_ORDER) > 0.5
    if not brain_mask.any():
        raise VolumeError(f"the brain mask is empty after downsampling to {out_shape}")
    if lesion_mask is not None:
        lesion_mask = _lesion_threshold(_zoom(arrays[2], out_shape, order=_MASK_ORDER))
    image = np.where(brain_mask, np.clip(image, 0.0, 1.0), 0.0).astype(np.float32)
    affine = _zoomed_affine(affine, arrays[0].shape, out_shape)
    result = Preprocessed(image=image, brain_mask=brain_mask, lesion_mask=lesion_mask, affine=affine)
    if on_step is not None:
        on_step("downsample", result)
    return result


# --------------------------------------------------------------------------------------------------
# Pipeline steps


def _checked_inputs(image, affine, brain_mask, lesion_mask):
    """Validate the arrays of :func:`preprocess`; return float32 image, float64 affine, float32 masks."""
    for name, array in (("image", image), ("affine", affine), ("brain_mask", brain_mask)):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"`{name}` must be a numpy array, got {type(array).__name__}")
    if lesion_mask is not None and not isinstance(lesion_mask, np.ndarray):
        raise TypeError(f"`lesion_mask` must be a numpy array or None, got {type(lesion_mask).__name__}")
    if image.ndim != 3:
        raise VolumeError(f"`image` must be 3D, got shape {image.shape}")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool):
        raise TypeError(f"`image` must hold numbers, got dtype {image.dtype}")
    image = np.asarray(image, dtype=np.float32)
    if not np.isfinite(image).all():
        raise VolumeError("`image` holds NaN or infinite voxels")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ValueError(f"`affine` must be a finite, invertible (4, 4) matrix, got {affine!r}")
    masks = []
    for name, mask in (("brain_mask", brain_mask), ("lesion_mask", lesion_mask)):
        if mask is None:
            masks.append(None)
            continue
        if mask.shape != image.shape:
            raise VolumeError(f"`{name}` shape {mask.shape} does not match the image shape {image.shape}")
        masks.append((np.nan_to_num(np.asarray(mask, dtype=np.float32)) != 0).astype(np.float32))
    if not masks[0].any():
        raise VolumeError("the brain mask is empty")
    return image, affine, masks[0], masks[1]


def _lesion_threshold(fraction: np.ndarray) -> np.ndarray:
    """``fraction > 0.5``, except that a lesion never vanishes: when no voxel passes but some voxel
    overlaps the lesion at all, the voxel(s) of highest overlap are kept.
    """
    mask = fraction > 0.5
    if not mask.any():
        peak = float(fraction.max())
        if peak > 1e-3:
            mask = fraction >= peak - 1e-6
    return mask


def _canonical(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``array`` and ``affine`` in the closest RAS+ orientation (axes permuted/flipped only)."""
    canonical = nib.as_closest_canonical(nib.Nifti1Image(array, affine))
    return np.asarray(canonical.dataobj, dtype=np.float32), canonical.affine


def _standardise(image: np.ndarray, brain_mask: np.ndarray, percentile: float) -> np.ndarray:
    """Clip at the brain's ``percentile``-th percentile, min–max scale the brain to [0, 1], zero outside.

    A brain of constant intensity (no contrast to scale) becomes all zeros.
    """
    values = image[brain_mask]
    hi = float(np.percentile(values, percentile))
    lo = float(min(values.min(), hi))
    out = np.zeros_like(image, dtype=np.float32)
    if hi > lo:
        out[brain_mask] = (np.minimum(values, hi) - lo) / (hi - lo)
    return out


def _fit_to_box(arrays: list[np.ndarray], box: tuple[int, ...]) -> tuple[list[np.ndarray], np.ndarray]:
    """Zero-pad (centred) or centre-crop each axis of ``arrays`` to ``box``.

    Returns:
        The fitted arrays and the voxel index, in the input, of the output's first voxel
        (negative where padding was added).
    """
    shape = np.array(arrays[0].shape)
    offset = (shape - np.array(box)) // 2  # > 0: crop that many voxels at the low end; < 0: pad
    out = []
    for array in arrays:
        crop = tuple(slice(max(o, 0), max(o, 0) + min(n, b)) for o, n, b in zip(offset, shape, box))
        cropped = array[crop]
        pad = [(max(-o, 0), b - c - max(-o, 0)) for o, b, c in zip(offset, box, cropped.shape)]
        out.append(np.pad(cropped, pad, mode="constant"))
    return out, offset


def _zoom(array: np.ndarray, out_shape: tuple[int, ...], *, order: int) -> np.ndarray:
    """Resize ``array`` to ``out_shape`` with :func:`scipy.ndimage.zoom` in grid mode (edges aligned),
    after a Gaussian anti-aliasing filter of sigma ``(factor - 1) / 2`` voxels along shrinking axes.
    """
    factors = np.array(out_shape) / np.array(array.shape)
    array = array.astype(np.float32, copy=False)
    sigma = np.maximum(0.0, (1.0 / factors - 1.0) / 2.0)
    if sigma.max() > 0:
        array = ndi.gaussian_filter(array, sigma, mode="constant")
    out = ndi.zoom(array, factors, order=order, mode="grid-constant", cval=0.0, grid_mode=True, output=np.float32)
    if out.shape != tuple(out_shape):  # zoom rounds the output shape; guard against an off-by-one
        raise RuntimeError(f"zoom produced {out.shape}, expected {out_shape}")
    return out


def _shifted(affine: np.ndarray, offset_vox) -> np.ndarray:
    """The affine of a sub-grid whose first voxel is voxel ``offset_vox`` of ``affine``'s grid."""
    shift = np.eye(4)
    shift[:3, 3] = offset_vox
    return affine @ shift


def _zoomed_affine(affine: np.ndarray, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> np.ndarray:
    """The affine after a grid-mode zoom: output voxel ``i`` is input coordinate ``(i + 0.5) f - 0.5``."""
    factor = np.array(in_shape, dtype=np.float64) / np.array(out_shape)
    scale = np.diag([*factor, 1.0])
    scale[:3, 3] = 0.5 * factor - 0.5
    return affine @ scale


# --------------------------------------------------------------------------------------------------
# Cache


def default_cache_dir() -> Path:
    """Folder of the preprocessing cache: ``$UADLAB_CACHE`` if set and non-empty, else
    ``~/.cache/uadlab/preprocessed``.
    """
    env = os.environ.get("UADLAB_CACHE", "")
    return Path(env).expanduser() if env.strip() else Path.home() / ".cache" / "uadlab" / "preprocessed"


class PreprocessCache:
    """Preprocessed subjects stored as ``.npz`` files, one per key.

    An entry's file name is the sha256 of the caller's ``key`` (which must identify the *input*:
    e.g. the sha256 of the input files, or a phantom's seed, cohort, index and simulation
    parameters), the :class:`PreprocessingParams` and a format version. Entries are written
    atomically; an entry that cannot be read back, lacks an array (the lesion mask included: an entry
    records whether it has one), has the wrong shape or dtype, holds NaN/inf, or was stored under
    another key is recomputed and replaced, never trusted. An entry that cannot be written (a full
    disk, a read-only cache, a folder in its place, a cache path that is a file) is skipped with a
    :class:`uadlab.errors.UadlabWarning` (the first time only): the result is returned all the same.

    Args:
        directory: folder of the entries; created on first write. ``None`` means
            :func:`default_cache_dir`.

    Example:
        >>> cache = PreprocessCache(tmp)  # doctest: +SKIP
        >>> out = cache.get_or_compute("sub-01:<sha256>", lambda: preprocess(...), params=params)  # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        if directory is not None and not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"`directory` must be a path or None, got {directory!r}")
        self.directory = default_cache_dir() if directory is None else Path(directory).expanduser()
        self._warned = False  # a failed write is reported once per cache (and per worker process)

    def path(self, key: str, params: PreprocessingParams | None = None) -> Path:
        """The entry file of ``key`` under ``params`` (it may not exist yet)."""
        return self.directory / f"{_entry_digest(key, params)}.npz"

    def get_or_compute(
        self, key: str, compute: Callable[[], Preprocessed], *, params: PreprocessingParams | None = None
    ) -> Preprocessed:
        """The cached entry of ``key``, or ``compute()`` stored under it.

        Args:
            key: text identifying the input (not the parameters; those come from ``params``).
            compute: called with no arguments when the entry is missing or corrupt.
            params: the preprocessing parameters, part of the entry's identity; with them, an
                entry must also have ``params.out_size`` voxels along each axis.

        Returns:
            The :class:`Preprocessed` result (arrays loaded from disk on a hit).

        Raises:
            TypeError: ``key`` is not a string, ``compute`` is not callable, ``params`` has the
                wrong type, or ``compute`` does not return a :class:`Preprocessed`.
        """
        if not callable(compute):
            raise TypeError(f"`compute` must be callable, got {compute!r}")
        result, _ = self.get_or_compute_with_meta(key, lambda: (compute(), {}), params=params)
        return result

    def get_or_compute_with_meta(
        self, key: str, compute: Callable[[], tuple[Preprocessed, dict]], *,
        params: PreprocessingParams | None = None,
    ) -> tuple[Preprocessed, dict]:
        """As :meth:`get_or_compute`, with a JSON-serialisable ``dict`` of metadata stored beside.

        Used by :mod:`uadlab.data.dataset` to keep what only the computation knows (e.g. a simulated lesion's
        volume in mm³), so that a cache hit needs no recomputation at all.

        Args:
            key: text identifying the input.
            compute: returns ``(Preprocessed, metadata)`` when the entry is missing or corrupt.
            params: as :meth:`get_or_compute`.

        Returns:
            ``(result, metadata)``.

        Raises:
            TypeError: as :meth:`get_or_compute`, or ``compute`` does not return a
                ``(Preprocessed, dict)`` pair.
        """
        if not isinstance(key, str):
            raise TypeError(f"`key` must be a str, got {key!r}")
        if not callable(compute):
            raise TypeError(f"`compute` must be callable, got {compute!r}")
        if params is not None and not isinstance(params, PreprocessingParams):
            raise TypeError(f"`params` must be a PreprocessingParams or None, got {type(params).__name__}")
        path = self.path(key, params)
        expected = None if params is None else (params.out_size,) * 3
        cached = _read_entry(path, key, expected)
        if cached is not None:
            return cached
        output = compute()
        if not (isinstance(output, tuple) and len(output) == 2 and isinstance(output[0], Preprocessed)
                and isinstance(output[1], dict)):
            got = type(output[0] if isinstance(output, tuple) and len(output) == 2 else output).__name__
            raise TypeError(f"`compute` must return a Preprocessed, got {got}")
        result, meta = output
        arrays = {"key": np.array(key), "meta": np.array(json.dumps(meta, sort_keys=True)),
                  "has_lesion": np.array(result.lesion_mask is not None),
                  "image": result.image, "brain_mask": result.brain_mask, "affine": result.affine}
        if result.lesion_mask is not None:
            arrays["lesion_mask"] = result.lesion_mask
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if path.is_dir():  # a folder squatting on the entry's name: os.replace cannot replace it
                raise IsADirectoryError(errno.EISDIR, "a folder has the cache entry's name", str(path))
            with atomic_write(path, overwrite=True) as temporary, open(temporary, "wb") as handle:
                np.savez_compressed(handle, **arrays)
        except OSError as error:  # full disk, read-only or misplaced cache: the result is still right
            if not self._warned:
                self._warned = True
                warnings.warn(f"{self.directory}: cannot write the preprocessing cache ({error.strerror or error}); "
                              "continuing without it (further failures are not reported)", UadlabWarning,
                              stacklevel=2)
        return result, meta


def _entry_digest(key: str, params: PreprocessingParams | None) -> str:
    identity = {"key": key, "params": None if params is None else params.to_dict(), "format": _CACHE_FORMAT}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _read_entry(
    path: Path, key: str, expected_shape: tuple[int, ...] | None
) -> tuple[Preprocessed, dict] | None:
    """The entry at ``path`` and its metadata if it is complete and consistent, else ``None``."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            stored_key = str(data["key"])
            meta = json.loads(str(data["meta"]))
            has_lesion = bool(data["has_lesion"])
            image, brain, affine = data["image"], data["brain_mask"], data["affine"]
            lesion = data["lesion_mask"] if "lesion_mask" in data.files else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error):
        return None
    shape = expected_shape or image.shape
    ok = (
        stored_key == key and image.ndim == 3 and image.shape == shape and image.dtype == np.float32
        and brain.shape == shape and brain.dtype == bool and affine.shape == (4, 4)
        and has_lesion == (lesion is not None)
        and (lesion is None or (lesion.shape == shape and lesion.dtype == bool))
        and np.isfinite(image).all() and np.isfinite(affine).all()
    )
    if not (ok and isinstance(meta, dict)):
        return None
    return Preprocessed(image=image, brain_mask=brain, lesion_mask=lesion, affine=affine), meta
