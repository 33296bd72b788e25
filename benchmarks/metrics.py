"""Time uadlab.evaluation.metrics on a paper-sized test set, against baselines measured in the same run.

Usage::

    .venv/bin/python benchmarks/metrics.py [--subjects 200] [--size 64] [--resamples 1000] [--seed 0]

Synthetic data: ``--subjects`` volumes of ``size^3`` voxels, each with an ellipsoidal brain mask
(random radii), a spherical lesion inside it (random centre and radius) and an anomaly map of
half-normal noise raised inside the lesion, zero outside the brain. Baselines: scikit-learn's
``average_precision_score`` for AUPRC, the maximum F1 of its ``precision_recall_curve`` for the
oracle DICE_D, and the threshold search evaluating DICE_D by thresholding every voxel at each step
(the naive loop). Each baseline's value is checked against uadlab's (the script stops on a
disagreement). Ratios below 1 mean uadlab is faster.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve

from uadlab.evaluation.metrics import (
    auprc,
    bootstrap_ci,
    dice_dataset,
    dice_subjects,
    greedy_threshold_search,
    oracle_dice,
    pooled_auprc_statistic,
    pooled_dice_statistic,
    slice_auprc,
)


def _synthetic(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(anomaly maps float32, lesion masks bool, brain masks bool), each (n, size, size, size)."""
    grid = np.stack(np.meshgrid(*[np.arange(size, dtype=np.float32)] * 3, indexing="ij"))  # (3, X, Y, Z)
    centre = (size - 1) / 2
    maps = np.empty((n, size, size, size), np.float32)
    lesions = np.empty((n, size, size, size), bool)
    brains = np.empty((n, size, size, size), bool)
    for i in range(n):
        radii = rng.uniform(0.3, 0.45, 3) * size
        brains[i] = (((grid - centre) / radii[:, None, None, None]) ** 2).sum(0) <= 1
        lesion_centre = centre + rng.uniform(-0.4, 0.4, 3) * radii
        lesion_radius = rng.uniform(0.03, 0.15) * size
        lesions[i] = (((grid - lesion_centre[:, None, None, None]) ** 2).sum(0) <= lesion_radius**2) & brains[i]
        noise = np.abs(rng.normal(0.0, 0.08, (size, size, size))).astype(np.float32)
        maps[i] = (noise + 0.15 * lesions[i]) * brains[i]
    return maps, lesions, brains


def _naive_greedy(scores: np.ndarray, labels: np.ndarray, iterations: int = 10) -> float:
    """The search with a full-volume DICE_D at every probe (20 passes over all voxels)."""
    lo, hi, best_t, best_d = 0.0, 1.0, 0.0, -1.0
    for _ in range(iterations):
        t1, t2 = lo + (hi - lo) / 4, lo + 3 * (hi - lo) / 4
        d1, d2 = dice_dataset(scores > t1, labels), dice_dataset(scores > t2, labels)
        for t, d in ((t1, d1), (t2, d2)):
            if d > best_d:
                best_t, best_d = t, d
        lo, hi = (lo, (lo + hi) / 2) if d1 >= d2 else ((lo + hi) / 2, hi)
    return best_t


