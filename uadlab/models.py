"""The VAE of Bengs et al. 2021 (Sec. 2.2, Fig. 2) for 2D slices or 3D volumes, and its losses.

One backbone serves both input dimensions: :class:`VAE` picks ``Conv2d``/``BatchNorm2d``/
``ConvTranspose2d`` or their 3D versions by a one-line lookup, nothing else changes. Losses:

- :func:`elbo_loss`: the paper's ELBO with an l1 reconstruction term (Sec. 2.3).
- :class:`LambertLoss`: Lambert et al.'s collapse-robust variant (moving-mean-normalised l1 plus a
  cyclically annealed KL), for comparison.

:func:`reconstruct` turns a trained model into a volume-to-volume map: a 2D model reconstructs every
axial slice and stacks them back, so 2D and 3D models are scored on identical volumes (Sec. 2.3).

Shape:
    - 2D input: ``(B, 1, S, S)`` axial slices; 3D input: ``(B, 1, S, S, S)`` volumes; float32 in [0, 1],
      ``S = image_size`` (64 in the paper).
    - ``recon``: as the input, in (0, 1); ``mu``, ``logvar``: ``(B, latent_dim)``.
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from uadlab._checks import check_real

__all__ = ["VAE", "VAEOutput", "LossTerms", "elbo_loss", "LambertLoss", "reconstruct", "PRECISIONS",
           "autocast", "bf16_supported"]

#: Numeric precisions of training and inference: plain float32, or mixed precision (autocast: matrix
#: products and convolutions in bfloat16 / float16, reductions and weights in float32).
PRECISIONS: tuple[str, ...] = ("32", "bf16-mixed", "16-mixed")

#: Layer classes per spatial dimension: (convolution, normalisation, transposed convolution).
_LAYERS: dict[int, tuple[type[nn.Module], type[nn.Module], type[nn.Module]]] = {
    2: (nn.Conv2d, nn.BatchNorm2d, nn.ConvTranspose2d),
    3: (nn.Conv3d, nn.BatchNorm3d, nn.ConvTranspose3d),
}
#: Latent size when none is given (Sec. 2.2).
_DEFAULT_LATENT = {2: 128, 3: 512}
_NEGATIVE_SLOPE = 0.2  # LeakyReLU
_KERNEL, _STRIDE, _PADDING = 4, 2, 1  # every stage halves (encoder) or doubles (decoder) the size


class VAEOutput(NamedTuple):
    """What :meth:`VAE.forward` returns.

    Attributes:
        recon: reconstruction, the input's shape, values in (0, 1).
        mu: posterior means ``(B, latent_dim)``.
        logvar: posterior log-variances ``(B, latent_dim)``.
    """

    recon: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor


class LossTerms(NamedTuple):
    """A loss and its parts, each a scalar tensor *per sample* (mean over the batch).

    Attributes:
        total: what is minimised.
        recon: l1 reconstruction error summed over voxels.
        kl: KL(q(z|x) || N(0, I)) summed over latent units.
    """

    total: torch.Tensor
    recon: torch.Tensor
    kl: torch.Tensor


class VAE(nn.Module):
    """Variational autoencoder with a dense bottleneck, 2D or 3D (Bengs et al. 2021, Sec. 2.2, Fig. 2).

    Layout (Fig. 2 gives no feature-map counts; this backbone is our choice, one stage per entry of
    ``channels``):

    - Encoder: per stage ``Conv(kernel 4, stride 2, padding 1, no bias) -> BatchNorm ->
      LeakyReLU(0.2)``; each halves the edge, the first 64 -> 32. With ``channels=(32, 64, 128, 256)``
      and 64 voxels: 1 x 64 -> 32 x 32 -> 64 x 16 -> 128 x 8 -> 256 x 4 (edge per spatial axis).
    - Bottleneck: flatten (``256 * 4**d`` features) -> two linear layers to ``mu`` and ``logvar``
      (latent 128 in 2D, 512 in 3D); ``z = mu + exp(logvar / 2) * eps`` while training, ``z = mu`` in
      eval mode, so inference is deterministic.
    - Decoder: linear ``latent -> 256 * 4**d`` -> BatchNorm -> LeakyReLU, then the mirror of the
      encoder with transposed convolutions (kernel 4, stride 2) 256 -> 128 -> 64 -> 32, and a last
      transposed convolution 32 -> 1 back to 64 voxels.
    - Output: sigmoid. Images are in [0, 1] (Sec. 2.1) and the residual threshold is searched in
      [0, 1] (Sec. 2.3); the sigmoid keeps reconstructions in that range, so a residual never
      exceeds 1 and no negative intensities appear outside the brain.

    Parameter counts (``channels=(32, 64, 128, 256)``, 64 voxels per edge, ``in_channels=1``):

    - 2D, latent 128: 2,956,417 (1,048,832 in the two bottleneck layers, 528,384 in the decoder's
      linear layer).
    - 3D, latent 512: 30,694,273 (16,778,240 in the bottleneck, 8,404,992 in the decoder's linear
      layer; the dense layers dominate).

    Args:
        spatial_dims: 2 (axial slices) or 3 (volumes).
        image_size: edge ``S`` of the square/cubic input, voxels; a multiple of ``2**len(channels)``.
        latent_dim: latent size; ``None``: 128 (2D) or 512 (3D).
        channels: encoder feature maps, one per stride-2 stage; the decoder mirrors them.
        in_channels: image channels (1: T1).

    Raises:
        ValueError: ``spatial_dims`` not 2 or 3; ``image_size`` not a positive multiple of
            ``2**len(channels)``; ``latent_dim``, ``in_channels`` or an entry of ``channels`` not a
            positive int; ``channels`` empty.

    Shape:
        - Input: ``(B, in_channels, S, S)`` (2D) or ``(B, in_channels, S, S, S)`` (3D).
        - Output: :class:`VAEOutput` with ``recon`` like the input, ``mu``/``logvar`` ``(B, latent_dim)``.
    """

    def __init__(self, spatial_dims: int, *, image_size: int = 64, latent_dim: int | None = None,
                 channels: tuple[int, ...] = (32, 64, 128, 256), in_channels: int = 1) -> None:
        super().__init__()
        if spatial_dims not in _LAYERS or isinstance(spatial_dims, bool):
            raise ValueError(f"`spatial_dims` must be 2 or 3, got {spatial_dims!r}")
        channels = tuple(channels)
        if not channels or not all(_is_positive_int(c) for c in channels):
            raise ValueError(f"`channels` must be a non-empty tuple of positive ints, got {channels!r}")
        factor = 2 ** len(channels)
        if not _is_positive_int(image_size) or image_size % factor:
            raise ValueError(f"`image_size` must be a positive multiple of {factor} "
                             f"(2 ** len(channels)), got {image_size!r}")
        latent_dim = _DEFAULT_LATENT[spatial_dims] if latent_dim is None else latent_dim
        if not _is_positive_int(latent_dim):
            raise ValueError(f"`latent_dim` must be a positive int or None, got {latent_dim!r}")
        if not _is_positive_int(in_channels):
            raise ValueError(f"`in_channels` must be a positive int, got {in_channels!r}")
        self.spatial_dims = spatial_dims
        self.image_size = int(image_size)
        self.latent_dim = int(latent_dim)
        self.channels = channels
        self.in_channels = int(in_channels)

        conv, norm, tconv = _LAYERS[spatial_dims]
        bottom_shape = (channels[-1],) + (image_size // factor,) * spatial_dims
        n_bottom = math.prod(bottom_shape)
        encoder: list[nn.Module] = []
        for c_in, c_out in zip((in_channels, *channels[:-1]), channels):
            encoder += [conv(c_in, c_out, _KERNEL, _STRIDE, _PADDING, bias=False), norm(c_out),
                        nn.LeakyReLU(_NEGATIVE_SLOPE)]
        self.encoder = nn.Sequential(*encoder, nn.Flatten())
        self.to_mu = nn.Linear(n_bottom, latent_dim)
        self.to_logvar = nn.Linear(n_bottom, latent_dim)
        decoder: list[nn.Module] = [nn.Linear(latent_dim, n_bottom), nn.Unflatten(1, bottom_shape),
                                    norm(channels[-1]), nn.LeakyReLU(_NEGATIVE_SLOPE)]
        for c_in, c_out in zip(channels[::-1], channels[-2::-1]):
            decoder += [tconv(c_in, c_out, _KERNEL, _STRIDE, _PADDING, bias=False), norm(c_out),
                        nn.LeakyReLU(_NEGATIVE_SLOPE)]
        decoder += [tconv(channels[0], in_channels, _KERNEL, _STRIDE, _PADDING), nn.Sigmoid()]
        self.decoder = nn.Sequential(*decoder)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, ``(in_channels, S, S[, S])``."""
        return (self.in_channels,) + (self.image_size,) * self.spatial_dims

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
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"`x` must be a torch.Tensor, got {type(x).__name__}")
        if x.ndim != self.spatial_dims + 2 or tuple(x.shape[1:]) != self.input_shape or x.shape[0] == 0:
            raise ValueError(f"`x` must be (B, {', '.join(map(str, self.input_shape))}) for this "
                             f"{self.spatial_dims}D VAE, got shape {tuple(x.shape)}")
        features = self.encoder(x)
        mu, logvar = self.to_mu(features), self.to_logvar(features)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return VAEOutput(self.decoder(z), mu, logvar)


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


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
    kl = (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).flatten(1).sum(1).mean()
    return l1, kl, mu[0].numel()


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
    """Lambert et al.'s collapse-robust loss: ``l1 / Sigma + beta(t) * KL`` (METHOD.md, other systems).

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
        ValueError: ``window`` or ``period`` is not a positive int.
    """

    def __init__(self, *, window: int = 10, period: int = 50) -> None:
        for name, value in (("window", window), ("period", period)):
            if not _is_positive_int(value):
                raise ValueError(f"`{name}` must be a positive int, got {value!r}")
        self.window = int(window)
        self.period = int(period)
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


