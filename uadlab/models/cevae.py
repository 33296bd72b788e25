"""The context-encoding VAE of Zimmerer et al.: registry name ``cevae``.

Zimmerer et al., "Context-encoding Variational Autoencoder for Unsupervised Anomaly Detection"
(MIDL 2019 abstract, arXiv:1812.05941) and "Unsupervised Anomaly Localization using Variational
Auto-Encoders" (MICCAI 2019) train one VAE on two tasks: the ELBO on the unerased image, and a
context-encoding (CE) task, in-painting regions erased from the input with the same encoder and
decoder. The CE task forces the decoder to use the context around a region, which sharpens the
reconstruction of healthy tissue. Their anomaly score combines the reconstruction error with the
gradient of the ELBO with respect to the input ("combi": the voxel-wise product), which highlights
the voxels that the model would change most to make the image healthier.

Here the network is Bengs et al.'s dense VAE (:mod:`uadlab.models.dense_vae`), and the erasing is
the suite's (:mod:`uadlab.training.erasing`): a ``cevae`` experiment names an erasing method,
``cevae:2D-Patch-n`` or ``cevae:3D-Cube-n``, and the training loop hands the model the erased input
and the unerased target (erasing with probability 0.5, Bengs et al. 2021, Sec. 2.2). A ``None``
experiment is refused: without erased regions the CE task would be the VAE's own.

Settings (the profile's backbone, as the VAEs): ``lab`` channels ``(16, 32, 64, 128)``, ``paper``
``(32, 64, 128, 256)``; latent 128 (2D) / 512 (3D); CE weight 1 (the two losses summed, as
Zimmerer et al.).

Shape:
    - Input: ``(B, 1, S, S)`` (2D) or ``(B, 1, S, S, S)`` (3D), float32 in [0, 1].
    - ``anomaly_score``: the input's shape, non-negative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from uadlab._checks import check_real
from uadlab.models.base import LossTerms
from uadlab.models.dense_vae import DenseVAE
from uadlab.models.registry import register
from uadlab.models.vae import elbo_loss, kl_divergence

__all__ = ["CeVAE", "CeVAEConfig", "combined_score"]


@dataclass(frozen=True)
class CeVAEConfig:
    """Arguments of :class:`CeVAE`, saved with every run."""

    spatial_dims: int
    image_size: int = 64
    latent_dim: int | None = None
    channels: tuple[int, ...] = (32, 64, 128, 256)
    in_channels: int = 1
    ce_weight: float = 1.0

    @classmethod
    def from_profile(cls, profile: Any, spatial_dims: int, image_size: int, **options: Any) -> CeVAEConfig:
        """The profile's backbone and latent size, as the dense VAE."""
        return cls(spatial_dims, image_size, profile.latent_dim(spatial_dims), tuple(profile.channels), **options)


def combined_score(residual: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Zimmerer et al.'s "combi" score: the residual times the magnitude of the ELBO's input gradient.

    Args:
        residual: ``|x - x_hat|``, any shape.
        gradient: ``d(-ELBO)/dx``, the shape of ``residual``.

    >>> combined_score(torch.tensor([0.5, 0.2, 0.0]), torch.tensor([-2.0, 1.0, 3.0])).tolist()
    [1.0, 0.20000000298023224, 0.0]
    """
    return residual * gradient.abs()


class CeVAE(DenseVAE):
    """Context-encoding VAE: the dense VAE trained on the ELBO plus in-painting (Zimmerer et al. 2019).

    Loss of a batch: ``ELBO(x) + ce_weight * l1(decode(mu(x_erased)), x)``, both per sample (l1 summed
    over voxels, mean over the batch); the CE branch decodes the posterior mean, as a plain context
    encoder. Anomaly score: :func:`combined_score` of the residual and ``d(-ELBO)/dx`` (eval mode,
    ``z = mu``).

    Args:
        spatial_dims: 2 (axial slices) or 3 (volumes).
        image_size: edge ``S`` of the input, voxels; a multiple of ``2**len(channels)``.
        latent_dim: latent size; ``None``: 128 (2D) or 512 (3D).
        channels: encoder feature maps, one per stride-2 stage.
        in_channels: image channels (1: T1).
        ce_weight: weight of the context-encoding term, ``>= 0``.

    Raises:
        TypeError, ValueError: as :class:`~uadlab.models.dense_vae.DenseVAE`; a negative ``ce_weight``.
    """

    def __init__(self, spatial_dims: int, *, image_size: int = 64, latent_dim: int | None = None,
                 channels: tuple[int, ...] = (32, 64, 128, 256), in_channels: int = 1, ce_weight: float = 1.0) -> None:
        super().__init__(spatial_dims, image_size=image_size, latent_dim=latent_dim, channels=channels,
                         in_channels=in_channels)
        self.ce_weight = float(check_real("ce_weight", ce_weight, "a non-negative number", lambda v: v >= 0))
        self.config = CeVAEConfig(self.spatial_dims, self.image_size, self.latent_dim, self.channels,
                                  self.in_channels, self.ce_weight)

    def training_loss(self, inputs: torch.Tensor, target: torch.Tensor) -> LossTerms:
        """ELBO on the unerased ``target`` plus the weighted in-painting l1 of the erased ``inputs``."""
        vae = elbo_loss(self(target), target)
        self.check_input(inputs, "inputs")
        inpainted = self.decoder(self.to_mu(self.encoder(inputs)))
        context = (inpainted - target).abs().flatten(1).sum(1).mean()
        return LossTerms(vae.total + self.ce_weight * context, vae.recon, vae.kl)

    def anomaly_score(self, samples: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """Residual times ``|d(-ELBO)/dx|`` per voxel (call in eval mode; gradients are enabled here).

        ``-ELBO(x) = sum_v |x_v - x_hat_v| + KL(q(z|x) || N(0, I))`` with ``z = mu``; samples of a
        batch are independent in eval mode, so one backward pass gives every sample's gradient.
        """
        with torch.enable_grad():
            x = samples.detach().float().requires_grad_(True)
            out = self(x)
            loss = (out.recon.float() - x).abs().sum() + kl_divergence(out.mu.float(), out.logvar.float()).sum()
            (gradient,) = torch.autograd.grad(loss, x)
        return combined_score((samples.float() - recon.float()).abs(), gradient)


register("cevae", CeVAE, CeVAEConfig, requires_erasing=True,
         description="context-encoding VAE, residual x ELBO gradient (Zimmerer et al. 2019)")