def _sklearn_oracle(labels: np.ndarray, scores: np.ndarray) -> float:
    """Maximum F1 (= pooled DICE) over scikit-learn's precision-recall curve."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    return float(np.nanmax(f1))


def _check(name: str, ours: float, reference: float, tol: float) -> None:
    """Stop the benchmark when uadlab and the baseline disagree."""
    if not abs(ours - reference) <= tol:
        raise SystemExit(f"{name}: uadlab {ours!r} differs from the baseline {reference!r} by more than {tol}")


def _timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    maps, lesions, brains = _synthetic(args.subjects, args.size, np.random.default_rng(args.seed))
    n_brain = int(brains.sum())
    print(f"{args.subjects} volumes of {args.size}^3: {maps.size / 1e6:.1f} M voxels, "
          f"{n_brain / 1e6:.1f} M brain voxels, {int(lesions.sum()) / 1e3:.0f} k lesion voxels")

    rows: list[tuple[str, float, float | None, str]] = []
    threshold, t_search = _timed(lambda: greedy_threshold_search(maps, lesions, mask=brains))
    naive_threshold, t_naive = _timed(lambda: _naive_greedy(maps, lesions))
    _check("greedy threshold search", threshold, naive_threshold, 0.0)
    rows.append(("greedy threshold search", t_search, t_naive, f"t = {threshold:.4f} (naive loop agrees)"))

    preds = maps > threshold
    value, t = _timed(lambda: dice_dataset(preds, lesions))
    rows.append(("DICE_D", t, None, f"{value:.4f}"))
    value, t = _timed(lambda: dice_subjects(preds, lesions))
    rows.append(("DICE_S", t, None, f"{np.nanmean(value):.4f} ± {np.nanstd(value):.4f}"))

    ours, t_ours = _timed(lambda: auprc(maps, lesions, mask=brains))
    reference, t_sklearn = _timed(lambda: average_precision_score(lesions[brains], maps[brains]))
    _check("AUPRC", ours, reference, 1e-9)
    rows.append(("AUPRC", t_ours, t_sklearn, f"{ours:.6f} (sklearn {reference:.6f})"))

    value, t = _timed(lambda: slice_auprc(maps, lesions, brains))
    rows.append(("slice AUPRC", t, None, f"{value:.4f}"))
    (best, best_t), t = _timed(lambda: oracle_dice(maps, lesions, mask=brains))
    reference, t_pr = _timed(lambda: _sklearn_oracle(lesions[brains], maps[brains]))
    _check("oracle DICE_D", best, reference, 1e-9)
    rows.append(("oracle DICE_D", t, t_pr, f"{best:.4f} at t = {best_t:.4f} (sklearn max F1 {reference:.4f})"))

    per_subject = dice_subjects(preds, lesions)
    ci, t = _timed(lambda: bootstrap_ci(per_subject, n_resamples=args.resamples))
    rows.append((f"bootstrap DICE_S ({args.resamples})", t, None, f"[{ci[0]:.4f}, {ci[1]:.4f}]"))
    ci, t = _timed(lambda: bootstrap_ci(pooled_dice_statistic(preds, lesions), n_subjects=args.subjects,
                                        n_resamples=args.resamples))
    rows.append((f"bootstrap DICE_D ({args.resamples})", t, None, f"[{ci[0]:.4f}, {ci[1]:.4f}]"))
    statistic, t_setup = _timed(lambda: pooled_auprc_statistic(maps, lesions, mask=brains))
    ci, t = _timed(lambda: bootstrap_ci(statistic, n_subjects=args.subjects, n_resamples=args.resamples))
    binned = statistic(np.ones(args.subjects))
    # baseline: one sklearn AUPRC per resample, extrapolated from the single measured call
    rows.append((f"bootstrap AUPRC ({args.resamples})", t_setup + t, t_sklearn * args.resamples,
                 f"[{ci[0]:.4f}, {ci[1]:.4f}]; binned point {binned:.6f} (exact {ours:.6f})"))

    print(f"{'metric':32s} {'uadlab s':>9s} {'baseline s':>11s} {'ratio':>7s}  value")
    for name, seconds, baseline, text in rows:
        base = f"{baseline:11.3f}" if baseline is not None else f"{'':11s}"
        ratio = f"{seconds / baseline:7.3f}" if baseline is not None else f"{'':7s}"
        print(f"{name:32s} {seconds:9.3f} {base} {ratio}  {text}")
    print("baselines: search = naive full-volume loop; AUPRC = sklearn average_precision_score; "
          "oracle = max F1 of sklearn precision_recall_curve; "
          "bootstrap AUPRC = resamples x one sklearn AUPRC call (extrapolated)")


if __name__ == "__main__":
    main()
