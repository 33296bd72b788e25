"""A denoising diffusion model as a pseudo-healthy reconstructor (Behrendt et al. 2024): registry name ``ddpm``.

Behrendt et al. 2024 generate the pseudo-healthy image their supervised segmenter compares with the
input by a DDPM trained on healthy brains: the input is noised to a step ``t`` and denoised; what the
model cannot explain as healthy tissue (a lesion) is replaced by healthy-looking tissue. Their public
code noises each input to ``t = 250, 500 and 750`` of 1000 steps, denoises each in **one step**
(the predicted clean image ``x0`` of Ho et al. 2020, eq. 15) and averages the three
reconstructions; this model does the same by default (:attr:`DDPMConfig.noise_levels`). Unlike their
code it uses Gaussian (not simplex) noise and no conditioning.

The network, schedule and training objective come from MONAI's generative components:
:class:`monai.networks.nets.DiffusionModelUNet` predicts the noise,
:class:`monai.networks.schedulers.DDPMScheduler` holds the linear beta schedule (1e-4 to 0.02 over
1000 steps, Ho et al. 2020) and :class:`monai.inferers.DiffusionInferer` noises a batch to random steps
and runs the network during training.

Intensities: images in [0, 1] are mapped to [-1, 1] (``2 x - 1``) for the diffusion process and the
reconstruction back to [0, 1] after clipping.

Randomness: training draws steps and noise from torch's global generator, which the training loop
seeds per epoch (:mod:`uadlab.training.reconstruction`), so a resumed run repeats an uninterrupted one.
:meth:`DDPM.reconstruct` draws its noise from a fresh generator seeded with :attr:`DDPMConfig.seed`
at every call, so it is deterministic: the same batch gives the same reconstruction. (The noise of a
sample depends on its position in the batch, so a volume reconstructed in another batch layout gets
other, equally distributed noise.)

Shape:
    - Input: ``(B, 1, S, S)`` (2D, axial slices) or ``(B, 1, S, S, S)`` (3D), float32 in [0, 1];
      ``S`` a multiple of ``2 ** (len(channels) - 1)``.
    - Output of :meth:`DDPM.reconstruct`: the input's shape, float32 in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from monai.inferers import DiffusionInferer
from monai.networks.nets import DiffusionModelUNet
from monai.networks.schedulers import DDPMScheduler

from uadlab._checks import check_int
from uadlab.models.base import LossTerms, ModelBase, reconstruct
from uadlab.models.registry import register

__all__ = ["DDPM", "DDPMConfig", "NOISE_LEVELS", "predicted_original", "reconstruct_at_levels"]

#: Behrendt et al.'s test-time noise levels (steps of 1000), each denoised in one step and averaged.
NOISE_LEVELS: tuple[int, ...] = (250, 500, 750)
_GROUPS = 8  # group-norm groups of the diffusion U-Net; every channel count must be a multiple


@dataclass(frozen=True)
class DDPMConfig:
    """Arguments of :class:`DDPM`, saved with every run."""

    spatial_dims: int
    image_size: int = 64
    channels: tuple[int, ...] = (32, 64, 128, 256)
    num_res_blocks: int = 1
    attention_levels: tuple[bool, ...] | None = None
    num_train_timesteps: int = 1000
    noise_levels: tuple[int, ...] = NOISE_LEVELS
    seed: int = 0
    in_channels: int = 1

    @classmethod
    def from_profile(cls, profile: Any, spatial_dims: int, image_size: int, **options: Any) -> DDPMConfig:
        """The profile's diffusion feature maps per level (``Profile.diffusion_channels``, else
        ``Profile.channels``), rounded up to multiples of 8.
        """
        chosen = profile.channels if profile.diffusion_channels is None else profile.diffusion_channels
        channels = tuple(-(-int(c) // _GROUPS) * _GROUPS for c in chosen)
        return cls(spatial_dims, image_size, channels=channels, **options)


def predicted_original(noisy: torch.Tensor, noise_pred: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """One-step estimate of the clean image from ``x_t`` and the predicted noise (Ho et al. 2020, eq. 15).

    ``x0 = (x_t - sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_bar_t)``.

    Args:
        noisy: ``x_t``, ``(B, C, ...)``.
        noise_pred: the predicted noise, same shape.
        alpha_bar: cumulative product of ``1 - beta`` at each sample's step, ``(B,)``.

    >>> x0 = torch.tensor([[0.5]]); eps = torch.tensor([[-1.0]]); ab = torch.tensor([0.64])
    >>> predicted_original(0.8 * x0 + 0.6 * eps, eps, ab)
    tensor([[0.5000]])
    """
    alpha_bar = alpha_bar.reshape((-1,) + (1,) * (noisy.ndim - 1)).to(noisy)
    return (noisy - (1 - alpha_bar).sqrt() * noise_pred) / alpha_bar.sqrt()


class DDPM(ModelBase):
    """A DDPM on axial slices (2D) or volumes (3D) that reconstructs from partially noised inputs.

    Layout: ``DiffusionModelUNet(spatial_dims, 1 -> 1, channels, num_res_blocks, attention at
    attention_levels, group norm with 8 groups)`` predicting the noise ``eps``; a ``DDPMScheduler`` with
    ``num_train_timesteps`` linear-beta steps.

    Args:
        spatial_dims: 2 (axial slices) or 3 (volumes).
        image_size: edge ``S`` of the input, voxels; a multiple of ``2 ** (len(channels) - 1)``.
        channels: U-Net feature maps per level, each a multiple of 8.
        num_res_blocks: residual blocks per level.
        attention_levels: self-attention per level; ``None``: the deepest level only.
        num_train_timesteps: diffusion steps ``T`` (Ho et al. 2020: 1000).
        noise_levels: steps ``t`` in ``[1, T)`` that :meth:`reconstruct` noises to; their one-step
            reconstructions are averaged (Behrendt et al. 2024's code: 250, 500, 750 of 1000).
        seed: seed of the noise :meth:`reconstruct` draws.
        in_channels: image channels (1: T1).
        context_dim: size of a condition vector the U-Net attends to by cross-attention at its attention
            levels (:meth:`condition` gives it); ``None``: unconditioned. Set by ``cddpm``.

    Raises:
        TypeError: a size, step or seed that is not an int.
        ValueError: ``spatial_dims`` not 2 or 3, a channel count that is not a positive multiple of 8,
            an ``image_size`` the levels do not divide, ``attention_levels`` of another length, or a
            noise level outside ``[1, num_train_timesteps)``.
    """

    def __init__(self, spatial_dims: int, *, image_size: int = 64, channels: tuple[int, ...] = (32, 64, 128, 256),
                 num_res_blocks: int = 1, attention_levels: tuple[bool, ...] | None = None,
                 num_train_timesteps: int = 1000, noise_levels: tuple[int, ...] = NOISE_LEVELS, seed: int = 0,
                 in_channels: int = 1, context_dim: int | None = None) -> None:
        super().__init__()
        if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
            raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims!r}")
        channels = tuple(channels)
        if not channels or not all(isinstance(c, int) and c > 0 and c % _GROUPS == 0 for c in channels):
            raise ValueError(f"`channels` must be positive multiples of {_GROUPS}, got {channels!r}")
        levels = 2 ** (len(channels) - 1)
        image_size = check_int("image_size", image_size, f"a positive multiple of {levels}",
                               lambda v: v > 0 and v % levels == 0)
        num_res_blocks = check_int("num_res_blocks", num_res_blocks, "a positive int", lambda v: v > 0)
        if attention_levels is None:
            attention_levels = tuple(i == len(channels) - 1 for i in range(len(channels)))
        attention_levels = tuple(bool(a) for a in attention_levels)
        if len(attention_levels) != len(channels):
            raise ValueError(f"`attention_levels` must have one entry per level ({len(channels)}), "
                             f"got {attention_levels!r}")
        steps = check_int("num_train_timesteps", num_train_timesteps, "an int >= 2", lambda v: v >= 2)
        noise_levels = tuple(noise_levels)
        if not noise_levels:
            raise ValueError("`noise_levels` must hold at least one step, got ()")
        noise_levels = tuple(check_int("noise_levels", t, f"steps in [1, {steps})", lambda v: 1 <= v < steps)
                             for t in noise_levels)
        seed = check_int("seed", seed, "an int in [0, 2**63)", lambda v: 0 <= v < 2**63)
        in_channels = check_int("in_channels", in_channels, "a positive int", lambda v: v > 0)

        self.spatial_dims, self.image_size, self.in_channels = spatial_dims, image_size, in_channels
        self.noise_levels, self.seed = noise_levels, seed
        self.config = DDPMConfig(spatial_dims, image_size, channels, num_res_blocks, attention_levels, steps,
                                 noise_levels, seed, in_channels)
        if context_dim is not None:
            context_dim = check_int("context_dim", context_dim, "a positive int", lambda v: v > 0)
        self.unet = DiffusionModelUNet(spatial_dims, in_channels, in_channels, num_res_blocks=num_res_blocks,
                                       channels=channels, attention_levels=attention_levels,
                                       norm_num_groups=_GROUPS, num_head_channels=channels[-1],
                                       with_conditioning=context_dim is not None, cross_attention_dim=context_dim)
        self.scheduler = DDPMScheduler(num_train_timesteps=steps)
        self.inferer = DiffusionInferer(self.scheduler)

    def training_loss(self, inputs: torch.Tensor, target: torch.Tensor) -> LossTerms:
        """Noise-prediction MSE at uniformly drawn steps (Ho et al. 2020, eq. 14, "simple" loss).

        ``target`` is noised (spatial erasing does not apply: ``inputs`` is only shape-checked). Steps
        and noise come from torch's global generator.

        Returns:
            ``total``: mean squared error of the predicted noise (per voxel, averaged over the batch).
            ``recon``: l1 of the one-step reconstruction ``x0`` (:func:`predicted_original`, mapped to
            [0, 1]) against ``target``, summed over a sample's voxels and averaged over the batch, the
            unit every model reports; detached, for the history only. At a uniform random step it is
            noisy and much larger than the test-time error, which uses ``noise_levels``.
            ``kl``: 0 (no latent).
        """
        self.check_input(inputs, "inputs")
        self.check_input(target, "target")
        x0 = target * 2 - 1
        noise = self.draw_noise(x0.shape, device=x0.device)
        steps = torch.randint(0, self.scheduler.num_train_timesteps, (len(x0),), device=x0.device)
        noise_pred = self.inferer(inputs=x0, diffusion_model=self.unet, noise=noise, timesteps=steps,
                                  condition=self.condition(x0))
        total = torch.nn.functional.mse_loss(noise_pred, noise)
        with torch.no_grad():
            noisy = self.scheduler.add_noise(x0, noise, steps)
            recon = self._to_unit(predicted_original(noisy, noise_pred, self._alpha_bar(steps)))
            l1 = (recon - target).abs().flatten(1).sum(1).mean()
        return LossTerms(total, l1, total.new_zeros(()))

    def validation_terms(self, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruct(samples), zeros)``: validation scores the test-time reconstruction; no KL."""
        return self.reconstruct(samples), samples.new_zeros(len(samples))

    @torch.no_grad()
    def reconstruct(self, samples: torch.Tensor, *, noise_levels: tuple[int, ...] | None = None) -> torch.Tensor:
        """Noise each sample to every step in ``noise_levels``, denoise in one step, average.

        Args:
            samples: ``(B, 1, S, S[, S])`` in [0, 1].
            noise_levels: steps to use instead of the config's (e.g. one level, to show its effect).

        Returns:
            The mean of the one-step reconstructions, clipped to [0, 1], the shape of ``samples``.

        Raises:
            TypeError, ValueError: ``samples`` does not fit the model, or a step outside ``[1, T)``.
        """
        self.check_input(samples, "samples")
        levels = self._levels(noise_levels)
        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        x0 = samples.float() * 2 - 1
        context, total = self.condition(x0), torch.zeros_like(x0)
        for level in levels:
            noise = self.draw_noise(x0.shape, generator=generator, device=x0.device)
            steps = torch.full((len(x0),), level, dtype=torch.long, device=x0.device)
            noisy = self.scheduler.add_noise(x0, noise, steps)
            noise_pred = self.unet(noisy, timesteps=steps, context=context)
            total += self._to_unit(predicted_original(noisy, noise_pred, self._alpha_bar(steps)))
        return total / len(levels)

    def _levels(self, noise_levels: tuple[int, ...] | None) -> tuple[int, ...]:
        """The steps :meth:`reconstruct` noises to: ``noise_levels`` checked to lie in ``[1, T)``, else the config's."""
        if noise_levels is None:
            return self.noise_levels
        steps = self.scheduler.num_train_timesteps
        return tuple(check_int("noise_levels", t, f"steps in [1, {steps})", lambda v: 1 <= v < steps)
                     for t in noise_levels)

    def condition(self, x0: torch.Tensor) -> torch.Tensor | None:
        """What the U-Net is conditioned on, from the clean input ``x0`` (in [-1, 1]): ``None`` here
        (a family with ``context_dim`` overrides this and returns ``(B, 1, context_dim)``).
        """
        return None

    def draw_noise(self, shape: torch.Size, *, generator: torch.Generator | None = None,
                   device: torch.device | None = None) -> torch.Tensor:
        """The diffusion noise of a batch: standard Gaussian (a family with other noise overrides this).

        Args:
            shape: ``(B, C, ...)``.
            generator: a CPU generator (drawn on the CPU, then moved); ``None``: torch's global generator
                of ``device`` (training).
            device: where the noise goes.
        """
        if generator is None:
            return torch.randn(shape, device=device)
        return torch.randn(shape, generator=generator).to(device)

    def _alpha_bar(self, steps: torch.Tensor) -> torch.Tensor:
        return self.scheduler.alphas_cumprod.to(steps.device)[steps]

    @staticmethod
    def _to_unit(x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> [0, 1], clipped."""
        return ((x.clamp(-1, 1) + 1) / 2).to(torch.float32)


def reconstruct_at_levels(model: DDPM, volume: Any, levels: tuple[int, ...], *,
                          batch_size: int = 64) -> dict[int, Any]:
    """Whole-volume reconstructions of ``volume`` at each noise level on its own (lab 07's figure).

    Args:
        model: a trained :class:`DDPM`.
        volume: ``(X, Y, Z)`` in [0, 1].
        levels: steps ``t``; each gives one one-step reconstruction (not averaged).
        batch_size: slices (2D) or volumes (3D) per pass.

    Returns:
        ``{t: (X, Y, Z) float32 reconstruction}``.

    Raises:
        TypeError: ``model`` is not a :class:`DDPM`.
        ValueError: a step outside ``[1, T)``; as :func:`uadlab.models.base.reconstruct`.
    """
    if not isinstance(model, DDPM):
        raise TypeError(f"`model` must be a DDPM, got {type(model).__name__}")
    steps = model.scheduler.num_train_timesteps
    levels = tuple(check_int("levels", t, f"steps in [1, {steps})", lambda v: 1 <= v < steps) for t in levels)
    configured = model.noise_levels
    try:
        out = {}
        for level in levels:
            model.noise_levels = (level,)
            out[level] = reconstruct(model, volume, batch_size=batch_size)
        return out
    finally:
        model.noise_levels = configured


register("ddpm", DDPM, DDPMConfig, erasing=False,
         description="denoising diffusion model reconstructing from partially noised inputs (Behrendt et al. 2024)")
