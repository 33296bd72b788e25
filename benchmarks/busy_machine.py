"""Training on the machine people have: seconds per epoch under background load, for each thread policy.

Issue 29 measured a lab 2D training with uadlab's 2 threads at 1.7-1.85 s a batch on a loaded 2-core
machine and at 0.03-0.05 s with one thread. This benchmark trains the lab's ``2D-None`` and ``3D-None``
(``--experiments``) for ``--epochs`` epochs in a fresh process per measurement, under each background
load:

- ``none``: nothing else runs;
- ``1-spinner`` / ``2-spinners``: one or two pure-Python busy loops (a browser tab, a second kernel's
  Python work);
- ``2nd-training``: a second uadlab training of the first experiment, started first, under the same
  policy (two kernels, two terminals);

with each thread policy, interleaved (within every load, every policy in turn; ``--rounds`` repeats it):

- ``today``: uadlab before issue 29 (commit ``BEFORE``, run from ``git archive`` as
  ``benchmarks/_before.py`` does): the usable cores divided by the processes it was told of, here 1;
- ``N thread(s)``: ``OMP_NUM_THREADS=N`` for each N of ``--threads`` (default 1 and 2): fixed;
- ``new default``: no variable set: the cores shared among the registered trainings
  (``uadlab/_process_registry.py``) and the count chosen from step times
  (``uadlab/speed/thread_tuner.py``);
- ``new, PASSIVE`` (with ``--passive``): the new default with ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP
  threads sleep at once when they wait instead of spinning first): whether the wait policy helps is
  measured, not assumed (docs/speed.md: it lost on the quiet machine, so it is left out by default).

It prints a markdown table of the mean seconds per epoch (the run's ``history.csv`` ``seconds``:
the pass over the samples and validation) of each policy under each load, with its ratio to the best
fixed thread count under that load (below 1: faster than the best fixed choice). Then the case of two
trainings started at once without any variable (``2D`` and ``3D`` of ``--experiments``: the labs 01
and 02 in two kernels), today's and the new default's, against the same two run one after the
other (wall time of the processes, start-up included).

Every process gets the environment of this one without any thread variable (``OMP_NUM_THREADS``,
``UADLAB_PROCESSES``, ``UADLAB_ADAPTIVE_THREADS``, ``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``) but the
policy's, and a registry of its own (``UADLAB_RUNTIME_DIR``). Run it on a machine with nothing else
running: the loads are the ones it makes (docs/speed.md, "Measuring on a shared machine").

Usage::

    python benchmarks/busy_machine.py                          # lab phantom (200 healthy), 3 epochs, 1 round
    python benchmarks/busy_machine.py --data data/phantom --rounds 3
    python benchmarks/busy_machine.py --passive                # also the new default with OMP_WAIT_POLICY=PASSIVE
    python benchmarks/busy_machine.py --experiments 2D-None --loads none,1-spinner --before ''
    python benchmarks/busy_machine.py --smoke                  # 32³, one epoch of a few steps: checks it runs
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _before import ROOT, checkout

from uadlab.data.dataset import build_dataset
from uadlab.profiles import get_profile

BEFORE = "ee0cf32"  # uadlab before issue 29: threads = usable cores / declared processes, fixed
MANIFEST = ROOT / "data_manifests" / "phantom.yaml"
LOADS = ("none", "1-spinner", "2-spinners", "2nd-training")
#: Variables that set threads; removed from every measured process but for its policy's own.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "UADLAB_THREADS_SET", "UADLAB_PROCESSES", "UADLAB_ADAPTIVE_THREADS",
                    "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "PYTEST_XDIST_WORKER_COUNT", "LOCAL_WORLD_SIZE")
# A training process: its share of the cores as the command line and the labs take it, then each
# experiment in turn; prints each experiment's epoch seconds (history.csv) as JSON.
_TRAIN = """
import csv, json, sys
from uadlab._threads import limit_threads
limit_threads()
from uadlab.training import TrainConfig, train
job = json.loads(sys.argv[1])
seconds = {}
for experiment in job["experiments"]:
    config = TrainConfig(experiment=experiment, profile=job["profile"], data=job["data"], seed=0,
                         max_epochs=job["epochs"], patience=job["epochs"])
    result = train(config, job["out"] + "/" + experiment, overwrite=True)
    with open(result.run_dir / "history.csv") as handle:
        seconds[experiment] = [float(row["seconds"]) for row in csv.DictReader(handle)]
