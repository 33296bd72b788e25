"""Where and at which precision a run trains: the device a config names, and the default precision.

A config may name ``"cuda"`` on a CPU-only machine (it stays valid until something runs there):
:func:`resolve_device` only parses the name, :func:`available_device` also checks this machine has
it. :func:`default_precision` is the precision a run uses when neither its config nor its profile
names one.
"""

from __future__ import annotations

import torch

from uadlab.models.precision import bf16_supported

__all__ = ["default_precision", "resolve_device", "available_device"]


def default_precision(device: str | torch.device) -> str:
    """The precision a run uses on ``device`` when neither its config nor its profile names one.

    ``"bf16-mixed"`` on a CPU that runs bfloat16 natively (AVX512-BF16 or AMX:
    :func:`uadlab.models.precision.bf16_supported`), else ``"32"``, CUDA included.

    On the CPU, measured on a 2-core AMD EPYC with AVX512-BF16, lab profile, nothing else running: the
    bare training step of the dense VAE 1.9x (2D, batch 32) and 1.5x (3D, batch 8) faster than
    float32, whole epochs 1.3-1.6x (runs 6 and 7 of ``benchmarks/train_epoch.py``); the healthy
    validation l1 of ``3D-None`` after 15 epochs was 0.0473 with bf16 and 0.0512 with float32, of
    ``3D-Cube-n`` after 20 epochs 0.0440 and 0.0446 (mean of seeds 0-2; bf16 trailed by 15 % after 5
    epochs; README, "Speed"). On CUDA float32 convolutions already run on the tensor cores as TF32
    (PyTorch's cuDNN default), and bf16 autocast did not pay: on an H200 it made the bare step
    0.29-0.99x as fast and a lab epoch 0.84x (2D) and 0.72x (3D) as fast (``docs/speed_gpu.md``).
    float16 is never a default: it needs loss scaling and buys nothing over bfloat16 where both exist.
    """
    device = torch.device(device)
    return "bf16-mixed" if device.type == "cpu" and bf16_supported(device) else "32"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA when available else CPU; a string is parsed by ``torch.device``.

    Raises:
        ValueError: ``device`` is not a torch device name.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"`device` must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from None


def available_device(device: str | torch.device | None) -> torch.device:
    """:func:`resolve_device`, checked against this machine.

    Raises:
        ValueError: ``device`` is not a torch device name, not one uadlab runs on (``cpu``, ``cuda[:N]``;
            not ``mps``, ``xpu``, ``meta``, ``cpu:7``), or not one this machine has (``cuda:9``).
    """
    resolved = resolve_device(device)
    if resolved.type not in ("cpu", "cuda") or (resolved.type == "cpu" and resolved.index not in (None, 0)):
        raise ValueError(f"`device` must be 'cpu', 'cuda' or 'cuda:N' (what uadlab runs on), got {str(device)!r}")
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (resolved.index or 0) >= count:
            have = "no CUDA device" if count == 0 else f"{count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            raise ValueError(f"`device` must be a device of this machine, got {str(device)!r} (it has {have})")
    return resolved
