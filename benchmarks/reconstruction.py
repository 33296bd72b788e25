"""Reconstruction time per volume: the DDPM (Behrendt et al. 2024) against the dense VAE (Bengs et al. 2021).

Times :func:`uadlab.models.reconstruct` (eval mode, no gradients) of whole volumes for the dense VAE
and the DDPM, each as a 2D model (all axial slices of a volume) and a 3D model (the volume at once),
with the profile's backbone (``Profile.channels``; the DDPM rounds them up to multiples of 8) and
untrained weights (the time does not depend on them). The DDPM noises each input to 250, 500 and
750 of 1000 steps and denoises each in one step, so it runs its U-Net three times per sample.
Prints seconds per volume, then the DDPM / VAE ratios of the same dimension, both measured in this
run, which transfer between machines better than the raw times.

Usage::

    python benchmarks/reconstruction.py                          # lab profile (64^3), 2 volumes, CPU
    python benchmarks/reconstruction.py --profile smoke --volumes 1 --threads 1
    python benchmarks/reconstruction.py --device cuda --volumes 8
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from uadlab.models import build_model, model_config, reconstruct
from uadlab.profiles import get_profile

MODELS = ("dense-vae", "ddpm")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, spatial_dims: int, profile_name: str, *, volumes: int, repeats: int,
            device: torch.device) -> dict[str, float | int | str]:
    """Seconds per volume of ``reconstruct`` for one model, best of ``repeats`` after one warm-up.

    Args:
        name: registry name (``dense-vae`` or ``ddpm``).
        spatial_dims: 2 (axial slices) or 3 (volumes).
        profile_name: profile giving the image size and the backbone.
        volumes: volumes reconstructed per timed call.
        repeats: timed calls; the fastest counts.
        device: where to run.

    Returns:
        ``model, dims, parameters, s/volume``.
    """
    profile = get_profile(profile_name)
    size = profile.image_size
    torch.manual_seed(0)
    model = build_model(name, model_config(name, profile, spatial_dims, size)).to(device).eval()
    stack = np.random.default_rng(0).random((volumes, size, size, size), dtype=np.float32)
    batch_size = profile.batch_size_for(spatial_dims)
    reconstruct(model, stack[:1], batch_size=batch_size, device=device)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        reconstruct(model, stack, batch_size=batch_size, device=device)
        _synchronize(device)
        best = min(best, time.perf_counter() - start)
    return {"model": name, "dims": f"{spatial_dims}D", "parameters": sum(p.numel() for p in model.parameters()),
            "s/volume": best / volumes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="lab", help="profile of the backbones and image size (default: lab)")
    parser.add_argument("--volumes", type=int, default=2, help="volumes per timed call (default: 2)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls, the fastest counts (default: 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    profile = get_profile(args.profile)
    print(f"device {device}, torch threads {torch.get_num_threads()}, usable cores {len(os.sched_getaffinity(0))}, "
          f"profile {profile.name} ({profile.image_size}^3 volumes, channels {profile.channels})")
    rows = [measure(name, dims, args.profile, volumes=args.volumes, repeats=args.repeats, device=device)
            for dims in (2, 3) for name in MODELS]
    print(f"{'model':<10} {'dims':>4} {'parameters':>12} {'s/volume':>10}")
    for row in rows:
        print(f"{row['model']:<10} {row['dims']:>4} {row['parameters']:>12,} {row['s/volume']:>10.4f}")
    for dims in ("2D", "3D"):
        vae, ddpm = (next(r for r in rows if r["model"] == m and r["dims"] == dims) for m in MODELS)
        print(f"{dims}: DDPM / dense VAE reconstruction time per volume = {ddpm['s/volume'] / vae['s/volume']:.1f}x")


if __name__ == "__main__":
    main()
