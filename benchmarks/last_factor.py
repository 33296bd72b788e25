"""The last factor on the CPU (issue 29): what each option not yet tried gives a lab training step.

Issue 16's speed work left the 2D lab epoch at 1.33-1.56x the old loop; eager PyTorch's fixed cost was
5-7 ms of a ~22 ms step. Issue 29 names four options not yet tried. This script measures each on the
lab profile's ``2D-Patch-n`` (batch 32 slices) and ``3D-Cube-n`` (batch 8 volumes) at 64³, in one
process, against today's step measured in the same run (``--parts`` picks some):

- ``erasing``: spatial erasing (Sec. 2.2) of one batch, today's per-sample loop on the CPU against
  the batched form the GPU path uses (``SpatialErasing._apply_batch_on_device``: the same draws, all
  boxes applied by one call; issue 29's "batching the slices of several volumes in one erasing call").
- ``validation``: ``--steps`` training steps and one pass over ``--val-volumes`` validation volumes,
  one after the other, against the validation in a second Python thread while the steps run
  (torch releases the GIL inside its operators), each thread at ``--threads`` and at 1 thread each;
  3 rounds, interleaved, medians: what running validation beside training can win.
- ``compile``: the whole step (forward, ELBO, backward, fused Adam's update) under ``torch.compile``
  with ``mode="max-autotune-no-cudagraphs"``, against eager; the compilation's seconds are printed.
- ``onednn``: oneDNN graph fusion (``torch.jit.enable_onednn_fusion``) of a traced, frozen float32
  model. PyTorch applies it to TorchScript inference only (pytorch/pytorch#74572), so it is measured on
  the validation forward pass against eager float32 and eager bf16 (today's validation).

Every step is today's: the experiment's erasing on the CPU, bf16 autocast where the CPU has it (as
``uadlab train`` chooses), fused Adam, the 3D weights channels-last (:func:`uadlab.speed.to_device`).
The data are random intensities in a ball-shaped brain mask (the timing does not depend on the
anatomy). It prints milliseconds (median of ``--steps`` after ``--warmup``) and each option's ratio
to today's (below 1: faster). Run it on a quiet machine: the ratios are what it reports.

Usage::

    python benchmarks/last_factor.py                                  # both experiments, all parts
    python benchmarks/last_factor.py --experiments 2D-Patch-n --parts erasing,validation
    python benchmarks/last_factor.py --smoke                           # 16³, 2 steps: checks it runs
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import threading
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from uadlab.models import build_model, model_config
from uadlab.models.precision import autocast
from uadlab.profiles import get_profile
from uadlab.speed import to_device
from uadlab.training.devices import default_precision
from uadlab.training.experiments import parse_experiment

PARTS = ("erasing", "validation", "compile", "onednn")


def _median_ms(call: Callable[[], object], steps: int, warmup: int) -> float:
    """Median milliseconds of ``steps`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _brain(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random intensities in [0, 1] inside a centred ball: images and brain masks ``(B, 1, *S)``."""
    edge = shape[-1]
    axes = torch.meshgrid(*[torch.linspace(-1, 1, edge)] * (len(shape) - 2), indexing="ij")
    mask = (sum(a**2 for a in axes) < 0.7).expand(shape).clone()
    images = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * mask
    return images, mask


class _Setup:
    """One experiment's model, optimiser, erasing and batch, as ``uadlab train`` builds them."""

    def __init__(self, experiment: str, profile: str, image_size: int) -> None:
        self.experiment = parse_experiment(experiment)
        prof = get_profile(profile)
        dims = self.experiment.spatial_dims
        self.config = model_config(self.experiment.model, prof, dims, image_size)
        self.precision = default_precision(torch.device("cpu"))
        self.batch_size = prof.batch_size_for(dims)
        self.images, self.masks = _brain((self.batch_size, 1) + (image_size,) * dims, seed=0)
        self.erasing = self.experiment.erasing()  # p = 0.5, Sec. 2.2, as uadlab train
        self.rng = np.random.default_rng(0)

    def model(self) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        """A fresh model (seed 0) and its fused Adam."""
        torch.manual_seed(0)
        model = to_device(build_model(self.experiment.model, self.config), "cpu")
        return model, torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)

    def erase(self) -> torch.Tensor:
        """Today's erasing of the batch (the per-sample loop on the CPU), or the batch unerased."""
        if self.erasing is None:
            return self.images
        return self.erasing.apply_batch(self.images, self.masks, self.rng)

    def step_function(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Callable:
        """``step(inputs, target)``: today's training step of ``uadlab.training.fit.train_pass``."""
        def step(inputs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            with autocast(self.precision, "cpu"):
                loss = model.training_loss(inputs, target)[0]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss.detach()
        model.train()
        return step


def _erasing(setup: _Setup, steps: int, warmup: int) -> list[str]:
    if setup.erasing is None:
        return ["erasing: none in this experiment"]
    loop = _median_ms(setup.erase, steps, warmup)
    batched = _median_ms(lambda: setup.erasing._apply_batch_on_device(setup.images, setup.masks, setup.rng),
                         steps, warmup)
    model, optimizer = setup.model()
    step = setup.step_function(model, optimizer)
    full = _median_ms(lambda: step(setup.erase(), setup.images), steps, warmup)
    return [f"erasing a batch: per-sample loop {loop:.2f} ms, batched {batched:.2f} ms ({batched / loop:.2f}x); "
            f"a whole step with the loop {full:.1f} ms, so batching saves {100 * (loop - batched) / full:.1f} % "
            "of a step"]


def _validation(setup: _Setup, steps: int, warmup: int, volumes: int, threads: int, rounds: int = 3) -> list[str]:
    dims, size = setup.experiment.spatial_dims, setup.images.shape[-1]
    val, _ = _brain((volumes, 1) + (size,) * 3, seed=1)
    if dims == 2:  # the validation volumes' axial slices, in batches of the training's
        val = val.permute(0, 4, 1, 2, 3).reshape(-1, 1, size, size)
    model, optimizer = setup.model()
    step = setup.step_function(model, optimizer)
    reference = copy.deepcopy(model).eval()  # validation reads a copy: the steps change the weights meanwhile

    def validate(validation_threads: int | None = None) -> None:
        if validation_threads is not None:
            torch.set_num_threads(validation_threads)  # in this thread
        with torch.no_grad(), autocast(setup.precision, "cpu"):
            for start in range(0, len(val), setup.batch_size):
                reference(val[start:start + setup.batch_size])

    def sequential() -> None:
        for _ in range(steps):
            step(setup.erase(), setup.images)
        validate()

    def beside(split: bool) -> None:
        torch.set_num_threads(1 if split else threads)
        thread = threading.Thread(target=validate, args=(1 if split else None,))
        thread.start()
        for _ in range(steps):
            step(setup.erase(), setup.images)
        thread.join()
        torch.set_num_threads(threads)

    for _ in range(warmup):
        step(setup.erase(), setup.images)
    validate()
    ways = {"one after the other": sequential, "validation in a second thread": lambda: beside(False),
            "the same, 1 thread each": lambda: beside(True)}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(rounds):  # interleaved, the order turned each round
        for name in list(ways)[r % len(ways):] + list(ways)[:r % len(ways)]:
            start = time.perf_counter()
            ways[name]()
            seconds[name].append(time.perf_counter() - start)
    base = statistics.median(seconds["one after the other"])
    return [f"validation ({volumes} volumes) and {steps} steps, median of {rounds} rounds: "
            + "; ".join(f"{name} {statistics.median(t):.2f} s ({statistics.median(t) / base:.2f}x)"
                        for name, t in seconds.items())]


def _compile(setup: _Setup, steps: int, warmup: int) -> list[str]:
    model, optimizer = setup.model()
    step = setup.step_function(model, optimizer)
    eager = _median_ms(lambda: step(setup.images, setup.images), steps, warmup)
    model, optimizer = setup.model()
    compiled = torch.compile(setup.step_function(model, optimizer), mode="max-autotune-no-cudagraphs")
    start = time.perf_counter()
    for _ in range(1 + warmup):  # a recompilation once Adam's state exists falls in here too
        compiled(setup.images, setup.images)
    compile_s = time.perf_counter() - start
    fast = _median_ms(lambda: compiled(setup.images, setup.images), steps, 0)
    return [f"whole step (unerased input): eager {eager:.1f} ms, torch.compile max-autotune-no-cudagraphs "
            f"{fast:.1f} ms ({fast / eager:.2f}x) after {compile_s:.0f} s of compilation and warm-up"]


def _onednn(setup: _Setup, steps: int, warmup: int) -> list[str]:
    model, _ = setup.model()
    model.eval()
    x = setup.images

    def forward(net: Callable, precision: str) -> Callable:
        def run() -> None:
            with torch.no_grad(), autocast(precision, "cpu"):
                net(x)
        return run

    bf16 = _median_ms(forward(model, setup.precision), steps, warmup)
    fp32 = _median_ms(forward(model, "32"), steps, warmup)
    reconstruct = _Reconstruct(model).eval()
    torch.jit.enable_onednn_fusion(True)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the input checks, traced as constants
            traced = torch.jit.freeze(torch.jit.trace(reconstruct, x, check_trace=False))
        fused = _median_ms(forward(traced, "32"), steps, warmup + 2)  # the fuser compiles on the first runs
    finally:
        torch.jit.enable_onednn_fusion(False)
    return [f"validation forward (batch {len(x)}): eager {setup.precision} {bf16:.1f} ms (today), "
            f"eager float32 {fp32:.1f} ms, "
            f"oneDNN-fused TorchScript float32 {fused:.1f} ms ({fused / bf16:.2f}x today's, {fused / fp32:.2f}x "
            "float32's)"]


class _Reconstruct(torch.nn.Module):
    """The model's reconstruction as one tensor (what tracing needs): ``(B, 1, *S)`` -> ``(B, 1, *S)``."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.reconstruct(x)


def main(argv: list[str] | None = None) -> None:
    """Parse the flags and print each part's figures for each experiment."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", default="2D-Patch-n,3D-Cube-n", help="comma-separated (default: both)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated of {', '.join(PARTS)}")
    parser.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    parser.add_argument("--val-volumes", type=int, default=20, help="validation volumes (default 20)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--smoke", action="store_true", help="16³, 2 steps: checks that it runs")
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    if unknown := sorted(set(parts) - set(PARTS)):
        parser.error(f"--parts: unknown {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    for flag in ("steps", "val_volumes", "threads"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be a positive int, got {getattr(args, flag)}")
    if args.smoke:
        args.steps, args.warmup, args.val_volumes = 2, 1, 2
    torch.set_num_threads(args.threads)
    size = 16 if args.smoke else 64
    print(f"torch {torch.__version__}, {args.threads} thread(s), {len(os.sched_getaffinity(0))} usable core(s), "
          f"load average {os.getloadavg()[0]:.2f}, lab profile at {size}^3, median of {args.steps} after "
          f"{args.warmup} warm-up")
    for experiment in args.experiments.split(","):
        setup = _Setup(experiment, "lab", size)
        print(f"{experiment} (batch {setup.batch_size}, precision {setup.precision})")
        runs = {"erasing": lambda: _erasing(setup, args.steps, args.warmup),
                "validation": lambda: _validation(setup, args.steps, args.warmup, args.val_volumes, args.threads),
                "compile": lambda: _compile(setup, args.steps, args.warmup),
                "onednn": lambda: _onednn(setup, args.steps, args.warmup)}
        for part in parts:
            for line in runs[part]():
                print(f"  {line}", flush=True)


if __name__ == "__main__":
    main()
