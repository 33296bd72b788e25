"""Tests of uadlab.models.cddpm: the DDPM conditioned on a learned latent of its input (Behrendt et al.).

The condition must reach the denoiser (two inputs with the same noised image get different noise
predictions), the condition encoder must learn from the diffusion loss (it is trained jointly), the
profile's settings must follow the reference (128-vector, one step at t = 500), and the plain ``ddpm``
must stay unconditioned.
"""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_PROFILE, TINY_SIZE

from uadlab.models import CDDPM, DDPM, build_model, model_config
from uadlab.profiles import get_profile


def _model(spatial_dims: int = 2, seed: int = 0) -> CDDPM:
    torch.manual_seed(seed)
    return build_model("cddpm", model_config("cddpm", TINY_PROFILE, spatial_dims, TINY_SIZE))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_the_denoiser_reads_the_inputs_condition(spatial_dims):
    model = _model(spatial_dims)
    shape = (2, 1) + (TINY_SIZE,) * spatial_dims
    torch.manual_seed(1)
    clean_a, clean_b, noisy = torch.rand(shape) * 2 - 1, torch.rand(shape) * 2 - 1, torch.randn(shape)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):  # MONAI zero-initialises the output and attention projections: steps give them weights
        optimizer.zero_grad()
        model.training_loss((clean_a + 1) / 2, (clean_a + 1) / 2).total.backward()
        optimizer.step()
    model.eval()
    steps = torch.full((2,), 500)
    with torch.no_grad():
        context_a, context_b = model.condition(clean_a), model.condition(clean_b)
        assert context_a.shape == (2, 1, 128)
        same = model.unet(noisy, timesteps=steps, context=context_a)
        assert torch.equal(same, model.unet(noisy, timesteps=steps, context=context_a))
        other = model.unet(noisy, timesteps=steps, context=context_b)
    # the same noised image, another input: another prediction (small so early: the projections start at 0)
    assert (same - other).abs().max() > 0


def test_the_condition_encoder_learns_from_the_diffusion_loss():
    model = _model(2)
    x = torch.rand(4, 1, TINY_SIZE, TINY_SIZE)
    before = [p.detach().clone() for p in model.encoder.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch.manual_seed(0)
    for _ in range(3):  # the first step gives the zero-initialised attention projection its weights
        optimizer.zero_grad()
        model.training_loss(x, x).total.backward()
        optimizer.step()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert all(not torch.equal(a, p) for a, p in zip(before, model.encoder.parameters()))


def test_settings_follow_the_reference_and_the_profile():
    lab = model_config("cddpm", get_profile("lab"), 3, 64)
    assert lab.noise_levels == (500,) and lab.context_dim == 128  # test_timesteps 500, cond_dim 128
    assert lab.channels == get_profile("lab").diffusion_channels == (8, 16, 32, 64)  # the lab's diffusion U-Net
    assert lab.encoder_channels == get_profile("lab").channels  # the encoder on the VAE backbone
    paper = model_config("cddpm", get_profile("paper"), 2, 64)
    assert paper.channels == paper.encoder_channels == (32, 64, 128, 256)
    assert model_config("ddpm", get_profile("lab"), 2, 64).channels == (8, 16, 32, 64)
    with pytest.raises(ValueError, match="`context_dim` must be a positive int"):
        CDDPM(2, image_size=TINY_SIZE, channels=(8, 16), context_dim=0)
    with pytest.raises(ValueError, match="`image_size` must be a positive multiple of 16"):
        CDDPM(2, image_size=24, channels=(8, 16), encoder_channels=(4, 8, 16, 32))


def test_the_plain_ddpm_stays_unconditioned():
    torch.manual_seed(0)
    model = build_model("ddpm", model_config("ddpm", TINY_PROFILE, 2, TINY_SIZE))
    assert isinstance(model, DDPM) and not isinstance(model, CDDPM)
    assert model.condition(torch.zeros(1, 1, TINY_SIZE, TINY_SIZE)) is None
    assert not hasattr(model, "encoder") and "context_dim" not in vars(model.config)
