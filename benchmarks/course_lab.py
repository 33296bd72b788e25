"""Wall-clock of the labs as a student runs them: each lab's total and when its first figure shows.

The script executes the labs headless and in order with papermill (:func:`uadlab.notebooks.run_notebooks`,
what ``uadlab notebooks run`` does) into an empty output folder with an empty preprocessing cache, so
nothing is reused from an earlier run. For each lab it prints the wall-clock (kernel start, data
build or training, evaluation, figures) and how long after the lab started its first figure was
drawn (papermill's per-cell times in the executed copy). The labs state these figures at their top.

Issue 16 asks that labs 00-02 fit a 45-minute lab session on a 2-core laptop with the ``lab`` profile;
the script says whether they did. Issue 27 asks that, with a course pack, every lab shows its first
figure within a minute: ``--pack`` passes one to the labs.

Usage::

    python benchmarks/course_lab.py --profile smoke                 # every lab, a quick run
    python benchmarks/course_lab.py --labs 00,01,02                 # the course session of issue 16 (lab profile)
    python benchmarks/course_lab.py --pack PACK --profile lab       # with a course pack
    python benchmarks/course_lab.py --out runs/course               # keep the executed notebooks (a new folder)
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import nbformat

from uadlab.notebooks import NOTEBOOKS, figure_calls, run_notebooks

SESSION_LABS = NOTEBOOKS[:3]  # 00_data_prep, 01_vae_2d, 02_vae_3d: issue 16's 45-minute session
SESSION_MINUTES = 45


def first_figure_seconds(executed: Path) -> float | None:
    """Seconds from the first cell's start to the end of the first cell that draws a figure, from papermill's times."""
    cells = nbformat.read(executed, as_version=4).cells
    times = [cell.metadata.get("papermill", {}) for cell in cells]
    starts = [t["start_time"] for t in times if t.get("start_time")]
    for cell, t in zip(cells, times):
        if cell.cell_type == "code" and figure_calls(cell.source) and t.get("end_time"):
            return (datetime.fromisoformat(t["end_time"]) - datetime.fromisoformat(min(starts))).total_seconds()
    return None


def _clock(seconds: float) -> str:
    """``"  42 s"`` under two minutes, else ``" 6.7 min"``."""
    return f"{seconds:4.0f} s  " if seconds < 120 else f"{seconds / 60:4.1f} min"


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, run the labs one after the other and print their wall-clocks."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="lab", help="run profile (default lab)")
    parser.add_argument("--labs", help="comma-separated lab numbers, e.g. 00,01,02 (default: all, in order)")
    parser.add_argument("--pack", type=Path, help="a course pack the labs read (uadlab course prepare)")
    parser.add_argument("--out", type=Path, help="a new or empty folder for the outputs (default: temporary)")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out}: not empty; earlier outputs would be reused and the timing would be wrong")
    labs = list(NOTEBOOKS) if not args.labs else [n for n in NOTEBOOKS if n[:2] in args.labs.split(",")]
    sys.stdout.reconfigure(line_buffering=True)
    print(f"profile {args.profile}, {len(os.sched_getaffinity(0))} usable core(s), "
          f"load average {os.getloadavg()[0]:.2f}{f', pack {args.pack}' if args.pack else ''}")
    if args.pack:
        os.environ["UADLAB_PACK"] = str(args.pack.resolve())  # the kernels inherit it
    with tempfile.TemporaryDirectory(prefix="uadlab-course-lab-") as tmp:
        out = args.out if args.out is not None else Path(tmp) / "out"
        os.environ["UADLAB_CACHE"] = str(Path(tmp) / "cache")  # the kernels inherit it: nothing cached
        seconds_by_lab = {}
        for name in labs:
            start = time.perf_counter()
            executed = run_notebooks(profile=args.profile, out=out, notebooks=[name])[0]
            seconds_by_lab[name] = time.perf_counter() - start
            first = first_figure_seconds(executed)
            shown = "no figure" if first is None else f"first figure after {_clock(first)}"
            print(f"{name:36s} {_clock(seconds_by_lab[name])}   {shown}   (load average {os.getloadavg()[0]:.2f})")
    print(f"{'total':36s} {_clock(sum(seconds_by_lab.values()))}")
    if all(name in seconds_by_lab for name in SESSION_LABS):
        session = sum(seconds_by_lab[name] for name in SESSION_LABS)
        verdict = "fit" if session <= SESSION_MINUTES * 60 else "do NOT fit"
        print(f"labs 00-02: {session / 60:.1f} min, they {verdict} a {SESSION_MINUTES}-minute lab session (issue 16)")


if __name__ == "__main__":
    main()
