"""Lambert et al. 2021's evaluation protocol (Sec. 3-4), beside the Bengs et al. protocol of :mod:`.protocol`.

Their protocol differs from Bengs et al.'s in three ways, each reproduced here:

- **Threshold from one half of the test set.** Each test set is split in half (a seeded permutation
  of the sorted subject ids); the threshold with the best Dice among 15 values in ``[0, 0.15]``
  (:data:`THRESHOLDS`) on the first half is applied to the second half, which alone is scored. Dice
  on the first half is pooled over its voxels (DICE_D), as :func:`~.metrics.grid_threshold_search`
  computes it.
- **Central slices.** 2D and 3D models are scored on the same central axial slices: Lambert et al.
  crop their 170-slice template to its 75 central slices, so here the central ``75 / 170`` of the
  axial slices (:data:`CENTRAL_FRACTION`; 28 of 64).
- **Their metrics.** Dice per subject (mean ± sd over the scored half), sensitivity and specificity
  pooled over the brain voxels of the scored half, and the reconstruction MAE: mean ``|x - x_hat|``
  over those brain voxels (intensity units, images in [0, 1]).

The segmentation is the thresholded anomaly map of :func:`~.postprocessing.anomaly_map` (residual
times the eroded brain mask, median filtered), the same map Bengs et al.'s protocol scores; Lambert et
al. apply the median filter after thresholding, a difference of order, not of kind.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from uadlab._checks import check_int, check_real
from uadlab.errors import UadlabWarning
from uadlab.evaluation import metrics
from uadlab.evaluation.inference import SubjectMaps, as_maps_list

__all__ = ["THRESHOLDS", "CENTRAL_FRACTION", "LAMBERT_COLUMNS", "central_slices", "split_halves", "lambert_scores",
           "lambert_markdown"]

#: The 15 candidate thresholds of Lambert et al. (Sec. 3).
THRESHOLDS: np.ndarray = np.linspace(0.0, 0.15, 15)
#: Share of the axial slices scored: their 75 central slices of 170.
CENTRAL_FRACTION: float = 75 / 170
#: Keys of :func:`lambert_scores`' result.
LAMBERT_COLUMNS: tuple[str, ...] = ("threshold", "dice_mean", "dice_std", "sensitivity", "specificity", "mae",
                                    "n_threshold", "n_scored")


def central_slices(depth: int, fraction: float = CENTRAL_FRACTION) -> slice:
    """The central ``round(fraction * depth)`` axial slices (at least one) of a volume ``depth`` slices deep.

    Raises:
        TypeError, ValueError: ``depth`` not a positive int, ``fraction`` not in (0, 1].

    >>> central_slices(64)
    slice(18, 46, None)
    """
    depth = check_int("depth", depth, "a positive int", lambda v: v > 0)
    fraction = check_real("fraction", fraction, "a number in (0, 1]", lambda v: 0 < v <= 1)
    count = max(1, round(fraction * depth))
    start = (depth - count) // 2
    return slice(start, start + count)


def split_halves(ids: Sequence[str], seed: int = 0) -> tuple[list[str], list[str]]:
    """Split subject ids in two halves: ``(threshold half, scored half)``; the scored half gets the odd one.

    A seeded permutation of the sorted ids, so the split does not depend on the order given.

    Raises:
        ValueError: fewer than two ids, or duplicates.

    >>> split_halves(["a", "b", "c", "d", "e"], seed=0)
    (['c', 'e'], ['a', 'b', 'd'])
    """
    unique = sorted(set(ids))
    if len(unique) != len(list(ids)) or len(unique) < 2:
        raise ValueError(f"`ids` must be at least two distinct subject ids, got {list(ids)!r}")
    order = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    half = len(order) // 2
    return order[:half], sorted(order[half:])


def lambert_scores(maps: Mapping[str, SubjectMaps] | Sequence[SubjectMaps], *, seed: int = 0,
                   thresholds: np.ndarray | Sequence[float] = THRESHOLDS,
                   central_fraction: float = CENTRAL_FRACTION) -> dict[str, float]:
    """Lambert et al.'s scores of one test set (Sec. 3-4): threshold on one half, metrics on the other.

    Args:
        maps: the test subjects' :class:`~.inference.SubjectMaps`, with lesion masks.
        seed: seed of the split into halves.
        thresholds: candidate thresholds (anomaly-map units).
        central_fraction: share of the axial slices that is scored.

    Returns:
        :data:`LAMBERT_COLUMNS`: the threshold, Dice mean and sd over the scored half, pooled
        sensitivity and specificity, reconstruction MAE, and the two halves' sizes. The threshold and
        the segmentation metrics are NaN, with an :class:`~.metrics.UndefinedMetricWarning`, when the
        threshold half has no lesion voxel in the central slices. A :class:`~uadlab.errors.UadlabWarning`
        says when the best threshold is the grid's largest (the optimum may lie beyond their range).

    Raises:
        TypeError, ValueError: as :func:`~.inference.as_maps_list` (labelled); ValueError for fewer
            than two subjects.
    """
    items = as_maps_list(maps, labelled=True)
    by_id = {m.subject_id: m for m in items}
    fit_ids, scored_ids = split_halves(list(by_id), seed)
    keep = central_slices(items[0].image.shape[2], central_fraction)

    def crop(ids: list[str], field: str) -> list[np.ndarray]:
        return [getattr(by_id[i], field)[:, :, keep] for i in ids]

    fit_labels = crop(fit_ids, "lesion_mask")
    nan = math.nan
    if not any(label.any() for label in fit_labels):
        warnings.warn(f"no lesion voxel in the central slices of the threshold half {fit_ids}: Lambert et al.'s "
                      "metrics are undefined (NaN)", metrics.UndefinedMetricWarning, stacklevel=2)
        threshold = nan
    else:
        threshold = metrics.grid_threshold_search(crop(fit_ids, "anomaly_map"), fit_labels, thresholds,
                                                  mask=crop(fit_ids, "brain_mask"))
        if threshold == float(np.max(thresholds)):
            warnings.warn(f"the best threshold is the grid's largest, {threshold:g}: the optimum may lie above "
                          "Lambert et al.'s range (their residuals were smaller)", UadlabWarning, stacklevel=2)
    brains = crop(scored_ids, "brain_mask")
    labels = crop(scored_ids, "lesion_mask")
    errors = np.concatenate([np.abs(image - recon)[brain] for image, recon, brain
                             in zip(crop(scored_ids, "image"), crop(scored_ids, "recon"), brains)])
    result = {"threshold": threshold, "mae": float(errors.mean()) if errors.size else nan,
              "n_threshold": len(fit_ids), "n_scored": len(scored_ids)}
    if math.isnan(threshold):
        return {**result, "dice_mean": nan, "dice_std": nan, "sensitivity": nan, "specificity": nan}
    preds = [metrics.binarize(a, threshold) & b for a, b in zip(crop(scored_ids, "anomaly_map"), brains)]
    dice = metrics.dice_subjects(preds, labels)
    return {**result, "dice_mean": float(np.nanmean(dice)), "dice_std": float(np.nanstd(dice)),
            "sensitivity": metrics.sensitivity(preds, labels, mask=brains),
            "specificity": metrics.specificity(preds, labels, mask=brains)}


def lambert_markdown(table: pd.DataFrame) -> str:
    """Lambert et al.'s Table 1 as Markdown: one row per model, per test set Dice (mean ± sd),
    specificity, sensitivity and MAE (their protocol), then DICE_D and AUPRC (Bengs et al.'s protocol).

    Args:
        table: rows of ``lambert2021.csv``: ``model``, ``dataset``, :data:`LAMBERT_COLUMNS` and
            ``bengs_dice_d``, ``bengs_auprc``.
    """
    def num(value: float, digits: int = 3) -> str:
        return "–" if pd.isna(value) else f"{float(value):.{digits}f}"

    datasets = list(dict.fromkeys(table["dataset"]))
    header = ["Model"] + [f"{d} {c}" for d in datasets for c in ("Dice", "Spe", "Sen", "MAE", "DICE_D*", "AUPRC*")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, part in table.groupby("model", sort=False):
        cells = [str(model)]
        for dataset in datasets:
            row = part[part["dataset"] == dataset]
            if row.empty:
                cells += ["–"] * 6
                continue
            r = row.iloc[0]
            cells += [f"{num(r['dice_mean'])} ± {num(r['dice_std'])}", num(r["specificity"]), num(r["sensitivity"]),
                      num(r["mae"]), num(r["bengs_dice_d"]), num(r["bengs_auprc"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Dice (mean ± sd over the scored half), Spe, Sen: Lambert et al.'s protocol (threshold from 15 "
                 "values in [0, 0.15] on one half of each test set, central axial slices); MAE: mean |x − x̂| "
                 "over brain voxels. *: Bengs et al.'s protocol (greedy threshold on the validation split).")
    return "\n".join(lines) + "\n"
