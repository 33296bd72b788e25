"""The segmenter of Behrendt et al. 2024: a U-Net reading ``(image, recon)`` pairs, and its anomaly map.

Behrendt et al. 2024 keep a reconstruction model trained on healthy brains and add a supervised
segmentation network that reads the image beside its pseudo-healthy reconstruction. Here that network
is one MONAI :class:`~monai.networks.nets.UNet` with the two as input channels, not their Siamese
encoder (one encoder per input, features concatenated): stacking the channels lets the first
convolution compare them voxel by voxel, needs half the encoder compute, and is the network MONAI
ships for 2D and 3D alike; their Siamese encoder mainly serves reuse of a pretrained encoder, which
this lab does not have. How it is trained (synthetic anomalies, early stopping on the validation
Dice) is :mod:`uadlab.training.segmenter`.

The segmenter keeps the default weight layout on every device: channels-last 3D weights made this
U-Net's CPU training step 0.92-0.93x as fast (2-channel input, batch 8 at 64^3, issue 16).

Shape:
    - Input: ``(B, 2, S, S)`` (2D, axial slices) or ``(B, 2, S, S, S)`` (3D): channel 0 the image,
      channel 1 its reconstruction, float32 in [0, 1].
    - Output: logits of the anomaly probability, ``(B, 1, S, S[, S])``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.networks.nets import UNet
from torch import nn

from uadlab._checks import check_int
from uadlab.models.base import samples_to_volumes, volumes_to_samples

__all__ = ["Segmenter", "segment"]


class Segmenter(nn.Module):
    """MONAI ``UNet(spatial_dims, 2 -> 1, channels, strides 2, num_res_units)`` on ``(image, recon)``.

    Args:
        spatial_dims: 2 (axial slices) or 3 (volumes).
        channels: feature maps per U-Net level (strides 2 between levels), positive ints.
        num_res_units: residual units per U-Net block, ``>= 0``.

    Raises:
        ValueError: ``spatial_dims`` not 2 or 3, ``channels`` empty or not positive ints,
            ``num_res_units`` negative.

    Shape:
        - :meth:`forward`: ``(B, 2, S, S[, S])`` -> logits ``(B, 1, S, S[, S])``; ``S`` a multiple of
          ``2 ** (len(channels) - 1)``.
    """

    def __init__(self, spatial_dims: int, channels: Sequence[int], num_res_units: int) -> None:
        super().__init__()
        if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
            raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims!r}")
        channels = tuple(channels)
        if not channels or not all(isinstance(c, int) and c > 0 for c in channels):
            raise ValueError(f"`channels` must be positive ints, got {channels!r}")
        check_int("num_res_units", num_res_units, "an int >= 0", lambda v: v >= 0)
        self.spatial_dims = spatial_dims
        self.unet = UNet(spatial_dims, 2, 1, channels=channels, strides=(2,) * (len(channels) - 1),
                         num_res_units=num_res_units)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """Logits of the anomaly probability of every voxel."""
        return self.unet(pairs)


@torch.no_grad()
def segment(segmenter: Segmenter, images: np.ndarray, recons: np.ndarray, *, batch_size: int = 32,
            device: str | torch.device | None = None) -> np.ndarray:
    """The segmenter's anomaly probability (sigmoid) of whole volumes.

    Args:
        segmenter: a trained :class:`Segmenter`.
        images: ``(X, Y, Z)`` or ``(N, X, Y, Z)`` in [0, 1].
        recons: their reconstructions, same shape.
        batch_size: slices (2D) or volumes (3D) per pass.
        device: where to run; ``None``: where the segmenter's parameters are.

    Returns:
        float32 probabilities in [0, 1], ``images``' shape.

    Raises:
        ValueError: shapes differ or are not 3D/4D.
    """
    images, recons = np.asarray(images, np.float32), np.asarray(recons, np.float32)
    if images.shape != recons.shape or images.ndim not in (3, 4):
        raise ValueError(f"`images` and `recons` must be (X, Y, Z) or (N, X, Y, Z) of one shape, got "
                         f"{images.shape} and {recons.shape}")
    stack_i, stack_r = (a[None] if a.ndim == 3 else a for a in (images, recons))
    dims = segmenter.spatial_dims
    pairs = np.concatenate([volumes_to_samples(stack_i, dims), volumes_to_samples(stack_r, dims)], axis=1)
    device = next(segmenter.parameters()).device if device is None else torch.device(device)
    was_training = segmenter.training
    segmenter.to(device).eval()
    try:
        probs = np.concatenate([torch.sigmoid(segmenter(torch.from_numpy(pairs[i:i + batch_size]).to(device)))
                                .float().cpu().numpy() for i in range(0, len(pairs), batch_size)])
    finally:
        segmenter.train(was_training)
    out = samples_to_volumes(probs, len(stack_i), dims)
    return out[0] if images.ndim == 3 else out
