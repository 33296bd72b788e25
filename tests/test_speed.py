"""Tests of uadlab.speed: the sub-pixel output layer and channels-last weights (same numbers, less time).

Data-parallel training under torchrun (uadlab.speed.distributed) is tests/test_distributed.py.
"""

from __future__ import annotations

import pytest
import torch
from test_models import SIZE, _batch, _tiny  # tests/ is on sys.path under pytest
from torch import nn

from uadlab.models import build_model, model_config
from uadlab.models.vae import decoder_stages
from uadlab.profiles import get_profile
from uadlab.speed import SubPixelConvTranspose, subpixel_conv_transpose, to_device


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_to_device_stores_vae_weights_channels_last_and_keeps_the_reconstruction(spatial_dims):
    model = _tiny(spatial_dims).eval()
    x = _batch(spatial_dims)
    with torch.no_grad():
        before = model.reconstruct(x)
    assert to_device(model, "cpu") is model
    layout = torch.channels_last if spatial_dims == 2 else torch.channels_last_3d
    weights = [p for p in model.parameters() if p.ndim == spatial_dims + 2]
    assert any(w.shape[0] == 1 or w.shape[1] == 1 for w in weights)  # first and last layer: one channel
    # channel stride 1 even for one channel, where Tensor.contiguous(memory_format=...) changes nothing
    assert all(w.is_contiguous(memory_format=layout) and w.stride(1) == 1 for w in weights)
    with torch.no_grad():
        torch.testing.assert_close(model.reconstruct(x), before, atol=1e-5, rtol=0)
    ddpm = build_model("ddpm", model_config("ddpm", get_profile("smoke"), spatial_dims, SIZE))
    to_device(ddpm, "cpu")  # its U-Net ran slower channels-last: left in the default layout
    assert all(p.is_contiguous() for p in ddpm.parameters())


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
