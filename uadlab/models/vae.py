"""What the VAEs of the suite share: layers, the Gaussian latent, the ELBO and Lambert et al.'s loss.

Bengs et al. 2021 (Sec. 2.2, Fig. 2) and Lambert et al. 2021 (Sec. 2.1, 2.3) build their VAEs from
the same parts; only the bottleneck differs (:mod:`uadlab.models.dense_vae`,
:mod:`uadlab.models.spatial_vae`):

- an encoder of stride-2 stages ``Conv(kernel 4, stride 2, padding 1, no bias) -> BatchNorm ->
  LeakyReLU(0.2)``, one per entry of ``channels``, each halving the edge;
- a bottleneck to ``mu`` and ``logvar``; ``z = mu + exp(logvar / 2) * eps`` while training,
  ``z = mu`` in eval mode, so inference is deterministic;
- a decoder mirroring the encoder with transposed convolutions, and a sigmoid output: images are in
  [0, 1] (Sec. 2.1) and the residual threshold is searched in [0, 1] (Sec. 2.3).

One code path serves 2D and 3D: ``Conv2d``/``BatchNorm2d``/``ConvTranspose2d`` or their 3D versions
by a one-line lookup. Losses (one home of the KL formula, :func:`kl_divergence`):

- :func:`elbo_loss`: the paper's ELBO with an l1 reconstruction term (Bengs et al. 2021, Sec. 2.3).
- :class:`LambertLoss`: Lambert et al.'s collapse-robust variant (moving-mean-normalised l1 plus a
  cyclically annealed KL).

Shape:
    - 2D input: ``(B, 1, S, S)`` axial slices; 3D input: ``(B, 1, S, S, S)`` volumes; float32 in [0, 1].
    - ``recon``: as the input, in (0, 1); ``mu``, ``logvar``: ``(B, latent_dim)`` (dense) or
      ``(B, N, h, w[, d])`` (spatial).
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

import torch
from torch import nn

from uadlab._checks import check_int, check_real
from uadlab.models.base import LossTerms, ModelBase
from uadlab.speed.subpixel import subpixel_conv_transpose

__all__ = ["VAEBase", "VAEOutput", "LOSSES", "kl_divergence", "elbo_loss", "LambertLoss"]

#: Layer classes per spatial dimension: (convolution, normalisation, transposed convolution).
LAYERS: dict[int, tuple[type[nn.Module], type[nn.Module], type[nn.Module]]] = {
    2: (nn.Conv2d, nn.BatchNorm2d, nn.ConvTranspose2d),
    3: (nn.Conv3d, nn.BatchNorm3d, nn.ConvTranspose3d),
}
#: VAE training objectives: the ELBO (Bengs et al. 2021) and Lambert et al.'s collapse-robust loss.
LOSSES: tuple[str, ...] = ("elbo", "lambert")
NEGATIVE_SLOPE = 0.2  # LeakyReLU
_KERNEL, _STRIDE, _PADDING = 4, 2, 1  # every stage halves (encoder) or doubles (decoder) the size


class VAEOutput(NamedTuple):
    """What a VAE's ``forward`` returns.

    Attributes:
        recon: reconstruction, the input's shape, values in (0, 1).
        mu: posterior means, ``(B, latent_dim)`` or ``(B, N, h, w[, d])``.
        logvar: posterior log-variances, the shape of ``mu``.
    """

    recon: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor


def check_backbone(spatial_dims: Any, image_size: Any, channels: Any, in_channels: Any,
                   loss: Any) -> tuple[int, int, tuple[int, ...], int]:
    """Validate the arguments every VAE shares; returns them as ints and a tuple.

    Raises:
        TypeError: a size that is not an int.
        ValueError: ``spatial_dims`` not 2 or 3; ``channels`` empty or not positive ints;
            ``image_size`` not a positive multiple of ``2**len(channels)``; an unknown ``loss``.
    """
    if spatial_dims not in LAYERS or isinstance(spatial_dims, bool):
        raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims!r}")
    channels = tuple(channels)
    if not channels:
        raise ValueError(f"`channels` must be a non-empty tuple of positive ints, got {channels!r}")
    for c in channels:
        check_int("channels", c, "a non-empty tuple of positive ints", lambda v: v > 0)
    factor = 2 ** len(channels)
    image_size = check_int("image_size", image_size, f"a positive multiple of {factor} (2 ** len(channels))",
                           lambda v: v > 0 and v % factor == 0)
    in_channels = check_int("in_channels", in_channels, "a positive int", lambda v: v > 0)
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {list(LOSSES)}, got {loss!r}")
    return int(spatial_dims), image_size, tuple(int(c) for c in channels), in_channels


def encoder_stages(spatial_dims: int, in_channels: int, channels: tuple[int, ...]) -> list[nn.Module]:
    """The stride-2 encoder stages, ``in_channels -> channels[0] -> ... -> channels[-1]``."""
    conv, norm, _ = LAYERS[spatial_dims]
    stages: list[nn.Module] = []
    for c_in, c_out in zip((in_channels, *channels[:-1]), channels):
        stages += [conv(c_in, c_out, _KERNEL, _STRIDE, _PADDING, bias=False), norm(c_out),
                   nn.LeakyReLU(NEGATIVE_SLOPE)]
    return stages


def decoder_stages(spatial_dims: int, channels: tuple[int, ...], in_channels: int) -> list[nn.Module]:
    """The mirror of :func:`encoder_stages` with transposed convolutions, ending in a sigmoid."""
    _, norm, tconv = LAYERS[spatial_dims]
    stages: list[nn.Module] = []
    for c_in, c_out in zip(channels[::-1], channels[-2::-1]):
        stages += [tconv(c_in, c_out, _KERNEL, _STRIDE, _PADDING, bias=False), norm(c_out),
                   nn.LeakyReLU(NEGATIVE_SLOPE)]
    output = subpixel_conv_transpose(spatial_dims)  # the transposed convolution, faster on a CPU
    return stages + [output(channels[0], in_channels, _KERNEL, _STRIDE, _PADDING), nn.Sigmoid()]


class VAEBase(ModelBase):
    """A VAE as a :class:`~uadlab.models.base.ReconstructionModel`: ``encoder``, ``to_mu``,
    ``to_logvar`` and ``decoder`` are set by the subclass; this class samples, decodes and scores.

    The training objective is the config's ``loss``: ``"elbo"`` (:func:`elbo_loss`) or ``"lambert"``
    (:class:`LambertLoss`, whose state :meth:`loss_state` hands to the checkpoint).
    """

    channels_last_on_cpu = True  # measured: :func:`uadlab.speed.channels_last.to_device`
    encoder: nn.Module
    to_mu: nn.Module
    to_logvar: nn.Module
    decoder: nn.Module

    def _init_backbone(self, spatial_dims: Any, image_size: Any, channels: Any, in_channels: Any, loss: Any) -> None:
        """Validate and set what every VAE shares (:func:`check_backbone`) and its training objective."""
        self.spatial_dims, self.image_size, self.channels, self.in_channels = check_backbone(
            spatial_dims, image_size, channels, in_channels, loss)
        self.loss = loss
        self._criterion = LambertLoss() if loss == "lambert" else elbo_loss

    def forward(self, x: torch.Tensor) -> VAEOutput:
        """Encode, sample (training) or take the mean (eval), decode.

        Args:
            x: ``(B, in_channels, S, S[, S])`` float tensor, values in [0, 1].

        Returns:
            :class:`VAEOutput` ``(recon, mu, logvar)``.

        Raises:
            TypeError: ``x`` is not a torch tensor.
            ValueError: ``x`` is not ``(B, *input_shape)`` with ``B >= 1``.
        """
        self.check_input(x)
        features = self.encoder(x)
        mu, logvar = self.to_mu(features), self.to_logvar(features)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return VAEOutput(self.decoder(z), mu, logvar)

    def training_loss(self, inputs: torch.Tensor, target: torch.Tensor) -> LossTerms:
        """The configured objective of ``self(inputs)`` against the unerased ``target``."""
        return self._criterion(self(inputs), target)

    def validation_terms(self, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(recon, kl)``: reconstruction and per-sample KL ``(B,)`` (call in eval mode: ``z = mu``)."""
        out = self(samples)
        return out.recon, kl_divergence(out.mu, out.logvar)

    def reconstruct(self, samples: torch.Tensor) -> torch.Tensor:
        """``recon`` with ``z = mu`` (call in eval mode)."""
        return self(samples).recon

    def loss_state(self) -> dict[str, Any] | None:
        """The Lambert loss's step counter and recent terms; ``None`` for the ELBO."""
        return self._criterion.state_dict() if isinstance(self._criterion, LambertLoss) else None

    def load_loss_state(self, state: dict[str, Any] | None) -> None:
        """Restore :meth:`loss_state` (ignored for the ELBO)."""
        if state is not None and isinstance(self._criterion, LambertLoss):
            self._criterion.load_state_dict(state)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per sample, summed over latent units: ``(B,)``.

    ``0.5 * sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j)`` (closed form), for a dense ``(B, L)`` or
    spatial ``(B, N, h, w[, d])`` latent.

    >>> float(kl_divergence(torch.zeros(1, 3), torch.zeros(1, 3))[0])
    0.0
    """
    return (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).flatten(1).sum(1)


# ---------------------------------------------------------------------------------------------------
# Losses


def _loss_parts(out: Any, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-sample l1 (summed over voxels), per-sample KL (summed over latent units), latent size."""
    recon, mu, logvar = out
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"`target` must be a torch.Tensor, got {type(target).__name__}")
    if recon.shape != target.shape:
        raise ValueError(f"`target` must have the reconstruction's shape {tuple(recon.shape)}, "
                         f"got {tuple(target.shape)}")
    l1 = (recon - target).abs().flatten(1).sum(1).mean()
    return l1, kl_divergence(mu, logvar).mean(), mu[0].numel()


