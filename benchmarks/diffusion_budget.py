"""What the lab budget of the diffusion families costs in accuracy, on the smoke phantom.

The ``lab`` profile gives the diffusion families (``ddpm``, ``anoddpm``, ``pddpm``, ``cddpm``) a quarter
of the ``paper`` profile's U-Net channels (``Profile.diffusion_channels``) and 6 epochs
(``Profile.epoch_limits``), so that each trains in about 10 minutes on 2 CPU cores. This script trains
every diffusion family in 2D and 3D twice on the smoke phantom (32^3, 16 healthy training volumes)
with the zoo study (:mod:`uadlab.studies.zoo`, one protocol for both):

- **lab setting**: the smoke profile with the lab's diffusion channels ``(8, 16, 32, 64)`` and its
  6-epoch limit;
- **paper setting**: the smoke profile with the paper's channels ``(32, 64, 128, 256)`` and the smoke
  profile's own schedule (up to 20 epochs, early stopping after 5).

and prints, per family, dimension and lesion cohort, DICE_D at the validation threshold and AUPRC of
both, their difference, and the seconds per training epoch of each (whole epochs as they ran). The
smoke phantom is small and its numbers noisy: read the difference, not the level.

Usage::

    python benchmarks/diffusion_budget.py --out results/diffusion_budget [--dims 2]

(The two settings are custom profiles, so their runs train in this process, one after the other.)
"""

from __future__ import annotations

import argparse
import dataclasses
import os

import pandas as pd

from uadlab.profiles import get_profile
from uadlab.studies import run_study
from uadlab.studies.zoo import family_experiments

FAMILIES = ("ddpm", "anoddpm", "pddpm", "cddpm")


def settings() -> dict[str, object]:
    """The two smoke-size profiles: the lab's diffusion budget and the paper's."""
    smoke, lab, paper = get_profile("smoke"), get_profile("lab"), get_profile("paper")
    limits = {f: lab.max_epochs_for(f) for f in FAMILIES}
    return {"lab": dataclasses.replace(smoke, diffusion_channels=lab.diffusion_channels, epoch_limits=limits),
            "paper": dataclasses.replace(smoke, diffusion_channels=paper.channels, epoch_limits={})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/diffusion_budget", help="output folder (resumed when rerun)")
    parser.add_argument("--dims", type=int, nargs="+", choices=(2, 3), default=[2, 3], help="dimensions to train")
    args = parser.parse_args()
    experiments = [e for family in FAMILIES for e in family_experiments(family) if int(e.split(":")[1][0]) in args.dims]
    chosen, tables = settings(), {}
    for name, profile in chosen.items():
        outputs = run_study("zoo", os.path.join(args.out, name), profile=profile, experiments=experiments)
        table = pd.read_csv(outputs["zoo.csv"])
        tables[name] = table.set_index(["family", "spatial_dims", "dataset"])
    keys = ["dice_d", "auprc", "train_seconds_per_epoch"]
    both = tables["lab"][keys].join(tables["paper"][keys], lsuffix="_lab", rsuffix="_paper")
    both["dice_d_cost"] = both["dice_d_paper"] - both["dice_d_lab"]
    both["auprc_cost"] = both["auprc_paper"] - both["auprc_lab"]
    print(f"diffusion channels: lab {chosen['lab'].diffusion_channels}, paper "
          f"{chosen['paper'].diffusion_channels}; epochs: lab {get_profile('lab').max_epochs_for('ddpm')}, "
          f"paper up to {get_profile('smoke').max_epochs}")
    print((both * [100, 100, 1, 100, 100, 1, 100, 100]).round(1).to_string())


if __name__ == "__main__":
    main()
