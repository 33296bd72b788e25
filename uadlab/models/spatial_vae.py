"""The spatial (fully convolutional) VAE of Lambert et al. 2021 (Sec. 2.1, 2.3): registry name ``spatial-vae``.

Lambert et al. compare a dense bottleneck (:mod:`uadlab.models.dense_vae`) with a spatial one, where
``mu``/``logvar`` and the first decoder layer are convolutions, so the latent keeps a spatial layout:
``z`` is ``(N, h, w)`` in 2D and ``(N, h, w, d)`` in 3D. Encoder and decoder are the dense VAE's
(same depth, same stages), so the two differ in the bottleneck only. Their finding, which lab 06
shows: the spatial VAE compresses less and reconstructs anomalies too, which makes them harder to
detect (Dice 0.26-0.39 against 0.62-0.65 for the dense VAE on tumours, their Table 1).

Shape:
    - Input: ``(B, 1, S, S)`` (2D) or ``(B, 1, S, S, S)`` (3D), float32 in [0, 1].
    - Latent ``mu``, ``logvar``: ``(B, N, S / 2**k, S / 2**k[, S / 2**k])`` with ``N = latent_channels``
      and ``k = len(channels)``, e.g. ``(B, 16, 4, 4)`` for the paper's 64 voxels and 4 stages.
"""

from __future__ import annotations

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

__all__ = ["SpatialVAE", "SpatialVAEConfig"]

#: Latent feature maps ``N`` when none is given: 16 x 4 x 4 = 256 latent units in 2D (twice the dense
#: VAE's 128) and 16 x 4^3 = 1024 in 3D (twice 512) at 64 voxels. Lambert et al. do not state ``N``;
#: this keeps the spatial latent larger than the dense one, their point being the weaker compression.
DEFAULT_LATENT_CHANNELS = 16
_BOTTLENECK_KERNEL = 3  # convolutional mu/logvar and first decoder layer: 3 (x 3 (x 3)), padding 1


@dataclass(frozen=True)
class SpatialVAEConfig:
    """Arguments of :class:`SpatialVAE`, saved with every run."""

    spatial_dims: int
    image_size: int = 64
    latent_channels: int = DEFAULT_LATENT_CHANNELS
    channels: tuple[int, ...] = (32, 64, 128, 256)
    in_channels: int = 1
    loss: str = "elbo"

    @classmethod
    def from_profile(cls, profile: Any, spatial_dims: int, image_size: int, **options: Any) -> SpatialVAEConfig:
        """The profile's backbone (``channels``); the latent feature maps are the model's own."""
        return cls(spatial_dims, image_size, channels=tuple(profile.channels), **options)


class SpatialVAE(VAEBase):
    """Variational autoencoder with a spatial (convolutional) bottleneck, 2D or 3D (Lambert et al. 2021).

    Layout: the dense VAE's encoder stages (:class:`~uadlab.models.dense_vae.DenseVAE`), then
    ``mu`` and ``logvar`` by two ``Conv(channels[-1] -> N, kernel 3, padding 1)``; the decoder starts
    with ``Conv(N -> channels[-1], kernel 3, padding 1) -> BatchNorm -> LeakyReLU`` and continues with
    the dense VAE's transposed-convolution stages and sigmoid. ``z = mu + exp(logvar / 2) * eps``
    while training, ``z = mu`` in eval mode.

    Parameter counts (``channels=(32, 64, 128, 256)``, 64 voxels, ``N = 16``): 2D 1,489,825
    (latent 16 x 4 x 4 = 256 units); 3D 5,842,849 (latent 16 x 4 x 4 x 4 = 1,024 units). Without the
    dense layers the spatial VAE is 2x (2D) and 5x (3D) smaller than the dense one.

    Args:
        spatial_dims: 2 (axial slices) or 3 (volumes).
        image_size: edge ``S`` of the input, voxels; a multiple of ``2**len(channels)``.
        latent_channels: ``N``, latent feature maps.
        channels: encoder feature maps, one per stride-2 stage; the decoder mirrors them.
        in_channels: image channels (1: T1).
        loss: ``"elbo"`` or ``"lambert"`` (Lambert et al. train every model with their loss).

    Raises:
        TypeError: a size that is not an int.
        ValueError: as :class:`~uadlab.models.dense_vae.DenseVAE`; ``latent_channels`` not positive.

    Shape:
        - Input: ``(B, in_channels, S, S[, S])``.
        - Output: ``recon`` like the input; ``mu``/``logvar`` ``(B, N, S / 2**k, ...)``.
    """

    def __init__(self, spatial_dims: int, *, image_size: int = 64, latent_channels: int = DEFAULT_LATENT_CHANNELS,
                 channels: tuple[int, ...] = (32, 64, 128, 256), in_channels: int = 1, loss: str = "elbo") -> None:
        super().__init__()
        self._init_backbone(spatial_dims, image_size, channels, in_channels, loss)
        spatial_dims, image_size, channels, in_channels = (self.spatial_dims, self.image_size, self.channels,
                                                           self.in_channels)
        latent_channels = self.latent_channels = check_int("latent_channels", latent_channels, "a positive int",
                                                           lambda v: v > 0)
        self.config = SpatialVAEConfig(spatial_dims, image_size, latent_channels, channels, in_channels, loss)

        conv, norm, _ = LAYERS[spatial_dims]
        pad = _BOTTLENECK_KERNEL // 2
        self.encoder = nn.Sequential(*encoder_stages(spatial_dims, in_channels, channels))
        self.to_mu = conv(channels[-1], latent_channels, _BOTTLENECK_KERNEL, padding=pad)
        self.to_logvar = conv(channels[-1], latent_channels, _BOTTLENECK_KERNEL, padding=pad)
        self.decoder = nn.Sequential(conv(latent_channels, channels[-1], _BOTTLENECK_KERNEL, padding=pad, bias=False),
                                     norm(channels[-1]), nn.LeakyReLU(NEGATIVE_SLOPE),
                                     *decoder_stages(spatial_dims, channels, in_channels))

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """``(N, h, w[, d])`` of ``z`` for one sample."""
        return (self.latent_channels,) + (self.image_size // 2 ** len(self.channels),) * self.spatial_dims


register("spatial-vae", SpatialVAE, SpatialVAEConfig,
         description="fully convolutional (spatial) VAE of Lambert et al. 2021")