def elbo_loss(out: VAEOutput, target: torch.Tensor, *, kl_weight: float = 1.0) -> LossTerms:
    """Negative ELBO with l1 reconstruction (Bengs et al. 2021, Sec. 2.3), per sample.

    ``recon = mean_b sum_v |x_bv - x_hat_bv|`` (l1 summed over the voxels of a sample, mean over the
    batch); ``kl = mean_b sum_j 0.5 (mu_bj^2 + exp(logvar_bj) - 1 - logvar_bj)`` (closed form
    KL(N(mu, sigma^2) || N(0, I)) summed over latent units); ``total = recon + kl_weight * kl``.
    Summing over voxels keeps the two terms in the ELBO's proportion (the l1 term is the negative
    log-likelihood of a Laplace decoder up to constants and scale), whatever the image size; the
    batch mean makes the value independent of the batch size.

    Args:
        out: the model's :class:`VAEOutput` (or any ``(recon, mu, logvar)`` triple).
        target: the *unerased* image, the shape of ``out.recon``.
        kl_weight: weight of the KL term (1: the ELBO).

    Returns:
        :class:`LossTerms` of scalar tensors (``total`` carries the gradient).

    Raises:
        TypeError: ``target`` is not a tensor, or ``kl_weight`` not a number.
        ValueError: shapes differ, or ``kl_weight`` is negative.

    Example:
        >>> x = torch.zeros(2, 1, 4, 4)
        >>> out = VAEOutput(x + 0.5, torch.zeros(2, 3), torch.zeros(2, 3))
        >>> float(elbo_loss(out, x).total)  # 16 voxels x 0.5, KL 0
        8.0
    """
    check_real("kl_weight", kl_weight, "a non-negative number", lambda v: v >= 0)
    recon, kl, _ = _loss_parts(out, target)
    return LossTerms(recon + kl_weight * kl, recon, kl)


