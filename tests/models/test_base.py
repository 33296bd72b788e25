"""Tests of uadlab.models.base: reconstruct() puts every slice or volume back in place."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import VAE_SIZE, tiny_vae
from torch import nn

from uadlab.models import (
    DenseVAE,
    reconstruct,
)

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
    model = tiny_vae(spatial_dims)
    model.train()
    volumes = np.random.default_rng(0).random((2, VAE_SIZE, VAE_SIZE, VAE_SIZE)).astype(np.float32)
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
