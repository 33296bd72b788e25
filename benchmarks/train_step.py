"""Throughput of one VAE training step (Bengs et al. 2021, Sec. 2.2-2.3): 3D at 64³ vs 2D at 64².

For the paper's and the lab profile's backbones, times Adam steps (forward, ELBO, backward, update) on
random data and prints a table of samples/s, voxels/s and achieved GFLOP/s, after a header with the
device, torch threads and CPU cores (usable by this process, and in the machine). FLOPs of one step are
counted with :class:`torch.utils.flop_counter.FlopCounterMode` (matrix products and convolutions,
forward and backward; a multiply-add counts as 2 FLOPs; Adam's element-wise update is not counted).
The baseline is the 2D model of the same profile: the last lines give the 3D/2D ratios of voxels/s
and of FLOPs per voxel, both models measured in the same run, so the ratios transfer between
machines better than raw figures.

Usage::

    python benchmarks/train_step.py                      # batch 32, 10 timed steps
    python benchmarks/train_step.py --steps 3 --batch-size 4 --threads 1
    python benchmarks/train_step.py --device cuda
    python benchmarks/train_step.py --precision bf16-mixed      # the same steps under bf16 autocast
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from uadlab.models import DenseVAE, elbo_loss
from uadlab.models.precision import PRECISIONS, autocast
from uadlab.profiles import get_profile
from uadlab.speed import to_device

_PROFILES = ("paper", "lab")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(spatial_dims: int, profile_name: str, *, image_size: int, batch_size: int, steps: int,
            warmup: int, device: torch.device, precision: str = "32") -> dict[str, float | int | str]:
    """Time ``steps`` training steps after ``warmup`` untimed ones; return one table row.

    Args:
        spatial_dims: 2 (batches of ``(B, 1, S, S)`` slices) or 3 (``(B, 1, S, S, S)`` volumes).
        profile_name: profile whose ``channels`` and latent size define the backbone.
        image_size: edge ``S`` of the input in voxels.
        batch_size: samples per step.
        steps: timed steps.
        warmup: untimed steps before timing (allocator, cuDNN autotuning).
        device: where to run.
        precision: ``"32"``, ``"bf16-mixed"`` or ``"16-mixed"`` (autocast around the forward pass and loss).

    Returns:
        ``model, batch, samples/s, voxels/s, GFLOP/s, GFLOP/step``.
    """
    profile = get_profile(profile_name)
    model = to_device(DenseVAE(spatial_dims, image_size=image_size, latent_dim=profile.latent_dim(spatial_dims),
                               channels=profile.channels), device)  # in the weight layout training uses
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand((batch_size, 1) + (image_size,) * spatial_dims, generator=generator).to(device)

    def step() -> None:
        with autocast(precision, device):
            loss = elbo_loss(model(images), images).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(warmup):
        step()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(device)
    seconds = time.perf_counter() - start
    samples_per_s = batch_size * steps / seconds
    return {"model": f"{spatial_dims}D {profile_name} {tuple(profile.channels)}", "batch": batch_size,
            "samples/s": samples_per_s, "voxels/s": samples_per_s * image_size**spatial_dims,
            "GFLOP/s": flops * steps / seconds / 1e9, "GFLOP/step": flops / 1e9}


def _table(rows: list[dict]) -> str:
    """Fixed-width text table of ``rows`` (same keys)."""
    columns = list(rows[0])
    cells = [[f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, run the four measurements and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    parser.add_argument("--batch-size", type=int, default=32, help="samples per step (paper: 32)")
    parser.add_argument("--image-size", type=int, default=64, help="input edge in voxels (paper: 64)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when present)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--precision", default="32", choices=list(PRECISIONS),
                        help="autocast of the forward pass and loss (default 32; see uadlab train --precision)")
    args = parser.parse_args(argv)
    for flag in ("steps", "batch_size", "image_size", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be a positive int, got {value}")
    if args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    rows = [measure(dims, name, image_size=args.image_size, batch_size=args.batch_size, steps=args.steps,
                    warmup=args.warmup, device=device, precision=args.precision)
            for name in _PROFILES for dims in (3, 2)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"device {device} ({name}), torch {torch.__version__}, torch threads {torch.get_num_threads()}, "
          f"cores {usable} usable of {os.cpu_count()}, precision {args.precision}, "
          f"input {args.image_size}^3 (3D) / {args.image_size}^2 (2D), "
          f"{args.steps} timed steps after {args.warmup} warm-up")
    print(_table(rows))
    for i, profile_name in enumerate(_PROFILES):
        three, two = rows[2 * i], rows[2 * i + 1]
        flops_per_voxel = [row["GFLOP/step"] / row["batch"] / args.image_size**dims
                           for row, dims in ((three, 3), (two, 2))]
        print(f"{profile_name}: 3D/2D voxels/s = {three['voxels/s'] / two['voxels/s']:.3g}, "
              f"3D/2D FLOPs per voxel = {flops_per_voxel[0] / flops_per_voxel[1]:.3g}")


if __name__ == "__main__":
    main()
