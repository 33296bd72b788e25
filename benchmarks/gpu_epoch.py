"""The training set resident on the device against batches made on the host (issue 29), in one run.

The old loop (commit ``ee0cf32``) stacked the training samples in numpy (in 2D, every axial slice with a
brain voxel copied out of the volumes), gathered and erased each batch there (Sec. 2.2) and copied it
to the device every step. The new one moves the volumes and brain masks to the device once (cutting the
2D slices there) and gathers and erases each batch there (``uadlab.training.reconstruction._TrainingSamples``,
``SpatialErasing.apply_batch`` on tensors), with the same draws. On the device there is (CUDA when
present, else the CPU), with the same data and seed, for each experiment (``2D-Patch-n`` and
``3D-Cube-n`` by default):

- ``batches``: ``--batches`` batches gathered and erased as the loop's epochs order them, no model;
  milliseconds per batch (median), and whether both loops' erased batches are bit for bit alike;
- ``steps``: ``--steps`` Adam steps of the profile's dense VAE at the run's default precision (batch,
  erasing, forward, backward, step), after one warm-up step each; milliseconds per step (median);
- ``epochs``: ``--epochs`` whole epochs through ``uadlab.training.train``, each loop in a subprocess of
  its own with the same thread count (the old one from ``--before``: a commit, or a folder holding its
  ``git archive`` for a machine without the history; ``benchmarks/_before.py``), timed from the start of
  an epoch's pass to the end of its checkpoint (``benchmarks/_epoch_clock.py``); whether both histories
  (``seconds`` aside) are equal.

Each line gives old / new as a ratio (above 1: the new loop is faster). A GPU is waited for at the end of
every batch and step (``torch.cuda.synchronize``), as the loop's own per-step read of the loss does.

Usage::

    python benchmarks/gpu_epoch.py                     # lab phantom, 200 healthy subjects, built in a temp folder
    python benchmarks/gpu_epoch.py --data data/phantom --before /tmp/uadlab-ee0cf32
    python benchmarks/gpu_epoch.py --profile smoke --healthy 6 --epochs 1 --batches 4 --steps 2

The last is a check that the script runs: 33 s on a 2-core CPU shared with another training.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _before import ROOT, checkout

from uadlab._threads import limit_threads
from uadlab.data.dataset import build_dataset, load_dataset
from uadlab.models.base import volumes_to_samples
from uadlab.models.precision import autocast
from uadlab.models.registry import build_model, model_config
from uadlab.profiles import get_profile
from uadlab.speed.channels_last import to_device
from uadlab.training import reconstruction as training
from uadlab.training.devices import resolve_device
from uadlab.training.experiments import parse_experiment

MANIFEST = ROOT / "data_manifests" / "phantom.yaml"
BEFORE_I29 = "ee0cf32"  # the last commit whose loop made its batches on the host
# Run in a subprocess whose ``uadlab`` is one loop's: trains and prints the epoch seconds and the history.
_EPOCHS_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[6])
import torch
import uadlab.training as training
from _epoch_clock import CallTimer, epoch_targets
torch.set_num_threads(int(sys.argv[4]))
epochs = int(sys.argv[3])
config = training.TrainConfig(experiment=sys.argv[1], profile=sys.argv[7], data=sys.argv[2], max_epochs=epochs,
                              patience=epochs, seed=0)
with CallTimer(epoch_targets(training)) as timer:
    result = training.train(config, sys.argv[5], overwrite=True)
print(json.dumps({"seconds": timer.epoch_seconds(), "history": result.history.drop(columns="seconds").to_dict("list")}))
"""


