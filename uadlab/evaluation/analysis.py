"""Figures 4–7 and Table 1 of Bengs et al. 2021 as tables and arrays (no plotting; see ``uadlab.viz.figures``).

- Fig. 4, lesion size: :func:`lesion_size_table` and :func:`lesion_size_fit` (DICE_S against lesion size
  with the paper's 3rd-order polynomial, :func:`cubic_fit`, or a lower one over few sizes).
- Fig. 5, data-set size: :func:`data_size_table` (AUPRC against the share of healthy training data).
- Fig. 6, slice-wise detection: :func:`slice_detection_curve` (precision–recall of axial slices).
- Fig. 7, example cases: :func:`example_cases` (best / median / worst subject, the slice with most
  lesion).
- Table 1: :func:`table1` (numbers, percent) and :func:`table1_markdown` (the paper's layout).
- Do two methods really differ? :func:`paired_difference` (one method against another on the same
  subjects, with a paired bootstrap interval) and :func:`ablation_differences` (every erasing
  experiment against the ``None`` baseline of its dimension).
- Beyond seed noise? :func:`seed_summary` (mean and sd over training seeds) and
  :func:`paired_difference_seeds` / :func:`ablation_differences_seeds` (a bootstrap over both
  seeds and subjects).

Inputs are what :mod:`uadlab.evaluation.protocol` produces: the per-subject table (``subjects.csv``,
columns ``subject_id, cohort, lesion_voxels, dice, auprc``), metrics dicts and
:class:`~uadlab.evaluation.inference.SubjectMaps`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve

from uadlab._checks import check_int, check_real
from uadlab.evaluation import metrics
from uadlab.evaluation.inference import SubjectMaps, as_maps_list, lesion_slice
from uadlab.models import MODELS
from uadlab.training.experiments import EXPERIMENTS, parse_experiment

__all__ = [
    "TABLE1_METRICS",
    "ExampleCase",
    "lesion_size_table",
    "cubic_fit",
    "LESION_SIZE_FIT_MIN_SIZES",
    "lesion_size_fit",
    "data_size_table",
    "slice_detection_curve",
    "example_cases",
    "table1",
    "table1_markdown",
    "paired_difference",
    "ablation_differences",
    "seed_summary",
    "paired_difference_seeds",
    "ablation_differences_seeds",
    "baseline_pairs",
    "best_experiment",
]

#: Column groups of Table 1 per test set: label -> metric key (DICE_S also uses ``dice_s_std``).
TABLE1_METRICS: dict[str, str] = {"DICE_D": "dice_d", "DICE_S": "dice_s_mean", "AUPRC": "auprc"}


# ---------------------------------------------------------------------------------------------------
# Fig. 4: lesion size


def lesion_size_table(per_subject: pd.DataFrame) -> pd.DataFrame:
    """DICE_S against lesion size, one row per subject with a lesion (Fig. 4).

    Subjects without lesion voxels or without a defined DICE are dropped (they have no place on a
    log-size axis and no DICE to plot).

    Args:
        per_subject: the per-subject table of :func:`uadlab.evaluation.protocol.score` or ``subjects.csv``;
            needs ``subject_id``, ``lesion_voxels`` and ``dice`` (``cohort`` kept when present).

    Returns:
        Columns ``subject_id, [cohort,] lesion_voxels, log10_lesion_voxels, dice``, sorted by size.

    Raises:
        TypeError: ``per_subject`` is not a DataFrame.
        ValueError: a required column is missing.

    >>> lesion_size_table(pd.DataFrame({"subject_id": ["a", "b", "c"], "lesion_voxels": [100, 0, 10],
    ...                                 "dice": [0.5, float("nan"), 0.1]}))["subject_id"].tolist()
    ['c', 'a']
    """
    _check_frame(per_subject, "per_subject", ("subject_id", "lesion_voxels", "dice"))
    keep = (per_subject["lesion_voxels"] > 0) & per_subject["dice"].notna()
    columns = ["subject_id"] + (["cohort"] if "cohort" in per_subject else []) + ["lesion_voxels", "dice"]
    table = per_subject.loc[keep, columns].sort_values("lesion_voxels", kind="stable").reset_index(drop=True)
    table.insert(table.columns.get_loc("lesion_voxels") + 1, "log10_lesion_voxels",
                 np.log10(table["lesion_voxels"].to_numpy(dtype=np.float64)))
    return table


def cubic_fit(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> np.poly1d:
    """Least-squares 3rd-order polynomial ``y ≈ p(x)`` (Bengs et al. 2021, Fig. 4).

    Args:
        x: ``(N,)`` finite abscissae (for Fig. 4: ``log10`` lesion voxels, see :func:`lesion_size_fit`).
        y: ``(N,)`` finite ordinates (DICE_S).

    Returns:
        The fitted :class:`numpy.poly1d` (coefficients highest power first).

    Raises:
        ValueError: shapes differ, values are not finite, or fewer than 4 distinct ``x`` values.

    >>> p = cubic_fit([0, 1, 2, 3, 4], [1, 2, 9, 28, 65])   # y = x^3 + 1
    >>> np.round(p.coeffs, 6).tolist() == [1.0, 0.0, 0.0, 1.0]
    True
    """
    return _polynomial_fit(x, y, 3, "a cubic fit")


def _polynomial_fit(x: Any, y: Any, degree: int, what: str) -> np.poly1d:
    """Least-squares polynomial of ``degree``; ValueError (naming ``what``) for bad input or too few distinct ``x``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"`x` and `y` must be 1D arrays of one length, got shapes {x.shape!r} and {y.shape!r}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("`x` and `y` must be finite, got NaN/inf values")
    if np.unique(x).size < degree + 1:
        raise ValueError(f"`x` must hold at least {degree + 1} distinct values for {what}, got {np.unique(x).size}")
    return np.poly1d(np.polyfit(x, y, degree))


