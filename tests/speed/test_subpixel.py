"""Tests of uadlab.speed.subpixel: the sub-pixel output layer equals the transposed convolution."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from uadlab.models.vae import decoder_stages
from uadlab.speed import SubPixelConvTranspose, subpixel_conv_transpose


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_sub_pixel_output_layer_is_the_transposed_convolution(spatial_dims, bias):
    torch.manual_seed(0)
    native = (nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d)(5, 3, 4, 2, 1, bias=bias).double()
    output = decoder_stages(spatial_dims, (5,), 3)[0]  # the output layer of a one-stage decoder
    assert isinstance(output, SubPixelConvTranspose) and isinstance(output, type(native))
    layer = type(output)(5, 3, 4, 2, 1, bias=bias).double()
    layer.load_state_dict(native.state_dict())  # same parameters: checkpoints load either way
    x = torch.randn(2, 5, 6, 7, *(5,) * (spatial_dims - 2), dtype=torch.float64, requires_grad=True)
    expected, got = native(x), layer(x)
    assert got.shape == expected.shape == (2, 3, 12, 14, *(10,) * (spatial_dims - 2))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    grad = torch.randn_like(expected)
    got_grads = torch.autograd.grad(got, [x, layer.weight], grad)
    for a, b in zip(got_grads, torch.autograd.grad(expected, [x, native.weight], grad)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="kernel 4, stride 2, padding 1"):
        type(layer)(5, 3, 3, 1, 1)


def test_subpixel_conv_transpose_picks_the_class_by_spatial_dims():
    assert issubclass(subpixel_conv_transpose(2), nn.ConvTranspose2d)
    assert issubclass(subpixel_conv_transpose(3), nn.ConvTranspose3d)
    with pytest.raises(ValueError, match="`spatial_dims` must be 2 or 3, got 1"):
        subpixel_conv_transpose(1)
