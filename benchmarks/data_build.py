"""Time the phantom build with one process against ``--workers`` processes, in the same run.

Usage::

    .venv/bin/python benchmarks/data_build.py [--profile lab] [--workers 2] [--healthy 20] [--lesion 6]

Both builds start from an empty preprocessing cache (a temporary folder), so every subject is
simulated and preprocessed; the profile's phantom counts are replaced by ``--healthy`` and
``--lesion`` (per lesion cohort) to keep the run short. The two data sets are checked to be identical
(table and every array); the script stops on a difference. A ratio below 1 means the parallel build
is faster.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from uadlab.data.dataset import build_dataset, load_dataset
from uadlab.profiles import Profile, get_profile

MANIFEST = Path(__file__).resolve().parents[1] / "data_manifests" / "phantom.yaml"


def _build(profile: Profile, out: Path, workers: int) -> float:
    start = time.perf_counter()
    build_dataset(MANIFEST, out, profile=profile, cache_dir=out.with_name(out.name + "_cache"), workers=workers)
    return time.perf_counter() - start


def _assert_same(a: Path, b: Path) -> None:
    first, second = load_dataset(a), load_dataset(b)
    pd.testing.assert_frame_equal(first.table, second.table)
    for subject_id in first.ids():
        x, y = first.subject(subject_id), second.subject(subject_id)
        for name in ("image", "brain_mask", "lesion_mask"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name), err_msg=f"{subject_id} {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="lab", help="smoke | lab | paper (default: lab)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="default: the CPU core count")
    parser.add_argument("--healthy", type=int, default=20, help="healthy subjects (default: 20)")
    parser.add_argument("--lesion", type=int, default=6, help="subjects per lesion cohort (default: 6)")
    args = parser.parse_args()
    counts = {"healthy": args.healthy, "tumour": args.lesion, "stroke": args.lesion}
    profile = dataclasses.replace(get_profile(args.profile), phantom_counts=counts)
    subjects = sum(counts.values())

    with tempfile.TemporaryDirectory() as tmp:
        serial = _build(profile, Path(tmp) / "serial", 1)
        parallel = _build(profile, Path(tmp) / "parallel", args.workers)
        _assert_same(Path(tmp) / "serial", Path(tmp) / "parallel")
    print(f"phantom build, profile {profile.name} ({profile.image_size}^3 from a {profile.spacing_mm:g} mm grid), "
          f"{subjects} subjects, {os.cpu_count()} CPU cores, empty cache")
    print(f"{'workers':>8} {'seconds':>9} {'s/subject':>10} {'ratio':>6}")
    for workers, seconds in ((1, serial), (args.workers, parallel)):
        print(f"{workers:>8} {seconds:>9.1f} {seconds / subjects:>10.2f} {seconds / serial:>6.2f}")
    print("outputs identical: yes")


if __name__ == "__main__":
    main()
