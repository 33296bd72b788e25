"""Tests of uadlab.speed.channels_last: VAE weights channels-last on a CPU, the same reconstruction."""

from __future__ import annotations

import pytest
import torch
from conftest import VAE_SIZE, tiny_vae, vae_batch

from uadlab.models import build_model, model_config
from uadlab.profiles import get_profile
from uadlab.speed import to_device


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_to_device_stores_vae_weights_channels_last_and_keeps_the_reconstruction(spatial_dims):
    model = tiny_vae(spatial_dims).eval()
    x = vae_batch(spatial_dims)
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
    ddpm = build_model("ddpm", model_config("ddpm", get_profile("smoke"), spatial_dims, VAE_SIZE))
    to_device(ddpm, "cpu")  # its U-Net ran slower channels-last: left in the default layout
    assert all(p.is_contiguous() for p in ddpm.parameters())
