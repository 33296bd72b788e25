"""Wall-clock of whole training epochs: the loop as issue 16 found it, eager float32 and the new defaults.

For the 2D and 3D VAE of the lab profile (``2D-Patch-n`` and ``3D-Cube-n``: the erasing
experiments of Figs. 4-6, so an epoch includes erasing) this trains ``--epochs`` epochs three times
with the same seed (each of ``--seeds`` seeds) on the same lab phantom (``--profile paper``: the paper's
backbone on its own phantom), on CUDA when present, else on the CPU, through ``uadlab.training.train``.
An epoch is timed from the start of its pass to the end of its checkpoint (``_epoch_clock.py``):
shuffling, erasing, batching, steps, validation, keeping the best weights, checkpoint. (The runs' own
``history`` ``seconds`` stop before the checkpoint, in both loops.)

- ``before``: the training loop of commit ``32e46d4`` (2026-11-23, before the speed work: eager
  float32, Adam's per-parameter loop, a checkpoint written before the next epoch starts), run from
  ``git archive`` of that commit in a subprocess with the same thread count (needs the git history;
  ``--before ''`` skips it);
- ``eager fp32``: today's loop with ``precision="32"``, no compile;
- ``defaults``: what ``uadlab train`` does with no flag (``precision=None``: bf16 autocast on a CPU
  with AVX512-BF16/AMX, else float32, CUDA included; no compile);
- ``compiled`` (with ``--compile``): the defaults plus ``torch.compile``; its first epoch holds the
  compilation, its fastest epoch what compiling saves afterwards.

It prints the mean (and fastest, the figure least disturbed by other load) epoch seconds of each, the
ratios ``before / defaults`` (issue 16's figure) and ``eager fp32 / defaults`` (what the precision
alone gives), the share of the epoch spent outside the model (erasing, batching, validation,
checkpoint) of today's loop, and whether the defaults reach a healthy validation l1 within 2 % of
float32's after the same epochs. With ``--seeds N`` the epoch figures pool all seeds' epochs and the
val l1 is the mean over seeds, given with its spread over seeds and the standard error of the
difference: after a few 3D lab epochs, one seed's best val l1 moves by several per cent from the next
seed's, more than the 2 % asked. The phantom is the profile's (lab: 64³, 2 mm) with ``--healthy``
subjects (200, the full set, by default). ``benchmarks/train_step.py`` gives the bare-step
figures beside it.

Usage::

    python benchmarks/train_epoch.py                       # builds the 200-subject lab phantom in a temp folder
    python benchmarks/train_epoch.py --data data/phantom   # an already built lab phantom
    python benchmarks/train_epoch.py --epochs 3 --experiments 3D-Cube-n --healthy 40
    python benchmarks/train_epoch.py --experiments 3D-Cube-n --epochs 20 --seeds 3 --before ''
    python benchmarks/train_epoch.py --profile paper --healthy 40 --compile --before /tmp/uadlab-32e46d4
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _before import BEFORE, ROOT, checkout
from _epoch_clock import CallTimer, epoch_targets

import uadlab.training
from uadlab._threads import ADAPTIVE_VARIABLE, limit_threads
from uadlab.data.dataset import build_dataset, load_dataset
from uadlab.profiles import get_profile
from uadlab.training import reconstruction as training
from uadlab.training.devices import resolve_device
from uadlab.training.erasing import SpatialErasing
from uadlab.training.experiments import parse_experiment

MANIFEST = ROOT / "data_manifests" / "phantom.yaml"
# Run in a subprocess whose ``uadlab`` is the old commit's: trains and prints the epoch seconds and best val l1.
_BEFORE_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[7])
import torch
import uadlab.training as training
from _epoch_clock import CallTimer, epoch_targets
torch.set_num_threads(int(sys.argv[4]))
epochs = int(sys.argv[3])
config = training.TrainConfig(experiment=sys.argv[1], profile=sys.argv[6], data=sys.argv[2], max_epochs=epochs,
                              patience=epochs, seed=int(sys.argv[8]))
with CallTimer(epoch_targets(training)) as timer:
    result = training.train(config, sys.argv[5], overwrite=True)
print(json.dumps({"seconds": timer.epoch_seconds(), "best_val": result.best_val}))
"""
_MODES = {"eager fp32": {"precision": "32", "compile": False}, "defaults": {}, "compiled": {"compile": True}}