#: Distinct lesion sizes :func:`lesion_size_fit` needs (a line with one degree of freedom left).
LESION_SIZE_FIT_MIN_SIZES = 3


def lesion_size_fit(table: pd.DataFrame) -> np.poly1d:
    """The Fig. 4 trend: a polynomial of DICE_S in ``log10`` lesion voxels, cubic as the paper's where sizes allow.

    The fit is on a log axis because lesion sizes span orders of magnitude (tens to tens of
    thousands of voxels at 64^3): in linear size a cubic is dominated by the few largest lesions
    and swings wildly among the many small ones. Evaluate it at ``np.log10(voxels)``.

    Its degree is ``min(3, distinct sizes - 2)``: the paper's cubic (:func:`cubic_fit`) from 5 distinct
    sizes on, a quadratic with 4 and a line with 3 (a few test subjects, as the smoke profile's), so that
    the curve never runs through every point (a cubic through 4 points fits them exactly, noise included).
    The fit's degree is ``p.order``.

    Args:
        table: output of :func:`lesion_size_table`.

    Returns:
        ``p`` with ``p(log10(lesion_voxels)) ≈ DICE_S``.

    Raises:
        ValueError: fewer than :data:`LESION_SIZE_FIT_MIN_SIZES` distinct sizes, or non-finite values.

    >>> t = lesion_size_table(pd.DataFrame({"subject_id": list("abcd"), "lesion_voxels": [10, 100, 1000, 10000],
    ...                                     "dice": [0.1, 0.3, 0.4, 0.6]}))
    >>> lesion_size_fit(t).order  # 4 sizes: a quadratic
    2
    """
    _check_frame(table, "table", ("log10_lesion_voxels", "dice"))
    x = table["log10_lesion_voxels"].to_numpy()
    degree = min(3, np.unique(x).size - 2)
    if degree < 1:
        raise ValueError(f"`table` must hold at least {LESION_SIZE_FIT_MIN_SIZES} distinct lesion sizes for a fit, "
                         f"got {np.unique(x).size}")
    return _polynomial_fit(x, table["dice"].to_numpy(), degree, f"a degree-{degree} fit")


# ---------------------------------------------------------------------------------------------------
# Fig. 5: data-set size


def data_size_table(results: Iterable[tuple[str, float, Mapping[str, Any]]]) -> pd.DataFrame:
    """Metrics against the share of healthy training data (Bengs et al. 2021, Fig. 5).

    Args:
        results: ``(experiment, fraction, metrics)`` triples; ``metrics`` is the dict of
            :func:`uadlab.evaluation.protocol.evaluate_run` (one row per cohort of its ``"cohorts"``) or one
            cohort's metrics (``dataset`` then empty).

    Returns:
        Columns ``experiment, spatial_dims, fraction, percent, dataset, auprc, dice_d, dice_s_mean``,
        sorted by Table 1 order, dataset and fraction.

    Raises:
        TypeError: a fraction that is not a number.
        ValueError: a fraction outside ``(0, 1]`` or a metrics dict without ``auprc``.
    """
    rows = []
    for experiment, fraction, result in results:
        check_real("fraction", fraction, "in (0, 1]", lambda v: 0 < v <= 1)
        per_cohort = result["cohorts"] if "cohorts" in result else {"": result}
        for dataset, m in per_cohort.items():
            if "auprc" not in m:
                raise ValueError(f"`metrics` must hold 'auprc', got keys {sorted(m)!r}")
            rows.append({"experiment": experiment, "spatial_dims": _spatial_dims(experiment),
                         "fraction": float(fraction), "percent": round(100 * fraction),
                         "dataset": dataset, **{k: _num(m.get(k)) for k in ("auprc", "dice_d", "dice_s_mean")}})
    columns = ["experiment", "spatial_dims", "fraction", "percent", "dataset", "auprc", "dice_d", "dice_s_mean"]
    table = pd.DataFrame(rows, columns=columns)
    table["_order"] = table["experiment"].map(_experiment_rank)
    return table.sort_values(["_order", "dataset", "fraction"], kind="stable").drop(columns="_order") \
        .reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------
# Fig. 6: slice-wise detection


