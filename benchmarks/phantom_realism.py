"""How hard is the phantom? Statistics and the ``mean-image`` floor of phantom variants, side by side.

Usage::

    .venv/bin/python benchmarks/phantom_realism.py --out /tmp/phantom_realism \\
        [--real-root ../shared/data/real [--real-cases]] [--counts 60,20,20] \\
        [--variant 'NAME={"stroke_volume_cm3": [0.5, 60]}' ...] [--skip-mni]

Builds the phantom at the ``lab`` profile (64³, 2 mm) with reduced counts (healthy, tumour,
stroke; default 60/20/20) once per variant into ``OUT/data/NAME`` (a build is reused when its
manifest is unchanged) and prints, per variant:

- **mni**: the shipped ``data_manifests/phantom.yaml`` (the MNI152 template as the only source);
- **real** (with ``--real-root``): the same manifest with ``sources: ["healthy/*.nii.gz"]``, i.e.
  the 17 real healthy brains of the sample folder as sources;
- every ``--variant NAME=JSON``: the MNI-only phantom with those :class:`uadlab.data.phantom.PhantomParams`
  overrides (the manifest's ``params:``);
- **sample_real** (``--real-cases``): ``data_manifests/sample_real.yaml`` itself, i.e. the 17 real
  healthy brains as they are and the real BraTS and MSLUB cases (one each: a reference point, not a
  benchmark; no ``mean-image`` floor, as these cohorts have no validation cases).

Statistics, all on the built 64³ volumes (intensities in [0, 1]), inside the brain mask:

- ``healthy_sd``: per-voxel standard deviation across all healthy subjects, averaged over the voxels
  inside the brain of at least half of them (anatomical and intensity variety of the cohort);
- ``mean_l1``: l1 error of the voxel-wise mean of the healthy training split against each healthy
  validation subject, inside that subject's brain, averaged over subjects (what ``mean-image``
  cannot explain in a healthy brain);
- per lesion cohort: lesion size (voxels at 64³, median and range, and percent of the brain);
  ``contrast``: mean over subjects of |mean lesion intensity - mean intensity of the mirrored
  (contralateral, same tissue) region|; ``lesion_l1`` / ``brain_l1``: mean |image - healthy mean|
  inside the lesion and in the rest of the brain (their ratio is how far the lesion stands out of
  the floor's residual); ``below_p5``: share of lesion voxels darker than the 5th percentile of the
  subject's own healthy-tissue intensities (trivially dark voxels);
- the ``mean-image:3D-None`` floor (closed form, no learning: :mod:`uadlab.models`), trained on the
  healthy split and scored with the paper's protocol (:func:`uadlab.evaluation.protocol.evaluate_run`):
  DICE_D, DICE_S, AUPRC and the oracle DICE_D (best threshold on test, a reference only) of each
  lesion cohort's test split;
- PCA floors, a closed-form linear stand-in for a learned reconstruction: each volume reconstructed
  from the first ``k`` (5, 20) principal components of the healthy training volumes. ``pcaK_l1``:
  l1 error on the healthy validation volumes; per lesion cohort (all its subjects, validation and
  test) the AUPRC and the oracle DICE_D of the post-processed residual. Unlike the mean image, it
  absorbs variation that few directions explain (pose, size, one smooth warp), so it tells apart
  a cohort that varies in many ways from one that varies in a few.

Run under ``nice -n 19`` with ``OMP_NUM_THREADS=1`` beside other work; one variant takes about a minute
(MNI) to two (real sources) on an idle core. Results in ``docs/phantom_realism.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import yaml

from uadlab.data.dataset import build_dataset, load_dataset
from uadlab.evaluation.metrics import auprc, oracle_dice
from uadlab.evaluation.postprocessing import anomaly_map
from uadlab.evaluation.protocol import evaluate_run
from uadlab.profiles import get_profile
from uadlab.training import TrainConfig, train

_MANIFEST = Path(__file__).resolve().parents[1] / "data_manifests" / "phantom.yaml"
_FLOOR = "mean-image:3D-None"
_PCA_K = (5, 20)


def _manifest(out: Path, name: str, *, sources: object = None, params: dict | None = None) -> Path:
    """A copy of the shipped phantom manifest with other ``sources`` and/or ``params``, in ``OUT/manifests``."""
    spec = yaml.safe_load(_MANIFEST.read_text())
    if sources is not None:
        spec["phantom"]["sources"] = sources
    if params:
        spec["phantom"]["params"] = params
    path = out / "manifests" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def healthy_statistics(data: Path) -> dict[str, float]:
    """``healthy_sd`` and ``mean_l1`` of a built data set (see the module docstring)."""
    dataset = load_dataset(data)
    images, brains = dataset.stack(dataset.ids(cohort="healthy"))
    core = brains.mean(axis=0) >= 0.5
    train_images, _ = dataset.stack(dataset.ids(cohort="healthy", split="train"))
    mean = train_images.mean(axis=0)
    val_images, val_brains = dataset.stack(dataset.ids(cohort="healthy", split="val"))
    l1 = [float(np.abs(x - mean)[b].mean()) for x, b in zip(val_images, val_brains)]
    return {"healthy_sd": float(images.std(axis=0)[core].mean()), "mean_l1": float(np.mean(l1)), "_mean": mean}


def lesion_statistics(data: Path, cohort: str, mean: np.ndarray) -> dict[str, float]:
    """Size, contrast and floor-residual statistics of one lesion cohort (see the module docstring)."""
    dataset = load_dataset(data)
    sizes, shares, contrasts, lesion_l1, brain_l1, below = [], [], [], [], [], []
    for subject_id in dataset.ids(cohort=cohort):
        s = dataset.subject(subject_id)
        lesion, brain = s.lesion_mask & s.brain_mask, s.brain_mask
        if not lesion.any():
            continue
        tissue = brain & ~lesion
        sizes.append(int(lesion.sum()))
        shares.append(100.0 * lesion.sum() / brain.sum())
        mirror = np.flip(lesion, axis=0) & tissue  # RAS+ volumes: axis 0 is left-right
        if mirror.sum() >= 10:
            contrasts.append(abs(float(s.image[lesion].mean() - s.image[mirror].mean())))
        residual = np.abs(s.image - mean)
        lesion_l1.append(float(residual[lesion].mean()))
        brain_l1.append(float(residual[tissue].mean()))
        below.append(float((s.image[lesion] < np.percentile(s.image[tissue], 5)).mean()))
    return {
        "voxels_median": float(np.median(sizes)), "voxels_min": float(np.min(sizes)),
        "voxels_max": float(np.max(sizes)),
        "brain_pct": float(np.median(shares)), "contrast": float(np.mean(contrasts)),
        "lesion_l1": float(np.mean(lesion_l1)), "brain_l1": float(np.mean(brain_l1)), "below_p5": float(np.mean(below)),
    }


class _PCA:
    """Linear reconstruction from the first ``k`` principal components of the healthy training images."""

    def __init__(self, images: np.ndarray) -> None:
        flat = images.reshape(len(images), -1).astype(np.float64)
        self.mean = flat.mean(axis=0)
        centred = flat - self.mean
        values, vectors = np.linalg.eigh(centred @ centred.T)  # Gram matrix: n x n, cheap for n << voxels
        order = np.argsort(values)[::-1]
        keep = values[order] > 1e-9 * values.max()
        self.components = (vectors[:, order[keep]].T @ centred) / np.sqrt(values[order[keep]])[:, None]

    def recon(self, image: np.ndarray, k: int) -> np.ndarray:
        basis = self.components[:k]
        centred = image.reshape(-1) - self.mean
        return (self.mean + basis.T @ (basis @ centred)).reshape(image.shape).astype(np.float32)


def pca_statistics(data: Path) -> dict:
    """Healthy validation l1 and lesion AUPRC / oracle DICE_D of PCA reconstructions (see the docstring)."""
    dataset = load_dataset(data)
    pca = _PCA(dataset.stack(dataset.ids(cohort="healthy", split="train"))[0])
    val_images, val_brains = dataset.stack(dataset.ids(cohort="healthy", split="val"))
    result = {
        f"pca{k}_l1": float(np.mean([np.abs(x - pca.recon(x, k))[b].mean() for x, b in zip(val_images, val_brains)]))
        for k in _PCA_K
    }
    for cohort in dataset.lesion_cohorts:
        scores = {k: [] for k in _PCA_K}
        labels = []
        for subject_id in dataset.ids(cohort=cohort):
            s = dataset.subject(subject_id)
            labels.append(s.lesion_mask & s.brain_mask)
            for k in _PCA_K:
                scores[k].append(anomaly_map(np.abs(s.image - pca.recon(s.image, k)), s.brain_mask))
        result[cohort] = {}
        for k in _PCA_K:
            result[cohort][f"pca{k}_auprc"] = 100.0 * auprc(np.stack(scores[k]), np.stack(labels))
            result[cohort][f"pca{k}_oracle"] = 100.0 * oracle_dice(np.stack(scores[k]), np.stack(labels))[0]
    return result


def floor_scores(data: Path, out: Path) -> dict[str, dict[str, float]]:
    """DICE_D, DICE_S, AUPRC, oracle DICE_D (test split, percent) of the ``mean-image`` floor per lesion cohort."""
    run = out / "run"
    train(TrainConfig(experiment=_FLOOR, profile="lab", data=str(data), device="cpu"), run, overwrite=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metrics = evaluate_run(run, data, out / "eval", overwrite=True, n_resamples=10)
    return {
        cohort: {key: 100.0 * float(values[field]) for key, field in
                 (("dice_d", "dice_d"), ("dice_s", "dice_s_mean"), ("auprc", "auprc"), ("oracle", "oracle_dice_d"))}
        for cohort, values in metrics["cohorts"].items()
    }


def measure(name: str, manifest: Path, out: Path, root: str | None, counts: dict[str, int], *,
            floor: bool = True) -> dict:
    """Build one variant and return all its statistics and (with ``floor``) the ``mean-image`` floor."""
    profile = dataclasses.replace(get_profile("lab"), phantom_counts=counts)
    data = build_dataset(manifest, out / "data" / name, root=root, profile=profile, cache_dir=out / "cache")
    result = healthy_statistics(data)
    mean = result.pop("_mean")
    cohorts = load_dataset(data).lesion_cohorts
    for cohort in cohorts:
        result[cohort] = lesion_statistics(data, cohort, mean)
    if floor:
        for cohort, scores in floor_scores(data, out / "floor" / name).items():
            result[cohort].update(scores)
    pca = pca_statistics(data)
    for cohort in cohorts:
        result[cohort].update(pca.pop(cohort))
    result.update(pca)
    return result


def _markdown(results: dict[str, dict]) -> str:
    head = ("healthy_sd", "mean_l1", *(f"pca{k}_l1" for k in _PCA_K))
    lines = ["| variant | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    lines += [f"| {n} | " + " | ".join(f"{r[k]:.4f}" for k in head) + " |" for n, r in results.items()]
    columns = ("voxels_median", "voxels_min", "voxels_max", "brain_pct", "contrast", "lesion_l1", "brain_l1",
               "below_p5", "dice_d", "dice_s", "auprc", "oracle",
               *(f"pca{k}_{m}" for k in _PCA_K for m in ("auprc", "oracle")))
    cohorts = dict.fromkeys(c for r in results.values() for c in r if isinstance(r[c], dict))
    for cohort in cohorts:
        lines += ["", f"**{cohort}**", "", "| variant | " + " | ".join(columns) + " |",
                  "|---" * (len(columns) + 1) + "|"]
        for n, r in results.items():
            c = r.get(cohort)
            if c is None:
                continue
            lines.append(f"| {n} | " + " | ".join(_cell(c, k) for k in columns) + " |")
    return "\n".join(lines)


def _cell(values: dict, key: str) -> str:
    if key not in values:
        return "-"
    if key.startswith("voxels"):
        return f"{values[key]:.0f}"
    if key in ("contrast", "lesion_l1", "brain_l1", "below_p5"):
        return f"{values[key]:.3f}"
    return f"{values[key]:.1f}"  # percent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--real-root", help="folder with healthy/*.nii.gz (../shared/data/real); adds 'real'")
    parser.add_argument("--counts", default="60,20,20", help="healthy,tumour,stroke subjects")
    parser.add_argument("--variant", action="append", default=[], help="NAME=JSON of PhantomParams overrides")
    parser.add_argument("--real-cases", action="store_true",
                        help="with --real-root: also the statistics of its real lesion cases "
                             "(data_manifests/sample_real.yaml; PCA floors only, no validation cases)")
    parser.add_argument("--skip-mni", action="store_true", help="measure only --real-root and the variants")
    args = parser.parse_args()
    counts = dict(zip(("healthy", "tumour", "stroke"), (int(c) for c in args.counts.split(","))))
    jobs = [] if args.skip_mni else [("mni", _manifest(args.out, "mni"), None)]
    if args.real_root:
        jobs.append(("real", _manifest(args.out, "real", sources=["healthy/*.nii.gz"]), args.real_root))
    for spec in args.variant:
        name, _, params = spec.partition("=")
        jobs.append((name, _manifest(args.out, name, params=json.loads(params)), None))
    results = {}
    if args.real_root and args.real_cases:
        results["sample_real"] = measure("sample_real", _MANIFEST.with_name("sample_real.yaml"), args.out,
                                         args.real_root, counts, floor=False)
        (args.out / "sample_real.json").write_text(json.dumps(results["sample_real"], indent=1))
    for name, manifest, root in jobs:
        results[name] = measure(name, manifest, args.out, root, counts)
        (args.out / f"{name}.json").write_text(json.dumps(results[name], indent=1))
    print(_markdown(results))


if __name__ == "__main__":
    main()
