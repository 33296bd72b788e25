"""The patch schedule of the patched DDPM (Behrendt et al. 2023): the patches of the future ``pddpm`` model.

Behrendt, Bhattacharya, Krüger, Opfer and Schlaefer, "Patched Diffusion Models for Unsupervised
Anomaly Detection in Brain MRI" (MIDL 2023), noise and denoise one *patch* of the image at a time:
the rest of the image stays clean and serves as context, so the model reconstructs a region from its
healthy surroundings rather than from noise alone. At test time the image is tiled by patches; each
is noised (the others left clean), reconstructed in one step, and its reconstruction pasted into the
pseudo-healthy image. In training, one patch per image is noised and the loss is taken there. This
module holds the patch schedule; the model (a DDPM trained and evaluated on these patches) is the
next step of issue 26.

Reference facts (FinnBehrendt/patched-Diffusion-Models-UAD at commit da14cd0):

- ``src/utils/patch_sampling.py``, ``BoxSampler``: the stride is the patch size (``self.stride =
  self.patch_size``; the config's ``patch_stride`` is never read). ``sample_grid`` starts boxes at
  ``0, P, 2P, ...`` below the edge ``S`` on every axis, rows outer, columns inner; a box is
  ``[start, start + P)`` and the last one of an axis sticks out past the edge when ``P`` does not
  divide ``S``: slicing clips it to ``[start, S)``. So the test-time tiling covers every voxel
  exactly once, with smaller boxes at the far edges. Its ``overlap`` option (off by default, off in
  the paper's experiment) spreads the starts evenly over ``[0, S - P]`` instead, and cuts or
  averages the overlaps; it is not implemented here.
- Training (``src/models/DDPM_2D_patched.py``, ``training_step``): with ``grid_boxes: True`` (the
  paper's experiment, ``configs/experiment/MIDL23_DDPM/DDPM_patched.yaml``) each sample gets one
  box of that grid, drawn uniformly (``torch.randint``); otherwise ``sample_single_box`` draws the
  start uniformly in ``[0, S)`` on every axis, and the box is clipped at the edge as above.
- The paper's setting: 2D slices of 96 x 96 (192 / ``rescaleFactor`` 2) with ``patch_size: 48``, a
  2 x 2 grid; one step from ``t = test_timesteps - 1 = 499`` predicting ``x0``
  (``objective: pred_x0``, ``loss: l1``, ``inpaint: True``: the loss and the reconstruction outside
  the box are the clean input).

Here the same schedule holds in 2D and 3D: a box is a ``[start, stop)`` pair per spatial axis of a
sample (``(B, 1, S, S)`` or ``(B, 1, S, S, S)``), in the tensor's axis order.

Shape:
    - A box: ``(spatial_dims, 2)`` int64, ``[start, stop)`` per spatial axis, voxels.
    - :func:`patch_grid`: ``(K, spatial_dims, 2)``; :func:`sample_patches`: ``(B, spatial_dims, 2)``;
      :func:`box_mask`: ``(len(boxes), 1, S, S[, S])`` bool.
"""

from __future__ import annotations

import itertools

import torch

from uadlab._checks import check_int

__all__ = ["patch_grid", "sample_patches", "box_mask"]


def _check(image_size: int, patch_size: int, spatial_dims: int) -> tuple[int, int, int]:
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims!r}")
    image_size = check_int("image_size", image_size, "a positive int", lambda v: v > 0)
    patch_size = check_int("patch_size", patch_size, f"an int in [1, image_size={image_size}]",
                           lambda v: 0 < v <= image_size)
    return image_size, patch_size, int(spatial_dims)


def patch_grid(image_size: int, patch_size: int, *, spatial_dims: int) -> torch.Tensor:
    """The test-time tiling of Behrendt et al. 2023: boxes of edge ``P`` at stride ``P``, clipped at the edge.

    Starts ``0, P, 2P, ...`` (below ``S``) on every axis; the last box of an axis is ``[start, S)``,
    smaller than ``P`` when ``P`` does not divide ``S`` (as the reference's slicing clips it). Every
    voxel lies in exactly one box. Boxes are ordered with the first spatial axis outermost (the
    reference's rows, then columns).

    Args:
        image_size: edge ``S`` of the image, voxels.
        patch_size: edge ``P`` of a patch, voxels, ``1 <= P <= S``.
        spatial_dims: 2 (slices) or 3 (volumes).

    Returns:
        ``(ceil(S / P) ** spatial_dims, spatial_dims, 2)`` int64: ``[start, stop)`` per axis.

    Raises:
        TypeError: a size that is not an int.
        ValueError: ``spatial_dims`` not 2 or 3; a size out of range.

    >>> patch_grid(5, 2, spatial_dims=2)[[0, 2, 8]].tolist()
    [[[0, 2], [0, 2]], [[0, 2], [4, 5]], [[4, 5], [4, 5]]]
    """
    image_size, patch_size, spatial_dims = _check(image_size, patch_size, spatial_dims)
    spans = [(start, min(start + patch_size, image_size)) for start in range(0, image_size, patch_size)]
    return torch.tensor(list(itertools.product(spans, repeat=spatial_dims)), dtype=torch.long)


