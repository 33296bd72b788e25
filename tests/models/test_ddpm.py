"""Tests of uadlab.models.ddpm: one-step reconstruction, determinism, training loss, argument checks, CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from uadlab.cli import main
from uadlab.models import DDPM, MODELS, LossTerms, model_config
from uadlab.models.ddpm import NOISE_LEVELS, DDPMConfig, predicted_original, reconstruct_at_levels
from uadlab.profiles import get_profile
from uadlab.training import load_run

SIZE = 16


def _tiny(spatial_dims: int, **kwargs) -> DDPM:
    torch.manual_seed(0)
    return DDPM(spatial_dims, image_size=SIZE, channels=(8, 16), **kwargs)


def _batch(spatial_dims: int, n: int = 2) -> torch.Tensor:
    return torch.rand((n, 1) + (SIZE,) * spatial_dims, generator=torch.Generator().manual_seed(1))


class _TrueNoise(nn.Module):
    """A noise predictor trained to perfection on one batch: it knows ``x0`` and returns the exact noise."""

    def __init__(self, x0: torch.Tensor, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        self.x0, self.alphas_cumprod = x0, alphas_cumprod

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: None = None) -> torch.Tensor:
        alpha_bar = self.alphas_cumprod[timesteps].reshape((-1,) + (1,) * (x.ndim - 1))
        return (x - alpha_bar.sqrt() * self.x0) / (1 - alpha_bar).sqrt()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_a_perfect_noise_predictor_reconstructs_its_input(spatial_dims):
    model = _tiny(spatial_dims).eval()
    x = _batch(spatial_dims)
    model.unet = _TrueNoise(x * 2 - 1, model.scheduler.alphas_cumprod)
    torch.testing.assert_close(model.reconstruct(x), x, rtol=0, atol=1e-4)
    for level in (1, 500, 999):  # every single noise level, also the noisiest
        torch.testing.assert_close(model.reconstruct(x, noise_levels=(level,)), x, rtol=0, atol=1e-3)
    # ... and its training loss is zero: the noise it predicts is the noise that was added.
    terms = model.training_loss(x, x)
    assert float(terms.total) < 1e-8 and float(terms.recon) < 1e-2 * x[0].numel()


def test_a_noise_predictor_that_predicts_zero_returns_the_rescaled_noisy_input():
    model = _tiny(2).eval()
    model.unet = _TrueNoise(torch.zeros(()), model.scheduler.alphas_cumprod)
    model.unet.forward = lambda x, timesteps, context=None: torch.zeros_like(x)
    x = _batch(2)
    generator = torch.Generator().manual_seed(model.seed)
    noise = torch.randn(x.shape, generator=generator)
    alpha_bar = model.scheduler.alphas_cumprod[250]
    expected = ((alpha_bar.sqrt() * (2 * x - 1) + (1 - alpha_bar).sqrt() * noise) / alpha_bar.sqrt()).clamp(-1, 1)
    torch.testing.assert_close(model.reconstruct(x, noise_levels=(250,)), (expected + 1) / 2)


def test_predicted_original_inverts_the_forward_process():
    x0, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    alpha_bar = torch.tensor([0.9, 0.5, 0.01])
    noisy = alpha_bar.sqrt()[:, None, None, None] * x0 + (1 - alpha_bar).sqrt()[:, None, None, None] * noise
    torch.testing.assert_close(predicted_original(noisy, noise, alpha_bar), x0, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_reconstruct_is_deterministic_and_depends_on_the_seed(spatial_dims):
    x = _batch(spatial_dims)
    model = _tiny(spatial_dims).eval()
    first = model.reconstruct(x)
    assert first.shape == x.shape and float(first.min()) >= 0 and float(first.max()) <= 1
    torch.testing.assert_close(model.reconstruct(x), first, rtol=0, atol=0)
    other = _tiny(spatial_dims, seed=1).eval()
    assert not torch.equal(other.reconstruct(x), first)  # same weights, other noise


def test_training_loss_is_the_noise_mse_and_trains_the_unet():
    model = _tiny(2).train()
    x = _batch(2, n=4)
    torch.manual_seed(3)
    terms = model.training_loss(x, x)
    assert isinstance(terms, LossTerms) and float(terms.kl) == 0
    assert 0.1 < float(terms.total.detach()) < 10  # an untrained predictor: MSE of order 1 against unit noise
    assert not terms.recon.requires_grad and 0 < float(terms.recon) <= x[0].numel()
    terms.total.backward()
    assert all(p.grad is not None for p in model.unet.parameters() if p.requires_grad)
    torch.manual_seed(3)
    torch.testing.assert_close(model.training_loss(x, x).total, terms.total)  # global RNG decides t and noise


def test_config_from_profile_and_registry():
    assert MODELS["ddpm"].spatial_dims == (2, 3) and not MODELS["ddpm"].erasing
    config = model_config("ddpm", get_profile("lab"), 2, 64)
    assert config == DDPMConfig(2, 64, channels=(8, 16, 32, 64))  # the lab's diffusion channels
    assert model_config("ddpm", get_profile("paper"), 3, 64).channels == (32, 64, 128, 256)
    assert config.noise_levels == NOISE_LEVELS == (250, 500, 750)
    odd = model_config("ddpm", dataclasses.replace(get_profile("smoke"), channels=(4, 12)), 2, 32)
    assert odd.channels == (8, 16)  # rounded up to the group-norm's multiples of 8
    model = DDPM(2, image_size=SIZE, channels=(8, 16))
    assert model.config.attention_levels == (False, True)  # attention at the deepest level only


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"spatial_dims": 4}, ValueError, "`spatial_dims` must be 2 or 3"),
    ({"channels": (8, 12)}, ValueError, "`channels` must be positive multiples of 8"),
    ({"image_size": 18, "channels": (8, 16, 32)}, ValueError, "`image_size` must be a positive multiple of 4"),
    ({"image_size": 16.0}, TypeError, "`image_size` must be"),
    ({"attention_levels": (True,)}, ValueError, "`attention_levels` must have one entry per level"),
    ({"noise_levels": (250, 1000)}, ValueError, r"`noise_levels` must be steps in \[1, 1000\)"),
    ({"noise_levels": ()}, ValueError, "`noise_levels` must hold at least one step"),
    ({"num_train_timesteps": 1}, ValueError, "`num_train_timesteps` must be an int >= 2"),
    ({"seed": -1}, ValueError, "`seed` must be an int"),
])
def test_bad_arguments_are_refused(kwargs, error, match):
    arguments = {"spatial_dims": 2, "image_size": SIZE, "channels": (8, 16), **kwargs}
    with pytest.raises(error, match=match):
        DDPM(arguments.pop("spatial_dims"), **arguments)


def test_reconstruct_checks_its_input():
    model = _tiny(2).eval()
    with pytest.raises(ValueError, match="`samples` must be"):
        model.reconstruct(torch.zeros(1, 1, SIZE, SIZE, SIZE))
    with pytest.raises(ValueError, match="`noise_levels` must be steps"):
        model.reconstruct(_batch(2), noise_levels=(0,))


@pytest.mark.slow
def test_cli_trains_resumes_and_evaluates_a_ddpm(tmp_path, blob_dataset, capsys):
    run = tmp_path / "run"
    args = ["train", "--model", "ddpm", "--experiment", "2D-None", "--data", str(blob_dataset), "--profile", "smoke",
            "--out", str(run), "--device", "cpu", "--max-epochs", "1"]
    assert main(["-q", *args]) == 0
    model, config = load_run(run)
    assert isinstance(model, DDPM) and config.experiment == "ddpm:2D-None" and model.spatial_dims == 2
    assert main(["-q", *args, "--resume"]) == 0  # finished: the resume does nothing and says so
    evaluate = ["evaluate", "--run", str(run), "--data", str(blob_dataset), "--out", str(tmp_path / "eval")]
    assert main(["-q", *evaluate]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics["cohorts"]) == {"tumour", "stroke"}
    assert all(0 <= metrics["cohorts"][c]["auprc"] <= 1 for c in ("tumour", "stroke"))


def test_reconstruct_at_levels_gives_one_volume_per_level_and_restores_the_model():
    model = _tiny(2).eval()
    volume = torch.rand(SIZE, SIZE, 4, generator=torch.Generator().manual_seed(2)).numpy()
    out = reconstruct_at_levels(model, volume, (100, 750))
    assert list(out) == [100, 750] and all(v.shape == volume.shape for v in out.values())
    assert model.noise_levels == NOISE_LEVELS
    # the lower level keeps more of the input
    assert abs(out[100] - volume).mean() < abs(out[750] - volume).mean()
    with pytest.raises(TypeError, match="`model` must be a DDPM"):
        reconstruct_at_levels(nn.Identity(), volume, (100,))
    with pytest.raises(ValueError, match="`levels` must be steps"):
        reconstruct_at_levels(model, volume, (1000,))