def slice_detection_curve(maps: Mapping[str, SubjectMaps] | Sequence[SubjectMaps], *,
                          reduce: Literal["mean", "sum"] = "sum") -> tuple[np.ndarray, np.ndarray, float]:
    """Precision–recall curve of axial-slice detection (Bengs et al. 2021, Sec. 2.3, Fig. 6).

    A slice is abnormal when it holds a lesion voxel; its score is the residual summed (or averaged)
    over its brain voxels (:func:`uadlab.evaluation.metrics.slice_scores`, slices without brain dropped).

    Args:
        maps: labelled :class:`~uadlab.evaluation.inference.SubjectMaps` (test split).
        reduce: ``"sum"`` (default: the slice's l1 distance, as the paper) or ``"mean"`` of the
            residual over a slice's brain voxels.

    Returns:
        ``(precision, recall, auprc)``: ``(K,)`` arrays from
        :func:`sklearn.metrics.precision_recall_curve` and the average precision
        (:func:`uadlab.evaluation.metrics.auprc`, NaN if no slice is abnormal).

    Raises:
        ValueError: no maps or a map without lesion mask; as :func:`uadlab.evaluation.metrics.slice_scores`.
    """
    items = as_maps_list(maps, labelled=True)
    scores, labels = metrics.slice_scores([m.residual for m in items], [m.lesion_mask for m in items],
                                          [m.brain_mask for m in items], reduce=reduce)
    ap = metrics.auprc(scores, labels)
    if not labels.any():
        return np.array([1.0]), np.array([0.0]), ap
    precision, recall, _ = precision_recall_curve(labels, scores)
    return precision, recall, ap


# ---------------------------------------------------------------------------------------------------
# Fig. 7: example cases


@dataclass(frozen=True, eq=False)
class ExampleCase:
    """One row of Fig. 7: the axial slice with the most lesion of one subject.

    Attributes:
        subject_id: the subject.
        label: ``"best"``, ``"median"``, ``"worst"`` (or ``"q<percent>"`` for other picks).
        dice: the subject's DICE_S at the threshold.
        slice_index: axial index ``k`` of the slice (``volume[:, :, k]``).
        image: ``(X, Y)`` input slice.
        recon: ``(X, Y)`` reconstruction.
        residual: ``(X, Y)`` ``|image - recon|``.
        anomaly_map: ``(X, Y)`` post-processed residual.
        prediction: ``(X, Y)`` bool, ``anomaly_map > threshold``.
        lesion_mask: ``(X, Y)`` bool ground truth.
    """

    subject_id: str
    label: str
    dice: float
    slice_index: int
    image: np.ndarray
    recon: np.ndarray
    residual: np.ndarray
    anomaly_map: np.ndarray
    prediction: np.ndarray
    lesion_mask: np.ndarray


def example_cases(maps: Mapping[str, SubjectMaps] | Sequence[SubjectMaps], threshold: float,
                  n: int = 3) -> list[ExampleCase]:
    """Representative subjects for Fig. 7, from best to worst DICE_S.

    Subjects with a lesion are ranked by DICE at ``threshold`` (ties by id, so the choice is
    deterministic); ``n`` picks are spread evenly over the ranking: with ``n=3`` the best, the
    median and the worst subject. Each is shown on its axial slice with the most lesion voxels.

    Args:
        maps: labelled :class:`~uadlab.evaluation.inference.SubjectMaps` (test split).
        threshold: the validation threshold used to binarise the anomaly maps.
        n: number of cases, ``1 <= n <=`` number of subjects with a lesion.

    Returns:
        ``n`` :class:`ExampleCase` objects, best first.

    Raises:
        TypeError: ``n`` is not an int.
        ValueError: ``n`` out of range, a bad threshold, or no subject with a lesion.
    """
    items = [m for m in as_maps_list(maps, labelled=True) if m.lesion_voxels > 0]
    if not items:
        raise ValueError("`maps` must hold at least one subject with lesion voxels, got none")
    check_int("n", n, f"an int in [1, {len(items)}]", lambda v: 1 <= v <= len(items))
    preds = [metrics.binarize(m.anomaly_map, threshold) for m in items]
    dices = metrics.dice_subjects(preds, [m.lesion_mask for m in items])
    order = sorted(range(len(items)), key=lambda i: (-dices[i], items[i].subject_id))
    positions = [0] if n == 1 else [round(j * (len(items) - 1) / (n - 1)) for j in range(n)]
    cases = []
    for j, pos in enumerate(positions):
        m, pred = items[order[pos]], preds[order[pos]]
        k = lesion_slice(m.lesion_mask)
        cases.append(ExampleCase(
            subject_id=m.subject_id, label=_pick_label(j, n), dice=float(dices[order[pos]]), slice_index=k,
            image=m.image[:, :, k], recon=m.recon[:, :, k], residual=m.residual[:, :, k],
            anomaly_map=m.anomaly_map[:, :, k], prediction=pred[:, :, k], lesion_mask=m.lesion_mask[:, :, k]))
    return cases


def _pick_label(j: int, n: int) -> str:
    """Label of pick ``j`` of ``n`` (best first): best, median, worst, else ``q<percent>``."""
    if j == 0:
        return "best"
    if j == n - 1:
        return "worst"
    if 2 * j == n - 1:
        return "median"
    return f"q{round(100 * j / (n - 1))}"


# ---------------------------------------------------------------------------------------------------
# Table 1


