"""f-AnoGAN (Schlegl et al., MedIA 2019), 2D or 3D: registry name ``fanogan``.

Schlegl, Seeböck, Waldstein, Langs and Schmidt-Erfurth, "f-AnoGAN: Fast unsupervised anomaly
detection with generative adversarial networks" (Medical Image Analysis 54, 2019), train a
Wasserstein GAN with gradient penalty on healthy images, then, with generator ``G`` and critic
fixed, an encoder ``E`` that maps an image to the latent code ``G`` reconstructs it from. Of their
encoder trainings, ``izi_f`` works best: the image is encoded and regenerated (image -> z -> image)
and compared with the input both voxel-wise and in the critic's feature space ``f`` (its last hidden
layer), so that the regenerated image must also *look* like the input to the critic:

``L_izi_f(x) = ||x - G(E(x))||^2 / n + kappa * ||f(x) - f(G(E(x)))||^2 / n_d``

with ``n`` the voxels of an image and ``n_d`` the features. The image-level anomaly score is the same
sum, ``A(x) = A_R(x) + kappa * A_D(x)`` (:func:`izi_f_score`); the voxel-wise map for localisation,
which the suite's protocol scores, is the residual ``|x - G(E(x))|`` (the default
:meth:`~uadlab.models.base.ModelBase.anomaly_score`).

How the model fits the seam (one Adam over all parameters, one loss per step): :class:`FAnoGAN` keeps
a step counter, saved by :meth:`~FAnoGAN.loss_state` so that a resumed run stays bit-identical, and
``training_loss`` follows the paper's two stages by it:

- Stage 1, the first ``gan_steps`` steps: WGAN-GP (Gulrajani et al. 2017). Of every ``n_critic + 1``
  steps, ``n_critic`` (5) return the critic's loss ``D(G(z)) - D(x) + lambda * (||grad D(x_hat)|| -
  1)^2`` (``lambda`` = 10, ``x_hat`` between real and generated) with ``G(z)`` detached, and one the
  generator's ``-D(G(z))`` with the critic's parameters frozen, ``z ~ N(0, I)`` from torch's global
  generator. The training loop zeroes gradients to ``None`` and Adam skips a parameter without a
  gradient, so each step moves only the network whose loss it returns (Adam's moment estimates of the
  others stay as they were).
- Stage 2, the steps after: ``G`` and the critic frozen (no gradient, eval mode), the encoder trained
  with :func:`izi_f_loss`.

Departures, all forced by the seam or the suite: one Adam with the run's learning rate and PyTorch's
default betas (the WGAN-GP code uses lr 1e-4, betas (0, 0.9), one optimiser per network); images in
[0, 1] with a sigmoid generator output (the authors scale to [-1, 1] with tanh); small DCGAN-style
networks from :mod:`uadlab.models.vae`'s stages (the authors use residual 64 x 64 networks); the
critic has no normalisation (the gradient penalty is per sample), generator and encoder BatchNorm.
The history's ``recon`` is the l1 error of ``G(E(x))`` in both stages (meaningless before stage 2).
Early stopping watches the validation error of ``G(E(x))``, which stage 1 does not train, so its
patience counts only once stage 2 has begun (:meth:`FAnoGAN.patience_started`); the epochs of stage 1
count toward ``max_epochs``.

Settings: ``gan_steps`` is the number of stage-1 steps. ``lab``: 2000 in 2D (about 6 of its 30 epochs,
``Profile.epoch_limits``, at 360 steps an epoch on 180 training volumes) and 150 in 3D (about 7 of 30
at 22); ``paper``: 100,000 (the order of the WGAN-GP reference code's iterations; not checked against
the authors' f-AnoGAN configuration); smoke and smaller profiles: 30. Latent 128 (2D) / 512 (3D) as
the dense VAE, the profile's channels.

Reference facts (tSchlegl/f-AnoGAN, the authors' TensorFlow code):

- ``z_encoding_izif.py``, ``train_enc_izi(..., loss_type='MSE', kappa=1.0)``: ``loss = MSE(x,
  G(E(x))) + kappa * MSE(f(G(E(x))), f(x))``, each ``tf.reduce_mean`` over the batch and all voxels
  (or features): the batch mean of the per-image terms above. ``kappa = 1`` by default.
- ``anomaly_detection.py``, ``anomaly_scoring(..., dual_iloss=True)``: the per-image ``MSE(x, G(E(x)),
  axis=1) + kappa * MSE(f(G(E(x))), f(x), axis=1)``.
- ``wgangp_64x64.py``, ``GoodDiscriminator``: ``f`` is the critic's flattened last hidden layer
  (``4 * 4 * 8 * dim`` values), before the linear output; images are scaled to ``[-1, 1]``.

Shape:
    - ``image``, ``recon``: ``(B, C, ...)`` any spatial layout, the same for both.
    - ``image_features``, ``recon_features``: ``(B, ...)``, the same for both.
    - :func:`izi_f_score`: ``(B,)``; :func:`izi_f_loss`: a scalar.
    - :class:`FAnoGAN` input: ``(B, 1, S, S)`` (2D) or ``(B, 1, S, S, S)`` (3D), float32 in [0, 1];
      latent ``(B, latent_dim)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from uadlab._checks import check_int, check_real
from uadlab.models.base import LossTerms, ModelBase
from uadlab.models.registry import register
from uadlab.models.vae import LAYERS, NEGATIVE_SLOPE, check_backbone, decoder_stages, encoder_stages

__all__ = ["FAnoGAN", "FAnoGANConfig", "IZI_F_KAPPA", "N_CRITIC", "GP_WEIGHT", "izi_f_score", "izi_f_loss"]

#: Weight of the critic-feature term (the authors' code: ``kappa=1.0``).
IZI_F_KAPPA = 1.0
#: Critic steps per generator step (Gulrajani et al. 2017; the authors' WGAN-GP code: 5).
N_CRITIC = 5
#: Weight ``lambda`` of the gradient penalty (Gulrajani et al. 2017: 10).
GP_WEIGHT = 10.0
#: Latent size when none is given, as the dense VAE.
DEFAULT_LATENT = {2: 128, 3: 512}
#: Stage-1 (WGAN-GP) steps per profile and spatial dimension; other profiles: :data:`_SMALL_GAN_STEPS`.
GAN_STEPS = {"lab": {2: 2000, 3: 150}, "paper": {2: 100_000, 3: 100_000}}
_SMALL_GAN_STEPS = 30


def _check_pair(name: str, a: torch.Tensor, b: torch.Tensor, other: str) -> None:
    for label, value in ((name, a), (other, b)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"`{label}` must be a tensor, got {type(value).__name__}")
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"`{name}` and `{other}` must have one shape (B, ...), got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")


def izi_f_score(image: torch.Tensor, recon: torch.Tensor, image_features: torch.Tensor,
                recon_features: torch.Tensor, *, kappa: float = IZI_F_KAPPA) -> torch.Tensor:
    """Per image: ``mean((x - G(E(x)))^2) + kappa * mean((f(x) - f(G(E(x))))^2)`` (Schlegl et al. 2019).

    The encoder's ``izi_f`` training loss of one image and its anomaly score ``A(x) = A_R(x) + kappa
    A_D(x)``: the mean squared residual over the ``n`` voxels plus ``kappa`` times the mean squared
    difference of the critic's ``n_d`` features.

    Args:
        image: ``x``, ``(B, C, ...)``, the intensity scale the GAN was trained on.
        recon: ``G(E(x))``, the shape of ``image``.
        image_features: ``f(x)``, the critic's last hidden layer, ``(B, ...)``.
        recon_features: ``f(G(E(x)))``, the shape of ``image_features``.
        kappa: weight of the feature term, ``>= 0``.

    Returns:
        ``(B,)``, in squared intensity units (plus ``kappa`` times squared feature units).

    Raises:
        TypeError: a non-tensor input; a ``kappa`` that is not a number.
        ValueError: shapes that differ or lack a batch axis; batch sizes that differ; a negative ``kappa``.

    >>> izi_f_score(torch.tensor([[1.0, 3.0]]), torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0]]),
    ...             torch.tensor([[0.0]]), kappa=0.5)
    tensor([4.])
    """
    _check_pair("image", image, recon, "recon")
    _check_pair("image_features", image_features, recon_features, "recon_features")
    if len(image) != len(image_features):
        raise ValueError(f"`image` and `image_features` must have one batch size, got {len(image)} and "
                         f"{len(image_features)}")
    kappa = check_real("kappa", kappa, "a non-negative number", lambda v: v >= 0)
    residual = (image - recon).flatten(1).square().mean(1)
    features = (image_features - recon_features).flatten(1).square().mean(1)
    return residual + kappa * features


def izi_f_loss(image: torch.Tensor, recon: torch.Tensor, image_features: torch.Tensor,
               recon_features: torch.Tensor, *, kappa: float = IZI_F_KAPPA) -> torch.Tensor:
    """The encoder's ``izi_f`` loss: :func:`izi_f_score` averaged over the batch (Schlegl et al. 2019).

    Gradients reach whatever produced ``recon`` and ``recon_features`` (the encoder, through the fixed
    generator and critic); ``image_features`` is a target and may be computed without them.

    Args:
        image, recon, image_features, recon_features, kappa: as :func:`izi_f_score`.

    Returns:
        A scalar tensor.

    Raises:
        TypeError, ValueError: as :func:`izi_f_score`.
    """
    return izi_f_score(image, recon, image_features, recon_features, kappa=kappa).mean()


# ---------------------------------------------------------------------------------------------------
# The model


@dataclass(frozen=True)
class FAnoGANConfig:
    """Arguments of :class:`FAnoGAN`, saved with every run."""

    spatial_dims: int
    image_size: int = 64
    latent_dim: int | None = None
    channels: tuple[int, ...] = (32, 64, 128, 256)
    in_channels: int = 1
    gan_steps: int = 2000
    n_critic: int = N_CRITIC
    kappa: float = IZI_F_KAPPA

    @classmethod
    def from_profile(cls, profile: Any, spatial_dims: int, image_size: int, **options: Any) -> FAnoGANConfig:
        """The profile's channels and latent size; ``gan_steps`` of :data:`GAN_STEPS` (30 for small profiles)."""
        gan_steps = GAN_STEPS.get(profile.name, {}).get(spatial_dims, _SMALL_GAN_STEPS)
        return cls(spatial_dims, image_size, profile.latent_dim(spatial_dims), tuple(profile.channels),
                   **{"gan_steps": gan_steps, **options})


