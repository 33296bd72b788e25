"""The dense VAE of Bengs et al. 2021 (Sec. 2.2, Fig. 2), 2D or 3D: registry name ``dense-vae``.

The bottleneck flattens the last encoder stage into fully connected ``mu``/``logvar`` layers, so the
latent is a vector and spatial layout is discarded (Lambert et al.'s "dense" configuration). A bare
Table 1 name (``3D-Cube-n``, ``2D-None``) means this model.

Shape:
    - Input: ``(B, 1, S, S)`` (2D) or ``(B, 1, S, S, S)`` (3D), float32 in [0, 1].
    - Latent ``mu``, ``logvar``: ``(B, latent_dim)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from uadlab._checks import check_int
from uadlab.models.registry import register
from uadlab.models.vae import (
    LAYERS,
    NEGATIVE_SLOPE,
    VAEBase,
    decoder_stages,
    encoder_stages,
)

__all__ = ["DenseVAE", "DenseVAEConfig"]

#: Latent size when none is given (Sec. 2.2).
DEFAULT_LATENT = {2: 128, 3: 512}


@dataclass(frozen=True)
class DenseVAEConfig:
    """Arguments of :class:`DenseVAE`, saved with every run (see :class:`DenseVAE` for their meaning)."""

    spatial_dims: int
    image_size: int = 64
    latent_dim: int | None = None
    channels: tuple[int, ...] = (32, 64, 128, 256)
    in_channels: int = 1
    loss: str = "elbo"

    @classmethod
    def from_profile(cls, profile: Any, spatial_dims: int, image_size: int, **options: Any) -> DenseVAEConfig:
        """The profile's backbone (``channels``) and latent size (``latent_dim(spatial_dims)``)."""
        return cls(spatial_dims, image_size, profile.latent_dim(spatial_dims), tuple(profile.channels), **options)


class DenseVAE(VAEBase):
    """Variational autoencoder with a dense bottleneck, 2D or 3D (Bengs et al. 2021, Sec. 2.2, Fig. 2).

    Layout (Fig. 2 gives no feature-map counts; this backbone is our choice, one stage per entry of
    ``channels``):

    - Encoder: per stage ``Conv(kernel 4, stride 2, padding 1, no bias) -> BatchNorm ->
      LeakyReLU(0.2)``; each halves the edge, the first 64 -> 32. With ``channels=(32, 64, 128, 256)``
      and 64 voxels: 1 x 64 -> 32 x 32 -> 64 x 16 -> 128 x 8 -> 256 x 4 (edge per spatial axis).
    - Bottleneck: flatten (``256 * 4**d`` features) -> two linear layers to ``mu`` and ``logvar``
      (latent 128 in 2D, 512 in 3D); ``z = mu + exp(logvar / 2) * eps`` while training, ``z = mu`` in
      eval mode, so inference is deterministic.
    - Decoder: linear ``latent -> 256 * 4**d`` -> BatchNorm -> LeakyReLU, then the mirror of the
      encoder with transposed convolutions (kernel 4, stride 2) 256 -> 128 -> 64 -> 32, and a last
      transposed convolution 32 -> 1 back to 64 voxels.
    - Output: sigmoid. Images are in [0, 1] (Sec. 2.1) and the residual threshold is searched in
      [0, 1] (Sec. 2.3); the sigmoid keeps reconstructions in that range, so a residual never
      exceeds 1 and no negative intensities appear outside the brain.

    Parameter counts (``channels=(32, 64, 128, 256)``, 64 voxels per edge, ``in_channels=1``):

    - 2D, latent 128: 2,956,417 (1,048,832 in the two bottleneck layers, 528,384 in the decoder's
      linear layer).
    - 3D, latent 512: 30,694,273 (16,778,240 in the bottleneck, 8,404,992 in the decoder's linear
      layer; the dense layers dominate).

    Args:
        spatial_dims: 2 (axial slices) or 3 (volumes).
        image_size: edge ``S`` of the square/cubic input, voxels; a multiple of ``2**len(channels)``.
        latent_dim: latent size; ``None``: 128 (2D) or 512 (3D).
        channels: encoder feature maps, one per stride-2 stage; the decoder mirrors them.
        in_channels: image channels (1: T1).
        loss: training objective, ``"elbo"`` (Sec. 2.3) or ``"lambert"`` (Lambert et al.'s loss).

    Raises:
        TypeError: a size that is not an int.
        ValueError: ``spatial_dims`` not 2 or 3; ``image_size`` not a positive multiple of
            ``2**len(channels)``; ``latent_dim``, ``in_channels`` or an entry of ``channels`` not
            positive; ``channels`` empty; an unknown ``loss``.

    Shape:
        - Input: ``(B, in_channels, S, S)`` (2D) or ``(B, in_channels, S, S, S)`` (3D).
        - Output: :class:`~uadlab.models.vae.VAEOutput` with ``recon`` like the input, ``mu``/``logvar``
          ``(B, latent_dim)``.
    """

    def __init__(self, spatial_dims: int, *, image_size: int = 64, latent_dim: int | None = None,
                 channels: tuple[int, ...] = (32, 64, 128, 256), in_channels: int = 1, loss: str = "elbo") -> None:
        super().__init__()
        self._init_backbone(spatial_dims, image_size, channels, in_channels, loss)
        spatial_dims, image_size, channels, in_channels = (self.spatial_dims, self.image_size, self.channels,
                                                           self.in_channels)
        latent_dim = DEFAULT_LATENT[spatial_dims] if latent_dim is None else latent_dim
        latent_dim = self.latent_dim = check_int("latent_dim", latent_dim, "a positive int or None", lambda v: v > 0)
        self.config = DenseVAEConfig(spatial_dims, image_size, latent_dim, channels, in_channels, loss)

        _, norm, _ = LAYERS[spatial_dims]
        bottom_shape = (channels[-1],) + (image_size // 2 ** len(channels),) * spatial_dims
        n_bottom = math.prod(bottom_shape)
        self.encoder = nn.Sequential(*encoder_stages(spatial_dims, in_channels, channels), nn.Flatten())
        self.to_mu = nn.Linear(n_bottom, latent_dim)
        self.to_logvar = nn.Linear(n_bottom, latent_dim)
        self.decoder = nn.Sequential(nn.Linear(latent_dim, n_bottom), nn.Unflatten(1, bottom_shape),
                                     norm(channels[-1]), nn.LeakyReLU(NEGATIVE_SLOPE),
                                     *decoder_stages(spatial_dims, channels, in_channels))

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """``(latent_dim,)``: the shape of ``z`` for one sample."""
        return (self.latent_dim,)


register("dense-vae", DenseVAE, DenseVAEConfig,
         description="dense-bottleneck VAE (Bengs et al. 2021; Lambert et al.'s Dense 2D/3D)")
