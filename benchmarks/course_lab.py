"""Wall-clock of the course lab path: labs 00-02 (data, 2D-None, 3D-None, evaluation) at one profile.

Issue 16 asks that this path fit a 45-minute lab session on a 2-core laptop with the ``lab`` profile.
The script executes ``00_data_prep``, ``01_vae_2d`` and ``02_vae_3d`` headless and in order with
papermill (:func:`uadlab.notebooks.run_notebooks`, what ``uadlab notebooks run`` does), into an empty
output folder with an empty preprocessing cache, so nothing is reused from an earlier run. It prints
each notebook's wall-clock (kernel start, data build or training, evaluation, figures) and the total
against the 45 minutes.

Usage::

    python benchmarks/course_lab.py                     # lab profile, outputs in a temporary folder
    python benchmarks/course_lab.py --profile smoke     # a quick check of the script
    python benchmarks/course_lab.py --out runs/course   # keep the executed notebooks (a new folder)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from uadlab.notebooks import NOTEBOOKS, run_notebooks

COURSE_LAB = NOTEBOOKS[:3]  # 00_data_prep, 01_vae_2d, 02_vae_3d
SESSION_MINUTES = 45


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, run the three notebooks one after the other and print their wall-clocks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="lab", help="run profile (default lab)")
    parser.add_argument("--out", type=Path, help="a new or empty folder for the outputs (default: temporary)")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out}: not empty; earlier outputs would be reused and the timing would be wrong")
    sys.stdout.reconfigure(line_buffering=True)
    print(f"profile {args.profile}, {len(os.sched_getaffinity(0))} usable core(s), "
          f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="uadlab-course-lab-") as tmp:
        out = args.out if args.out is not None else Path(tmp) / "out"
        os.environ["UADLAB_CACHE"] = str(Path(tmp) / "cache")  # the kernels inherit it: nothing cached
        total = 0.0
        for name in COURSE_LAB:
            start = time.perf_counter()
            run_notebooks(profile=args.profile, out=out, notebooks=[name])
            seconds = time.perf_counter() - start
            total += seconds
            print(f"{name:20s} {seconds / 60:6.1f} min")
    verdict = "fits" if total <= SESSION_MINUTES * 60 else "does NOT fit"
    print(f"{'total':20s} {total / 60:6.1f} min: {verdict} a {SESSION_MINUTES}-minute lab session "
          f"(load average {os.getloadavg()[0]:.2f} at the end)")


if __name__ == "__main__":
    main()