class LambertLoss:
    """Lambert et al.'s collapse-robust loss: ``l1 / Sigma + beta(t) * KL`` (Lambert et al. 2021, Sec. 2.2).

    - ``Sigma``: mean of the last ``window`` (L = 10) reconstruction terms, the current one included,
      treated as a constant (no gradient). The normalised term stays near 1 all through training.
    - ``beta(t) = 2 t' / T`` for ``t' < T / 2`` else 1, with ``t' = t mod T`` and period ``T = 50``.
      ``t`` counts calls of the loss, i.e. optimisation iterations ("t is the current iteration",
      Lambert et al. Sec. 2.2), starting at 0.
    - KL reduction: the KL *averaged* over latent units (and the batch). Lambert et al. do not state
      the reduction; with the normalised l1 near 1, a KL summed over 128-512 units would dominate and
      push the posterior to the prior, the collapse the loss is meant to avoid.

    The returned ``recon`` and ``kl`` are the same per-sample sums as :func:`elbo_loss` reports, so
    histories of both losses compare; only ``total`` differs.

    The object is stateful (step counter and the recent reconstruction terms): save
    :meth:`state_dict` with a checkpoint and :meth:`load_state_dict` it to resume.

    Args:
        window: L, reconstruction terms in the moving mean.
        period: T, iterations per annealing cycle.

    Raises:
        TypeError: ``window`` or ``period`` is not an int.
        ValueError: ``window`` or ``period`` is not positive.
    """

    def __init__(self, *, window: int = 10, period: int = 50) -> None:
        self.window = check_int("window", window, "a positive int", lambda v: v > 0)
        self.period = check_int("period", period, "a positive int", lambda v: v > 0)
        self.step = 0
        self._recent: deque[float] = deque(maxlen=self.window)

    def beta(self, step: int | None = None) -> float:
        """KL weight at iteration ``step`` (default: the current one)."""
        phase = (self.step if step is None else step) % self.period
        return 2.0 * phase / self.period if phase < self.period / 2 else 1.0

    def __call__(self, out: VAEOutput, target: torch.Tensor) -> LossTerms:
        """Loss of one training iteration; advances the step and the moving mean.

        Args:
            out: the model's :class:`VAEOutput`.
            target: the unerased image, the shape of ``out.recon``.

        Returns:
            :class:`LossTerms`: ``total = recon / Sigma + beta(t) * kl / latent_dim``; ``recon`` and
            ``kl`` as in :func:`elbo_loss`.

        Raises:
            TypeError: ``target`` is not a tensor.
            ValueError: shapes differ.
        """
        recon, kl, latent_dim = _loss_parts(out, target)
        self._recent.append(float(recon.detach()))
        sigma = max(sum(self._recent) / len(self._recent), torch.finfo(torch.float32).tiny)
        total = recon / sigma + self.beta() * kl / latent_dim
        self.step += 1
        return LossTerms(total, recon, kl)

    def state_dict(self) -> dict[str, Any]:
        """Plain-Python state (step, recent reconstruction terms, window, period)."""
        return {"step": self.step, "recent": list(self._recent), "window": self.window,
                "period": self.period}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`.

        Raises:
            ValueError: ``state`` lacks a key or was saved with another window or period.
        """
        missing = {"step", "recent", "window", "period"} - set(state)
        if missing:
            raise ValueError(f"`state` must hold {sorted(missing)}, got keys {sorted(state)}")
        if (state["window"], state["period"]) != (self.window, self.period):
            raise ValueError(f"`state` must have window={self.window}, period={self.period}, "
                             f"got window={state['window']!r}, period={state['period']!r}")
        self.step = int(state["step"])
        self._recent = deque((float(v) for v in state["recent"]), maxlen=self.window)