# ---------------------------------------------------------------------------------------------------
# Numeric precision


def autocast(precision: str, device: str | torch.device) -> contextlib.AbstractContextManager:
    """Context that runs a forward pass (and loss) at ``precision`` on ``device``.

    ``"32"``: nothing changes (float32). ``"bf16-mixed"`` / ``"16-mixed"``: ``torch.autocast`` with
    bfloat16 / float16, so convolutions and matrix products run in 16 bits while weights, gradients
    and the optimiser stay float32. The loss of a ``recon`` computed in 16 bits against a float32
    target is float32 (type promotion).

    Args:
        precision: one of :data:`PRECISIONS`.
        device: where the computation runs (``"cpu"``, ``"cuda:0"``...).

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    return torch.autocast(torch.device(device).type, dtype=dtype)


def bf16_supported(device: str | torch.device) -> bool:
    """Whether ``device`` runs bfloat16 natively: a CUDA GPU with bf16, or a CPU with AVX512-BF16 or
    AMX (what oneDNN's bf16 kernels need; without them bf16 is emulated and slower than float32)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


# ---------------------------------------------------------------------------------------------------
# Reconstruction of whole volumes


@torch.no_grad()
def reconstruct(model: VAE, volume: Any, *, batch_size: int = 64,
                device: str | torch.device | None = None, precision: str | None = None) -> np.ndarray:
    """Reconstruct whole volumes with a 2D or 3D model (eval mode, ``z = mu``, no gradients).

    A 2D model reconstructs every axial slice ``volume[:, :, k]`` and the slices are stacked back, so
    2D and 3D models are scored on identical volumes (Bengs et al. 2021, Sec. 2.3). The model's
    train/eval mode is restored afterwards.

    Args:
        model: a :class:`VAE` (anything with ``spatial_dims`` whose forward returns ``recon`` first).
        volume: ``(X, Y, Z)`` or a stack ``(N, X, Y, Z)``, numpy or torch, values in [0, 1];
            ``X = Y (= Z for 3D) = model.image_size``.
        batch_size: slices (2D) or volumes (3D) per forward pass.
        device: where to run; the model is moved there. ``None``: where its parameters are.
        precision: one of :data:`PRECISIONS` (see :func:`autocast`). ``None``: the model's
            ``precision`` attribute, which :func:`uadlab.training.load_run` sets to the precision the
            run was trained at, else ``"32"``.

    Returns:
        float32 numpy array of ``volume``'s shape.

    Raises:
        TypeError: ``model`` is not a torch module with ``spatial_dims``.
        ValueError: ``volume`` is not 3D/4D, ``batch_size`` is not a positive int, ``precision`` is
            unknown, or the slices or volumes do not fit the model (from :meth:`VAE.forward`).
    """
    if not isinstance(model, nn.Module) or getattr(model, "spatial_dims", None) not in (2, 3):
        raise TypeError("`model` must be a VAE (a torch module with spatial_dims 2 or 3), "
                        f"got {type(model).__name__}")
    if not _is_positive_int(batch_size):
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
    array = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    if array.ndim not in (3, 4):
        raise ValueError(f"`volume` must be (X, Y, Z) or (N, X, Y, Z), got shape {array.shape}")
    stack = np.asarray(array[None] if array.ndim == 3 else array, dtype=np.float32)
    n, x, y, z = stack.shape
    if model.spatial_dims == 2:
        samples = stack.transpose(0, 3, 1, 2).reshape(n * z, 1, x, y)
    else:
        samples = stack[:, None]
    if device is None:
        device = next(model.parameters()).device
    if precision is None:
        precision = getattr(model, "precision", "32")
    context = autocast(precision, device)
    model.to(device)
    was_training = model.training
    model.eval()
    try:
        with context:
            recon = np.concatenate([_forward_numpy(model, samples[i:i + batch_size], device)
                                    for i in range(0, len(samples), batch_size)])
    finally:
        model.train(was_training)
    if model.spatial_dims == 2:
        recon = recon.reshape(n, z, x, y).transpose(0, 2, 3, 1)
    else:
        recon = recon[:, 0]
    recon = np.ascontiguousarray(recon, dtype=np.float32)
    return recon[0] if array.ndim == 3 else recon


def _forward_numpy(model: nn.Module, samples: np.ndarray, device: torch.device) -> np.ndarray:
    """``recon`` of one batch of samples, as float32 numpy on the CPU."""
    x = torch.from_numpy(np.ascontiguousarray(samples)).to(device)
    return model(x)[0].float().cpu().numpy()