def sample_patches(batch_size: int, image_size: int, patch_size: int, *, spatial_dims: int,
                   generator: torch.Generator | None = None, from_grid: bool = True) -> torch.Tensor:
    """One training box per sample, drawn as the reference draws them (Behrendt et al. 2023).

    ``from_grid=True`` (the paper's ``grid_boxes: True``): a box of :func:`patch_grid`, uniformly.
    ``from_grid=False`` (the reference's ``sample_single_box``): a start uniform in ``[0, S)`` on
    every axis and the box ``[start, min(start + P, S))``; near the far edges it is smaller than ``P``.

    Args:
        batch_size: boxes to draw, ``>= 1``.
        image_size, patch_size, spatial_dims: as :func:`patch_grid`.
        generator: the random generator; ``None``: torch's global one.
        from_grid: draw from the test-time grid (``True``) or anywhere (``False``).

    Returns:
        ``(batch_size, spatial_dims, 2)`` int64.

    Raises:
        TypeError, ValueError: as :func:`patch_grid`; a ``batch_size`` that is not a positive int.
    """
    batch_size = check_int("batch_size", batch_size, "a positive int", lambda v: v > 0)
    image_size, patch_size, spatial_dims = _check(image_size, patch_size, spatial_dims)
    if from_grid:
        grid = patch_grid(image_size, patch_size, spatial_dims=spatial_dims)
        return grid[torch.randint(len(grid), (batch_size,), generator=generator)]
    starts = torch.randint(image_size, (batch_size, spatial_dims), generator=generator)
    return torch.stack([starts, (starts + patch_size).clamp(max=image_size)], -1)


def box_mask(boxes: torch.Tensor, image_size: int) -> torch.Tensor:
    """Voxels inside each box: ``True`` in ``[start, stop)`` on every axis.

    Args:
        boxes: ``(K, spatial_dims, 2)`` int64 boxes (:func:`patch_grid`, :func:`sample_patches`).
        image_size: edge ``S`` of the image, voxels.

    Returns:
        ``(K, 1, S, S)`` or ``(K, 1, S, S, S)`` bool, on the boxes' device.

    Raises:
        TypeError: ``boxes`` is not an integer tensor; ``image_size`` is not an int.
        ValueError: ``boxes`` is not ``(K, 2 or 3, 2)``, or a box is empty or outside ``[0, S]``.

    >>> box_mask(torch.tensor([[[0, 1], [1, 3]]]), 3)[0, 0].int().tolist()
    [[0, 1, 1], [0, 0, 0], [0, 0, 0]]
    """
    if not isinstance(boxes, torch.Tensor) or boxes.dtype.is_floating_point or boxes.dtype == torch.bool:
        raise TypeError(f"`boxes` must be an integer tensor, got {type(boxes).__name__}"
                        + (f" of {boxes.dtype}" if isinstance(boxes, torch.Tensor) else ""))
    image_size = check_int("image_size", image_size, "a positive int", lambda v: v > 0)
    if boxes.ndim != 3 or boxes.shape[1] not in (2, 3) or boxes.shape[2] != 2:
        raise ValueError(f"`boxes` must be (K, spatial_dims, 2), got shape {tuple(boxes.shape)}")
    start, stop = boxes[..., 0], boxes[..., 1]
    if bool((start < 0).any() | (stop > image_size).any() | (stop <= start).any()):
        raise ValueError(f"`boxes` must be non-empty [start, stop) spans within [0, {image_size}], "
                         f"got {boxes.tolist()}")
    coordinate = torch.arange(image_size, device=boxes.device)
    mask = torch.ones((len(boxes),) + (image_size,) * boxes.shape[1], dtype=torch.bool, device=boxes.device)
    for axis in range(boxes.shape[1]):
        inside = (coordinate >= start[:, axis, None]) & (coordinate < stop[:, axis, None])  # (K, S)
        shape = [len(boxes)] + [image_size if a == axis else 1 for a in range(boxes.shape[1])]
        mask &= inside.reshape(shape)
    return mask[:, None]
