"""Tests of uadlab.models: the 2D/3D dense VAE, the ELBO, Lambert et al.'s loss and reconstruct()."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

from uadlab.models import (
    MODELS,
    DenseVAE,
    DenseVAEConfig,
    LambertLoss,
    LossTerms,
    MeanImage,
    ReconstructionModel,
    SpatialVAE,
    VAEOutput,
    build_from_record,
    build_model,
    elbo_loss,
    get_spec,
    model_config,
    model_record,
    reconstruct,
)
from uadlab.models.precision import autocast, bf16_supported
from uadlab.profiles import get_profile
from uadlab.speed import to_device

SIZE, CHANNELS = 32, (4, 8, 16)


def _tiny(spatial_dims: int, latent_dim: int | None = 8) -> DenseVAE:
    torch.manual_seed(0)
    return DenseVAE(spatial_dims, image_size=SIZE, latent_dim=latent_dim, channels=CHANNELS)


def _batch(spatial_dims: int, n: int = 3) -> torch.Tensor:
    return torch.rand((n, 1) + (SIZE,) * spatial_dims, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------------------------------------------
# DenseVAE


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_forward_shapes_and_range(spatial_dims):
    out = _tiny(spatial_dims)(_batch(spatial_dims))
    assert isinstance(out, VAEOutput)
    assert out.recon.shape == (3, 1) + (SIZE,) * spatial_dims
    assert out.mu.shape == out.logvar.shape == (3, 8)
    assert 0 < float(out.recon.detach().min()) and float(out.recon.detach().max()) < 1  # sigmoid output


@pytest.mark.parametrize(("spatial_dims", "conv", "other"),
                         [(2, nn.Conv2d, nn.Conv3d), (3, nn.Conv3d, nn.Conv2d)])
def test_layers_follow_spatial_dims(spatial_dims, conv, other):
    model = _tiny(spatial_dims)
    kinds = {type(m) for m in model.modules()}
    assert conv in kinds and other not in kinds
    assert model.encoder[0](_batch(spatial_dims)).shape[2:] == (SIZE // 2,) * spatial_dims  # first halves
    assert model.input_shape == (1,) + (SIZE,) * spatial_dims


def test_default_latent_sizes():
    assert DenseVAE(2, image_size=SIZE, channels=CHANNELS).latent_dim == 128
    assert DenseVAE(3, image_size=SIZE, channels=CHANNELS).latent_dim == 512


@pytest.mark.parametrize(("spatial_dims", "expected"), [(2, 2_956_417), (3, 30_694_273)])
def test_paper_parameter_counts_match_the_docstring(spatial_dims, expected):
    model = DenseVAE(spatial_dims)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert f"{expected:,}" in DenseVAE.__doc__


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_eval_uses_mu_training_samples(spatial_dims):
    model, x = _tiny(spatial_dims), _batch(spatial_dims)
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
        _tiny(2)(torch.zeros(shape))


def test_forward_rejects_arrays():
    with pytest.raises(TypeError, match="`x` must be a torch.Tensor"):
        _tiny(2)(np.zeros((1, 1, SIZE, SIZE), np.float32))


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
    model, x = _tiny(2), _batch(2)
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


# ---------------------------------------------------------------------------------------------------
# reconstruct


class _Doubler(nn.Module):
    """A stand-in 2D/3D model whose reconstruction is twice its input."""

    def __init__(self, spatial_dims: int) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.config = None
        self.weight = nn.Parameter(torch.ones(()))
        self.batches: list[tuple[int, ...]] = []

    def reconstruct(self, x):
        self.batches.append(tuple(x.shape))
        return 2 * x * self.weight

    def training_loss(self, inputs, target):  # the rest of the model protocol, unused here
        raise NotImplementedError

    def validation_terms(self, samples):
        raise NotImplementedError


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_reconstruct_puts_every_voxel_back_in_place(spatial_dims):
    volume = np.random.default_rng(0).random((8, 6, 5)).astype(np.float32)
    model = _Doubler(spatial_dims)
    recon = reconstruct(model, volume, batch_size=2)
    np.testing.assert_array_equal(recon, 2 * volume)
    assert recon.dtype == np.float32
    if spatial_dims == 2:  # axial slices (1, X, Y), Z of them in batches of 2
        assert model.batches == [(2, 1, 8, 6), (2, 1, 8, 6), (1, 1, 8, 6)]
    else:
        assert model.batches == [(1, 1, 8, 6, 5)]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_reconstruct_stacks_and_restores_mode(spatial_dims):
    model = _tiny(spatial_dims)
    model.train()
    volumes = np.random.default_rng(0).random((2, SIZE, SIZE, SIZE)).astype(np.float32)
    recon = reconstruct(model, volumes, batch_size=7)
    assert model.training and recon.shape == volumes.shape and recon.dtype == np.float32
    model.eval()
    with torch.no_grad():
        if spatial_dims == 2:
            k = 5
            expected = model(torch.from_numpy(volumes[1, :, :, k])[None, None]).recon[0, 0].numpy()
            got = recon[1, :, :, k]
        else:
            expected = model(torch.from_numpy(volumes[1])[None, None]).recon[0, 0].numpy()
            got = recon[1]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    single = reconstruct(model, torch.from_numpy(volumes[1]))  # torch in, one volume
    np.testing.assert_allclose(single, recon[1], rtol=0, atol=1e-5)


@pytest.mark.parametrize(("model", "volume", "kwargs", "error", "match"), [
    (_Doubler(2), np.zeros((4, 4)), {}, ValueError, r"`volume` must be \(X, Y, Z\) or \(N, X, Y, Z\)"),
    (_Doubler(2), np.zeros((4, 4, 4)), {"batch_size": 0}, ValueError, "`batch_size` must be a positive int"),
    (nn.Linear(1, 1), np.zeros((4, 4, 4)), {}, TypeError, "`model` must be a reconstruction model"),
    (DenseVAE(2, image_size=16, latent_dim=2, channels=(2,)), np.zeros((8, 8, 8)), {}, ValueError,
     r"`x` must be \(B, 1, 16, 16\)"),
])
def test_reconstruct_validation(model, volume, kwargs, error, match):
    with pytest.raises(error, match=match):
        reconstruct(model, volume, **kwargs)


# ---------------------------------------------------------------------------------------------------
# The seam: every registered model follows the protocol; the spatial VAE; the mean image


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_registered_model_follows_the_protocol(name, spatial_dims):
    if spatial_dims not in MODELS[name].spatial_dims:
        pytest.skip(f"{name} has no {spatial_dims}D form")
    torch.manual_seed(0)
    config = model_config(name, get_profile("smoke"), spatial_dims, SIZE)
    model = build_model(name, config)
    assert isinstance(model, ReconstructionModel) and model.spatial_dims == spatial_dims
    x = _batch(spatial_dims)
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
    model = SpatialVAE(spatial_dims, image_size=SIZE, channels=CHANNELS, latent_channels=5)
    out = model(_batch(spatial_dims))
    assert out.mu.shape == out.logvar.shape == (3, 5) + (SIZE // 8,) * spatial_dims
    assert model.latent_shape == (5,) + (SIZE // 8,) * spatial_dims
    assert out.recon.shape == (3, 1) + (SIZE,) * spatial_dims
    kinds = {type(m) for m in model.modules()}
    assert nn.Linear not in kinds  # fully convolutional: mu, logvar and the first decoder layer are convolutions
    assert isinstance(model.to_mu, (nn.Conv2d, nn.Conv3d)) and isinstance(model.decoder[0], (nn.Conv2d, nn.Conv3d))
    # The KL is summed over all N x h x w (x d) latent units of a sample (eval mode: z = mu).
    model.eval()
    out = model(_batch(spatial_dims))
    by_hand = (0.5 * (out.mu ** 2 + out.logvar.exp() - 1 - out.logvar)).reshape(3, -1).sum(1)
    torch.testing.assert_close(model.validation_terms(_batch(spatial_dims))[1], by_hand)


@pytest.mark.parametrize(("spatial_dims", "expected"), [(2, 1_489_825), (3, 5_842_849)])
def test_spatial_vae_parameter_counts_match_the_docstring(spatial_dims, expected):
    model = SpatialVAE(spatial_dims)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert f"{expected:,}" in SpatialVAE.__doc__


def test_spatial_and_dense_vae_share_encoder_and_decoder_stages():
    dense, spatial = DenseVAE(3, image_size=SIZE, channels=CHANNELS), SpatialVAE(3, image_size=SIZE, channels=CHANNELS)
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
    (lambda: get_spec("unet"), r"`model` must be one of \['ddpm', 'dense-vae', 'mean-image', 'spatial-vae'\]"),
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


# --- precision ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_reconstruct_runs_at_the_models_precision_unless_told(spatial_dims):
    model = _tiny(spatial_dims).eval()
    volume = np.random.default_rng(0).random((SIZE, SIZE, SIZE)).astype(np.float32)
    fp32 = reconstruct(model, volume)
    bf16 = reconstruct(model, volume, precision="bf16-mixed")
    assert bf16.dtype == np.float32 and not np.array_equal(bf16, fp32)  # autocast was on
    np.testing.assert_allclose(bf16, fp32, atol=0.02)  # bfloat16 keeps about 3 significant digits
    model.precision = "bf16-mixed"  # what uadlab.training.load_run sets
    np.testing.assert_array_equal(reconstruct(model, volume), bf16)
    np.testing.assert_array_equal(reconstruct(model, volume, precision="32"), fp32)
    with pytest.raises(ValueError, match="`precision` must be one of"):
        reconstruct(model, volume, precision="64")


def test_autocast_is_a_no_op_at_32_and_lowers_matmuls_otherwise():
    x = torch.rand(4, 4)
    with autocast("32", "cpu"):
        assert (x @ x).dtype == torch.float32
    with autocast("bf16-mixed", "cpu"):
        assert (x @ x).dtype == torch.bfloat16
    assert isinstance(bf16_supported("cpu"), bool) and bf16_supported("meta") is False