print(json.dumps(seconds))
"""
_SPIN = "while True:\n    pass"


@dataclasses.dataclass(frozen=True)
class Policy:
    """A thread policy: the code it runs (``None``: this checkout) and the variables it sets."""

    name: str
    tree: Path | None
    variables: dict[str, str]
    fixed: bool = False  # a fixed thread count: a candidate for the best fixed count under a load


class Bench:
    """Starts measured trainings and loads in fresh processes, each in a folder of its own."""

    def __init__(self, work: Path, data: Path, profile: str, epochs: int) -> None:
        self.work, self.data, self.profile, self.epochs = work, data, profile, epochs
        self.registry = work / "registry"
        self.count = 0
        base = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
        self.base = {**base, "UADLAB_RUNTIME_DIR": str(self.registry)}

    def _env(self, policy: Policy) -> dict[str, str]:
        tree = policy.tree or ROOT
        return {**self.base, **policy.variables, "PYTHONPATH": str(tree)}

    def start(self, policy: Policy, experiments: list[str], *, epochs: int | None = None):
        """A training process and its output folder; ``python -c`` imports ``uadlab`` from its working
        folder, the policy's tree (``benchmarks/_before.py``)."""
        self.count += 1
        out = self.work / "runs" / str(self.count)
        job = {"experiments": experiments, "profile": self.profile, "data": str(self.data), "out": str(out),
               "epochs": epochs or self.epochs}
        process = subprocess.Popen([sys.executable, "-c", _TRAIN, json.dumps(job)], cwd=policy.tree or ROOT,
                                   env=self._env(policy), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return process, out

    def train(self, policy: Policy, experiments: list[str]) -> tuple[dict[str, list[float]], float]:
        """Train and wait: each experiment's epoch seconds, and the process's wall time."""
        start = time.perf_counter()
        process, _ = self.start(policy, experiments)
        return _result(process), time.perf_counter() - start

    def load(self, name: str, policy: Policy, experiment: str) -> list[subprocess.Popen]:
        """Start a background load; returns once it runs (a training: once its first run folder has a config)."""
        if name == "none":
            return []
        if name.endswith("spinner") or name.endswith("spinners"):
            return [subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(int(name[0]))]
        process, out = self.start(policy, [experiment], epochs=1000)
        deadline = time.monotonic() + 600
        while not (out / experiment / "config.yaml").exists():  # written just before its first epoch
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the background training did not start: {process.communicate()[1][-2000:]}")
            time.sleep(0.2)
        return [process]


def _result(process: subprocess.Popen) -> dict[str, list[float]]:
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"a training failed (exit {process.returncode}):\n{stderr[-3000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.kill()
        process.communicate()


def measure_loads(bench: Bench, policies: list[Policy], loads: list[str], experiments: list[str],
                  rounds: int) -> dict[tuple[str, str, str], list[float]]:
    """``{(experiment, load, policy): epoch seconds}``: under each load, every policy in turn, ``rounds`` times."""
    seconds: dict[tuple[str, str, str], list[float]] = {}
    for round_ in range(rounds):
        for load in loads:
            for policy in policies:
                background = bench.load(load, policy, experiments[0])
                try:
                    result, _ = bench.train(policy, experiments)
                finally:
                    _stop(background)
                for experiment, values in result.items():
                    seconds.setdefault((experiment, load, policy.name), []).extend(values)
                print(f"round {round_ + 1}, {load:12s} {policy.name:12s} "
                      + ", ".join(f"{e} {sum(v) / len(v):.2f} s/epoch" for e, v in result.items()), flush=True)
    return seconds


def measure_together(bench: Bench, policies: list[Policy], experiments: list[str]) -> dict[str, tuple[float, float]]:
    """``{policy: (seconds one after the other, seconds at once)}`` for the experiments' trainings."""
    times = {}
    for policy in policies:
        apart = sum(bench.train(policy, [experiment])[1] for experiment in experiments)
        start = time.perf_counter()
        processes = [bench.start(policy, [experiment])[0] for experiment in experiments]
        for process in processes:
            _result(process)
        times[policy.name] = (apart, time.perf_counter() - start)
        print(f"{policy.name}: one after the other {apart:.1f} s, at once {times[policy.name][1]:.1f} s", flush=True)
    return times


def load_table(seconds: dict[tuple[str, str, str], list[float]], policies: list[Policy], loads: list[str],
               experiments: list[str]) -> str:
    """Markdown: mean seconds per epoch, and the ratio to the best fixed thread count under the same load."""
    lines = ["| model | load | " + " | ".join(p.name for p in policies) + " |",
             "|---|---|" + "---|" * len(policies)]
    for experiment in experiments:
        for load in loads:
            mean = {p.name: sum(v) / len(v) for p in policies if (v := seconds.get((experiment, load, p.name)))}
            best = min(mean[p.name] for p in policies if p.fixed and p.name in mean)
            cells = [f"{mean[p.name]:.2f} ({mean[p.name] / best:.2f}x)" for p in policies]
            lines.append(f"| {experiment} | {load} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def together_table(times: dict[str, tuple[float, float]], experiments: list[str]) -> str:
    """Markdown: the trainings one after the other against at once."""
    lines = [f"| policy ({' + '.join(experiments)}) | one after the other, s | at once, s | at once / apart |",
             "|---|---|---|---|"]
    lines += [f"| {name} | {apart:.1f} | {together:.1f} | {together / apart:.2f}x |"
              for name, (apart, together) in times.items()]
    return "\n".join(lines)


def _machine() -> str:
    model = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{model}, {cores} usable core(s), torch {importlib.metadata.version('torch')}, load average "
            f"{os.getloadavg()[0]:.2f} at the start, {time.strftime('%Y-%m-%d %H:%M')}")


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, build or reuse the phantom, measure, print both tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true",
                        help="the smoke profile (32³) on 4 healthy subjects, 1 epoch: checks that it runs")
    parser.add_argument("--data", type=Path, help="a phantom built with the profile (default: build one)")
    parser.add_argument("--healthy", type=int, default=None, help="healthy subjects of a built phantom (default 200)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per training (default 3)")
    parser.add_argument("--rounds", type=int, default=1, help="times every load and policy is measured (default 1)")
    parser.add_argument("--experiments", default="2D-None,3D-None")
    parser.add_argument("--loads", default=",".join(LOADS), help=f"of {', '.join(LOADS)}")
    parser.add_argument("--threads", default="1,2", help="the fixed thread counts (default 1,2)")
    parser.add_argument("--passive", action="store_true", help="also the new default with OMP_WAIT_POLICY=PASSIVE")
    parser.add_argument("--before", default=BEFORE,
                        help=f"commit of today's policy, or a folder holding its extraction (default {BEFORE}; "
                             "'' skips it)")
    args = parser.parse_args(argv)
    profile = "smoke" if args.smoke else "lab"
    healthy = args.healthy or (4 if args.smoke else 200)
    epochs = args.epochs or (1 if args.smoke else 3)
    loads, experiments = args.loads.split(","), args.experiments.split(",")
    if not set(loads) <= set(LOADS) or epochs < 1 or args.rounds < 1 or healthy < 4:
        parser.error(f"--loads must be of {', '.join(LOADS)}, --epochs and --rounds >= 1, --healthy >= 4")
    with tempfile.TemporaryDirectory(prefix="uadlab-busy-machine-") as tmp:
        work = Path(tmp)
        data = args.data.resolve() if args.data else None
        if data is None:
            counts = {"healthy": healthy, "tumour": 2, "stroke": 2}
            built = dataclasses.replace(get_profile(profile), phantom_counts=counts)
            data = build_dataset(MANIFEST, work / "phantom", profile=built, cache_dir=work / "cache")
        policies = [Policy(f"{n} thread{'s' * (n > 1)}", None, {"OMP_NUM_THREADS": str(n)}, fixed=True)
                    for n in map(int, args.threads.split(","))]
        policies.append(Policy("new default", None, {}))
        if args.passive:
            policies.append(Policy("new, PASSIVE", None, {"OMP_WAIT_POLICY": "PASSIVE"}))
        if args.before:
            policies.insert(0, Policy("today", checkout(args.before, work / "before"), {}))
        bench = Bench(work, data, profile, epochs)
        print(f"{_machine()}\n{profile} profile, {healthy} healthy subjects, {epochs} epoch(s) per training, "
              f"{args.rounds} round(s)\n", flush=True)
        seconds = measure_loads(bench, policies, loads, experiments, args.rounds)
        together = [p for p in policies if p.name in ("today", "new default")]
        times = measure_together(bench, together, experiments) if len(experiments) > 1 else {}
        print("\nSeconds per epoch (ratio to the best fixed thread count under the same load):\n")
        print(load_table(seconds, policies, loads, experiments))
        if times:
            print("\nTwo trainings started at once without any variable, against one after the other:\n")
            print(together_table(times, experiments))


if __name__ == "__main__":
    main()