class HostBatches:
    """The old loop's batches: samples stacked in numpy, gathered and erased there, copied to ``device``."""

    def __init__(self, images: np.ndarray, brain_masks: np.ndarray, spatial_dims: int, device: torch.device) -> None:
        samples = volumes_to_samples(images, spatial_dims)
        masks = volumes_to_samples(brain_masks, spatial_dims)
        if spatial_dims == 2:
            keep = masks.reshape(len(masks), -1).any(axis=1)
            samples, masks = samples[keep], masks[keep]
        self.samples, self.masks, self.device = np.ascontiguousarray(samples), np.ascontiguousarray(masks), device

    def __call__(self, index: np.ndarray, erasing, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(erased inputs, targets) of the samples ``index`` on the device."""
        target = self.samples[index]
        inputs = erasing.apply_batch(target, self.masks[index], rng)
        return torch.as_tensor(inputs, dtype=torch.float32).to(self.device), torch.from_numpy(target).to(self.device)


class DeviceBatches:
    """The new loop's batches: gathered from the resident volumes and erased on the device."""

    def __init__(self, images: np.ndarray, brain_masks: np.ndarray, spatial_dims: int, device: torch.device) -> None:
        self.samples = training._TrainingSamples(images, brain_masks, spatial_dims, device)

    def __call__(self, index: np.ndarray, erasing, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(erased inputs, targets) of the samples ``index`` on the device."""
        target = self.samples.images(index)
        return erasing.apply_batch(target, self.samples.brain_masks(index), rng), target


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, work) -> tuple[float, object]:
    """Seconds of ``work()`` (the device waited for), and what it returned."""
    _sync(device)
    start = time.perf_counter()
    out = work()
    _sync(device)
    return time.perf_counter() - start, out


def _batches(samples: int, batch_size: int, count: int) -> list[np.ndarray]:
    """``count`` sorted batches as the loop makes them, epoch after epoch (a small set has few per epoch)."""
    batches, epoch = [], 1
    while len(batches) < count:
        order = training._epoch_rng(0, epoch).permutation(samples)
        batches += [np.sort(batch) for batch in np.array_split(order, math.ceil(samples / batch_size))]
        epoch += 1
    return batches[:count]


def compare_batches(images, brain_masks, experiment, *, batch_size, batches, device) -> dict:
    """Each loop's seconds per batch (median, after one warm-up batch), and whether both make the same batches."""
    exp = parse_experiment(experiment)
    erasing = exp.erasing(p=0.5)
    setup, loops = {}, {}
    setup["old"], loops["old"] = _timed(device, lambda: HostBatches(images, brain_masks, exp.spatial_dims, device))
    setup["new"], loops["new"] = _timed(device, lambda: DeviceBatches(images, brain_masks, exp.spatial_dims, device))
    seconds, same = {"old": [], "new": []}, True
    for b, index in enumerate(_batches(len(loops["new"].samples), batch_size, batches + 1)):
        made = {}
        for name in ("old", "new") if b % 2 else ("new", "old"):  # each loop first every other batch
            spent, made[name] = _timed(device, lambda: loops[name](index, erasing, np.random.default_rng([0, b])))
            if b:  # batch 0 warms up
                seconds[name].append(spent)
        same = same and all(torch.equal(old, new) for old, new in zip(made["old"], made["new"]))
    return {"old": float(np.median(seconds["old"])), "new": float(np.median(seconds["new"])), "same": same,
            "setup_old": setup["old"], "setup_new": setup["new"]}


def compare_steps(images, brain_masks, experiment, *, profile, batch_size, steps, device) -> dict:
    """Seconds per Adam step of the profile's dense VAE on each loop's batches (one warm-up step each)."""
    exp = parse_experiment(experiment)
    erasing = exp.erasing(p=0.5)
    precision = training.TrainConfig(experiment=experiment, profile=profile, data="-").resolved_precision(device)
    model = to_device(build_model("dense-vae", model_config("dense-vae", profile, exp.spatial_dims,
                                                            images.shape[1])), device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    model.train()
    loops = {"old": HostBatches(images, brain_masks, exp.spatial_dims, device),
             "new": DeviceBatches(images, brain_masks, exp.spatial_dims, device)}
    seconds = {"old": [], "new": []}

    def step(loop, index, rng):
        with autocast(precision, device):
            loss = model.training_loss(*loop(index, erasing, rng))[0]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())  # the loop reads the loss every step

    for s, index in enumerate(_batches(len(loops["new"].samples), batch_size, steps + 1)):
        for name in ("old", "new") if s % 2 else ("new", "old"):  # each loop first every other step
            spent, _ = _timed(device, lambda: step(loops[name], index, np.random.default_rng([0, s])))
            if s:  # step 0 warms up
                seconds[name].append(spent)
    return {"old": float(np.median(seconds["old"])), "new": float(np.median(seconds["new"])), "precision": precision}


def compare_epochs(tree: Path, data: Path, experiment: str, *, profile: str, epochs: int, threads: int,
                   out: Path) -> dict:
    """Seconds per epoch of the old loop (``tree``) and the new one (this checkout), each trained in a
    subprocess, and whether the histories match."""
    runs = {}
    for name, root in (("old", tree), ("new", ROOT)):  # python -c imports uadlab from its working folder first
        env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": str(threads)}
        done = subprocess.run([sys.executable, "-c", _EPOCHS_SCRIPT, experiment, str(data), str(epochs), str(threads),
                               str(out / name), str(Path(__file__).parent), profile],
                              env=env, capture_output=True, text=True, check=True, cwd=root)
        runs[name] = json.loads(done.stdout.strip().splitlines()[-1])
    seconds = {name: np.array(run["seconds"]) for name, run in runs.items()}
    return {**{name: float(s.mean()) for name, s in seconds.items()},
            **{f"{name}_fastest": float(s.min()) for name, s in seconds.items()},
            "same": runs["old"]["history"] == runs["new"]["history"]}


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, build or reuse the phantom, compare the loops and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="lab", choices=["smoke", "lab", "paper"], help="backbone, batch, phantom")
    parser.add_argument("--data", type=Path, default=None, help="a phantom built with --profile (default: build one)")
    parser.add_argument("--healthy", type=int, default=200, help="healthy subjects of the built phantom (default 200)")
    parser.add_argument("--experiments", default="2D-Patch-n,3D-Cube-n")
    parser.add_argument("--batches", type=int, default=50, help="batches gathered and erased per loop (default 50)")
    parser.add_argument("--steps", type=int, default=10, help="timed Adam steps per loop (default 10; 0 skips)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per loop (default 3; 0 skips)")
    parser.add_argument("--before", default=BEFORE_I29, help=f"commit of the old loop, or a folder holding its "
                                                             f"extraction (default {BEFORE_I29})")
    args = parser.parse_args(argv)
    if args.healthy < 4 or args.batches < 1 or args.steps < 0 or args.epochs < 0:
        parser.error("--healthy must be >= 4, --batches >= 1, --steps and --epochs >= 0")
    sys.stdout.reconfigure(line_buffering=True)  # each line as soon as it is measured
    threads = limit_threads()
    device = resolve_device(None)
    profile = get_profile(args.profile)
    with tempfile.TemporaryDirectory(prefix="uadlab-gpu-epoch-") as tmp:
        data = args.data.resolve() if args.data else None  # the old loop runs in another working folder
        if data is None:
            counts = {"healthy": args.healthy, "tumour": 2, "stroke": 2}
            start = time.perf_counter()
            data = build_dataset(MANIFEST, Path(tmp) / "phantom", cache_dir=Path(tmp) / "cache",
                                 profile=dataclasses.replace(profile, phantom_counts=counts))
            print(f"built a {args.profile} phantom with {args.healthy} healthy subjects in "
                  f"{time.perf_counter() - start:.0f} s")
        dataset = load_dataset(data)
        images, brain_masks = dataset.stack(dataset.ids(cohort="healthy", split="train"))
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(f"{args.profile} profile on {name}: torch {torch.__version__}, {threads} thread(s), cores "
              f"{len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.2f}, {len(images)} training volumes")
        tree = checkout(args.before, Path(tmp) / f"uadlab-{args.before}") if args.epochs else None
        for experiment in args.experiments.split(","):
            batch_size = profile.batch_size_for(parse_experiment(experiment).spatial_dims)
            row = compare_batches(images, brain_masks, experiment, batch_size=batch_size, batches=args.batches,
                                  device=device)
            print(f"{experiment:11s} batches: old {row['old'] * 1e3:7.2f} ms, new {row['new'] * 1e3:7.2f} ms "
                  f"per batch of {batch_size}, old / new {row['old'] / row['new']:.2f}x; erased batches "
                  f"{'identical' if row['same'] else 'DIFFERENT'}; set-up old {row['setup_old']:.2f} s, "
                  f"new {row['setup_new']:.2f} s")
            if args.steps:
                row = compare_steps(images, brain_masks, experiment, profile=profile, batch_size=batch_size,
                                    steps=args.steps, device=device)
                print(f"{experiment:11s} steps:   old {row['old'] * 1e3:7.1f} ms, new {row['new'] * 1e3:7.1f} ms per "
                      f"step ({row['precision']}), old / new {row['old'] / row['new']:.2f}x")
            if args.epochs:
                row = compare_epochs(tree, data, experiment, profile=args.profile, epochs=args.epochs,
                                     threads=threads, out=Path(tmp) / "run" / experiment)
                print(f"{experiment:11s} epochs:  old {row['old']:7.2f} s, new {row['new']:7.2f} s per epoch "
                      f"(fastest {row['old_fastest']:.2f} and {row['new_fastest']:.2f}), old / new "
                      f"{row['old'] / row['new']:.2f}x (fastest {row['old_fastest'] / row['new_fastest']:.2f}x); "
                      f"histories {'identical' if row['same'] else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