def table1(rows: pd.DataFrame) -> pd.DataFrame:
    """Table 1 in numbers: experiments × (test set, metric), in percent (Bengs et al. 2021).

    Args:
        rows: one row per experiment and test set, columns ``experiment, dataset, dice_d,
            dice_s_mean, dice_s_std, auprc`` (fractions in ``[0, 1]``), e.g. ``table1.csv`` of
            :func:`uadlab.studies.run_study`.

    Returns:
        Index ``experiment`` in Table 1 order (unknown names after, in order of appearance);
        columns a MultiIndex ``(dataset, metric)`` with metrics ``DICE_D, DICE_S, DICE_S_sd, AUPRC``
        in percent; datasets in order of appearance. Rows of :func:`seed_summary` add
        ``DICE_D_seed_sd, DICE_S_seed_sd, AUPRC_seed_sd`` (sd over training seeds) and
        ``table.attrs["n_seeds"]``.

    Raises:
        TypeError: ``rows`` is not a DataFrame.
        ValueError: a required column is missing or an (experiment, dataset) pair repeats.
    """
    _check_frame(rows, "rows", ("experiment", "dataset", "dice_d", "dice_s_mean", "dice_s_std", "auprc"))
    duplicated = rows.duplicated(["experiment", "dataset"])
    if duplicated.any():
        pair = tuple(rows.loc[duplicated, ["experiment", "dataset"]].iloc[0])
        raise ValueError(f"`rows` must hold one row per (experiment, dataset), got {pair!r} twice")
    datasets = list(dict.fromkeys(rows["dataset"]))
    experiments = sorted(dict.fromkeys(rows["experiment"]), key=_experiment_rank)
    keys = {"DICE_D": "dice_d", "DICE_S": "dice_s_mean", "DICE_S_sd": "dice_s_std", "AUPRC": "auprc"}
    if all(f"{k}_seed_sd" in rows.columns for k in ("dice_d", "dice_s_mean", "auprc")):  # seed_summary rows
        keys.update({"DICE_D_seed_sd": "dice_d_seed_sd", "DICE_S_seed_sd": "dice_s_mean_seed_sd",
                     "AUPRC_seed_sd": "auprc_seed_sd"})
    columns = pd.MultiIndex.from_tuples([(d, m) for d in datasets for m in keys], names=["dataset", "metric"])
    table = pd.DataFrame(np.nan, index=pd.Index(experiments, name="experiment"), columns=columns)
    for row in rows.itertuples(index=False):
        for metric, key in keys.items():
            table.loc[row.experiment, (row.dataset, metric)] = 100.0 * _num(getattr(row, key))
    if "n_seeds" in rows.columns:
        table.attrs["n_seeds"] = int(rows["n_seeds"].max())
    return table


def best_experiment(rows: pd.DataFrame, metric: str = "dice_d") -> str:
    """The experiment with the highest ``metric`` averaged over its test sets (first one on a tie).

    Bengs et al. 2021 show their best model's cases (Fig. 7); this is how the main job and the labs
    pick it from the rows of ``table1.csv``.

    Args:
        rows: columns ``experiment``, ``dataset`` and ``metric`` (``table1.csv``).
        metric: the column to rank by.

    Raises:
        TypeError: ``rows`` is not a DataFrame.
        ValueError: a missing column, or no rows.

    >>> best_experiment(pd.DataFrame({"experiment": ["2D-None", "2D-None", "3D-None", "3D-None"],
    ...                               "dataset": ["a", "b", "a", "b"], "dice_d": [0.5, 0.1, 0.2, 0.3]}))
    '2D-None'
    """
    _check_frame(rows, "rows", ("experiment", "dataset", metric))
    if rows.empty:
        raise ValueError("`rows` must hold at least one row, got none")
    ranking = rows.groupby("experiment", sort=False)[metric].mean().sort_values(ascending=False, kind="stable")
    return str(ranking.index[0])


