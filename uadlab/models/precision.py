"""How the numbers of training and inference are stored: precision (float32, or mixed precision under
``torch.autocast``) and the memory layout of a model's weights.

:func:`autocast` is the one context every forward pass of training, validation and
:func:`uadlab.models.reconstruct` runs in; :func:`bf16_supported` tells whether a device runs bfloat16
natively, which decides the default (:func:`uadlab.training.loop.default_precision`).
:func:`to_device` is the one place a model is put on its device, in the layout that runs fastest there.
"""

from __future__ import annotations

import contextlib
import itertools

import torch
from torch import nn

__all__ = ["PRECISIONS", "autocast", "bf16_supported", "to_device"]

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


def to_device(model: nn.Module, device: str | torch.device) -> nn.Module:
    """Move ``model`` to ``device`` (in place) in the weight layout that runs fastest there.

    On a CPU, a model with ``channels_last_on_cpu`` (the VAEs) keeps its convolution weights and
    buffers channels-last (``torch.channels_last`` in 2D, ``torch.channels_last_3d`` in 3D), so
    oneDNN's convolutions run without reordering their tensors at every call. The weights with one
    input or output channel are restrided too (``Tensor.contiguous`` leaves those as they are, and
    then the first layer's output, and every gradient behind it, stays in the default layout).
    Other models and other devices keep the default layout. Same weights and same results up to
    float rounding; only the speed changes.

    Measured on 2 CPU cores with AVX512-BF16 (issue 16), lab backbones at 64^3 / 64^2, training step
    in bf16 against the default layout, same process: 3D dense VAE 1.13-1.14x, 3D spatial VAE 1.13x,
    2D dense VAE 1.06-1.10x, 2D spatial VAE 1.07x (with :class:`uadlab.models.vae.SubPixelConvTranspose`
    as the output layer: 1.40-1.44x in 3D, 1.08x in 2D). The DDPM's MONAI U-Net ran 0.88x (2D) and
    0.84-0.97x (3D) channels-last, so it stays in the default layout.

    Args:
        model: a registered model (its ``spatial_dims`` is 2 or 3).
        device: where it runs.

    Returns:
        ``model``.
    """
    model.to(device)
    if torch.device(device).type == "cpu" and getattr(model, "channels_last_on_cpu", False):
        rank = model.spatial_dims + 2
        layout = torch.channels_last if rank == 4 else torch.channels_last_3d
        with torch.no_grad():
            for tensor in itertools.chain(model.parameters(), model.buffers()):
                if tensor.ndim == rank:
                    tensor.data = torch.empty_like(tensor.data, memory_format=layout).copy_(tensor.data)
    return model
