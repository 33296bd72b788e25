"""A no-learning floor: the voxel-wise mean of the healthy training volumes, registry name ``mean-image``.

Its "reconstruction" of any volume is the mean healthy volume (after the same preprocessing), so its
residual ``|x - mean|`` flags whatever deviates from the average brain. Simple intensity baselines
are known to rival learned UAD methods on brain MRI (Meissen et al., "Challenging current
semi-supervised anomaly segmentation methods for brain MRI", 2021): a benchmark without this floor
flatters every model. It is fitted in closed form (one pass, no gradient steps) and scored by the
same protocol as any model.

3D only: a slice's mean depends on its axial position, which a 2D model never sees. Spatial erasing
does not apply (only ``mean-image:3D-None``).

Shape:
    - ``fit`` samples: ``(N, 1, S, S, S)``; ``reconstruct``: ``(B, 1, S, S, S)`` -> the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from uadlab._checks import check_int
from uadlab.models.base import LossTerms, ModelBase
from uadlab.models.registry import register

__all__ = ["MeanImage", "MeanImageConfig"]


@dataclass(frozen=True)
class MeanImageConfig:
    """Arguments of :class:`MeanImage`, saved with every run."""

    spatial_dims: int = 3
    image_size: int = 64
    in_channels: int = 1

    @classmethod
    def from_profile(cls, profile: Any, spatial_dims: int, image_size: int, **options: Any) -> MeanImageConfig:
        """Nothing to take from the profile but the image size."""
        return cls(spatial_dims, image_size, **options)


class MeanImage(ModelBase):
    """The mean healthy training volume as every volume's reconstruction (a floor for UAD models).

    Args:
        spatial_dims: must be 3.
        image_size: edge ``S`` of the cubic volumes, voxels.
        in_channels: image channels (1: T1).

    Raises:
        TypeError: a size that is not an int.
        ValueError: ``spatial_dims`` not 3, or a size that is not positive.
    """

    fitted_in_closed_form = True

    def __init__(self, spatial_dims: int = 3, *, image_size: int = 64, in_channels: int = 1) -> None:
        super().__init__()
        if spatial_dims != 3 or isinstance(spatial_dims, bool):
            raise ValueError(f"`spatial_dims` must be 3 for the mean image, got {spatial_dims!r}")
        self.spatial_dims = 3
        self.image_size = check_int("image_size", image_size, "a positive int", lambda v: v > 0)
        self.in_channels = check_int("in_channels", in_channels, "a positive int", lambda v: v > 0)
        self.config = MeanImageConfig(3, self.image_size, self.in_channels)
        self.register_buffer("mean", torch.zeros(self.input_shape))

    def fit(self, samples: np.ndarray | torch.Tensor) -> None:
        """Set the mean image to the voxel-wise mean of ``samples`` ``(N, 1, S, S, S)`` (float64 sum).

        Raises:
            TypeError, ValueError: ``samples`` is not a ``(N, *input_shape)`` array or tensor.
        """
        samples = torch.as_tensor(np.asarray(samples) if not isinstance(samples, torch.Tensor) else samples)
        self.check_input(samples, "samples")
        self.mean.copy_(samples.double().mean(0).to(self.mean.dtype))

    def reconstruct(self, samples: torch.Tensor) -> torch.Tensor:
        """The mean image, once per sample."""
        self.check_input(samples, "samples")
        return self.mean.to(samples.device).expand_as(samples).clone()

    def validation_terms(self, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean image per sample, zeros)``: no latent, no KL."""
        return self.reconstruct(samples), samples.new_zeros(len(samples))

    def training_loss(self, inputs: torch.Tensor, target: torch.Tensor) -> LossTerms:
        """The l1 of the mean image against ``target`` (reported only: the model is fitted, not trained)."""
        recon = self.reconstruct(inputs)
        l1 = (recon - target).abs().flatten(1).sum(1).mean()
        return LossTerms(l1, l1, l1.new_zeros(()))


register("mean-image", MeanImage, MeanImageConfig, spatial_dims=(3,), erasing=False,
         description="voxel-wise mean of the healthy training volumes (no learning; a floor)")
