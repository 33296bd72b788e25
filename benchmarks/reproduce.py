"""Wall-clock of the whole lab ``reproduce`` on a reduced budget: before the speed work against now.

Runs ``uadlab.studies.run_study`` (``uadlab.reproduce.reproduce`` in trees from before it: data build,
every Table 1 experiment and the data-size runs, evaluation, tables and figures: Bengs et al. 2021,
Sec. 3) twice in the same session, each in a
fresh subprocess with the same thread count, a fresh output folder and an empty preprocessing cache:

- ``before``: the code of commit ``32e46d4`` (2026-11-23, what issue 16 measured: eager float32,
  Adam's per-parameter loop, a checkpoint written before the next epoch, no thread budget), from
  ``git archive`` of that commit (needs the git history);
- ``now``: this checkout with its defaults (bf16 autocast on a CPU with AVX512-BF16/AMX, fused Adam,
  the checkpoint written while the next epoch trains).

The budget is the ``lab`` profile (64³ volumes, 2 mm, its backbones and batch sizes) with
``--epochs`` epochs per run (patience the same) and ``--healthy`` / ``--lesion`` subjects per cohort
(200 / 60 in the full lab set), so both runs train and score the same models on the same phantom; the
ratio of the two wall-clocks is the figure that transfers. ``now`` also writes the ``mean-image``
floor row that ``before`` did not have (seconds: one closed-form fit and its evaluation).

Usage::

    python benchmarks/reproduce.py                   # 2 epochs per run, 40 healthy, 12 per lesion cohort
    python benchmarks/reproduce.py --epochs 1 --healthy 20 --lesion 6
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _before import BEFORE, ROOT, checkout

from uadlab._threads import limit_threads

# Run in a subprocess: the lab profile on the reduced budget, then the whole reproduce.
_SCRIPT = """
import dataclasses, sys
from uadlab.profiles import get_profile
epochs, healthy, lesion, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
profile = dataclasses.replace(get_profile("lab"), max_epochs=epochs, patience=epochs,
                              phantom_counts={"healthy": healthy, "tumour": lesion, "stroke": lesion})
try:  # the study engine (issue 24)
    from uadlab.studies import run_study
except ImportError:  # a tree from before it (benchmarks/_before.py)
    from uadlab.reproduce import reproduce
    reproduce(profile, "phantom", out)
else:
    run_study("bengs2021", out, profile=profile)
"""


def run(code: Path, out: Path, cache: Path, *, epochs: int, healthy: int, lesion: int, threads: int) -> float:
    """Seconds of one whole ``reproduce`` with the ``uadlab`` package under ``code``."""
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": str(threads), "UADLAB_CACHE": str(cache)}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", _SCRIPT, str(epochs), str(healthy), str(lesion), str(out)], env=env,
                   check=True, stdout=subprocess.DEVNULL, cwd=code)  # see benchmarks/_before.py
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, run both reproduces and print their wall-clocks and ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2)")
    parser.add_argument("--healthy", type=int, default=40, help="healthy subjects (lab: 200)")
    parser.add_argument("--lesion", type=int, default=12, help="subjects per lesion cohort (lab: 60)")
    parser.add_argument("--before", default=BEFORE, help=f"commit of the old code (default {BEFORE})")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.healthy < 10 or args.lesion < 3:
        parser.error("--epochs must be >= 1, --healthy >= 10 and --lesion >= 3")
    sys.stdout.reconfigure(line_buffering=True)
    threads = limit_threads()
    print(f"lab profile, {args.epochs} epoch(s) per run, phantom {args.healthy} healthy / {args.lesion} tumour / "
          f"{args.lesion} stroke; {threads} thread(s), load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="uadlab-reproduce-") as tmp:
        tmp = Path(tmp)
        before = checkout(args.before, tmp / "before-code")
        seconds = {}
        for name, code in (("before", before), ("now", ROOT)):
            seconds[name] = run(code, tmp / name, tmp / f"cache-{name}", epochs=args.epochs, healthy=args.healthy,
                                lesion=args.lesion, threads=threads)
            print(f"{name:6s} ({args.before if name == 'before' else 'this checkout'}): {seconds[name]:7.1f} s")
        print(f"speed-up now / before = {seconds['before'] / seconds['now']:.2f}x "
              f"(load average {os.getloadavg()[0]:.2f} at the end)")


if __name__ == "__main__":
    main()
