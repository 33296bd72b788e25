"""The conditioned DDPM (Behrendt et al. 2024/2025), registry name ``cddpm``.

Behrendt, Bhattacharya, Mieling, Maack, Krüger, Opfer and Schlaefer, "Guided Reconstruction with
Conditioned Diffusion Models for Unsupervised Anomaly Segmentation in Brain MRIs" (Computers in
Biology and Medicine 2025; public code FinnBehrendt/Conditioned-Diffusion-Models-UAD) condition the
DDPM's denoising on a latent representation of the *input* image: the noised image says little about
which healthy anatomy lay under the noise, the input's latent says which subject it was, so the
reconstruction keeps the subject's healthy anatomy and intensities while the noise still erases the
lesion. Reference facts (their ``configs/experiment/cDDPM/DDPM_cond_spark_2D.yaml``): a condition
vector of 128 (``cond_dim``) from a ResNet-50 encoder pretrained by masked image modelling (SparK,
``Spark_Encoder_2D``), one test step ``t = 500`` (``test_timesteps``), simplex noise.

Here (:class:`CDDPM`, a :class:`~uadlab.models.ddpm.DDPM` with ``context_dim``), in 2D and 3D:

- The condition encoder is the dense VAE's convolutional encoder (:func:`uadlab.models.vae.encoder_stages`
  on the profile's backbone) followed by global average pooling and a linear map to ``context_dim``
  (128, as the reference). It reads the clean input (in [-1, 1]) and is trained **jointly** with the
  diffusion loss, from scratch: the reference's self-supervised pretraining of a ResNet-50 is a model
  of its own and out of a laptop's budget.
- The vector enters MONAI's :class:`~monai.networks.nets.DiffusionModelUNet` by cross-attention at the
  U-Net's attention levels (``with_conditioning``, one context token), MONAI's conditioning path; the
  reference adds it to the time embedding instead (its ``spatial_transformer: False``).
- Noise and steps as ``ddpm`` (Gaussian; ``anoddpm`` is the family with simplex noise), one test
  step ``t = 500`` as the reference, the one-step ``x0`` (Ho et al. 2020, eq. 15).

Settings: ``lab``/``smoke``: the profile's diffusion channels (``Profile.diffusion_channels``, as
``ddpm``), the profile's VAE backbone for the encoder; ``paper``: the paper profile's channels.

Shape:
    - Input and reconstruction: ``(B, 1, S, S)`` or ``(B, 1, S, S, S)``, float32 in [0, 1].
    - :meth:`CDDPM.condition`: ``(B, 1, context_dim)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from uadlab.models.ddpm import DDPM, DDPMConfig
from uadlab.models.registry import register
from uadlab.models.vae import check_backbone, encoder_stages

__all__ = ["CDDPM", "CDDPMConfig", "CDDPM_LEVEL", "CONTEXT_DIM"]

#: The reference's one test step (``test_timesteps: 500`` of 1000).
CDDPM_LEVEL = 500
#: The reference's condition size (``cond_dim: 128``).
CONTEXT_DIM = 128


@dataclass(frozen=True)
class CDDPMConfig(DDPMConfig):
    """Arguments of :class:`CDDPM`, saved with every run; ``encoder_channels=None``: ``channels``."""

    noise_levels: tuple[int, ...] = (CDDPM_LEVEL,)
    context_dim: int = CONTEXT_DIM
    encoder_channels: tuple[int, ...] | None = None

    @classmethod
    def from_profile(cls, profile: Any, spatial_dims: int, image_size: int, **options: Any) -> CDDPMConfig:
        """``ddpm``'s choice for the U-Net, the profile's VAE backbone (``Profile.channels``) for the encoder."""
        return super().from_profile(profile, spatial_dims, image_size,
                                    **{"encoder_channels": tuple(profile.channels), **options})


class CDDPM(DDPM):
    """A DDPM conditioned on a learned latent of its input (Behrendt et al. 2024/2025).

    Layout: ``encoder_stages(spatial_dims, 1, encoder_channels) -> global average pool -> Linear(
    encoder_channels[-1], context_dim)`` gives the condition; ``DiffusionModelUNet`` as ``ddpm`` with
    cross-attention to it at the attention levels.

    Args:
        spatial_dims, image_size, channels, num_res_blocks, attention_levels, num_train_timesteps, seed,
            in_channels: as :class:`~uadlab.models.ddpm.DDPM`.
        noise_levels: test steps; their one-step reconstructions are averaged (reference: 500 alone).
        context_dim: size of the condition vector (reference: 128).
        encoder_channels: the condition encoder's feature maps, one per stride-2 stage; ``None``:
            ``channels``.

    Raises:
        TypeError, ValueError: as :class:`~uadlab.models.ddpm.DDPM`; ``context_dim`` not a positive int,
            ``encoder_channels`` not positive ints, or more stages than ``image_size`` halves.
    """

    def __init__(self, spatial_dims: int, *, image_size: int = 64, channels: tuple[int, ...] = (32, 64, 128, 256),
                 num_res_blocks: int = 1, attention_levels: tuple[bool, ...] | None = None,
                 num_train_timesteps: int = 1000, noise_levels: tuple[int, ...] = (CDDPM_LEVEL,), seed: int = 0,
                 in_channels: int = 1, context_dim: int = CONTEXT_DIM,
                 encoder_channels: tuple[int, ...] | None = None) -> None:
        super().__init__(spatial_dims, image_size=image_size, channels=channels, num_res_blocks=num_res_blocks,
                         attention_levels=attention_levels, num_train_timesteps=num_train_timesteps,
                         noise_levels=noise_levels, seed=seed, in_channels=in_channels, context_dim=context_dim)
        encoder_channels = tuple(channels if encoder_channels is None else encoder_channels)
        check_backbone(spatial_dims, self.image_size, encoder_channels, in_channels, "elbo")
        pool = nn.AdaptiveAvgPool2d if spatial_dims == 2 else nn.AdaptiveAvgPool3d
        self.encoder = nn.Sequential(*encoder_stages(spatial_dims, in_channels, encoder_channels), pool(1),
                                     nn.Flatten(), nn.Linear(encoder_channels[-1], context_dim))
        self.config = CDDPMConfig(**asdict(self.config), context_dim=int(context_dim),
                                  encoder_channels=encoder_channels)

    def condition(self, x0: torch.Tensor) -> torch.Tensor:
        """The condition vector of the clean input ``x0`` (in [-1, 1]), one context token: ``(B, 1, context_dim)``."""
        return self.encoder(x0)[:, None, :]


register("cddpm", CDDPM, CDDPMConfig, erasing=False,
         description="DDPM conditioned on a learned latent of its input, one step from t = 500 "
                     "(Behrendt et al. 2024/2025)")
