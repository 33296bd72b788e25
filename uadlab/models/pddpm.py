"""The patched DDPM (Behrendt et al. 2023), registry name ``pddpm``, and its patch schedule.

Behrendt, Bhattacharya, Krüger, Opfer and Schlaefer, "Patched Diffusion Models for Unsupervised
Anomaly Detection in Brain MRI" (MIDL 2023), noise and denoise one *patch* of the image at a time:
the rest of the image stays clean and serves as context, so the model reconstructs a region from its
healthy surroundings rather than from noise alone. At test time the image is tiled by patches; each
is noised (the others left clean), reconstructed in one step, and its reconstruction pasted into the
pseudo-healthy image. In training, one patch per image is noised and the loss is taken there. This
module holds the patch schedule (first part) and the model, :class:`PDDPM` (last section).

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

The model (:class:`PDDPM`, a :class:`~uadlab.models.ddpm.DDPM` on patches), in 2D and 3D:

- Training: one grid box per sample (:func:`sample_patches`, torch's global generator), noised to a
  uniform step ``t`` with Gaussian noise, the rest of the sample clean; the network predicts the noise
  and the squared error is averaged over the box's voxels only. (The reference predicts ``x0`` with
  an l1 loss; here the DDPM's noise objective is kept so the family shares ``ddpm``'s network,
  schedule and one-step ``x0``, Ho et al. 2020, eq. 15.)
- Reconstruction: for each box of :func:`patch_grid` in turn, the box is noised to ``t = 500`` (the
  reference's ``test_timesteps - 1 = 499``, rounded to ``ddpm``'s middle level), the rest left clean,
  and the box's one-step ``x0`` is pasted into the reconstruction; every voxel is reconstructed once.
  The noise is drawn once per call from a generator seeded with the config's ``seed`` (boxes are
  disjoint, so each voxel gets its own), so :meth:`PDDPM.reconstruct` is deterministic.
- Cost: one network pass per box, ``(S / P) ** spatial_dims`` per reconstruction (4 in 2D, 8 in 3D at
  the default ``P = S / 2``, the reference's 48 of 96), against ``ddpm``'s 3 levels.

Settings: ``lab``/``smoke``: the profile's channels rounded up to multiples of 8 (as ``ddpm``), ``P =
S / 2``, ``t = 500``; ``paper``: the paper profile's channels, the same patches (Behrendt et al. 2023:
a 2 x 2 grid on 96^2 slices).

Shape:
    - A box: ``(spatial_dims, 2)`` int64, ``[start, stop)`` per spatial axis, voxels.
    - :func:`patch_grid`: ``(K, spatial_dims, 2)``; :func:`sample_patches`: ``(B, spatial_dims, 2)``;
      :func:`box_mask`: ``(len(boxes), 1, S, S[, S])`` bool.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import torch

from uadlab._checks import check_int
from uadlab.models.base import LossTerms
from uadlab.models.ddpm import DDPM, DDPMConfig, predicted_original
from uadlab.models.registry import register

__all__ = ["PDDPM", "PDDPMConfig", "PDDPM_LEVEL", "patch_grid", "sample_patches", "box_mask"]

#: The one test-time step of Behrendt et al. 2023 (their code: 499 of 1000).
PDDPM_LEVEL = 500


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


# ---------------------------------------------------------------------------------------------------
# The model: a DDPM that noises and denoises one box at a time
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PDDPMConfig(DDPMConfig):
    """Arguments of :class:`PDDPM`, saved with every run; ``patch_size=None``: half the image edge."""

    noise_levels: tuple[int, ...] = (PDDPM_LEVEL,)
    patch_size: int | None = None


class PDDPM(DDPM):
    """A patched DDPM: noise one box, keep the rest as context, denoise (Behrendt et al., MIDL 2023).

    Args:
        spatial_dims, image_size, channels, num_res_blocks, attention_levels, num_train_timesteps, seed,
            in_channels: as :class:`~uadlab.models.ddpm.DDPM`.
        noise_levels: test-time steps; each gives one patch-wise reconstruction, averaged (reference: 500).
        patch_size: box edge ``P``, voxels, ``1 <= P <= image_size``; ``None``: ``image_size // 2``.

    Raises:
        TypeError, ValueError: as :class:`~uadlab.models.ddpm.DDPM`; a ``patch_size`` out of range.
    """

    def __init__(self, spatial_dims: int, *, image_size: int = 64, channels: tuple[int, ...] = (32, 64, 128, 256),
                 num_res_blocks: int = 1, attention_levels: tuple[bool, ...] | None = None,
                 num_train_timesteps: int = 1000, noise_levels: tuple[int, ...] = (PDDPM_LEVEL,), seed: int = 0,
                 in_channels: int = 1, patch_size: int | None = None) -> None:
        super().__init__(spatial_dims, image_size=image_size, channels=channels, num_res_blocks=num_res_blocks,
                         attention_levels=attention_levels, num_train_timesteps=num_train_timesteps,
                         noise_levels=noise_levels, seed=seed, in_channels=in_channels)
        patch_size = max(1, self.image_size // 2) if patch_size is None else patch_size
        self.patch_size = _check(self.image_size, patch_size, self.spatial_dims)[1]
        self.config = PDDPMConfig(**asdict(self.config), patch_size=self.patch_size)

    def _denoise_boxes(self, x0: torch.Tensor, noise: torch.Tensor, steps: torch.Tensor,
                       inside: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(predicted noise, one-step x0 in [-1, 1])`` with ``x_t`` inside the boxes, ``x0`` outside."""
        noisy = torch.where(inside, self.scheduler.add_noise(x0, noise, steps), x0)
        noise_pred = self.unet(noisy, timesteps=steps)
        return noise_pred, predicted_original(noisy, noise_pred, self._alpha_bar(steps))

    def training_loss(self, inputs: torch.Tensor, target: torch.Tensor) -> LossTerms:
        """Noise-prediction MSE inside one random grid box per sample; the rest is clean context.

        Boxes, steps and noise come from torch's global generator (seeded per epoch by the training loop).

        Returns:
            ``total``: mean squared error of the predicted noise over the boxes' voxels.
            ``recon``: l1 of the reconstruction (the box's one-step ``x0``, the clean target elsewhere),
            summed over a sample's voxels, averaged over the batch; detached. ``kl``: 0.
        """
        self.check_input(inputs, "inputs")
        self.check_input(target, "target")
        x0 = target * 2 - 1
        boxes = sample_patches(len(x0), self.image_size, self.patch_size, spatial_dims=self.spatial_dims)
        inside = box_mask(boxes, self.image_size).to(x0.device).expand_as(x0)
        noise = self.draw_noise(x0.shape, device=x0.device)
        steps = torch.randint(0, self.scheduler.num_train_timesteps, (len(x0),), device=x0.device)
        noise_pred, estimate = self._denoise_boxes(x0, noise, steps, inside)
        total = (noise_pred.float() - noise).pow(2)[inside].mean()
        with torch.no_grad():
            recon = torch.where(inside, self._to_unit(estimate), target)
            l1 = (recon - target).abs().flatten(1).sum(1).mean()
        return LossTerms(total, l1, total.new_zeros(()))

    @torch.no_grad()
    def reconstruct(self, samples: torch.Tensor, *, noise_levels: tuple[int, ...] | None = None) -> torch.Tensor:
        """Noise each grid box in turn (the rest clean), paste its one-step ``x0``; average over levels.

        Args:
            samples: ``(B, 1, S, S[, S])`` in [0, 1].
            noise_levels: steps to use instead of the config's.

        Returns:
            The patch-wise reconstruction, clipped to [0, 1], the shape of ``samples``.

        Raises:
            TypeError, ValueError: ``samples`` does not fit the model, or a step outside ``[1, T)``.
        """
        self.check_input(samples, "samples")
        levels = self._levels(noise_levels)
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        x0 = samples.float() * 2 - 1
        grid = box_mask(patch_grid(self.image_size, self.patch_size, spatial_dims=self.spatial_dims),
                        self.image_size).to(x0.device)
        total = torch.zeros_like(x0)
        for level in levels:
            noise = self.draw_noise(x0.shape, generator=generator, device=x0.device)
            steps = torch.full((len(x0),), level, dtype=torch.long, device=x0.device)
            for box in grid:
                inside = box[None].expand_as(x0)
                estimate = self._denoise_boxes(x0, noise, steps, inside)[1]
                total = torch.where(inside, total + self._to_unit(estimate), total)
        return total / len(levels)


register("pddpm", PDDPM, PDDPMConfig, erasing=False,
         description="patched DDPM: one box noised at a time, the rest as context (Behrendt et al. 2023)")
