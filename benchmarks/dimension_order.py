"""Does 3D beat 2D on the phantom? Controlled runs of issue 30: training budget against anatomical variety.

Bengs et al. 2021 (Table 1) find 3D-None above 2D-None on real scans. On the default phantom the
``lab`` profile shows the opposite. Two causes are candidates: the budget (at 40 epochs the 3D VAE gets
about 15x fewer Adam steps than the 2D one: 23 against 336 an epoch) and the phantom's small
anatomical variety (one template). The script trains both models on two phantoms:

- ``default``: the default phantom (``data_manifests/phantom.yaml``, the MNI152 template);
- ``real``: the same simulation from the 17 real healthy brains of ``../shared/data/real``
  (``sources: ["healthy/*.nii.gz"]``; skipped without that folder);

and any ``--variant NAME=JSON``: the default with those :class:`uadlab.data.phantom.PhantomParams`
overrides (more healthy variety, say), trained under the ``lab`` schedule only; each under two
schedules:

- ``lab``: the ``lab`` profile as it is, 40 epochs for both;
- ``3d-long``: the 3D VAE with its epoch limit raised (``--epochs-3d``, default 120) and the same
  early stopping, against the 2D VAE of ``lab``.

It uses every seed (default 0, 1, 2). It scores the phantom's tumour and stroke test cohorts, and the
real sample's BraTS and MSLUB cases as a sanity check, never as a tuning target. Their thresholds
come from the phantom's validation splits, pooled. It prints one row per variant and cohort: DICE_D
of each model (mean over seeds), the 3D − 2D difference with its 95 % paired bootstrap interval over
seeds and subjects
(:func:`uadlab.evaluation.analysis.paired_difference_seeds`, ``metric="dice_d"``), and each model's
minutes per run, best epoch and healthy validation l1.

Everything goes through the study engine (:func:`uadlab.studies.run_study`), so a stopped run resumes
and a finished one is reused: run the script again to continue, or to print the table. Each variant
is a study folder under ``--out`` (``d_lab``, ``d_3d120``, ``r_lab``, ``r_3d120`` for 120 epochs).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/dimension_order.py --out runs/dimension_order
    python benchmarks/dimension_order.py --out runs/dimension_order --phantoms default --seeds 0
    python benchmarks/dimension_order.py --out runs/dimension_order --phantoms "" --seeds 0 \
        --variant 'more_pose={"rotation_deg": 20, "scale_fraction": 0.2}'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from uadlab.evaluation.analysis import paired_difference_seeds
from uadlab.layout import ResultsLayout
from uadlab.studies import run_study

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"

_STUDY = """\
name: {name}
train:
  manifest: {manifest}
{root}test:
  - manifest: {repo}/data_manifests/sample_real.yaml
    root: {real}
    val_data: {val_data}
