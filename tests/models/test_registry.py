"""Tests of uadlab.models.registry: every registered model follows the protocol; the spatial VAE and mean image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import VAE_CHANNELS, VAE_SIZE, vae_batch
from torch import nn

from uadlab.models import (
    MODELS,
    DenseVAE,
    DenseVAEConfig,
    LossTerms,
    MeanImage,
    ReconstructionModel,
    SpatialVAE,
    build_from_record,
    build_model,
    get_spec,
    model_config,
    model_record,
    reconstruct,
)
from uadlab.profiles import get_profile
from uadlab.speed import to_device

# ---------------------------------------------------------------------------------------------------
# The seam: every registered model follows the protocol; the spatial VAE; the mean image


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_registered_model_follows_the_protocol(name, spatial_dims):
    if spatial_dims not in MODELS[name].spatial_dims:
        pytest.skip(f"{name} has no {spatial_dims}D form")
    torch.manual_seed(0)
    config = model_config(name, get_profile("smoke"), spatial_dims, VAE_SIZE)
    model = build_model(name, config)
    assert isinstance(model, ReconstructionModel) and model.spatial_dims == spatial_dims
    x = vae_batch(spatial_dims)
    if model.fitted_in_closed_form:
        model.fit(x)
    terms = model.training_loss(x, x)
    assert isinstance(terms, LossTerms) and all(t.ndim == 0 for t in terms)
    model.eval()
    recon, kl = model.validation_terms(x)
    assert recon.shape == x.shape and kl.shape == (len(x),)
    torch.testing.assert_close(model.reconstruct(x), recon, rtol=0, atol=0)  # eval mode is deterministic
    rebuilt = build_from_record(model_record(name, model.config))  # what load_run does
    assert type(rebuilt) is type(model) and rebuilt.config == model.config
    rebuilt.load_state_dict(model.state_dict())
    rebuilt.eval()
    torch.testing.assert_close(rebuilt.reconstruct(x), recon, rtol=0, atol=0)
    to_device(rebuilt, "cpu")  # what load_run and reconstruct() do: a 3D model's 5D tensors go channels-last
    torch.testing.assert_close(rebuilt.reconstruct(x), recon, rtol=0, atol=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_spatial_vae_keeps_a_spatial_latent(spatial_dims):
    torch.manual_seed(0)
    model = SpatialVAE(spatial_dims, image_size=VAE_SIZE, channels=VAE_CHANNELS, latent_channels=5)
    out = model(vae_batch(spatial_dims))
    assert out.mu.shape == out.logvar.shape == (3, 5) + (VAE_SIZE // 8,) * spatial_dims
    assert model.latent_shape == (5,) + (VAE_SIZE // 8,) * spatial_dims
    assert out.recon.shape == (3, 1) + (VAE_SIZE,) * spatial_dims
    kinds = {type(m) for m in model.modules()}
    assert nn.Linear not in kinds  # fully convolutional: mu, logvar and the first decoder layer are convolutions
    assert isinstance(model.to_mu, (nn.Conv2d, nn.Conv3d)) and isinstance(model.decoder[0], (nn.Conv2d, nn.Conv3d))
    # The KL is summed over all N x h x w (x d) latent units of a sample (eval mode: z = mu).
    model.eval()
    out = model(vae_batch(spatial_dims))
    by_hand = (0.5 * (out.mu ** 2 + out.logvar.exp() - 1 - out.logvar)).reshape(3, -1).sum(1)
    torch.testing.assert_close(model.validation_terms(vae_batch(spatial_dims))[1], by_hand)


@pytest.mark.parametrize(("spatial_dims", "expected"), [(2, 1_489_825), (3, 5_842_849)])
def test_spatial_vae_parameter_counts_match_the_docstring(spatial_dims, expected):
    model = SpatialVAE(spatial_dims)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert f"{expected:,}" in SpatialVAE.__doc__


def test_spatial_and_dense_vae_share_encoder_and_decoder_stages():
    dense = DenseVAE(3, image_size=VAE_SIZE, channels=VAE_CHANNELS)
    spatial = SpatialVAE(3, image_size=VAE_SIZE, channels=VAE_CHANNELS)
    shapes = lambda stages: [tuple(p.shape) for p in stages.parameters()]  # noqa: E731
    assert shapes(dense.encoder) == shapes(spatial.encoder)
    assert shapes(dense.decoder)[-7:] == shapes(spatial.decoder)[-7:]  # the transposed-convolution stages


def test_mean_image_reconstructs_the_voxelwise_mean_of_its_training_volumes():
    model = MeanImage(3, image_size=4)
    volumes = torch.arange(2 * 64, dtype=torch.float32).reshape(2, 1, 4, 4, 4) / 128
    model.fit(volumes)
    expected = (volumes[0] + volumes[1]) / 2
    recon = model.reconstruct(torch.zeros(3, 1, 4, 4, 4))
    assert recon.shape == (3, 1, 4, 4, 4)
    torch.testing.assert_close(recon, expected.expand(3, 1, 4, 4, 4))
    assert list(model.parameters()) == [] and "mean" in model.state_dict()
    volume = np.zeros((4, 4, 4), np.float32)
    np.testing.assert_allclose(reconstruct(model, volume), expected[0].numpy())


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"spatial_dims": 2}, ValueError, "`spatial_dims` must be 3 for the mean image"),
    ({"image_size": 0}, ValueError, "`image_size` must be a positive int"),
    ({"image_size": 4.0}, TypeError, "`image_size` must be a positive int"),
])
def test_mean_image_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        MeanImage(**kwargs)


@pytest.mark.parametrize(("call", "match"), [
    (lambda: get_spec("unet"), r"`model` must be one of \['ae-dense', 'ae-spatial', 'anoddpm', 'cddpm', 'cevae', "
                               r"'dae', 'ddpm', 'dense-vae', 'fanogan', 'mean-image', 'pddpm', 'spatial-vae', "
                               r"'zscore'\]"),
    (lambda: model_config("mean-image", get_profile("smoke"), 3, 32, loss="lambert"),
     r"model 'mean-image' has no option\(s\) \['loss'\]"),
    (lambda: model_config("mean-image", get_profile("smoke"), 2, 32), "must be one of \\(3,\\) for model 'mean-image'"),
    (lambda: build_model("spatial-vae", DenseVAEConfig(2)), "must be a SpatialVAEConfig"),
    (lambda: build_from_record({"name": "dense-vae", "config": {"spatial_dims": 2, "depth": 3}}),
     r"config field\(s\) \['depth'\]"),
])
def test_registry_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_profile_sets_the_vae_backbones():
    lab = get_profile("lab")
    assert model_config("dense-vae", lab, 3, 64) == DenseVAEConfig(3, 64, lab.latent_3d, lab.channels)
    assert model_config("spatial-vae", lab, 2, 64, loss="lambert").channels == lab.channels
    assert model_config("spatial-vae", lab, 2, 64, loss="lambert").loss == "lambert"
