"""Tests of uadlab.models.precision: autocast and the precision a model reconstructs at."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import VAE_SIZE, tiny_vae

from uadlab.models import (
    reconstruct,
)
from uadlab.models.precision import autocast, bf16_supported

# --- precision ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_reconstruct_runs_at_the_models_precision_unless_told(spatial_dims):
    model = tiny_vae(spatial_dims).eval()
    volume = np.random.default_rng(0).random((VAE_SIZE, VAE_SIZE, VAE_SIZE)).astype(np.float32)
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
