"""The VAE decoder's output layer, computed faster on a CPU (a sub-pixel convolution).

:class:`SubPixelConvTranspose` replaces ``ConvTranspose2d``/``ConvTranspose3d`` with kernel 4, stride
2 and padding 1 in :func:`uadlab.models.vae.decoder_stages`; it has the same parameters and state
dict, so runs and checkpoints do not know it is there.

Shape:
    ``(B, C_in, n, n[, n]) -> (B, C_out, 2n, 2n[, 2n])``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["SubPixelConvTranspose", "subpixel_conv_transpose"]


class SubPixelConvTranspose:
    """The decoder's output layer (``ConvTranspose`` with kernel 4, stride 2, padding 1) computed on a
    CPU as one stride-1 convolution and a pixel shuffle (the sub-pixel convolution of Shi et al. 2016,
    here without extra work): same parameters, same state dict, same result up to float rounding.

    A stride-2 transposed convolution writes output voxel ``o = 2i - 1 + k`` from input voxel ``i``
    and kernel tap ``k``, so along each axis an output of parity ``r`` reads only two taps of two
    neighbouring inputs. One convolution with kernel 2 and padding 1 computes, per output channel, all
    ``2**d`` parities at once (``2**d`` times the channels, at ``n + 1`` positions per axis; tap
    ``j`` of phase ``s = 1 - r`` is the transposed kernel's ``k = 2 + s - 2j``); the pixel shuffle
    interleaves them and dropping the first and last voxel of each axis leaves the ``2n`` outputs.
    That is as many multiply-adds as the transposed convolution (plus the ``n + 1``-th position), but
    oneDNN runs it as an ordinary convolution: its transposed convolution to one channel is slow.

    Measured on 2 CPU cores (AVX512-BF16), 3D lab VAE (``16 -> 1`` channels, ``32^3 -> 64^3``, batch
    8, bf16), forward and backward of the layer: 57 ms native, 28 ms here; the dense VAE's training
    step 1.18x faster with this layer alone and 1.40x with channels-last weights as well
    (:func:`uadlab.speed.channels_last.to_device`), same process. In 2D the step gains 1-2 %, within the
    noise. Other devices run the native transposed convolution (not measured there).

    Shape:
        ``(B, C_in, n, n[, n]) -> (B, C_out, 2n, 2n[, 2n])``.
    """

    #: The transposed kernel's tap read by tap ``j`` of phase ``s``, at ``[2 * s + j]``, along each axis.
    _TAPS = torch.tensor([2, 0, 3, 1])

    def __init__(self, in_channels: int, out_channels: int, *args: Any, **kwargs: Any) -> None:
        super().__init__(in_channels, out_channels, *args, **kwargs)
        d = len(self.kernel_size)
        if (self.kernel_size, self.stride, self.padding, self.output_padding, self.dilation, self.groups) != (
                (4,) * d, (2,) * d, (1,) * d, (0,) * d, (1,) * d, 1):
            raise ValueError("SubPixelConvTranspose needs kernel 4, stride 2, padding 1 (and no output "
                             "padding, dilation or groups)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The transposed convolution of ``x``: sub-pixel on a CPU, native elsewhere."""
        if x.device.type != "cpu":
            return super().forward(x)
        d, c_out = x.ndim - 2, self.out_channels
        weight = self.weight  # (C_in, C_out, 4, 4[, 4])
        for axis in range(2, 2 + 2 * d, 2):  # each kernel axis -> (phase s, tap j)
            weight = weight.index_select(axis, self._TAPS).unflatten(axis, (2, 2))
        phases, kernel = list(range(2, 2 + 2 * d, 2)), list(range(3, 3 + 2 * d, 2))
        weight = weight.permute(1, *phases, 0, *kernel).reshape(c_out * 2**d, -1, *(2,) * d)
        bias = None if self.bias is None else self.bias.repeat_interleave(2**d)
        res = self._conv(x, weight, bias, padding=1)  # (B, C_out * 2**d, n + 1, ...), channel = (c, s...)
        size = res.shape[2:]
        out = res.unflatten(1, (c_out,) + (2,) * d)  # (B, C_out, s_1..s_d, m_1..m_d)
        out = out.permute(0, 1, *(i for a in range(d) for i in (2 + d + a, 2 + a)))
        out = out.reshape(x.shape[0], c_out, *(2 * m for m in size))
        return out[(..., *(slice(1, -1),) * d)]


class _SubPixelConvTranspose2d(SubPixelConvTranspose, nn.ConvTranspose2d):
    _conv = staticmethod(nn.functional.conv2d)


class _SubPixelConvTranspose3d(SubPixelConvTranspose, nn.ConvTranspose3d):
    _conv = staticmethod(nn.functional.conv3d)


def subpixel_conv_transpose(spatial_dims: int) -> type[nn.Module]:
    """The ``ConvTranspose2d`` (``spatial_dims`` 2) or ``ConvTranspose3d`` (3) subclass of
    :class:`SubPixelConvTranspose`.

    Raises:
        ValueError: ``spatial_dims`` is not 2 or 3.
    """
    if spatial_dims not in (2, 3) or isinstance(spatial_dims, bool):
        raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims!r}")
    return _SubPixelConvTranspose2d if spatial_dims == 2 else _SubPixelConvTranspose3d