def _batching_seconds(data: Path, experiment: str, batch_size: int, epochs: int) -> float:
    """Seconds per epoch of what the loop does to make batches besides erasing: shuffle, gather the
    samples of each batch on the training device (measured apart, on the same arrays)."""
    dataset = load_dataset(data)
    images, masks = dataset.stack(dataset.ids(cohort="healthy", split="train"))
    samples = training._TrainingSamples(images, masks, parse_experiment(experiment).spatial_dims,
                                        resolve_device(None))
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        rng = training._epoch_rng(0, epoch)
        for index in np.array_split(rng.permutation(len(samples)), -(-len(samples) // batch_size)):
            float(samples.images(np.sort(index)).sum())  # read back: waits for a GPU
    return (time.perf_counter() - start) / epochs


def measure(data: Path, experiment: str, mode: str, *, profile: str, epochs: int, out: Path, seed: int = 0) -> dict:
    """Train ``epochs`` epochs of ``experiment`` in ``mode`` with ``seed``; return timings and the best val l1."""
    config = training.TrainConfig(experiment=experiment, profile=profile, data=str(data), max_epochs=epochs,
                                  patience=epochs, seed=seed, **_MODES[mode])
    phases = {"validation": (training, "_validate"), "erasing": (SpatialErasing, "apply_batch")}
    with CallTimer({**epoch_targets(uadlab.training), **phases}) as timer:
        result = training.train(config, out, overwrite=True)
    seconds = np.array(timer.epoch_seconds())
    batching = _batching_seconds(data, experiment, config.resolved("batch_size"), epochs)
    outside = {phase: timer.total(phase) / epochs for phase in ("erasing", "validation", "checkpoint")}
    outside["batching"] = batching
    return {"experiment": experiment, "mode": mode, "precision": config.resolved_precision(),
            "seconds": seconds, "outside": outside, "best_val": result.best_val}


def measure_before(tree: Path, data: Path, experiment: str, *, profile: str, epochs: int, threads: int,
                   out: Path, seed: int = 0) -> dict:
    """Train ``experiment`` with the old commit's loop (``tree``: its ``git archive``) in a subprocess."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, "-c", _BEFORE_SCRIPT, experiment, str(data), str(epochs), str(threads),
                           str(out), profile, str(Path(__file__).parent), str(seed)],
                          env=env, capture_output=True, text=True, check=True, cwd=tree)  # see benchmarks/_before.py
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {"experiment": experiment, "mode": "before", "precision": "32", "seconds": np.array(result["seconds"]),
            "outside": None, "best_val": result["best_val"]}


def pooled(runs: list[dict]) -> dict:
    """One row for a mode from its runs (one per seed): epoch seconds over all of them (mean, fastest,
    mean of the first epochs), the phases outside the model averaged, and the best val l1 of each seed."""
    seconds = np.concatenate([run["seconds"] for run in runs])
    outside = None if runs[0]["outside"] is None else {
        phase: float(np.mean([run["outside"][phase] for run in runs])) for phase in runs[0]["outside"]}
    return {**{key: runs[0][key] for key in ("experiment", "mode", "precision")},
            "epoch_s": float(seconds.mean()), "fastest_s": float(seconds.min()),
            "first_s": float(np.mean([run["seconds"][0] for run in runs])), "outside": outside,
            "best_vals": np.array([run["best_val"] for run in runs])}


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, build or reuse the phantom, time both modes and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="lab", choices=["lab", "paper"], help="backbone, batch and phantom")
    parser.add_argument("--data", type=Path, default=None,
                        help="a phantom built with --profile (default: build one)")
    parser.add_argument("--healthy", type=int, default=200, help="healthy subjects of the built phantom (default 200)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per training (default 5)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="train every mode with seeds 0..N-1 and compare the mean best val l1 (default 1)")
    parser.add_argument("--experiments", default="2D-Patch-n,3D-Cube-n")
    parser.add_argument("--before", default=BEFORE, help=f"commit of the old loop, or a folder holding its "
                                                         f"extraction (default {BEFORE}; '' skips it)")
    parser.add_argument("--compile", action="store_true", help="also time the defaults with torch.compile")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.healthy < 4 or args.seeds < 1:
        parser.error("--epochs and --seeds must be >= 1 and --healthy >= 4")
    sys.stdout.reconfigure(line_buffering=True)  # each line as soon as it is measured
    # Both loops at one fixed thread count: the old loop's. benchmarks/busy_machine.py measures the choice from
    # step times (uadlab.speed.thread_tuner) that today's loop would otherwise make.
    os.environ[ADAPTIVE_VARIABLE] = "0"
    threads = limit_threads()
    with tempfile.TemporaryDirectory(prefix="uadlab-train-epoch-") as tmp:
        data = args.data.resolve() if args.data else None  # the old loop runs in another working folder
        if data is None:
            profile = dataclasses.replace(get_profile(args.profile),
                                          phantom_counts={"healthy": args.healthy, "tumour": 2, "stroke": 2})
            start = time.perf_counter()
            data = build_dataset(MANIFEST, Path(tmp) / "phantom", profile=profile, cache_dir=Path(tmp) / "cache")
            print(f"built a {args.profile} phantom with {args.healthy} healthy subjects in "
                  f"{time.perf_counter() - start:.0f} s")
        train_ids = load_dataset(data).ids(cohort="healthy", split="train")
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
        print(f"{args.profile} profile on {device}: torch {torch.__version__}, {threads} thread(s), cores "
              f"{len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.2f}, {len(train_ids)} training "
              f"volumes, {args.epochs} epochs, seed(s) 0-{args.seeds - 1}")
        modes = [mode for mode in _MODES if args.compile or mode != "compiled"]
        before = checkout(args.before, Path(tmp) / f"uadlab-{args.before}") if args.before else None
        for experiment in args.experiments.split(","):
            rows = [pooled([measure(data, experiment, mode, profile=args.profile, epochs=args.epochs,
                                    out=Path(tmp) / "run" / mode, seed=seed) for seed in range(args.seeds)])
                    for mode in modes]
            if before is not None:
                rows.insert(0, pooled([measure_before(before, data, experiment, profile=args.profile,
                                                      epochs=args.epochs, threads=threads,
                                                      out=Path(tmp) / "run" / "before", seed=seed)
                                       for seed in range(args.seeds)]))
            for row in rows:
                vals = row["best_vals"]
                spread = f" (sd over seeds {vals.std(ddof=1):.5f})" if len(vals) > 1 else ""
                line = (f"{experiment:11s} {row['mode']:10s} ({row['precision']:10s}): {row['epoch_s']:6.2f} s/epoch "
                        f"(first {row['first_s']:.2f}, fastest {row['fastest_s']:.2f}), best healthy val l1 "
                        f"{vals.mean():.5f}{spread}")
                if row["outside"] is not None:
                    outside = sum(row["outside"].values())
                    parts = ", ".join(f"{k} {v:.2f}" for k, v in row["outside"].items())
                    line += f", outside the model {outside / row['epoch_s']:4.0%} ({parts} s)"
                print(line)
            new = next(row for row in rows if row["mode"] == "defaults")
            for base in rows:
                if base is new:
                    continue
                slow, fast = (new, base) if base["mode"] == "compiled" else (base, new)
                change = fast["best_vals"].mean() / slow["best_vals"].mean() - 1
                error = ""
                if args.seeds > 1:  # standard error of the difference of the two means, relative to the slower's
                    sd = np.hypot(fast["best_vals"].std(ddof=1), slow["best_vals"].std(ddof=1))
                    error = f" ± {sd / np.sqrt(args.seeds) / slow['best_vals'].mean():.2%} s.e."
                print(f"{experiment:11s} speed-up {fast['mode']} / {slow['mode']:10s} = "
                      f"{slow['epoch_s'] / fast['epoch_s']:.2f}x "
                      f"(fastest epochs {slow['fastest_s'] / fast['fastest_s']:.2f}x); "
                      f"val l1 {change:+.2%}{error} ({'within' if abs(change) <= 0.02 else 'NOT within'} 2 %)")

if __name__ == "__main__":
    main()
