"""The denoising autoencoder with coarse noise of Kascenas et al. (MIDL 2022): registry name ``dae``.

Kascenas, Pugeault and O'Neil, "Denoising Autoencoders for Unsupervised Anomaly Detection in Brain
MRI" (MIDL 2022), train a U-Net, with skip connections and no bottleneck, to remove *coarse* noise
from healthy images: Gaussian noise drawn on a grid much coarser than the image and upsampled, so
that it looks like a smooth, blob-shaped intensity change rather than grain. To remove it, the
network must learn what healthy tissue looks like at the scale of a lesion; at test time the clean
input goes in unchanged and a lesion, which the network takes for noise, is "denoised" away. The
residual ``|x - x_hat|`` is the anomaly map. A known strong and simple baseline: it beat VAEs and
other reconstruction models on BraTS in their study (and in later benchmarks).

Coarse noise (:func:`coarse_noise`): white Gaussian noise low-pass filtered in the Fourier domain
to the frequencies of a ``noise_size``-voxel grid, i.e. noise drawn on that grid and upsampled by
ideal (band-limited) interpolation, rescaled to ``noise_std``. The spatial cut-off is therefore exact:
no energy above ``noise_size / 2`` cycles per image edge (interpolating with a linear kernel, as
the paper's code does, leaks some above it). Kascenas et al. draw noise of sd 0.2 at 16 x 16 for
128 x 128 slices (an eighth of the edge); ``noise_size`` is an eighth of the edge here too
(8 at 64 voxels), and noise is added to the foreground (``x > 0``) only, the brain after skull
stripping.

Network: :class:`monai.networks.nets.UNet` with stride-2 levels, instance norm and PReLU (MONAI's
defaults), then a sigmoid so reconstructions stay in [0, 1] like the other families'. Training loss:
the squared error between output and clean image (summed over a sample's voxels); the l1 term is
reported for histories, in the unit every model reports.

Settings: ``lab`` channels ``(16, 32, 64, 128)`` (2D) and ``(8, 16, 32, 64)`` (3D: a full-resolution
3D U-Net is the costliest network of the zoo), no residual units; ``paper`` channels ``(32, 64, 128,
256)`` with 2 residual units per level (Kascenas et al. use a 4-level U-Net of 64+ maps on 128^2).

Shape:
    - Input: ``(B, 1, S, S)`` (2D) or ``(B, 1, S, S, S)`` (3D), float32 in [0, 1]; ``S`` a multiple of
      ``2 ** (len(channels) - 1)`` and of ``noise_size``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from monai.networks.nets import UNet

from uadlab._checks import check_int, check_real
from uadlab.models.base import LossTerms, ModelBase
from uadlab.models.registry import register

__all__ = ["DAE", "DAEConfig", "coarse_noise", "NOISE_STD", "NOISE_FRACTION"]

#: Standard deviation of the coarse noise, intensity units of images in [0, 1] (Kascenas et al.: 0.2).
NOISE_STD = 0.2
#: Edge of the coarse noise grid as a fraction of the image edge (Kascenas et al.: 16 of 128).
NOISE_FRACTION = 1 / 8


@dataclass(frozen=True)
class DAEConfig:
    """Arguments of :class:`DAE`, saved with every run."""

    spatial_dims: int
    image_size: int = 64
    channels: tuple[int, ...] = (32, 64, 128, 256)
    num_res_units: int = 0
    in_channels: int = 1
    noise_size: int | None = None
    noise_std: float = NOISE_STD

    @classmethod
    def from_profile(cls, profile: Any, spatial_dims: int, image_size: int, **options: Any) -> DAEConfig:
        """``lab``/``smoke``: the profile's channels (halved in 3D), no residual units; ``paper``: 2 units."""
        channels = tuple(profile.channels)
        if profile.name == "paper":
            return cls(spatial_dims, image_size, channels, **{"num_res_units": 2, **options})
        if spatial_dims == 3:
            channels = tuple(max(4, c // 2) for c in channels)
        return cls(spatial_dims, image_size, channels, **options)


def coarse_noise(shape: tuple[int, ...], noise_size: int, std: float, *, generator: torch.Generator | None = None,
                 device: str | torch.device | None = None) -> torch.Tensor:
    """Gaussian noise band-limited to a coarse grid: no energy above ``noise_size / 2`` cycles per edge.

    White noise is filtered in the Fourier domain: every frequency with ``|k| >= noise_size / 2`` on
    some axis is zeroed (the band of a ``noise_size`` grid upsampled by ideal interpolation), and the
    result is scaled so that its expected standard deviation is ``std``.

    Args:
        shape: ``(B, C, S, S[, S])``; every spatial edge ``>= noise_size``.
        noise_size: edge of the coarse grid, voxels (positive).
        std: standard deviation, intensity units (``>= 0``).
        generator: the random generator; ``None``: torch's global one.
        device: where to draw.

    Returns:
        float32 tensor of ``shape``.

    Raises:
        TypeError, ValueError: a bad ``noise_size`` or ``std``, or a spatial edge below ``noise_size``.
    """
    check_int("noise_size", noise_size, "a positive int", lambda v: v > 0)
    check_real("std", std, "a non-negative number", lambda v: v >= 0)
    edges = tuple(shape[2:])
    if not edges or min(edges) < noise_size:
        raise ValueError(f"`shape` must have spatial edges of at least noise_size={noise_size}, got {shape!r}")
    white = torch.randn(shape, generator=generator, device=device)
    dims = tuple(range(2, len(shape)))
    spectrum = torch.fft.fftn(white, dim=dims)
    keep = torch.ones(edges, dtype=torch.bool, device=white.device)
    for axis, edge in enumerate(edges):
        frequencies = torch.fft.fftfreq(edge, d=1 / edge, device=white.device).abs()  # cycles per edge
        band = (frequencies < noise_size / 2).view([-1 if a == axis else 1 for a in range(len(edges))])
        keep = keep & band
    kept = int(keep.sum())
    noise = torch.fft.ifftn(spectrum * keep, dim=dims).real
    return noise * (std * math.sqrt(math.prod(edges) / kept))


class DAE(ModelBase):
    """U-Net denoising autoencoder trained to remove coarse noise (Kascenas et al., MIDL 2022).

    Args:
        spatial_dims: 2 (axial slices) or 3 (volumes).
        image_size: edge ``S`` of the input, voxels.
        channels: U-Net feature maps per level (stride 2 between levels).
        num_res_units: residual units per level (0: plain convolutions).
        in_channels: image channels (1: T1).
        noise_size: edge of the coarse noise grid, voxels; ``None``: ``image_size / 8``.
        noise_std: noise standard deviation, intensity units.

    Raises:
        TypeError: a size that is not an int, a ``noise_std`` that is not a number.
        ValueError: ``spatial_dims`` not 2 or 3; ``image_size`` not a positive multiple of
            ``2 ** (len(channels) - 1)``; fewer than 2 levels; a size that is not positive; a
            ``noise_size`` above ``image_size``; a negative ``noise_std``.
    """

    def __init__(self, spatial_dims: int, *, image_size: int = 64, channels: tuple[int, ...] = (32, 64, 128, 256),
                 num_res_units: int = 0, in_channels: int = 1, noise_size: int | None = None,
                 noise_std: float = NOISE_STD) -> None:
        super().__init__()
        if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
            raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims!r}")
        channels = tuple(check_int("channels", c, "a tuple of >= 2 positive ints", lambda v: v > 0) for c in channels)
        if len(channels) < 2:
            raise ValueError(f"`channels` must be a tuple of >= 2 positive ints, got {channels!r}")
        factor = 2 ** (len(channels) - 1)
        self.spatial_dims = int(spatial_dims)
        self.image_size = check_int("image_size", image_size, f"a positive multiple of {factor}",
                                    lambda v: v > 0 and v % factor == 0)
        self.in_channels = check_int("in_channels", in_channels, "a positive int", lambda v: v > 0)
        num_res_units = check_int("num_res_units", num_res_units, "a non-negative int", lambda v: v >= 0)
        noise_size = max(1, round(self.image_size * NOISE_FRACTION)) if noise_size is None else noise_size
        self.noise_size = check_int("noise_size", noise_size, f"a positive int <= image_size ({self.image_size})",
                                    lambda v: 0 < v <= self.image_size)
        self.noise_std = float(check_real("noise_std", noise_std, "a non-negative number", lambda v: v >= 0))
        self.config = DAEConfig(self.spatial_dims, self.image_size, channels, num_res_units, self.in_channels,
                                self.noise_size, self.noise_std)
        self.unet = UNet(self.spatial_dims, self.in_channels, self.in_channels, channels, (2,) * (len(channels) - 1),
                         num_res_units=num_res_units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The denoised image, in (0, 1).

        Raises:
            TypeError, ValueError: ``x`` is not a ``(B, *input_shape)`` tensor.
        """
        self.check_input(x)
        return torch.sigmoid(self.unet(x))

    def training_loss(self, inputs: torch.Tensor, target: torch.Tensor) -> LossTerms:
        """Squared error of ``self(inputs + coarse noise on the foreground)`` against ``target``.

        Noise comes from torch's global generator (seeded per epoch by the training loop).
        """
        noise = coarse_noise(tuple(inputs.shape), self.noise_size, self.noise_std, device=inputs.device)
        recon = self(inputs + noise * (inputs > 0))
        error = (recon.float() - target).flatten(1)
        l1 = error.abs().sum(1).mean().detach()
        return LossTerms(error.pow(2).sum(1).mean(), l1, l1.new_zeros(()))

    def validation_terms(self, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(recon of the clean input, zeros)``: no latent, no KL."""
        return self(samples), samples.new_zeros(len(samples))

    def reconstruct(self, samples: torch.Tensor) -> torch.Tensor:
        """The clean input, denoised: what the network takes for noise (a lesion) is removed."""
        return self(samples)


register("dae", DAE, DAEConfig, erasing=False,
         description="U-Net denoising autoencoder with coarse noise (Kascenas et al. 2022)")
