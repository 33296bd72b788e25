"""A second no-learning floor: the normative z-score of each voxel, registry name ``zscore``.

The voxel-wise mean ``mu`` and standard deviation ``sigma`` of the healthy training volumes form a
normative model of the brain; a voxel's anomaly score is how many standard deviations it lies from
the healthy mean, ``|x - mu| / sigma``. Where :mod:`uadlab.models.mean_image` flags every deviation
alike, this floor discounts voxels that vary among healthy brains too (ventricles, the cortex's
edge). Such voxel-wise normative maps are the classical baseline of lesion detection (e.g. the
z-score maps of voxel-based morphometry); like the mean image they need no training, and a
benchmark without them flatters every model (Meissen et al. 2021). Its "reconstruction" (the
pseudo-healthy image the widgets show) is the mean image.

``sigma`` is floored at :data:`MIN_STD` (intensity units), so that voxels constant across the
healthy volumes (the background, 0) do not divide by zero: a deviation there scores
``|x - mu| / MIN_STD``.

3D only, like the mean image: a 2D model never sees a slice's axial position, which the statistics
depend on; a 2D floor that knew it would give the 3D floor's maps exactly. Settings: none to tune,
``lab`` and ``paper`` alike (the profile sets only the image size).

Shape:
    - ``fit`` samples: ``(N, 1, S, S, S)``; ``reconstruct`` and ``anomaly_score``: ``(B, 1, S, S, S)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from uadlab.models.mean_image import MeanImage, MeanImageConfig
from uadlab.models.registry import register

__all__ = ["ZScore", "ZScoreConfig", "MIN_STD"]

#: Floor of the healthy standard deviation, intensity units of images in [0, 1].
MIN_STD = 0.01


@dataclass(frozen=True)
class ZScoreConfig(MeanImageConfig):
    """Arguments of :class:`ZScore` (those of the mean image), saved with every run."""


class ZScore(MeanImage):
    """Voxel-wise healthy mean and standard deviation; anomaly score ``|x - mu| / max(sigma, MIN_STD)``.

    Args:
        spatial_dims: must be 3.
        image_size: edge ``S`` of the cubic volumes, voxels.
        in_channels: image channels (1: T1).

    Raises:
        TypeError: a size that is not an int.
        ValueError: ``spatial_dims`` not 3, or a size that is not positive.
    """

    def __init__(self, spatial_dims: int = 3, *, image_size: int = 64, in_channels: int = 1) -> None:
        super().__init__(spatial_dims, image_size=image_size, in_channels=in_channels)
        self.config = ZScoreConfig(3, self.image_size, self.in_channels)
        self.register_buffer("std", torch.ones(self.input_shape))

    def fit(self, samples: np.ndarray | torch.Tensor) -> None:
        """Set ``mean`` and ``std`` (population sd, float64 sums) from ``samples`` ``(N, 1, S, S, S)``.

        Raises:
            TypeError, ValueError: ``samples`` is not a ``(N, *input_shape)`` array or tensor.
        """
        super().fit(samples)
        samples = torch.as_tensor(np.asarray(samples) if not isinstance(samples, torch.Tensor) else samples)
        self.std.copy_(samples.double().std(0, correction=0).to(self.std.dtype))

    def anomaly_score(self, samples: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        """``|x - mu| / max(sigma, MIN_STD)`` voxel-wise (``recon`` is the mean image).

        >>> model = ZScore(image_size=2)
        >>> model.fit(torch.tensor([0.2, 0.4]).view(2, 1, 1, 1, 1).expand(2, 1, 2, 2, 2))
        >>> x = torch.full((1, 1, 2, 2, 2), 0.5)
        >>> round(float(model.anomaly_score(x, model.reconstruct(x))[0, 0, 0, 0, 0]), 6)  # |0.5 - 0.3| / 0.1
        2.0
        """
        std = self.std.to(samples.device).clamp_min(MIN_STD)
        return (samples.float() - self.mean.to(samples.device)).abs() / std


register("zscore", ZScore, ZScoreConfig, spatial_dims=(3,), erasing=False,
         description="voxel-wise healthy mean and sd, score |x - mu| / sigma (no learning; a floor)")
