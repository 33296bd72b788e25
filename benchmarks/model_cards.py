"""Model cards: every registered family's source, size, lab and paper settings, and CPU cost at the lab profile.

For each family of :data:`uadlab.models.MODELS` and each dimension it supports, prints (and with
``--write`` saves as Markdown) one row: the registry's description (which names the source), the
parameter count at the ``lab`` and ``paper`` settings (64 voxels), both settings as config fields, and
two timings at the ``lab`` setting:

- **s / lab epoch**: the median time of one training step (forward, loss, backward, Adam update, at the
  lab profile's precision and batch size: 32 slices in 2D, 8 volumes in 3D) times the steps of one
  lab epoch (the lab phantom's 180 training volumes: every axial slice holding brain in 2D, the
  volumes in 3D). Data handling and validation are not included (the zoo study's ``s / epoch``
  column is the whole epoch as it ran). A family fitted in closed form reports its fit on 180 volumes.
- **s / volume**: reconstruction and anomaly score of one 64^3 volume (median of 3), post-processing
  excluded.
- **lab epochs** and **CPU min / lab run**: the lab profile's epoch limit for the family
  (``Profile.max_epochs_for``; early stopping may end a run sooner) and that many epochs of training
  steps plus the validation of each (the lab phantom's 20 healthy validation volumes at ``s / volume``):
  the budget a lab run stays within (issue 26: at most 10 minutes on 2 quiet cores).

Timings are on the CPU threads this process may use (``--threads``); the header says which.

Usage::

    python benchmarks/model_cards.py --data results/data --write docs/models.md
    python benchmarks/model_cards.py --steps 2                 # quicker, on random volumes
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from uadlab.models import MODELS, build_model, model_config, reconstruct_and_score, volumes_to_samples
from uadlab.models.precision import autocast
from uadlab.profiles import get_profile
from uadlab.speed import to_device
from uadlab.training import default_precision

_SIZE, _TRAIN_VOLUMES, _VAL_VOLUMES = 64, 180, 20
_HIDDEN = {"spatial_dims", "image_size", "in_channels"}


def settings(name: str, profile: str, spatial_dims: int) -> tuple[str, int]:
    """The model's config fields at ``profile`` (defaults resolved, the grid left out) and its parameter count."""
    model = build_model(name, model_config(name, get_profile(profile), spatial_dims, _SIZE))
    fields = ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in asdict(model.config).items()
                       if k not in _HIDDEN)
    return fields or "-", sum(p.numel() for p in model.parameters())


def lab_volumes(data: Path | None) -> np.ndarray:
    """``(180, 64, 64, 64)`` training volumes: the lab phantom's healthy training split, else seeded noise in a ball."""
    if data is not None:
        from uadlab.data.dataset import load_dataset

        dataset = load_dataset(data)
        ids = dataset.ids(cohort="healthy", split="train")[:_TRAIN_VOLUMES]
        return np.stack([dataset.subject(i).image for i in ids]).astype(np.float32)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, _SIZE)] * 3, indexing="ij"))
    ball = (grid ** 2).sum(0) < 0.8 ** 2
    rng = np.random.default_rng(0)
    return (rng.random((_TRAIN_VOLUMES, _SIZE, _SIZE, _SIZE), dtype=np.float32) * ball).astype(np.float32)


def time_family(name: str, spatial_dims: int, volumes: np.ndarray, *, steps: int) -> tuple[float, float]:
    """``(seconds per lab epoch, seconds per reconstructed volume)`` of one family at the lab setting."""
    profile = get_profile("lab")
    device = torch.device("cpu")
    precision = profile.precision or default_precision(device)
    torch.manual_seed(0)
    model = to_device(build_model(name, model_config(name, profile, spatial_dims, _SIZE)), device)
    samples = volumes_to_samples(volumes, spatial_dims)
    if spatial_dims == 2:
        samples = samples[samples.reshape(len(samples), -1).max(1) > 0]  # slices holding brain, as training
    if model.fitted_in_closed_form:
        start = time.perf_counter()
        model.fit(torch.from_numpy(samples))
        epoch = time.perf_counter() - start
    else:
        batch = profile.batch_size_for(spatial_dims)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        rng = np.random.default_rng(0)
        times = []
        for step in range(steps + 1):
            x = torch.from_numpy(samples[rng.choice(len(samples), batch, replace=False)])
            start = time.perf_counter()
            with autocast(precision, device):
                loss = model.training_loss(x, x).total
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step:  # the first step warms the allocator up
                times.append(time.perf_counter() - start)
        epoch = statistics.median(times) * -(-len(samples) // batch)
    model.eval()
    recon_times = []
    for _ in range(3):
        start = time.perf_counter()
        reconstruct_and_score(model, volumes[0], precision=precision)
        recon_times.append(time.perf_counter() - start)
    return epoch, statistics.median(recon_times)


def main() -> None:
    """Measure every family and print (and optionally write) the model-card table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="a built lab phantom (default: seeded noise)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per family (default 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--write", type=Path, default=None, help="write the Markdown table here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    volumes = lab_volumes(args.data)
    header = (f"CPU: {os.cpu_count()} cores in the machine, {len(os.sched_getaffinity(0))} usable, "
              f"{torch.get_num_threads()} torch threads; lab precision "
              f"{get_profile('lab').precision or default_precision(torch.device('cpu'))}; "
              f"{'lab phantom' if args.data else 'seeded noise'} volumes; {args.steps} timed steps.")
    intro = ("Generated by `benchmarks/model_cards.py` (its docstring says what each column measures): every "
             "registered family (`uadlab.models.MODELS`) in each dimension it supports, at 64 voxels. The floors "
             "(`mean-image`, `zscore`) are 3D only: a 2D model never sees a slice's axial position. The studies' "
             "own timings (the zoo's `s / epoch`, `docs/zoo_results.md`) are whole epochs as they ran, data "
             "handling and validation included.")
    lines = ["# Model cards", "", intro, "", header, "", "| family | dims | source | lab: parameters | lab setting "
             "| paper: parameters | paper setting | CPU s / lab epoch | CPU s / volume | lab epochs "
             "| CPU min / lab run |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    print(header, flush=True)
    for name, spec in MODELS.items():
        for d in spec.spatial_dims:
            lab, lab_n = settings(name, "lab", d)
            paper, paper_n = settings(name, "paper", d)
            epoch, volume = time_family(name, d, volumes, steps=args.steps)
            epochs = 1 if spec.model_cls.fitted_in_closed_form else get_profile("lab").max_epochs_for(name)
            minutes = epochs * (epoch + _VAL_VOLUMES * volume) / 60
            source = spec.description.replace("|", "\\|")  # a Markdown cell
            lines.append(f"| {name} | {d}D | {source} | {lab_n:,} | {lab} | {paper_n:,} | {paper} | "
                         f"{epoch:.1f} | {volume:.3f} | {epochs} | {minutes:.1f} |")
            print(lines[-1], flush=True)
    if args.write:
        args.write.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
