"""Tests of uadlab.models.fanogan: the izi_f loss and anomaly score of f-AnoGAN (Schlegl et al. 2019), then the model.

A hand case: a 2 x 2 image, a linear encoder, generator and critic whose loss and encoder gradient
are worked out on paper below. Then the two training stages in one loss: each step moves only the
network its stage trains, and the step counter survives a checkpoint.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from uadlab.models.fanogan import IZI_F_KAPPA, FAnoGAN, izi_f_loss, izi_f_score


def _linear(weight: list[list[float]]) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
    return layer


def _hand_case():
    """x = [1, 2, 3, 4] (one 2 x 2 image) and an all-zero image.

    E(x) = 0.1 * sum(x) = 1; G(z) = [z, z, z, z] = [1, 1, 1, 1]; f(v) = [v1 + v2, v3 - v4].
    Residual x - G(E(x)) = [0, 1, 2, 3]: ||.||^2 / n = 14 / 4 = 3.5.
    f(x) = [3, -1], f(G(E(x))) = [2, 0]: ||.||^2 / n_d = 2 / 2 = 1.
    The zero image: E = 0, G = 0, f = 0: both terms 0.
    """
    encoder, generator, critic = _linear([[0.1] * 4]), _linear([[1.0]] * 4), _linear([[1, 1, 0, 0], [0, 0, 1, -1]])
    for p in list(generator.parameters()) + list(critic.parameters()):
        p.requires_grad_(False)  # izi_f trains the encoder only
    image = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
    recon = generator(encoder(image))
    return encoder, image.reshape(2, 1, 2, 2), recon.reshape(2, 1, 2, 2), critic(image), critic(recon)


def test_the_hand_case():
    encoder, image, recon, image_features, recon_features = _hand_case()
    scores = izi_f_score(image, recon, image_features, recon_features, kappa=0.5)
    torch.testing.assert_close(scores, torch.tensor([3.5 + 0.5 * 1.0, 0.0]))
    loss = izi_f_loss(image, recon, image_features, recon_features, kappa=0.5)
    torch.testing.assert_close(loss, torch.tensor(2.0))  # the batch mean
    # dL/dz for the first image, z = E(x) = 1, G(z) = z * 1, f(G(z)) = [2z, 0]:
    #   d/dz [ sum (x_i - z)^2 / 4 + 0.5 * ((3 - 2z)^2 + (-1 - 0)^2) / 2 ]
    #   = -sum (x_i - z) / 2 - (3 - 2z) = -3 - 1 = -4;  dL/dw_j = -4 x_j, halved by the batch mean
    loss.backward()
    torch.testing.assert_close(encoder.weight.grad, torch.tensor([[-2.0, -4.0, -6.0, -8.0]]))


def test_kappa_weighs_the_feature_term():
    _, *tensors = _hand_case()
    image, recon, image_features, recon_features = (t.detach() for t in tensors)
    assert IZI_F_KAPPA == 1.0  # the authors' train_enc_izi(..., kappa=1.0)
    first = izi_f_score(image, recon, image_features, recon_features)[0]
    assert float(first) == pytest.approx(3.5 + 1.0)
    assert float(izi_f_score(image, recon, image_features, recon_features, kappa=0)[0]) == pytest.approx(3.5)
    assert float(izi_f_score(image, recon, image_features, recon_features, kappa=2)[0]) == pytest.approx(5.5)


def test_a_perfect_reconstruction_scores_zero_and_a_feature_change_alone_scores():
    image = torch.rand(3, 1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    features = torch.rand(3, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(izi_f_score(image, image.clone(), features, features.clone()), torch.zeros(3))
    shifted = features + torch.tensor([[0.0], [1.0], [2.0]])  # every feature moved by 0, 1, 2
    torch.testing.assert_close(izi_f_score(image, image, features, shifted, kappa=0.5), torch.tensor([0.0, 0.5, 2.0]))


@pytest.mark.parametrize(("args", "kwargs", "error", "match"), [
    ((torch.zeros(2, 1, 4), torch.zeros(2, 1, 5), torch.zeros(2, 3), torch.zeros(2, 3)), {}, ValueError,
     "`image` and `recon` must have one shape"),
    ((torch.zeros(2, 1, 4), torch.zeros(2, 1, 4), torch.zeros(2, 3), torch.zeros(2, 2)), {}, ValueError,
     "`image_features` and `recon_features` must have one shape"),
    ((torch.zeros(2, 1, 4), torch.zeros(2, 1, 4), torch.zeros(3, 3), torch.zeros(3, 3)), {}, ValueError,
     "`image` and `image_features` must have one batch size"),
    ((torch.zeros(4), torch.zeros(4), torch.zeros(2, 3), torch.zeros(2, 3)), {}, ValueError, r"\(B, \.\.\.\)"),
    ((torch.zeros(2, 1, 4), torch.zeros(2, 1, 4), torch.zeros(2, 3), torch.zeros(2, 3)), {"kappa": -1}, ValueError,
     "`kappa` must be a non-negative number"),
    ((torch.zeros(2, 1, 4), torch.zeros(2, 1, 4), torch.zeros(2, 3), torch.zeros(2, 3)), {"kappa": "1"}, TypeError,
     "`kappa` must be"),
    (([0.0], torch.zeros(2, 1, 4), torch.zeros(2, 3), torch.zeros(2, 3)), {}, TypeError, "`image` must be a tensor"),
])
def test_bad_arguments_are_refused(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        izi_f_loss(*args, **kwargs)


# ---------------------------------------------------------------------------------------------------
# The model: WGAN-GP, then the encoder, under one Adam


def _changed(model: FAnoGAN, before: dict[str, torch.Tensor]) -> set[str]:
    """The sub-networks (``generator``, ``critic``, ``encoder``) with a parameter that differs from ``before``."""
    return {name.split(".")[0] for name, p in model.named_parameters() if not torch.equal(p, before[name])}


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_stage_one_moves_critic_then_generator_and_stage_two_only_the_encoder(spatial_dims):
    torch.manual_seed(0)
    model = FAnoGAN(spatial_dims, image_size=16, channels=(4, 8), latent_dim=8, gan_steps=3, n_critic=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand((4, 1) + (16,) * spatial_dims)
    moved = []
    for _ in range(5):
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        optimizer.zero_grad(set_to_none=True)  # as the training loop: no gradient, no Adam step
        stage = model.stage
        terms = model.training_loss(x, x)
        terms.total.backward()
        optimizer.step()
        moved.append((stage, _changed(model, before)))
        assert float(terms.kl) == 0.0 and float(terms.recon) > 0
    assert moved == [(1, {"critic"}), (1, {"critic"}), (1, {"generator"}), (2, {"encoder"}), (2, {"encoder"})]
    assert model.training and all(p.requires_grad for p in model.parameters())  # the freeze is undone


def test_the_step_counter_survives_a_checkpoint():
    model = FAnoGAN(2, image_size=16, channels=(4, 8), latent_dim=8, gan_steps=2)
    x = torch.rand(2, 1, 16, 16)
    for _ in range(3):
        model.training_loss(x, x)
    assert model.loss_state() == {"step": 3} and model.stage == 2
    assert model.patience_started()  # early stopping counts in stage 2 only: stage 1 leaves G(E(x)) untrained
    other = FAnoGAN(2, image_size=16, channels=(4, 8), latent_dim=8, gan_steps=2)
    assert other.stage == 1 and not other.patience_started()
    other.load_loss_state(model.loss_state())
    assert other.step == 3 and other.stage == 2
    other.load_loss_state(None)
    assert other.step == 3


def test_reconstruct_is_the_generator_of_the_encoding():
    torch.manual_seed(0)
    model = FAnoGAN(3, image_size=16, channels=(4, 8), latent_dim=8).eval()
    x = torch.rand(2, 1, 16, 16, 16)
    recon = model.reconstruct(x)
    torch.testing.assert_close(recon, model.generator(model.encoder(x)))
    torch.testing.assert_close(model.anomaly_score(x, recon), (x - recon).abs())
    value, features = model.critic(x)
    assert value.shape == (2,) and features.shape == (2, 8 * 4 ** 3)
