"""Deterministic autoencoders with a dense or a spatial bottleneck (Baur et al. 2021): ``ae-dense``, ``ae-spatial``.

Baur et al., "Autoencoders for unsupervised anomaly segmentation in brain MR images: a comparative
study" (MedIA 2021), compare plain autoencoders with VAEs and other variants, each with a dense
(vector) and a spatial (feature-map) bottleneck. An autoencoder is a VAE without sampling and without
the KL term: it is trained on the l1 reconstruction error alone, so nothing pulls its latent towards
a prior. These two models are the suite's VAEs minus the log-variance head: the same encoder stages,
bottleneck and decoder (:mod:`uadlab.models.dense_vae`, :mod:`uadlab.models.spatial_vae`), so a row
``ae-dense`` against ``dense-vae`` isolates what the variational latent adds, in 2D and in 3D.

Settings (the profile's backbone, as the VAEs):

- ``lab``: channels ``(16, 32, 64, 128)``, dense latent 128 (2D) / 512 (3D), spatial latent 16 maps.
- ``paper``: channels ``(32, 64, 128, 256)``, the same latents. Baur et al. work on 128 x 128 slices
  with their own backbone; uadlab keeps its 64^3 grid and the VAEs' backbone so that every family is
  scored on the same volumes.

Shape:
    - Input: ``(B, 1, S, S)`` (2D) or ``(B, 1, S, S, S)`` (3D), float32 in [0, 1].
    - Latent ``z``: ``(B, latent_dim)`` (dense) or ``(B, N, S / 2**k, ...)`` (spatial).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from uadlab.models.base import LossTerms
from uadlab.models.dense_vae import DenseVAE
from uadlab.models.registry import register
from uadlab.models.spatial_vae import DEFAULT_LATENT_CHANNELS, SpatialVAE
from uadlab.models.vae import VAEOutput

__all__ = ["DenseAE", "DenseAEConfig", "SpatialAE", "SpatialAEConfig"]


@dataclass(frozen=True)
class DenseAEConfig:
    """Arguments of :class:`DenseAE`, saved with every run."""

    spatial_dims: int
    image_size: int = 64
    latent_dim: int | None = None
    channels: tuple[int, ...] = (32, 64, 128, 256)
    in_channels: int = 1

    @classmethod
    def from_profile(cls, profile: Any, spatial_dims: int, image_size: int, **options: Any) -> DenseAEConfig:
        """The profile's backbone and latent size, as the dense VAE."""
        return cls(spatial_dims, image_size, profile.latent_dim(spatial_dims), tuple(profile.channels), **options)


@dataclass(frozen=True)
class SpatialAEConfig:
    """Arguments of :class:`SpatialAE`, saved with every run."""

    spatial_dims: int
    image_size: int = 64
    latent_channels: int = DEFAULT_LATENT_CHANNELS
    channels: tuple[int, ...] = (32, 64, 128, 256)
    in_channels: int = 1

    @classmethod
    def from_profile(cls, profile: Any, spatial_dims: int, image_size: int, **options: Any) -> SpatialAEConfig:
        """The profile's backbone, as the spatial VAE."""
        return cls(spatial_dims, image_size, channels=tuple(profile.channels), **options)


class _Deterministic:
    """The autoencoder's part: ``z = to_mu(encoder(x))`` always, an l1 loss, no KL (Baur et al. 2021)."""

    check_input: Any
    encoder: torch.nn.Module
    to_mu: torch.nn.Module
    decoder: torch.nn.Module

    def forward(self, x: torch.Tensor) -> VAEOutput:
        """Encode and decode; ``mu`` is the latent ``z`` and ``logvar`` zeros (no posterior).

        Raises:
            TypeError, ValueError: ``x`` is not a ``(B, *input_shape)`` tensor.
        """
        self.check_input(x)
        z = self.to_mu(self.encoder(x))
        return VAEOutput(self.decoder(z), z, torch.zeros_like(z))

    def training_loss(self, inputs: torch.Tensor, target: torch.Tensor) -> LossTerms:
        """l1 of ``self(inputs)`` against ``target``, summed over a sample's voxels, mean over the batch."""
        l1 = (self(inputs).recon - target).abs().flatten(1).sum(1).mean()
        return LossTerms(l1, l1, l1.new_zeros(()))

    def validation_terms(self, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(recon, zeros)``: an autoencoder has no KL term."""
        return self(samples).recon, samples.new_zeros(len(samples))


class DenseAE(_Deterministic, DenseVAE):
    """Autoencoder with a dense bottleneck, 2D or 3D (Baur et al. 2021, "AE (dense)").

    :class:`~uadlab.models.dense_vae.DenseVAE`'s network without its log-variance layer; ``z`` is the
    linear layer's output, in training and at test time alike.

    Args:
        spatial_dims: 2 (axial slices) or 3 (volumes).
        image_size: edge ``S`` of the input, voxels; a multiple of ``2**len(channels)``.
        latent_dim: latent size; ``None``: 128 (2D) or 512 (3D).
        channels: encoder feature maps, one per stride-2 stage.
        in_channels: image channels (1: T1).

    Raises:
        TypeError, ValueError: as :class:`~uadlab.models.dense_vae.DenseVAE`.
    """

    def __init__(self, spatial_dims: int, *, image_size: int = 64, latent_dim: int | None = None,
                 channels: tuple[int, ...] = (32, 64, 128, 256), in_channels: int = 1) -> None:
        super().__init__(spatial_dims, image_size=image_size, latent_dim=latent_dim, channels=channels,
                         in_channels=in_channels)
        del self.to_logvar
        self.config = DenseAEConfig(self.spatial_dims, self.image_size, self.latent_dim, self.channels,
                                    self.in_channels)


class SpatialAE(_Deterministic, SpatialVAE):
    """Autoencoder with a spatial bottleneck, 2D or 3D (Baur et al. 2021, "AE (spatial)").

    :class:`~uadlab.models.spatial_vae.SpatialVAE`'s network without its log-variance convolution.

    Args:
        spatial_dims: 2 (axial slices) or 3 (volumes).
        image_size: edge ``S`` of the input, voxels; a multiple of ``2**len(channels)``.
        latent_channels: ``N``, latent feature maps.
        channels: encoder feature maps, one per stride-2 stage.
        in_channels: image channels (1: T1).

    Raises:
        TypeError, ValueError: as :class:`~uadlab.models.spatial_vae.SpatialVAE`.
    """

    def __init__(self, spatial_dims: int, *, image_size: int = 64, latent_channels: int = DEFAULT_LATENT_CHANNELS,
                 channels: tuple[int, ...] = (32, 64, 128, 256), in_channels: int = 1) -> None:
        super().__init__(spatial_dims, image_size=image_size, latent_channels=latent_channels, channels=channels,
                         in_channels=in_channels)
        del self.to_logvar
        self.config = SpatialAEConfig(self.spatial_dims, self.image_size, self.latent_channels, self.channels,
                                      self.in_channels)


register("ae-dense", DenseAE, DenseAEConfig,
         description="deterministic autoencoder, dense bottleneck (Baur et al. 2021)")
register("ae-spatial", SpatialAE, SpatialAEConfig,
         description="deterministic autoencoder, spatial bottleneck (Baur et al. 2021)")