def table1_markdown(table: pd.DataFrame) -> str:
    """Table 1 as a Markdown table laid out like the paper's (percent, 2 decimals).

    One row per experiment (Table 1 order); per test set the columns ``DICE_D``, ``DICE_S``
    (``mean ± sd``) and ``AUPRC``. Missing values print as ``–``. Rows of :func:`seed_summary`
    (several training seeds) print the sd over seeds beside each mean in brackets, ``28.14 (±1.20)``,
    and a note under the table says so; the ``±`` of DICE_S stays the sd over subjects.

    Args:
        table: the long rows accepted by :func:`table1` (with an ``experiment`` column) or its output.

    Returns:
        The Markdown text, ending with a newline.

    Raises:
        TypeError, ValueError: as :func:`table1`.

    >>> rows = pd.DataFrame({"experiment": ["3D-None"], "dataset": ["tumour"], "dice_d": [0.2814],
    ...                      "dice_s_mean": [0.2693], "dice_s_std": [0.124], "auprc": [0.2469]})
    >>> print(table1_markdown(rows), end="")
    | Method | tumour DICE_D | tumour DICE_S | tumour AUPRC |
    |---|---|---|---|
    | 3D-None | 28.14 | 26.93 ± 12.40 | 24.69 |
    """
    if isinstance(table, pd.DataFrame) and "experiment" in table.columns:
        table = table1(table)
    if not isinstance(table, pd.DataFrame) or not isinstance(table.columns, pd.MultiIndex):
        raise TypeError(f"`table` must be the rows of table1() or its output, got {type(table).__name__}")
    datasets = list(dict.fromkeys(table.columns.get_level_values(0)))
    header = ["Method"] + [f"{d} {m}" for d in datasets for m in TABLE1_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    seeds = "DICE_D_seed_sd" in table.columns.get_level_values(1)

    def with_seed_sd(cell: str, d: str, metric: str) -> str:
        sd = row[(d, f"{metric}_seed_sd")] if seeds else float("nan")
        return cell if cell == "–" or _isnan(sd) else f"{cell} (±{_pct(sd)})"

    for experiment, row in table.iterrows():
        cells = [str(experiment)]
        for d in datasets:
            sd = row[(d, "DICE_S_sd")]
            dice_s = _pct(row[(d, "DICE_S")])
            cells += [with_seed_sd(_pct(row[(d, "DICE_D")]), d, "DICE_D"),
                      with_seed_sd(dice_s if dice_s == "–" or _isnan(sd) else f"{dice_s} ± {_pct(sd)}", d, "DICE_S"),
                      with_seed_sd(_pct(row[(d, "AUPRC")]), d, "AUPRC")]
        lines.append("| " + " | ".join(cells) + " |")
    if seeds:
        n = table.attrs.get("n_seeds")
        lines += ["", f"Mean over {n if n else 'several'} training seeds; (±x): sd over seeds; "
                      "DICE_S ± y: sd over subjects."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# Paired comparison of two methods


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, *, metric: Literal["dice", "auprc"] = "dice",
                      n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Mean per-subject difference ``a − b`` of two methods on the same test subjects, per cohort.

    Both methods were scored on the same subjects, so their per-subject values are paired: the
    bootstrap resamples subjects and recomputes the mean of the differences
    (:func:`uadlab.evaluation.metrics.bootstrap_ci` on ``a − b``). This interval is much narrower than the
    overlap of the two methods' own intervals, which carry the spread between subjects that both
    methods share; an interval excluding 0 says the two *trained models* differ on these subjects.
    It does not cover training randomness: to say the *methods* differ, compare runs of several
    seeds (on the lab profile one 3D experiment moved by 5 DICE_S points between two seeds). With
    ``metric="dice"`` the mean is DICE_S; subjects where either DICE is undefined (NaN) are skipped.

    Args:
        a, b: per-subject tables (``subjects.csv`` of :func:`uadlab.evaluation.protocol.evaluate_run`),
            columns ``subject_id, cohort`` and ``metric``, with the same subjects in each cohort.
        metric: per-subject column compared: ``"dice"`` or ``"auprc"`` (fractions in ``[0, 1]``).
        n_resamples, confidence, seed: as :func:`uadlab.evaluation.metrics.bootstrap_ci`.

    Returns:
        One row per cohort (order of appearance in ``a``): ``cohort, n_subjects, mean_a, mean_b,
        difference, ci_low, ci_high`` (fractions; ``difference`` = ``mean_a − mean_b`` over the
        subjects defined in both).

    Raises:
        TypeError: ``a`` or ``b`` is not a DataFrame.
        ValueError: a missing column, an unknown ``metric``, a subject listed twice, a cohort whose
            subjects differ between ``a`` and ``b`` (named), or no subject defined in both.

    >>> a = pd.DataFrame({"subject_id": ["s0", "s1", "s2"], "cohort": "tumour", "dice": [0.5, 0.6, 0.7]})
    >>> b = a.assign(dice=a["dice"] - 0.1)
    >>> print(paired_difference(a, b, n_resamples=200).round(3).to_string(index=False))
    cohort  n_subjects  mean_a  mean_b  difference  ci_low  ci_high
    tumour           3     0.6     0.5         0.1     0.1      0.1
    """
    if metric not in ("dice", "auprc"):
        raise ValueError(f"`metric` must be 'dice' or 'auprc', got {metric!r}")
    for name, frame in (("a", a), ("b", b)):
        _check_frame(frame, name, ("subject_id", "cohort", metric))
        repeated = frame["subject_id"][frame["subject_id"].duplicated()]
        if not repeated.empty:
            raise ValueError(f"`{name}` must list each subject once, got {repeated.iloc[0]!r} twice")
    rows = []
    for cohort in dict.fromkeys(a["cohort"]):
        left = a[a["cohort"] == cohort].set_index("subject_id")[metric]
        right = b[b["cohort"] == cohort].set_index("subject_id")[metric]
        only = sorted(set(left.index) ^ set(right.index))
        if only:
            raise ValueError(f"`a` and `b` must score the same {cohort!r} subjects; only in one of them: {only}")
        right = right.loc[left.index]
        both = left.notna().to_numpy() & right.notna().to_numpy()
        if not both.any():
            raise ValueError(f"`a` and `b` have no {cohort!r} subject where {metric!r} is defined in both")
        x, y = left.to_numpy(float)[both], right.to_numpy(float)[both]
        low, high = metrics.bootstrap_ci(x - y, n_resamples=n_resamples, confidence=confidence, seed=seed)
        rows.append({"cohort": cohort, "n_subjects": int(both.sum()), "mean_a": float(x.mean()),
                     "mean_b": float(y.mean()), "difference": float((x - y).mean()),
                     "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows, columns=["cohort", "n_subjects", "mean_a", "mean_b", "difference", "ci_low", "ci_high"])


def ablation_differences(subject_tables: Mapping[str, pd.DataFrame], *, metric: Literal["dice", "auprc"] = "dice",
                         n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Each erasing experiment against the ``None`` baseline of its dimension (Table 1's ablation).

    ``2D-Patch-n`` is compared with ``2D-None``, ``3D-Cube-0`` with ``3D-None`` and so on, each with
    :func:`paired_difference`; experiments whose baseline is absent are skipped.

    Args:
        subject_tables: experiment name -> per-subject table (``subjects.csv``) of that experiment; an
            experiment of another model (``spatial-vae:2D-Patch-n``) is compared with that model's
            baseline (``spatial-vae:2D-None``).
        metric, n_resamples, confidence, seed: as :func:`paired_difference`.

    Returns:
        Columns ``experiment, baseline`` and those of :func:`paired_difference` (``difference`` =
        experiment − baseline), rows in Table 1 order; empty when nothing can be compared.

    Raises:
        TypeError, ValueError: as :func:`paired_difference`; ValueError for a name that is not a
            Table 1 experiment.
    """
    frames = [paired_difference(subject_tables[name], subject_tables[baseline], metric=metric,
                                n_resamples=n_resamples, confidence=confidence, seed=seed)
              .assign(experiment=name, baseline=baseline)
              for name, baseline in baseline_pairs(subject_tables)]
    columns = ["experiment", "baseline", "cohort", "n_subjects", "mean_a", "mean_b", "difference", "ci_low", "ci_high"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


# ---------------------------------------------------------------------------------------------------
# Several training seeds


_SEED_METRICS = ("dice_d", "dice_s_mean", "dice_s_std", "auprc", "threshold")


def seed_summary(rows: pd.DataFrame, *, keys: Sequence[str] = ("experiment", "dataset"),
                 means: Sequence[str] = _SEED_METRICS,
                 spread: Sequence[str] = ("dice_d", "dice_s_mean", "auprc")) -> pd.DataFrame:
    """Rows of several training seeds, summarised: mean and sd over seeds (Table 1 by default).

    Retraining with another seed moves a model's scores by as much as an erasing method does (on
    the lab phantom, 5 DICE_S points for one 3D experiment), so each number is the mean over
    seeds, with the sample sd over seeds (``ddof=1``; NaN with one seed) beside it. ``dice_s_std``
    (the sd over subjects) is averaged over seeds. Any study's table is summarised the same way by
    naming its key columns and metrics.

    Args:
        rows: one row per key and seed: the ``keys`` columns, ``seed`` and the ``spread`` metrics
            (Table 1: ``experiment, dataset, seed, dice_d, dice_s_mean, dice_s_std, auprc``,
            ``threshold`` optional), fractions.
        keys: the columns that name one result (a model on a test set).
        means: the columns averaged over seeds (those present).
        spread: the metrics that also get their sd over seeds, as ``<metric>_seed_sd``.

    Returns:
        One row per key in order of appearance: the keys, ``n_seeds``, the mean of each of ``means`` under
        its own name, and ``<metric>_seed_sd`` for each of ``spread``; with the default arguments,
        accepted by :func:`table1` and :func:`table1_markdown`.

    Raises:
        TypeError: ``rows`` is not a DataFrame.
        ValueError: a required column is missing, or a key and seed repeat.

    >>> rows = pd.DataFrame({"experiment": "3D-None", "dataset": "tumour", "seed": [0, 1],
    ...                      "dice_d": [0.2, 0.3], "dice_s_mean": [0.2, 0.2], "dice_s_std": [0.1, 0.1],
    ...                      "auprc": [0.1, 0.1]})
    >>> row = seed_summary(rows).iloc[0]
    >>> int(row.n_seeds), round(float(row.dice_d), 3), round(float(row.dice_d_seed_sd), 4)
    (2, 0.25, 0.0707)
    """
    keys, spread = list(keys), list(spread)
    _check_frame(rows, "rows", (*keys, "seed", *spread))
    duplicated = rows.duplicated([*keys, "seed"])
    if duplicated.any():
        repeated = tuple(v.item() if isinstance(v, np.generic) else v
                         for v in rows.loc[duplicated, [*keys, "seed"]].iloc[0])
        raise ValueError(f"`rows` must hold one row per ({', '.join(keys)}, seed), got {repeated!r} twice")
    present = [m for m in means if m in rows.columns]
    values = rows[[*keys, *present]].copy()
    values[present] = values[present].apply(lambda c: pd.to_numeric(c, errors="coerce"))
    grouped = values.groupby(keys, sort=False, dropna=False)
    out = grouped[present].mean().reset_index()
    out.insert(len(keys), "n_seeds", grouped.size().to_numpy())
    deviation = grouped[spread].std(ddof=1).reset_index(drop=True)
    for metric in spread:
        out[f"{metric}_seed_sd"] = deviation[metric].to_numpy()
    return out


def paired_difference_seeds(a: Mapping[int, pd.DataFrame], b: Mapping[int, pd.DataFrame], *,
                            metric: Literal["dice", "auprc", "dice_d"] = "dice", n_resamples: int = 1000,
                            confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Method ``a`` − method ``b`` on the same test subjects, beyond the noise of training seeds.

    Each method was trained with several seeds and every run scored on the same subjects. The
    estimate is the mean over subjects of (``a``'s mean over its seeds − ``b``'s mean over its
    seeds); for ``"dice_d"``, the mean over seeds of each run's DICE_D (voxels pooled over the
    subjects: ``2 Σ overlap / Σ (predicted + lesion)``, Bengs et al. 2021, Sec. 2.3) of ``a`` minus that
    of ``b``. The bootstrap resamples, in each draw, the subjects (paired: the same draw for both
    methods) and, independently for each method, its seeds (seed ``k`` of ``a`` and of ``b`` are
    unrelated models). An interval that excludes 0 says the *methods* differ on subjects like
    these, not only two trained models; with one seed per method it is :func:`paired_difference`'s
    subject bootstrap (same estimate). Subjects with an undefined value (NaN) in any run are skipped.

    Args:
        a, b: seed -> per-subject table (``subjects.csv``), columns ``subject_id, cohort`` and
            ``metric`` (for ``"dice_d"``: ``overlap_voxels, predicted_voxels, lesion_voxels``); every
            table of both methods must list the same subjects per cohort.
        metric: ``"dice"`` (DICE_S), ``"auprc"`` (per-subject AUPRC) or ``"dice_d"``.
        n_resamples, confidence, seed: bootstrap resamples, coverage, seed of the generator.

    Returns:
        One row per cohort: ``cohort, n_subjects, n_seeds_a, n_seeds_b, mean_a, mean_b,
        difference, ci_low, ci_high`` (fractions).

    Raises:
        TypeError: a table is not a DataFrame, or ``a``/``b`` is not a mapping.
        ValueError: no seeds, a missing column, an unknown ``metric``, tables with different
            subjects, no subject defined in every run, or bad bootstrap options.

    >>> t = lambda overlap: pd.DataFrame({"subject_id": ["s0", "s1"], "cohort": "tumour", "lesion_voxels": [10, 30],
    ...                                   "predicted_voxels": [10, 30], "overlap_voxels": overlap})
    >>> row = paired_difference_seeds({0: t([10, 30])}, {0: t([5, 15])}, metric="dice_d").iloc[0]
    >>> round(float(row["difference"]), 3), round(float(row["mean_b"]), 3)
    (0.5, 0.5)
    """
    if metric not in ("dice", "auprc", "dice_d"):
        raise ValueError(f"`metric` must be 'dice', 'auprc' or 'dice_d', got {metric!r}")
    check_int("n_resamples", n_resamples, "a positive int", lambda v: v >= 1)
    check_real("confidence", confidence, "a float in (0, 1)", lambda v: 0 < v < 1)
    columns = ("overlap_voxels", "predicted_voxels", "lesion_voxels") if metric == "dice_d" else (metric,)
    for name, tables in (("a", a), ("b", b)):
        if not isinstance(tables, Mapping):
            raise TypeError(f"`{name}` must be a mapping seed -> DataFrame, got {type(tables).__name__}")
        if not tables:
            raise ValueError(f"`{name}` must hold at least one seed, got none")
        for frame in tables.values():
            _check_frame(frame, name, ("subject_id", "cohort", *columns))
    first = next(iter(a.values()))
    rng = np.random.default_rng(seed)
    alpha = (1.0 - confidence) / 2.0
    rows = []
    for cohort in dict.fromkeys(first["cohort"]):
        ids = first.loc[first["cohort"] == cohort, "subject_id"].tolist()
        stacks = []
        for name, tables in (("a", a), ("b", b)):
            runs = []
            for frame in tables.values():
                part = frame[frame["cohort"] == cohort].set_index("subject_id")
                if sorted(part.index) != sorted(ids) or part.index.duplicated().any():
                    raise ValueError(f"`{name}` must score the same {cohort!r} subjects in every table "
                                     f"(each once), got {sorted(part.index)} vs {sorted(ids)}")
                runs.append(part.loc[ids, list(columns)].to_numpy(float))
            stacks.append(np.stack(runs))  # (seeds, subjects, columns)
        values_a, values_b = stacks
        both = ~np.isnan(values_a).any(axis=(0, 2)) & ~np.isnan(values_b).any(axis=(0, 2))
        if not both.any():
            raise ValueError(f"`a` and `b` have no {cohort!r} subject where {metric!r} is defined in every run")
        values_a, values_b = values_a[:, both], values_b[:, both]
        n, sa, sb = values_a.shape[1], values_a.shape[0], values_b.shape[0]
        mean_a, mean_b = _seed_mean(values_a, metric), _seed_mean(values_b, metric)
        draws = np.empty(n_resamples)
        for r in range(n_resamples):
            subjects = rng.integers(0, n, n)
            draws[r] = (_seed_mean(values_a[rng.integers(0, sa, sa)][:, subjects], metric)
                        - _seed_mean(values_b[rng.integers(0, sb, sb)][:, subjects], metric))
        low, high = np.quantile(draws, [alpha, 1.0 - alpha])
        rows.append({"cohort": cohort, "n_subjects": n, "n_seeds_a": sa, "n_seeds_b": sb,
                     "mean_a": mean_a, "mean_b": mean_b, "difference": mean_a - mean_b,
                     "ci_low": float(low), "ci_high": float(high)})
    return pd.DataFrame(rows, columns=["cohort", "n_subjects", "n_seeds_a", "n_seeds_b", "mean_a", "mean_b",
                                       "difference", "ci_low", "ci_high"])


def _seed_mean(values: np.ndarray, metric: str) -> float:
    """Mean over runs of a ``(runs, subjects, columns)`` stack: per-subject values, or each run's pooled DICE_D."""
    if metric != "dice_d":
        return float(values[..., 0].mean())
    overlap, predicted, lesion = values[..., 0].sum(1), values[..., 1].sum(1), values[..., 2].sum(1)
    size = predicted + lesion
    return float(np.mean(np.divide(2 * overlap, size, out=np.full_like(size, np.nan), where=size > 0)))


def ablation_differences_seeds(subject_tables: Mapping[str, Mapping[int, pd.DataFrame]], *,
                               metric: Literal["dice", "auprc"] = "dice", n_resamples: int = 1000,
                               confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Each erasing experiment against its ``None`` baseline, resampling seeds and subjects.

    :func:`ablation_differences` with :func:`paired_difference_seeds` in place of
    :func:`paired_difference`.

    Args:
        subject_tables: experiment name -> (seed -> per-subject table) of that experiment (another
            model's experiment is compared with that model's baseline, as :func:`ablation_differences`).
        metric, n_resamples, confidence, seed: as :func:`paired_difference_seeds`.

    Returns:
        Columns ``experiment, baseline`` and those of :func:`paired_difference_seeds`, rows in
        Table 1 order; empty when nothing can be compared.

    Raises:
        TypeError, ValueError: as :func:`paired_difference_seeds`; ValueError for a name that is
            not an experiment.
    """
    frames = [paired_difference_seeds(subject_tables[name], subject_tables[baseline], metric=metric,
                                      n_resamples=n_resamples, confidence=confidence, seed=seed)
              .assign(experiment=name, baseline=baseline)
              for name, baseline in baseline_pairs(subject_tables)]
    columns = ["experiment", "baseline", "cohort", "n_subjects", "n_seeds_a", "n_seeds_b", "mean_a", "mean_b",
               "difference", "ci_low", "ci_high"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


# ---------------------------------------------------------------------------------------------------
# Helpers


def _check_frame(frame: Any, name: str, required: Iterable[str]) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"`{name}` must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"`{name}` must have columns {list(required)!r}, missing {missing!r}")


def baseline_pairs(subject_tables: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The erasing comparisons of Table 1: each experiment against its ``None`` baseline (Bengs et al. 2021, Sec. 3).

    Args:
        subject_tables: keyed by experiment names (the values are not read).

    Returns:
        ``(experiment, its None baseline)`` for every key whose baseline is a key too, in Table 1 order.

    Raises:
        ValueError: a key is not an experiment name.

    >>> baseline_pairs({"3D-None": 0, "3D-Cube-n": 0, "2D-Patch-n": 0})
    [('3D-Cube-n', '3D-None')]
    """
    pairs = []
    for name in sorted(subject_tables, key=_experiment_rank):
        try:
            baseline = parse_experiment(name).baseline.name
        except ValueError:
            raise ValueError(f"`subject_tables` must be keyed by experiment names, got {name!r}") from None
        if name != baseline and baseline in subject_tables:
            pairs.append((name, baseline))
    return pairs


def _experiment_rank(name: str) -> int:
    """Sort key: by model (the dense VAE first, then registry order), then Table 1 position; names that
    are no experiment after (in input order, as the sorts are stable).
    """
    try:
        experiment = parse_experiment(name)
    except (TypeError, ValueError):
        return len(MODELS) * len(EXPERIMENTS)
    return list(MODELS).index(experiment.model) * len(EXPERIMENTS) + EXPERIMENTS.index(experiment.table1_name)


def _spatial_dims(experiment: str) -> int | None:
    """2 or 3 from an experiment name (``"3D-Cube-n"``, ``"spatial-vae:3D-None"`` -> 3); ``None`` for other names."""
    try:
        return parse_experiment(experiment).spatial_dims
    except (TypeError, ValueError):
        return None


def _num(value: Any) -> float:
    """A metric as float; ``None`` (JSON null) becomes NaN."""
    return float("nan") if value is None else float(value)


def _isnan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or bool(pd.isna(value))


def _pct(value: Any) -> str:
    """A percentage with 2 decimals, ``–`` when missing."""
    return "–" if _isnan(value) else f"{float(value):.2f}"
