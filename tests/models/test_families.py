"""Tests of the model families behind the seam: every registered family in 2D and 3D, and each one's own part.

Parametrised over the registry (seeded determinism, the anomaly score, no lesion mask anywhere near
``reconstruct``, a lesion scoring above healthy tissue after a few steps), then the known answers of the
autoencoder (``ae-*``), ceVAE, DAE and z-score families.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from conftest import TINY_PROFILE, TINY_SIZE, blob_volumes

from uadlab.models import MODELS, build_model, model_config, reconstruct, reconstruct_and_score
from uadlab.models.ae import DenseAE, SpatialAE
from uadlab.models.cevae import CeVAE, combined_score
from uadlab.models.dae import DAE, coarse_noise
from uadlab.models.zscore import MIN_STD, ZScore
from uadlab.training.experiments import parse_experiment

FAMILIES = [(name, d) for name in MODELS for d in MODELS[name].spatial_dims]
#: How far above healthy tissue a lesion must score after a few steps: twice, except for AnoDDPM, whose
#: smooth simplex noise looks like the blob phantom's healthy anatomy itself (Gaussian blobs), so its
#: healthy residual stays higher (measured in 2D: 0.28 vs 0.18 after 60 steps, 0.33 vs 0.17 after 150).
#: The cDDPM, one step from t = 500 instead of ``ddpm``'s mean of three levels, keeps a higher healthy
#: residual after 60 steps (2D: lesion 0.40 vs healthy 0.21, measured).
_LESION_FACTOR = {"anoddpm": 1.4, "cddpm": 1.7}
#: f-AnoGAN in 60 steps is 30 WGAN-GP steps (tiny profile) and 30 encoder steps: its generator still
#: draws blurs (healthy residual 0.34 in 2D, lesion 0.47), so no lesion stands out. A GAN needs its
#: budget; the known answers of tests/models/test_fanogan.py check the method instead.
_GAN_TOO_YOUNG = pytest.mark.xfail(reason="a WGAN-GP after 30 tiny steps reconstructs no tissue yet: healthy "
                                          "residual 0.34 vs lesion 0.47 in 2D (needs its gan_steps budget)",
                                   strict=True)
_LESION_CASES = [pytest.param(name, d, marks=_GAN_TOO_YOUNG) if name == "fanogan" else (name, d)
                 for name, d in FAMILIES]


def _model(name: str, spatial_dims: int, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(name, model_config(name, TINY_PROFILE, spatial_dims, TINY_SIZE))


def _samples(volumes: np.ndarray, spatial_dims: int) -> torch.Tensor:
    x = torch.from_numpy(volumes[:, None])
    return x if spatial_dims == 3 else x.permute(0, 4, 1, 2, 3).reshape(-1, 1, TINY_SIZE, TINY_SIZE)


def _trained(name: str, spatial_dims: int, volumes: np.ndarray, steps: int = 60):
    """A few Adam steps on healthy volumes (or the closed-form fit), in eval mode after."""
    model = _model(name, spatial_dims)
    x = _samples(volumes, spatial_dims)
    if model.fitted_in_closed_form:
        model.fit(x)
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(steps):
            optimizer.zero_grad()
            model.training_loss(x, x).total.backward()
            optimizer.step()
    return model.eval()


@pytest.mark.parametrize(("name", "spatial_dims"), FAMILIES)
def test_every_family_is_seeded_and_scores_from_the_image_alone(name, spatial_dims):
    a, b, c = _model(name, spatial_dims, 0), _model(name, spatial_dims, 0), _model(name, spatial_dims, 1)
    state_a, state_c = a.state_dict(), c.state_dict()
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in state_a.items())
    if list(a.parameters()):  # a learned model: another seed, other initial weights (a floor has none)
        assert any(not torch.equal(v, state_c[k]) for k, v in state_a.items())
    # reconstruct and the anomaly score see the samples (and the reconstruction): never a lesion mask
    for method, required in ((a.reconstruct, ["samples"]), (a.anomaly_score, ["samples", "recon"])):
        parameters = inspect.signature(method).parameters.values()
        assert [p.name for p in parameters if p.default is inspect.Parameter.empty] == required
        assert not any("mask" in p.name or "lesion" in p.name for p in parameters)
    volume = blob_volumes(1, np.random.default_rng(3))[0][0]
    if a.fitted_in_closed_form:
        a.fit(_samples(volume[None], spatial_dims)), b.fit(_samples(volume[None], spatial_dims))
    recon, score = reconstruct_and_score(a, volume)
    again, score_b = reconstruct_and_score(b, volume)
    assert recon.shape == score.shape == volume.shape and score.dtype == np.float32 and (score >= 0).all()
    np.testing.assert_array_equal(recon, again)
    np.testing.assert_array_equal(score, score_b)
    np.testing.assert_array_equal(recon, reconstruct(a, volume))


@pytest.mark.slow  # about 10 s for the whole registry: 60 tiny Adam steps per family and dimension
@pytest.mark.parametrize(("name", "spatial_dims"), _LESION_CASES)
def test_after_a_few_steps_a_lesion_scores_above_healthy_tissue(name, spatial_dims):
    rng = np.random.default_rng(0)
    volumes, brain_masks = blob_volumes(9, rng)
    model = _trained(name, spatial_dims, volumes[:8])
    healthy = volumes[8]
    lesioned, lesion = healthy.copy(), np.zeros_like(brain_masks[8])
    lesion[6:10, 6:10, 6:10] = True
    lesioned[lesion] = np.where(healthy[lesion] > 0.5, 0.0, 1.0)  # at least 0.5 from the tissue it replaces
    recon_h, score_h = reconstruct_and_score(model, healthy)
    recon_l, score_l = reconstruct_and_score(model, lesioned)
    brain = brain_masks[8]
    assert np.abs(healthy - recon_h)[brain].mean() < np.abs(lesioned - recon_l)[brain].mean()
    assert score_l[lesion].mean() > _LESION_FACTOR.get(name, 2) * score_l[brain & ~lesion].mean()


# ---------------------------------------------------------------------------------------------------
# The autoencoders (Baur et al. 2021)


@pytest.mark.parametrize("cls", [DenseAE, SpatialAE])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_an_autoencoder_is_the_vae_without_its_variance_and_kl(cls, spatial_dims):
    torch.manual_seed(0)
    model = cls(spatial_dims, image_size=TINY_SIZE, channels=(4, 8))
    assert not hasattr(model, "to_logvar") and "to_logvar" not in dict(model.named_modules())
    x = torch.rand((2, 1) + (TINY_SIZE,) * spatial_dims)
    model.train()
    torch.testing.assert_close(model(x).recon, model(x).recon, rtol=0, atol=0)  # no sampling, even in training
    terms = model.training_loss(x, x)
    assert float(terms.kl) == 0.0 and torch.equal(terms.total, terms.recon)
    torch.testing.assert_close(terms.recon, (model(x).recon - x).abs().flatten(1).sum(1).mean())
    model.eval()
    assert torch.equal(model.validation_terms(x)[1], torch.zeros(2))


# ---------------------------------------------------------------------------------------------------
# The ceVAE (Zimmerer et al. 2019)


def test_cevae_experiments_must_name_an_erasing_method():
    assert parse_experiment("cevae:3d-cube-n").name == "cevae:3D-Cube-n"
    with pytest.raises(ValueError, match="learns from erased inputs: name an erasing method, e.g. cevae:2D-Patch-n"):
        parse_experiment("cevae:2D-None")


def test_cevae_combined_score_on_a_hand_case():
    """Decoder and latent heads zeroed: x_hat = sigmoid(0) = 0.5 whatever x, KL = 0, so d(-ELBO)/dx = sign(x - 0.5)
    and the score is |x - 0.5| * 1 (0 where x = 0.5)."""
    model = CeVAE(2, image_size=TINY_SIZE, channels=(4, 8), latent_dim=4)
    with torch.no_grad():
        for module in (model.decoder, model.to_mu, model.to_logvar):
            for parameter in module.parameters():
                parameter.zero_()
    model.eval()
    x = torch.rand(2, 1, TINY_SIZE, TINY_SIZE, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0, :3] = torch.tensor([0.5, 0.9, 0.1])
    recon = model.reconstruct(x)
    torch.testing.assert_close(recon, torch.full_like(x, 0.5))
    with torch.no_grad():  # as inference calls it: the score enables gradients itself
        score = model.anomaly_score(x, recon)
    torch.testing.assert_close(score, (x - 0.5).abs())
    assert score[0, 0, 0, :3].tolist() == pytest.approx([0.0, 0.4, 0.4])
    torch.testing.assert_close(combined_score(torch.tensor([0.3]), torch.tensor([-0.5])), torch.tensor([0.15]))


def test_cevae_loss_is_the_elbo_plus_the_weighted_inpainting_error():
    torch.manual_seed(0)
    model = CeVAE(3, image_size=TINY_SIZE, channels=(4, 8), latent_dim=4, ce_weight=0.5).eval()
    target = torch.rand(2, 1, TINY_SIZE, TINY_SIZE, TINY_SIZE)
    erased = target.clone()
    erased[:, :, 4:8, 4:8, 4:8] = 0
    terms = model.training_loss(erased, target)
    out = model(target)
    elbo = (out.recon - target).abs().flatten(1).sum(1).mean()
    kl = (0.5 * (out.mu ** 2 + out.logvar.exp() - 1 - out.logvar)).sum(1).mean()
    inpainting = (model(erased).recon - target).abs().flatten(1).sum(1).mean()  # eval mode: z = mu
    torch.testing.assert_close(terms.total, elbo + kl + 0.5 * inpainting)
    torch.testing.assert_close(terms.recon, elbo)


# ---------------------------------------------------------------------------------------------------
# The DAE (Kascenas et al. 2022)


@pytest.mark.parametrize(("shape", "noise_size"), [((64, 1, 32, 32), 4), ((6, 1, 16, 16, 16), 4)])
def test_coarse_noise_has_no_energy_above_its_cutoff_and_its_stated_sd(shape, noise_size):
    noise = coarse_noise(shape, noise_size, 0.2, generator=torch.Generator().manual_seed(0)).double()
    spectrum = torch.fft.fftn(noise, dim=tuple(range(2, len(shape)))).abs() ** 2
    low = torch.ones(shape[2:], dtype=torch.bool)
    for axis, edge in enumerate(shape[2:]):
        band = torch.fft.fftfreq(edge, d=1 / edge).abs() < noise_size / 2  # cycles per image edge
        low &= band.view([-1 if a == axis else 1 for a in range(len(shape) - 2)])
    assert float(spectrum[..., ~low].sum() / spectrum.sum()) < 1e-10  # float32 rounding only
    assert float(noise.std()) == pytest.approx(0.2, rel=0.05) and abs(float(noise.mean())) < 0.05
    again = coarse_noise(shape, noise_size, 0.2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again, noise.float())
    # Smooth: neighbouring voxels are far more alike than in white noise of the same sd.
    step = (noise[..., 1:] - noise[..., :-1]).std() / noise.std()
    assert float(step) < 0.5


def test_coarse_noise_and_the_dae_refuse_a_grid_finer_than_the_image():
    with pytest.raises(ValueError, match="spatial edges of at least noise_size=8"):
        coarse_noise((1, 1, 4, 4), 8, 0.2)
    with pytest.raises(ValueError, match="noise_size"):
        DAE(2, image_size=16, channels=(4, 8), noise_size=32)


def test_dae_adds_noise_to_the_foreground_only_and_reconstructs_the_clean_input():
    torch.manual_seed(0)
    model = DAE(2, image_size=TINY_SIZE, channels=(4, 8))
    assert model.noise_size == TINY_SIZE // 8 and model.noise_std == 0.2
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros_like(x)

    model.unet = Recorder()
    target = torch.zeros(2, 1, TINY_SIZE, TINY_SIZE)
    target[:, :, 4:12, 4:12] = 0.5
    terms = model.training_loss(target, target)
    noisy = seen[0]
    assert torch.equal(noisy[target == 0], torch.zeros(int((target == 0).sum())))  # the background stays 0
    assert float((noisy - target)[target > 0].abs().mean()) > 0.01
    torch.testing.assert_close(terms.total, ((0.5 - target) ** 2).flatten(1).sum(1).mean())  # sigmoid(0) = 0.5
    torch.testing.assert_close(model.reconstruct(target), torch.full_like(target, 0.5))
    assert torch.equal(seen[-1], target)  # reconstruct sees the clean input, no noise


# ---------------------------------------------------------------------------------------------------
# The z-score floor


def test_zscore_map_on_a_hand_case():
    model = ZScore(image_size=2)
    samples = torch.tensor([0.2, 0.4, 0.6]).view(3, 1, 1, 1, 1).expand(3, 1, 2, 2, 2).clone()
    samples[:, :, 0, 0, 0] = 0.3  # constant across the healthy volumes: sd 0, floored at MIN_STD
    model.fit(samples)
    sd = float(np.std([0.2, 0.4, 0.6]))
    x = torch.full((1, 1, 2, 2, 2), 0.9)
    score = model.anomaly_score(x, model.reconstruct(x))
    assert float(score[0, 0, 1, 1, 1]) == pytest.approx(0.5 / sd, rel=1e-5)  # |0.9 - 0.4| / sd
    assert float(score[0, 0, 0, 0, 0]) == pytest.approx(0.6 / MIN_STD, rel=1e-5)
    torch.testing.assert_close(model.reconstruct(x)[0, 0, 1, 1, 1], torch.tensor(0.4))
    rebuilt = build_model("zscore", model.config)
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.anomaly_score(x, rebuilt.reconstruct(x)), score)
