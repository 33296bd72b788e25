"""Tests of uadlab.models.vae and uadlab.models.dense_vae: the 2D/3D dense VAE, the ELBO and Lambert et al.'s loss."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from conftest import VAE_CHANNELS, VAE_SIZE, tiny_vae, vae_batch
from torch import nn
from torch.distributions import Normal, kl_divergence

from uadlab.models import (
    DenseVAE,
    LambertLoss,
    LossTerms,
    VAEOutput,
    elbo_loss,
)

# ---------------------------------------------------------------------------------------------------
# DenseVAE


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_forward_shapes_and_range(spatial_dims):
    out = tiny_vae(spatial_dims)(vae_batch(spatial_dims))
    assert isinstance(out, VAEOutput)
    assert out.recon.shape == (3, 1) + (VAE_SIZE,) * spatial_dims
    assert out.mu.shape == out.logvar.shape == (3, 8)
    assert 0 < float(out.recon.detach().min()) and float(out.recon.detach().max()) < 1  # sigmoid output


@pytest.mark.parametrize(("spatial_dims", "conv", "other"),
                         [(2, nn.Conv2d, nn.Conv3d), (3, nn.Conv3d, nn.Conv2d)])
def test_layers_follow_spatial_dims(spatial_dims, conv, other):
    model = tiny_vae(spatial_dims)
    kinds = {type(m) for m in model.modules()}
    assert conv in kinds and other not in kinds
    assert model.encoder[0](vae_batch(spatial_dims)).shape[2:] == (VAE_SIZE // 2,) * spatial_dims  # first halves
    assert model.input_shape == (1,) + (VAE_SIZE,) * spatial_dims


def test_default_latent_sizes():
    assert DenseVAE(2, image_size=VAE_SIZE, channels=VAE_CHANNELS).latent_dim == 128
    assert DenseVAE(3, image_size=VAE_SIZE, channels=VAE_CHANNELS).latent_dim == 512


@pytest.mark.parametrize(("spatial_dims", "expected"), [(2, 2_956_417), (3, 30_694_273)])
def test_paper_parameter_counts_match_the_docstring(spatial_dims, expected):
    model = DenseVAE(spatial_dims)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert f"{expected:,}" in DenseVAE.__doc__


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_eval_uses_mu_training_samples(spatial_dims):
    model, x = tiny_vae(spatial_dims), vae_batch(spatial_dims)
    model.eval()
    first, second = model(x), model(x)
    torch.testing.assert_close(first.recon, second.recon, rtol=0, atol=0)
    torch.testing.assert_close(first.recon, model.decoder(first.mu), rtol=0, atol=0)

    model.train()
    torch.manual_seed(5)
    a = model(x)
    torch.manual_seed(5)
    b = model(x)
    c = model(x)
    torch.testing.assert_close(a.recon, b.recon, rtol=0, atol=0)
    assert not torch.equal(a.recon, c.recon)  # z ~ q(z|x) differs between draws
    assert torch.equal(a.mu, c.mu)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"spatial_dims": 1}, "`spatial_dims` must be 2 or 3"),
    ({"spatial_dims": True}, "`spatial_dims` must be 2 or 3"),
    ({"spatial_dims": 2, "channels": ()}, "`channels` must be a non-empty tuple of positive ints"),
    ({"spatial_dims": 2, "channels": (4, 0)}, "`channels` must be"),
    ({"spatial_dims": 2, "image_size": 40}, r"`image_size` must be a positive multiple of 16"),
    ({"spatial_dims": 2, "image_size": 0}, "`image_size` must be"),
    ({"spatial_dims": 3, "latent_dim": 0}, "`latent_dim` must be a positive int or None"),
    ({"spatial_dims": 3, "in_channels": 0}, "`in_channels` must be a positive int"),
])
def test_vae_validation(kwargs, match):
    kwargs = {"image_size": 64, "channels": (4, 8, 16, 32), **kwargs}
    with pytest.raises(ValueError, match=match):
        DenseVAE(**kwargs)


@pytest.mark.parametrize("kwargs", [{"latent_dim": 2.0}, {"image_size": 64.0}, {"channels": (4, 8.0)},
                                    {"in_channels": True}])
def test_vae_rejects_wrong_types(kwargs):
    with pytest.raises(TypeError, match="must be"):
        DenseVAE(3, **{"image_size": 64, "channels": (4, 8, 16, 32), **kwargs})


@pytest.mark.parametrize(("shape", "match"), [
    ((2, 1, 16, 16), r"`x` must be \(B, 1, 32, 32\) for this 2D DenseVAE, got shape \(2, 1, 16, 16\)"),
    ((1, 32, 32), r"`x` must be \(B, 1, 32, 32\)"),
    ((2, 2, 32, 32), r"got shape \(2, 2, 32, 32\)"),
    ((0, 1, 32, 32), r"got shape \(0, 1, 32, 32\)"),
])
def test_forward_rejects_bad_shapes(shape, match):
    with pytest.raises(ValueError, match=match):
        tiny_vae(2)(torch.zeros(shape))


def test_forward_rejects_arrays():
    with pytest.raises(TypeError, match="`x` must be a torch.Tensor"):
        tiny_vae(2)(np.zeros((1, 1, VAE_SIZE, VAE_SIZE), np.float32))


# ---------------------------------------------------------------------------------------------------
# Losses


def _out(recon, latent=3, mu=None, logvar=None):
    zeros = torch.zeros(recon.shape[0], latent)
    return VAEOutput(recon, zeros if mu is None else mu, zeros if logvar is None else logvar)


def test_elbo_is_zero_for_a_perfect_reconstruction_at_the_prior():
    target = torch.rand(2, 1, 4, 4)
    terms = elbo_loss(_out(target.clone()), target)
    assert isinstance(terms, LossTerms)
    assert float(terms.total) == float(terms.recon) == float(terms.kl) == 0.0


def test_elbo_l1_is_summed_over_voxels_and_averaged_over_the_batch():
    target = torch.zeros(2, 1, 4, 4)
    recon = torch.stack([torch.full((1, 4, 4), 1.0), torch.zeros(1, 4, 4)])  # errors 16 and 0
    terms = elbo_loss(_out(recon), target)
    assert float(terms.recon) == 8.0 and float(terms.total) == 8.0


def test_elbo_kl_matches_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(4, 6, generator=generator), torch.randn(4, 6, generator=generator)
    target = torch.zeros(4, 1, 2, 2)
    terms = elbo_loss(_out(target + 0.25, 6, mu, logvar), target, kl_weight=0.5)
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(1).mean()
    torch.testing.assert_close(terms.kl, expected)
    torch.testing.assert_close(terms.total, 1.0 + 0.5 * expected)


def test_elbo_backpropagates_through_the_model():
    model, x = tiny_vae(2), vae_batch(2)
    elbo_loss(model(x), x).total.backward()
    assert model.encoder[0].weight.grad is not None and model.encoder[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("target", "kwargs", "error", "match"), [
    (torch.zeros(2, 1, 4, 5), {}, ValueError,
     r"`target` must have the reconstruction's shape \(2, 1, 4, 4\)"),
    (np.zeros((2, 1, 4, 4)), {}, TypeError, "`target` must be a torch.Tensor"),
    (torch.zeros(2, 1, 4, 4), {"kl_weight": -1.0}, ValueError, "`kl_weight` must be a non-negative number"),
    (torch.zeros(2, 1, 4, 4), {"kl_weight": "1"}, TypeError, "`kl_weight` must be"),
])
def test_elbo_validation(target, kwargs, error, match):
    with pytest.raises(error, match=match):
        elbo_loss(_out(torch.zeros(2, 1, 4, 4)), target, **kwargs)


def test_lambert_beta_schedule():
    loss = LambertLoss()
    steps = (0, 10, 24, 25, 49, 50, 60, 125)
    assert [loss.beta(t) for t in steps] == [0.0, 0.4, 0.96, 1.0, 1.0, 0.0, 0.4, 1.0]
    assert loss.beta() == 0.0 and LambertLoss(period=4).beta(1) == 0.5


def test_lambert_normalises_by_the_moving_mean():
    target = torch.zeros(1, 1, 2, 2)
    loss = LambertLoss(window=2)
    first = loss(_out(target + 0.25), target)  # recon 1: Sigma = 1
    assert float(first.total) == 1.0 and float(first.recon) == 1.0
    second = loss(_out(target + 0.5), target)  # recon 2: Sigma = 1.5
    assert float(second.total) == pytest.approx(2 / 1.5)
    third = loss(_out(target + 0.25), target)  # window 2: Sigma = (2 + 1) / 2
    assert float(third.total) == pytest.approx(1 / 1.5)
    assert loss.step == 3


def test_lambert_kl_term_is_beta_times_mean_kl_per_unit():
    target = torch.zeros(2, 1, 2, 2)
    mu = torch.tensor([[1.0, 0.0], [1.0, 2.0]])  # KL per sample 0.5 and 2.5: mean 1.5, per unit 0.75
    loss = LambertLoss(period=4)
    loss.load_state_dict({**loss.state_dict(), "step": 1})  # beta = 0.5
    terms = loss(_out(target + 0.25, 2, mu), target)
    assert float(terms.kl) == pytest.approx(1.5)  # reported like the ELBO's
    assert float(terms.total) == pytest.approx(1.0 + 0.5 * 0.75)


def test_lambert_sigma_carries_no_gradient():
    target = torch.zeros(2, 1, 2, 2)
    recon = (target + 0.5).requires_grad_()
    LambertLoss()(_out(recon), target).total.backward()
    # d/d recon of mean_b sum |recon - target| / Sigma, Sigma = 2 held constant: 1 / (B * Sigma).
    torch.testing.assert_close(recon.grad, torch.full_like(recon, 1 / (2 * 2.0)))


def test_lambert_state_round_trip():
    generator = torch.Generator().manual_seed(3)
    target = torch.zeros(2, 1, 4, 4)
    outs = [_out(torch.rand(2, 1, 4, 4, generator=generator), 3, torch.randn(2, 3, generator=generator))
            for _ in range(14)]
    running = LambertLoss()
    for out in outs[:13]:
        running(out, target)
    buffer = io.BytesIO()
    torch.save(running.state_dict(), buffer)  # as the trainer's checkpoint does
    buffer.seek(0)
    resumed = LambertLoss()
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.state_dict() == running.state_dict() and len(resumed.state_dict()["recent"]) == 10
    assert float(resumed(outs[13], target).total) == float(running(outs[13], target).total)


def test_lambert_validation():
    with pytest.raises(ValueError, match="`window` must be a positive int"):
        LambertLoss(window=0)
    with pytest.raises(ValueError, match="`period` must be a positive int"):
        LambertLoss(period=-2)
    with pytest.raises(TypeError, match="`period` must be a positive int"):
        LambertLoss(period=2.5)
    with pytest.raises(ValueError, match=r"`state` must hold \['recent'\]"):
        LambertLoss().load_state_dict({"step": 1, "window": 10, "period": 50})
    with pytest.raises(ValueError, match="`state` must have window=10, period=50"):
        LambertLoss().load_state_dict({**LambertLoss(period=20).state_dict()})