profile: lab
"""


def _study_file(out: Path, phantom: str, params: dict | None = None) -> Path:
    """The variant's study file, written into ``out/studies``: the phantom, and the real sample as a test set.

    ``params``: :class:`uadlab.data.phantom.PhantomParams` overrides of a ``--variant`` of the default.
    """
    folder = out / "studies"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = REPO / "data_manifests" / "phantom.yaml"
    root, val_data = "", "phantom"
    if params is not None:
        text = manifest.read_text().replace("name: phantom\n", f"name: phantom_{phantom}\n", 1)
        text = text.replace("  params: {}", f"  params: {json.dumps(params)}", 1)
        manifest = folder / f"phantom_{phantom}.yaml"
        manifest.write_text(text)
        val_data = f"phantom_{phantom}"
    elif phantom == "real":
        text = manifest.read_text().replace("name: phantom\n", "name: phantom_real\n", 1)
        text = text.replace("  sources: mni152", '  sources: ["healthy/*.nii.gz"]', 1)
        manifest = folder / "phantom_real.yaml"
        manifest.write_text(text)
        root, val_data = f"  root: {REAL}\n", "phantom_real"
    path = folder / f"{phantom}.yaml"
    path.write_text(_STUDY.format(name=f"dimension_order_{phantom}", manifest=manifest, root=root, repo=REPO,
                                  real=REAL, val_data=val_data))
    return path


def _runs(layout: ResultsLayout, experiment: str, seeds: list[int]) -> dict:
    """Minutes per run, best epoch and healthy validation l1 of one experiment, averaged over seeds."""
    rows = []
    for seed in seeds:
        history = pd.read_csv(layout.run(experiment, seed=seed) / "history.csv")
        best = history["val_l1_per_voxel"].idxmin()
        rows.append({"minutes": history["seconds"].sum() / 60, "epochs": len(history),
                     "best_epoch": int(history.loc[best, "epoch"]), "val_l1": history.loc[best, "val_l1_per_voxel"]})
    return pd.DataFrame(rows).mean().to_dict()


def _subjects(layout: ResultsLayout, experiment: str, seeds: list[int], data: str) -> dict[int, pd.DataFrame]:
    return {seed: pd.read_csv(layout.subjects(experiment, seed=seed, data=data)) for seed in seeds}


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, run (or reuse) every variant and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder of the variants' studies (resumable)")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds (default 0,1,2)")
    parser.add_argument("--phantoms", default="default,real", help="default, real or both (default)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                        help="also a variant of the default with these PhantomParams overrides (lab schedule)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (default 2, one per core)")
    parser.add_argument("--epochs-3d", type=int, default=120, help="epoch limit of the 3D VAE in 3d-long")
    parser.add_argument("--schedules", default="lab,3d-long", help="lab, 3d-long or both (default)")
    parser.add_argument("--table-only", action="store_true", help="print the table of what is finished; train nothing")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    phantoms = args.phantoms.split(",") if args.phantoms else []
    variants = dict(_variant(text) for text in args.variant)
    if "real" in phantoms and not REAL.is_dir():
        print(f"{REAL}: not here; the real-source phantom and the real sample are skipped", file=sys.stderr)
        phantoms = [p for p in phantoms if p != "real"]
    sys.stdout.reconfigure(line_buffering=True)
    lines = ["| phantom | schedule | test set | cohort | 2D-None DICE_D | 3D-None DICE_D | 3D − 2D [95 % CI] "
             "| min / run 2D, 3D | best epoch 2D, 3D | val l1 2D, 3D |", "|" + "---|" * 10]
    for phantom in [*phantoms, *variants]:
        short = phantom if phantom in variants else phantom[0]
        lab, long = args.out / f"{short}_lab", args.out / f"{short}_3d{args.epochs_3d}"
        schedules = ["lab"] if phantom in variants else args.schedules.split(",")
        if not args.table_only:  # --table-only writes nothing
            study = _study_file(args.out, phantom, variants.get(phantom))
            run_study(study, lab, seeds=seeds, experiments=["2D-None", "3D-None"], jobs=args.jobs)
            if "3d-long" in schedules:
                (long / "data").parent.mkdir(parents=True, exist_ok=True)
                if not (long / "data").exists():
                    (long / "data").symlink_to(Path("..") / lab.name / "data")  # the same built data sets
                run_study(study, long, seeds=seeds, experiments=["3D-None"], max_epochs=args.epochs_3d,
                          jobs=args.jobs)
        two_d = ResultsLayout(lab)
        for schedule, three_d in (("lab (40 / 40 epochs)", two_d),
                                  (f"3D to {args.epochs_3d} epochs", ResultsLayout(long))):
            try:
                runs_2d, runs_3d = _runs(two_d, "2D-None", seeds), _runs(three_d, "3D-None", seeds)
            except FileNotFoundError:
                continue  # not trained yet (--table-only)
            for data in ("phantom" if phantom == "default" else f"phantom_{phantom}", "sample_real"):
                try:
                    pairs = paired_difference_seeds(_subjects(three_d, "3D-None", seeds, data),
                                                    _subjects(two_d, "2D-None", seeds, data), metric="dice_d")
                except (FileNotFoundError, ValueError) as error:
                    print(f"{phantom} {schedule} {data}: {error}", file=sys.stderr)
                    continue
                for row in pairs.itertuples():
                    lines.append(
                        f"| {phantom} | {schedule} | {data} | {row.cohort} | {100 * row.mean_b:.1f} | "
                        f"{100 * row.mean_a:.1f} | {100 * row.difference:+.1f} [{100 * row.ci_low:+.1f}, "
                        f"{100 * row.ci_high:+.1f}] | {runs_2d['minutes']:.1f}, {runs_3d['minutes']:.1f} | "
                        f"{runs_2d['best_epoch']:.0f}, {runs_3d['best_epoch']:.0f} | "
                        f"{runs_2d['val_l1']:.4f}, {runs_3d['val_l1']:.4f} |")
    print(f"seeds {seeds}; DICE_D in percent, mean over seeds; interval: 95 % bootstrap over seeds and subjects")
    print("\n".join(lines))


def _variant(text: str) -> tuple[str, dict]:
    """``NAME=JSON`` of ``--variant`` as ``(NAME, overrides)``."""
    name, _, overrides = text.partition("=")
    if not name.isidentifier() or name in ("default", "real"):
        raise SystemExit(f"--variant {text!r}: NAME must be a Python identifier other than default and real")
    try:
        return name, json.loads(overrides)
    except json.JSONDecodeError as error:
        raise SystemExit(f"--variant {text!r}: JSON {error}") from None


if __name__ == "__main__":
    main()
