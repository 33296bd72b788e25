"""Spatial input erasing of Bengs et al. 2021 (Sec. 2.2, Fig. 3).

The experiment names of Table 1 are in :mod:`uadlab.training.experiments`.

During training, with probability ``p = 0.5``, part of the *input* is erased; the reconstruction
target stays the unerased image, so the VAE learns to in-paint from context. Six methods:

============  ==============  ==========================================================================
2D            3D              what is erased
============  ==============  ==========================================================================
Patch         Cube            one box, random position and shape, 1 %-25 % of the input's voxels
Multi-Patch   Multi-Cube      1-10 boxes (uniform), random positions and shapes, 1 %-25 % in total
Half-Slice    Half-Volume     the left or right half (split at the mid-sagittal plane) of the slice
                              (2D) or of 1-32 consecutive axial slices (3D)
============  ==============  ==========================================================================

Two fills: ``"0"`` sets the erased voxels to zero; ``"n"`` fills them with noise drawn i.i.d. (with
replacement) from the image's own brain-voxel intensities (:func:`noise_source`).

Randomness follows "sample, then apply" (torchio's ``get_params``): :meth:`SpatialErasing.get_params`
draws an :class:`ErasingParams` from an explicit ``numpy.random.Generator``; :func:`erase` applies it
deterministically (noise values aside, which come from the generator passed to it). Inputs are never
modified in place.

Where a batch lies: :meth:`SpatialErasing.apply_batch` erases a batch on a GPU there, with batched
tensor operations: each sample's boxes become a mask by comparing ``arange`` along every axis with the
box bounds, and the noise values are gathered from the samples' own voxels. The draws stay on the
host, from the same generator in the same order (the noise as indices into each sample's brain
voxels, which is what ``Generator.choice`` draws), so the batch comes out bit for bit as a numpy batch
does. A numpy batch, or a tensor on the CPU, is erased sample after sample through numpy views of its
boxes: on a CPU the batched operations, which touch every voxel, took 1.7-40x as long for a lab batch
(one thread; the 3D noise fills the longest).

Decisions the paper leaves open, fixed here once:

- **Box sizes are exact.** A box's size is counted in voxels. Patch/Cube draw a target fraction
  ``f ~ U(1 %, 25 %)`` of the input's voxels and a random shape (per-edge log-aspect uniform in
  ``[-ln 2, ln 2]``, centred, so before rounding no edge is more than 4x another); integer edges are
  then fixed one axis at a time (random order), the last axis absorbing the rounding, so the box
  holds between ``ceil(1 % N)`` and ``floor(25 % N)`` voxels, ``N`` the voxels of the input.
- **Boxes always fit.** The box's corner is drawn uniformly among the positions where the whole box
  lies inside the image, so nothing is clipped and the erased fraction is exactly the drawn size.
  (The paper's "random centre within the image" with clipping would make a box in a corner lose up
  to 3/4 (2D) or 7/8 (3D) of its size and the 1 % lower bound would not hold.) Hence box centres
  are uniform only over the positions where the box fits, and voxels near the border are erased
  somewhat less often than central ones, where the brain lies after cropping (Sec. 2.1).
- **Multi-Patch/Multi-Cube.** The number of boxes ``n ~ U{1..10}``, the total ``f ~ U(1 %, 25 %)``
  is split among them with Dirichlet(1, ..., 1) weights; each box then gets its exact integer size
  (at least one voxel) such that the *sum* of box sizes lies in ``[ceil(1 % N), floor(25 % N)]``.
  Boxes may overlap, so the erased *union* is at most 25 % and can be below 1 % (never below
  ``ceil(1 % N) / n``: the largest box holds at least the mean share).
- **Half-Slice/Half-Volume.** "Left" is the low-``X`` half (RAS+: ``X`` runs left -> right). The
  mid-sagittal plane is taken as the middle of the ``X`` axis: preprocessing crops to the brain's
  bounding box and pads it centred (Sec. 2.1, :mod:`uadlab.data.preprocessing`), so the grid's middle
  is the brain's. The whole half of the grid is erased, background included, as the boxes of
  Patch/Cube also are. For an odd ``X`` the middle column is the mid-sagittal plane itself and is
  never erased, so both halves have ``X // 2`` columns. Half-Volume erases ``t ~ U{1..min(32, Z)}``
  consecutive axial slices starting at ``z0 ~ U{0..Z - t}``; the 32 is the paper's, in voxels of the
  64^3 grid, and is kept (clipped at ``Z``) on other grids.
- **Noise fill.** Values are sampled with replacement from the sample's brain voxels
  ``image[brain_mask]``. If the mask is empty or missing, from the image's nonzero voxels; if the
  image is all zero, the erased voxels are set to zero.

Shape:
    - 2D sample: ``(1, X, Y)`` (an axial slice); batch ``(B, 1, X, Y)``.
    - 3D sample: ``(1, X, Y, Z)``; batch ``(B, 1, X, Y, Z)``.
    - :meth:`SpatialErasing.get_params` takes the spatial shape only: ``(X, Y)`` or ``(X, Y, Z)``.

Example:
    >>> import numpy as np
    >>> erasing = SpatialErasing(3, "Cube", "n", p=1.0)
    >>> image = np.ones((1, 16, 16, 16), dtype=np.float32)
    >>> erased = erasing(image, image > 0, np.random.default_rng(0))
    >>> erased.shape, float(image.min())  # the input is untouched
    ((1, 16, 16, 16), 1.0)
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from uadlab._checks import check_real

__all__ = [
    "ErasingParams",
    "FILLS",
    "MAX_BOXES",
    "MAX_SLAB",
    "METHODS",
    "SIZE_RANGE",
    "SpatialErasing",
    "erase",
    "noise_source",
]

#: Erasing methods per spatial dimension (Fig. 3), in the paper's order.
METHODS: dict[int, tuple[str, ...]] = {2: ("Patch", "Multi-Patch", "Half-Slice"),
                                       3: ("Cube", "Multi-Cube", "Half-Volume")}
#: Fills: ``"0"`` zeros, ``"n"`` noise from the image's brain-voxel intensities.
FILLS: tuple[str, ...] = ("0", "n")
#: Erased size as a fraction of the input's voxels (Patch/Cube: one box; Multi-*: sum of boxes).
SIZE_RANGE: tuple[float, float] = (0.01, 0.25)
#: Most boxes of Multi-Patch/Multi-Cube.
MAX_BOXES: int = 10
#: Most consecutive axial slices of Half-Volume.
MAX_SLAB: int = 32

_KIND = {"Patch": "box", "Cube": "box", "Multi-Patch": "multi", "Multi-Cube": "multi",
         "Half-Slice": "half", "Half-Volume": "half"}
_LOG_ASPECT = math.log(2.0)  # per-edge log-aspect range before centring
_MAX_TRIES = 100  # redraws of a box shape whose rounded edges cannot meet the size range
_MIN_EDGE = 4  # smallest image edge (voxels) that erasing accepts
_MIN_VOXELS = 40  # smallest image (voxels): 25 % must hold MAX_BOXES boxes of one voxel


# ---------------------------------------------------------------------------------------------------
# Sample


@dataclass(frozen=True)
class ErasingParams:
    """What one draw erases: a union of axis-aligned boxes on the spatial grid.

    Attributes:
        method: the erasing method that drew it, e.g. ``"Multi-Cube"``.
        shape: spatial shape ``(X, Y)`` or ``(X, Y, Z)`` the boxes refer to.
        boxes: one tuple of ``slice(start, stop)`` per box, one slice per spatial axis, all within
            ``shape``. Half-Slice/Half-Volume give one box.
        side: ``"left"`` or ``"right"`` for Half-Slice/Half-Volume, else ``None``.
    """

    method: str
    shape: tuple[int, ...]
    boxes: tuple[tuple[slice, ...], ...]
    side: str | None = None

    @property
    def box_voxels(self) -> tuple[int, ...]:
        """Voxels of each box (overlaps counted once per box)."""
        return tuple(math.prod(s.stop - s.start for s in box) for box in self.boxes)

    def mask(self) -> np.ndarray:
        """The erased voxels, ``shape`` bool (the union of the boxes)."""
        mask = np.zeros(self.shape, dtype=bool)
        for box in self.boxes:
            mask[box] = True
        return mask


class SpatialErasing:
    """Random spatial input erasing (Bengs et al. 2021, Sec. 2.2, Fig. 3).

    See the module docstring for how sizes, positions and noise are drawn.

    Args:
        spatial_dims: 2 (axial slices) or 3 (volumes).
        method: one of :data:`METHODS` ``[spatial_dims]``.
        fill: ``"0"`` (zeros) or ``"n"`` (noise from the brain-voxel intensities).
        p: probability of erasing a sample; otherwise it passes unchanged.

    Raises:
        TypeError: ``p`` is not a number.
        ValueError: an unknown or mismatched dimension/method/fill, or ``p`` outside ``[0, 1]``.

    Shape:
        - :meth:`__call__`: ``(1, X, Y)`` / ``(1, X, Y, Z)`` -> same.
        - :meth:`apply_batch`: ``(B, 1, X, Y)`` / ``(B, 1, X, Y, Z)`` -> same.
    """

    def __init__(self, spatial_dims: int, method: str, fill: str, p: float = 0.5) -> None:
        if spatial_dims not in METHODS or isinstance(spatial_dims, bool):
            raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims!r}")
        if method == "None":
            raise ValueError("`method` must be an erasing method, got 'None' (use no transform instead)")
        if method not in METHODS[spatial_dims]:
            raise ValueError(f"`method` must be one of {METHODS[spatial_dims]} for {spatial_dims}D, got {method!r}")
        if fill not in FILLS:
            raise ValueError(f"`fill` must be one of {FILLS}, got {fill!r}")
        check_real("p", p, "a probability in [0, 1]", lambda v: 0.0 <= v <= 1.0)
        self.spatial_dims = spatial_dims
        self.method = method
        self.fill = fill
        self.p = float(p)

    def __repr__(self) -> str:
        return (f"SpatialErasing(spatial_dims={self.spatial_dims}, method={self.method!r}, "
                f"fill={self.fill!r}, p={self.p})")

    def get_params(self, shape: tuple[int, ...], rng: np.random.Generator) -> ErasingParams | None:
        """Draw what to erase in an image of spatial shape ``shape``.

        The first draw is the ``p``-coin; ``None`` means "leave this sample unchanged".

        Args:
            shape: spatial shape ``(X, Y)`` (2D) or ``(X, Y, Z)`` (3D), voxels; every edge at least
                4 and at least 40 voxels in all.
            rng: the generator every random choice is drawn from.

        Returns:
            The boxes to erase, or ``None``.

        Raises:
            TypeError: ``rng`` is not a ``numpy.random.Generator``.
            ValueError: ``shape`` is not ``spatial_dims`` edges of at least 4 voxels (40 in all).
        """
        shape = self._check_shape(shape)
        _check_rng(rng)
        if rng.random() >= self.p:
            return None
        kind = _KIND[self.method]
        if kind == "half":
            return self._draw_half(shape, rng)
        n_voxels = math.prod(shape)
        lo, hi = math.ceil(SIZE_RANGE[0] * n_voxels), math.floor(SIZE_RANGE[1] * n_voxels)
        target = rng.uniform(*SIZE_RANGE) * n_voxels
        if kind == "box":
            sides = [_draw_sides(shape, target, lo, hi, rng)]
        else:
            sides = _draw_multi_sides(shape, target, lo, hi, rng)
        boxes = tuple(_place(shape, s, rng) for s in sides)
        return ErasingParams(self.method, shape, boxes)

    def __call__(self, image: Any, brain_mask: Any, rng: np.random.Generator) -> Any:
        """Erase one sample (with probability ``p``); returns a new array, ``image`` is untouched.

        Args:
            image: ``(1, X, Y)`` (2D) or ``(1, X, Y, Z)`` (3D) numpy array or torch tensor.
            brain_mask: bool mask broadcastable to ``image`` (e.g. ``(1, X, Y[, Z])`` or
                ``(X, Y[, Z])``), or ``None``; only used by the noise fill (:func:`noise_source`).
            rng: generator of the draw and of the noise.

        Returns:
            Same type, shape and dtype as ``image``: a copy, erased or not.

        Raises:
            TypeError: ``image`` is neither a numpy array nor a torch tensor, or ``rng`` is not a
                ``numpy.random.Generator``.
            ValueError: ``image`` is not ``(1, X, Y[, Z])`` or ``brain_mask`` does not broadcast.
        """
        _check_image(image)
        if image.ndim != self.spatial_dims + 1 or image.shape[0] != 1:
            raise ValueError(f"`image` must be (1, {', '.join('XYZ'[:self.spatial_dims])}), "
                             f"got shape {tuple(image.shape)}")
        out = _copy(image)
        self._erase_sample(out, brain_mask, rng)
        return out

    def apply_batch(self, images: Any, brain_masks: Any, rng: np.random.Generator) -> Any:
        """Erase every sample of a batch independently (each with probability ``p``).

        Args:
            images: ``(B, 1, X, Y)`` or ``(B, 1, X, Y, Z)`` numpy array or torch tensor.
            brain_masks: bool masks of ``images``' shape, or ``None`` (noise then comes from nonzero
                voxels).
            rng: generator of all draws, consumed sample after sample.

        Returns:
            A new array/tensor of ``images``' type, shape, dtype and device; ``images`` is untouched.
            On a GPU, with a noise fill, the sizes of the samples' noise sources are read back once.

        Raises:
            TypeError: ``images`` is neither a numpy array nor a torch tensor, or ``rng`` is not a
                ``numpy.random.Generator``.
            ValueError: ``images`` is not ``(B, 1, ...)`` with ``spatial_dims`` spatial axes, or
                ``brain_masks`` has another shape.
        """
        _check_image(images)
        if images.ndim != self.spatial_dims + 2 or images.shape[1] != 1:
            raise ValueError(f"`images` must be (B, 1, {', '.join('XYZ'[:self.spatial_dims])}), "
                             f"got shape {tuple(images.shape)}")
        if brain_masks is not None and tuple(brain_masks.shape) != tuple(images.shape):
            raise ValueError(f"`brain_masks` must have the shape of `images` {tuple(images.shape)}, "
                             f"got {tuple(brain_masks.shape)}")
        if isinstance(images, torch.Tensor) and images.device.type != "cpu":
            return self._apply_batch_on_device(images, brain_masks, rng)
        out = _copy(images)
        samples, masks = _numpy_view(out), None if brain_masks is None else _numpy_view(brain_masks)
        for b in range(images.shape[0]):
            self._erase_sample(samples[b], None if masks is None else masks[b], rng)
        return out

    def _apply_batch_on_device(self, images: torch.Tensor, brain_masks: torch.Tensor | None,
                               rng: np.random.Generator) -> torch.Tensor:
        """:meth:`apply_batch` of a tensor on a GPU (any device; tested on the CPU): the loop's draws, applied at once.

        Each sample's draws are those of :meth:`_erase_sample`, in its order: the ``p``-coin and the boxes
        (:meth:`get_params`), then for the noise fill the indices that ``rng.choice(source, n)`` draws
        (``rng.integers(0, len(source), n)``, ``n`` the erased voxels). The sizes of the noise sources
        are read from the device once per batch (noise fill only).
        """
        _check_rng(rng)
        sources = _noise_sources(images, brain_masks) if self.fill == "n" else None
        sizes = sources.sum(1).tolist() if sources is not None else None
        boxes, noise = [], []
        for b in range(images.shape[0]):
            params = self.get_params(tuple(images.shape[2:]), rng)
            boxes.append(() if params is None else params.boxes)
            drawn = params is not None and sizes is not None and sizes[b] > 0
            noise.append(rng.integers(0, sizes[b], size=_erased_voxels(params)) if drawn else None)
        return _erase_batch(images, boxes, sources, noise)

    def _erase_sample(self, out: Any, brain_mask: Any, rng: np.random.Generator) -> None:
        """Draw and apply to ``out`` (one sample, channel first) in place."""
        params = self.get_params(tuple(out.shape[1:]), rng)
        if params is None:
            return
        source = noise_source(out, brain_mask) if self.fill == "n" else None
        _fill(out, params, self.fill, source, rng)

    def _check_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        try:
            shape = tuple(int(s) for s in shape)
        except TypeError:
            raise ValueError(f"`shape` must be a tuple of {self.spatial_dims} ints, got {shape!r}") from None
        if len(shape) != self.spatial_dims or min(shape) < _MIN_EDGE or math.prod(shape) < _MIN_VOXELS:
            raise ValueError(f"`shape` must be {self.spatial_dims} edges of at least {_MIN_EDGE} voxels "
                             f"({_MIN_VOXELS} voxels in all), got {shape!r}")
        return shape

    def _draw_half(self, shape: tuple[int, ...], rng: np.random.Generator) -> ErasingParams:
        """Half-Slice / Half-Volume: one side of the mid-sagittal plane, 1-32 axial slices in 3D."""
        side = "left" if rng.integers(2) == 0 else "right"
        half = shape[0] // 2
        box = [slice(0, half) if side == "left" else slice(shape[0] - half, shape[0]), slice(0, shape[1])]
        if self.spatial_dims == 3:
            thickness = int(rng.integers(1, min(MAX_SLAB, shape[2]) + 1))
            start = int(rng.integers(0, shape[2] - thickness + 1))
            box.append(slice(start, start + thickness))
        return ErasingParams(self.method, shape, (tuple(box),), side=side)


def _draw_sides(shape: tuple[int, ...], target: float, lo: int, hi: int,
                rng: np.random.Generator) -> tuple[int, ...]:
    """Integer box edges, each within ``shape``, whose product lies in ``[lo, hi]``, near ``target``.

    The shape is a random log-aspect; the edges are rounded in a random axis order and the last axis
    takes the size that brings the product back to ``target`` within ``[lo, hi]``.
    """
    for _ in range(_MAX_TRIES):
        order = rng.permutation(len(shape))
        log_aspect = rng.uniform(-_LOG_ASPECT, _LOG_ASPECT, len(shape))
        edges = target ** (1 / len(shape)) * np.exp(log_aspect - log_aspect.mean())
        sides = [0] * len(shape)
        for axis in order[:-1]:
            sides[axis] = min(max(round(float(edges[axis])), 1), shape[axis])
        rest = math.prod(sides[axis] for axis in order[:-1])
        last = order[-1]
        low, high = max(1, math.ceil(lo / rest)), min(shape[last], hi // rest)
        if low <= high:
            sides[last] = min(max(round(target / rest), low), high)
            return tuple(sides)
    raise RuntimeError(f"could not draw a box of {lo}-{hi} voxels in shape {shape}")  # pragma: no cover


def _draw_multi_sides(shape: tuple[int, ...], target: float, lo: int, hi: int,
                      rng: np.random.Generator) -> list[tuple[int, ...]]:
    """1-10 boxes whose sizes sum to a value in ``[lo, hi]``, near ``target``, each >= 1 voxel.

    Box ``i`` may use at most what is left of ``hi`` after reserving one voxel for each later box;
    the last box is at least what is missing to ``lo``.
    """
    n_boxes = int(rng.integers(1, MAX_BOXES + 1))
    shares = rng.dirichlet(np.ones(n_boxes)) * target
    sides, used = [], 0
    for i, share in enumerate(shares):
        later = n_boxes - i - 1
        box_lo = 1 if later else max(1, lo - used)
        box_hi = hi - used - later
        box = _draw_sides(shape, float(np.clip(share, box_lo, box_hi)), box_lo, box_hi, rng)
        sides.append(box)
        used += math.prod(box)
    return sides


def _place(shape: tuple[int, ...], sides: tuple[int, ...], rng: np.random.Generator) -> tuple[slice, ...]:
    """A random position of a box of ``sides`` that lies wholly inside ``shape``."""
    starts = [int(rng.integers(0, edge - side + 1)) for edge, side in zip(shape, sides)]
    return tuple(slice(start, start + side) for start, side in zip(starts, sides))


# ---------------------------------------------------------------------------------------------------
# Apply


def noise_source(image: Any, brain_mask: Any = None) -> np.ndarray:
    """Intensities the noise fill draws from: the brain voxels of ``image``.

    Args:
        image: a sample, numpy array or torch tensor, e.g. ``(1, X, Y[, Z])``.
        brain_mask: bool mask broadcastable to ``image``, or ``None``.

    Returns:
        1-D float array: ``image[brain_mask]``; if that is empty (or no mask is given) the nonzero
        voxels of ``image``; if those are empty too, an empty array (the fill then writes zeros).

    Raises:
        ValueError: ``brain_mask`` does not broadcast to ``image``'s shape.
    """
    values = _to_numpy(image)
    if brain_mask is not None:
        mask = _to_numpy(brain_mask).astype(bool, copy=False)
        try:
            mask = np.broadcast_to(mask, values.shape)
        except ValueError:
            raise ValueError(f"`brain_mask` must broadcast to the image shape {values.shape}, "
                             f"got shape {mask.shape}") from None
        inside = values[mask]
        if inside.size:
            return inside
    return values[values != 0]


def erase(image: Any, params: ErasingParams, fill: str, *, noise_source: Any = None,
          rng: np.random.Generator | None = None) -> Any:
    """Apply a drawn erasing to ``image``; returns an erased copy (``image`` is untouched).

    Deterministic for ``fill="0"``. For ``fill="n"`` every erased voxel gets a value drawn i.i.d.,
    with replacement, from ``noise_source`` using ``rng``.

    Args:
        image: numpy array or torch tensor whose trailing axes are ``params.shape``, e.g.
            ``(1, X, Y[, Z])``; leading axes (channels) are erased alike.
        params: from :meth:`SpatialErasing.get_params`.
        fill: ``"0"`` or ``"n"``.
        noise_source: 1-D intensities to draw from (``"n"`` only), see :func:`noise_source`; if
            empty, erased voxels are set to zero.
        rng: generator of the noise (``"n"`` only).

    Returns:
        Same type, shape, dtype (and device) as ``image``.

    Raises:
        TypeError: ``image`` is neither a numpy array nor a torch tensor, ``params`` is not an
            :class:`ErasingParams`, or ``fill="n"`` without a ``numpy.random.Generator``.
        ValueError: an unknown ``fill``, ``image``'s trailing shape is not ``params.shape``, or
            ``fill="n"`` without ``noise_source``.
    """
    _check_image(image)
    if not isinstance(params, ErasingParams):
        raise TypeError(f"`params` must be an ErasingParams, got {params!r}")
    if fill not in FILLS:
        raise ValueError(f"`fill` must be one of {FILLS}, got {fill!r}")
    if tuple(image.shape[image.ndim - len(params.shape):]) != params.shape or image.ndim < len(params.shape):
        raise ValueError(f"`image` must end in the shape {params.shape} of `params`, "
                         f"got shape {tuple(image.shape)}")
    if fill == "n":
        if noise_source is None:
            raise ValueError("`noise_source` must be given for fill 'n', got None")
        _check_rng(rng)
    out = _copy(image)
    _fill(out, params, fill, None if noise_source is None else _to_numpy(noise_source).ravel(), rng)
    return out


def _fill(out: Any, params: ErasingParams, fill: str, source: np.ndarray | None,
          rng: np.random.Generator | None) -> None:
    """Write zeros or noise into the erased voxels of ``out`` in place.

    One box is written through its slices, several through their union's mask; both fill the erased
    voxels in C order, so the same draws give the same image either way.
    """
    leading = tuple(out.shape[:out.ndim - len(params.shape)])
    if len(params.boxes) == 1:
        box = params.boxes[0]
        region: tuple = (..., *box)
        erased = tuple(s.stop - s.start for s in box)
    else:
        mask = params.mask()
        if isinstance(out, torch.Tensor):
            mask = torch.from_numpy(mask).to(out.device)
        region, erased = (..., mask), (int(mask.sum()),)
    if fill == "0" or source is None or source.size == 0:
        out[region] = 0
        return
    values = rng.choice(source, size=leading + (math.prod(erased),), replace=True).reshape(leading + erased)
    if isinstance(out, torch.Tensor):
        out[region] = torch.as_tensor(values, dtype=out.dtype, device=out.device)
    else:
        out[region] = values.astype(out.dtype, copy=False)


def _erased_voxels(params: ErasingParams) -> int:
    """Voxels of the union of the boxes."""
    return params.box_voxels[0] if len(params.boxes) == 1 else int(params.mask().sum())


def _noise_sources(images: torch.Tensor, brain_masks: torch.Tensor | None) -> torch.Tensor:
    """Each sample's noise source as a mask over its voxels in C order, ``(B, N)`` bool: its brain voxels,
    else its nonzero voxels (as :func:`noise_source` picks them).
    """
    nonzero = images.flatten(1) != 0
    if brain_masks is None:
        return nonzero
    brain = brain_masks.flatten(1).bool()
    return torch.where(brain.any(1, keepdim=True), brain, nonzero)


def _erase_batch(images: torch.Tensor, boxes: list[tuple[tuple[slice, ...], ...]], sources: torch.Tensor | None,
                 noise: list[np.ndarray | None]) -> torch.Tensor:
    """An erased copy of ``images`` ``(B, 1, ...)``, on their device, with batched tensor operations.

    Sample ``b`` is erased inside the union of ``boxes[b]`` (none: untouched): with zeros, or, where
    ``noise[b]`` holds indices into its noise source (``sources[b]``, a voxel mask in C order), with the
    source's voxels at those indices, written in C order of the erased voxels (as :func:`_fill` writes).
    """
    batch, spatial, device = images.shape[0], tuple(images.shape[2:]), images.device
    most = max(map(len, boxes))
    if most == 0:
        return images.clone()
    bounds = np.zeros((batch, most, len(spatial), 2), dtype=np.int64)  # empty boxes (0, 0) erase nothing
    for b, sample_boxes in enumerate(boxes):
        for k, box in enumerate(sample_boxes):
            bounds[b, k] = [(s.start, s.stop) for s in box]
    bounds_t = torch.from_numpy(bounds).to(device)
    erased = torch.zeros((batch, *spatial), dtype=torch.bool, device=device)
    for k in range(most):
        inside = None
        for axis, edge in enumerate(spatial):
            grid = torch.arange(edge, device=device)
            along = (bounds_t[:, k, axis, :1] <= grid) & (grid < bounds_t[:, k, axis, 1:])  # (B, edge)
            along = along.view(batch, *(edge if a == axis else 1 for a in range(len(spatial))))
            inside = along if inside is None else inside & along
        erased |= inside
    flat, erased = images.flatten(1), erased.flatten(1)  # (B, N): one channel, so the sample's C order
    drawn = [b for b, indices in enumerate(noise) if indices is not None]
    if not drawn:
        return flat.masked_fill(erased, 0).view(images.shape)
    width = max(len(noise[b]) for b in drawn)
    indices = np.zeros((batch, width), dtype=np.int64)
    for b in drawn:
        indices[b, :len(noise[b])] = noise[b]
    # The i-th voxel of a source is where the running count of its voxels first reaches i + 1.
    positions = torch.searchsorted(sources.cumsum(1), torch.from_numpy(indices).to(device) + 1)
    values = flat.gather(1, positions.clamp_(max=flat.shape[1] - 1))  # (B, width), in the order drawn
    order = (erased.cumsum(1) - 1).clamp_(0, width - 1)  # each erased voxel's place among its sample's
    has_noise = torch.from_numpy(np.isin(np.arange(batch), drawn)).to(device)[:, None]
    fill = torch.where(has_noise, values.gather(1, order), torch.zeros((), dtype=flat.dtype, device=device))
    return torch.where(erased, fill, flat).view(images.shape)


def _copy(image: Any) -> Any:
    return image.detach().clone() if isinstance(image, torch.Tensor) else np.array(image, copy=True)


def _numpy_view(array: Any) -> Any:
    """A CPU tensor as a numpy array sharing its memory (numpy's indexing costs less per call), unless its
    dtype has no numpy equivalent (bfloat16); anything else as it is.
    """
    if isinstance(array, torch.Tensor):
        with contextlib.suppress(TypeError):
            return array.detach().numpy()
    return array


def _to_numpy(array: Any) -> np.ndarray:
    return array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)


def _check_image(image: Any) -> None:
    if not isinstance(image, (np.ndarray, torch.Tensor)):
        raise TypeError(f"`image` must be a numpy array or torch tensor, got {type(image).__name__}")


def _check_rng(rng: Any) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy.random.Generator, got {rng!r}")