@contextmanager
def _frozen(*modules: nn.Module) -> Iterator[None]:
    """Inside: ``modules`` in eval mode with no parameter requiring a gradient; both restored after."""
    saved = [(m, m.training, [p.requires_grad for p in m.parameters()]) for m in modules]
    for module in modules:
        module.eval().requires_grad_(False)
    try:
        yield
    finally:
        for module, training, flags in saved:
            module.train(training)
            for parameter, flag in zip(module.parameters(), flags):
                parameter.requires_grad_(flag)


class _Critic(nn.Module):
    """WGAN critic: stride-2 convolutions with LeakyReLU and no normalisation, then a linear output."""

    def __init__(self, spatial_dims: int, in_channels: int, channels: tuple[int, ...], n_bottom: int) -> None:
        super().__init__()
        conv = LAYERS[spatial_dims][0]
        stages: list[nn.Module] = []
        for c_in, c_out in zip((in_channels, *channels[:-1]), channels):
            stages += [conv(c_in, c_out, 4, 2, 1), nn.LeakyReLU(NEGATIVE_SLOPE)]
        self.features = nn.Sequential(*stages, nn.Flatten())
        self.output = nn.Linear(n_bottom, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(critic value (B,), features f(x) (B, n_d))``."""
        features = self.features(x)
        return self.output(features)[:, 0], features


class FAnoGAN(ModelBase):
    """f-AnoGAN: WGAN-GP generator and critic, then an ``izi_f`` encoder (Schlegl et al., MedIA 2019).

    ``reconstruct(x) = G(E(x))``, deterministic in eval mode; the anomaly map is its residual. See the
    module docstring for the two training stages in one loss.

    Args:
        spatial_dims: 2 (axial slices) or 3 (volumes).
        image_size: edge ``S`` of the input, voxels; a multiple of ``2 ** len(channels)``.
        latent_dim: size of ``z``; ``None``: 128 (2D) or 512 (3D).
        channels: feature maps per stride-2 stage of encoder and critic; the generator mirrors them.
        in_channels: image channels (1: T1).
        gan_steps: training steps of stage 1 (WGAN-GP) before the encoder's stage 2.
        n_critic: critic steps per generator step in stage 1.
        kappa: weight of the critic-feature term of the ``izi_f`` loss.

    Raises:
        TypeError: a size that is not an int, a ``kappa`` that is not a number.
        ValueError: ``spatial_dims`` not 2 or 3; ``image_size`` not a positive multiple of
            ``2 ** len(channels)``; a size that is not positive; a negative ``gan_steps`` or ``kappa``.
    """

    def __init__(self, spatial_dims: int, *, image_size: int = 64, latent_dim: int | None = None,
                 channels: tuple[int, ...] = (32, 64, 128, 256), in_channels: int = 1, gan_steps: int = 2000,
                 n_critic: int = N_CRITIC, kappa: float = IZI_F_KAPPA) -> None:
        super().__init__()
        self.spatial_dims, self.image_size, channels, self.in_channels = check_backbone(
            spatial_dims, image_size, channels, in_channels, "elbo")
        latent_dim = DEFAULT_LATENT[self.spatial_dims] if latent_dim is None else latent_dim
        self.latent_dim = check_int("latent_dim", latent_dim, "a positive int or None", lambda v: v > 0)
        self.gan_steps = check_int("gan_steps", gan_steps, "a non-negative int", lambda v: v >= 0)
        self.n_critic = check_int("n_critic", n_critic, "a positive int", lambda v: v > 0)
        self.kappa = float(check_real("kappa", kappa, "a non-negative number", lambda v: v >= 0))
        self.config = FAnoGANConfig(self.spatial_dims, self.image_size, self.latent_dim, channels, self.in_channels,
                                    self.gan_steps, self.n_critic, self.kappa)
        self.step = 0

        norm = LAYERS[self.spatial_dims][1]
        bottom_shape = (channels[-1],) + (self.image_size // 2 ** len(channels),) * self.spatial_dims
        n_bottom = math.prod(bottom_shape)
        self.generator = nn.Sequential(nn.Linear(self.latent_dim, n_bottom), nn.Unflatten(1, bottom_shape),
                                       norm(channels[-1]), nn.LeakyReLU(NEGATIVE_SLOPE),
                                       *decoder_stages(self.spatial_dims, channels, self.in_channels))
        self.critic = _Critic(self.spatial_dims, self.in_channels, channels, n_bottom)
        self.encoder = nn.Sequential(*encoder_stages(self.spatial_dims, self.in_channels, channels), nn.Flatten(),
                                     nn.Linear(n_bottom, self.latent_dim))

    @property
    def stage(self) -> int:
        """1 (WGAN-GP) for the first ``gan_steps`` training steps, then 2 (the encoder)."""
        return 1 if self.step < self.gan_steps else 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``G(E(x))``, in (0, 1).

        Raises:
            TypeError, ValueError: ``x`` is not a ``(B, *input_shape)`` tensor.
        """
        self.check_input(x)
        return self.generator(self.encoder(x))

    def training_loss(self, inputs: torch.Tensor, target: torch.Tensor) -> LossTerms:
        """The loss of this step of the schedule (module docstring); advances the step counter.

        ``total`` is the critic's, the generator's or the encoder's loss; ``recon`` the l1 error of
        ``G(E(inputs))`` against ``target`` summed over a sample's voxels; ``kl`` 0.
        """
        step, self.step = self.step, self.step + 1
        if step >= self.gan_steps:
            with _frozen(self.generator, self.critic):
                recon = self(inputs)
                with torch.no_grad():
                    target_features = self.critic(target)[1]
                total = izi_f_loss(target, recon.float(), target_features, self.critic(recon)[1], kappa=self.kappa)
        else:
            with torch.no_grad():
                recon = self(inputs)
            z = torch.randn(len(target), self.latent_dim, device=target.device)
            if (step % (self.n_critic + 1)) < self.n_critic:
                total = self._critic_loss(target, self.generator(z).detach())
            else:
                with _frozen(self.critic):
                    total = -self.critic(self.generator(z))[0].mean()
        l1 = (recon.detach().float() - target).abs().flatten(1).sum(1).mean()
        return LossTerms(total, l1, l1.new_zeros(()))

    def _critic_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """``D(fake) - D(real) + lambda * (||grad D(x_hat)||_2 - 1)^2``, batch means (Gulrajani et al. 2017)."""
        mix = torch.rand((len(real),) + (1,) * (real.ndim - 1), device=real.device)
        between = (mix * real + (1 - mix) * fake).requires_grad_(True)
        gradient, = torch.autograd.grad(self.critic(between)[0].sum(), between, create_graph=True)
        penalty = (gradient.flatten(1).norm(dim=1) - 1).square().mean()
        return self.critic(fake)[0].mean() - self.critic(real)[0].mean() + GP_WEIGHT * penalty

    def validation_terms(self, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(G(E(samples)), zeros)``: no KL."""
        return self(samples), samples.new_zeros(len(samples))

    def reconstruct(self, samples: torch.Tensor) -> torch.Tensor:
        """``G(E(samples))`` (call in eval mode: BatchNorm's running statistics)."""
        return self(samples)

    def patience_started(self) -> bool:
        """Early stopping counts from stage 2 on: stage 1 does not train what validation scores."""
        return self.stage == 2

    def loss_state(self) -> dict[str, Any]:
        """The step counter that picks the stage and the critic/generator turn."""
        return {"step": self.step}

    def load_loss_state(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`loss_state` (``None``: keep the counter)."""
        if state is not None:
            self.step = int(state["step"])


register("fanogan", FAnoGAN, FAnoGANConfig, erasing=False,
         description="f-AnoGAN: WGAN-GP, then an izi_f encoder (Schlegl et al. 2019)")
