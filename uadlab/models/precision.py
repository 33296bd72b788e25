"""How the numbers of training and inference are stored: float32, or mixed precision under
``torch.autocast``.

:func:`autocast` is the one context every forward pass of training, validation and
:func:`uadlab.models.reconstruct` runs in; :func:`bf16_supported` tells whether a device runs bfloat16
natively, which decides the default (:func:`uadlab.training.devices.default_precision`). Where a
model's weights are put, and in which memory layout, is :func:`uadlab.speed.channels_last.to_device`.
"""

from __future__ import annotations

import contextlib

import torch

__all__ = ["PRECISIONS", "autocast", "bf16_supported"]

#: Numeric precisions of training and inference: plain float32, or mixed precision (autocast: matrix
#: products and convolutions in bfloat16 / float16, weights, gradients and optimiser in float32).
PRECISIONS: tuple[str, ...] = ("32", "bf16-mixed", "16-mixed")


def autocast(precision: str, device: str | torch.device) -> contextlib.AbstractContextManager:
    """Context that runs a forward pass (and loss) at ``precision`` on ``device``.

    ``"32"``: nothing changes (float32). ``"bf16-mixed"`` / ``"16-mixed"``: ``torch.autocast`` with
    bfloat16 / float16, so convolutions and matrix products run in 16 bits while weights, gradients
    and the optimiser stay float32. The l1 error of a ``recon`` computed in 16 bits against a float32
    target is float32 (type promotion).

    Args:
        precision: one of :data:`PRECISIONS`.
        device: where the computation runs (``"cpu"``, ``"cuda:0"``...).

    Raises:
        ValueError: ``precision`` is not one of :data:`PRECISIONS`.

    >>> x = torch.ones(2, 2)
    >>> with autocast("bf16-mixed", "cpu"):
    ...     (x @ x).dtype
    torch.bfloat16
    """
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float16
    return torch.autocast(torch.device(device).type, dtype=dtype)


def bf16_supported(device: str | torch.device) -> bool:
    """Whether ``device`` runs bfloat16 natively: a CUDA GPU with bf16, or a CPU with AVX512-BF16 or
    AMX (what oneDNN's bf16 kernels need; without them bf16 is emulated and slower than float32).
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False
