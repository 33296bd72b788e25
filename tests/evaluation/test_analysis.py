"""Tests of uadlab.evaluation.analysis: Figs. 4–7 tables and Table 1 layout, with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, precision_recall_curve

from uadlab.evaluation import metrics
from uadlab.evaluation.analysis import (
    ablation_differences,
    ablation_differences_seeds,
    cubic_fit,
    data_size_table,
    example_cases,
    lesion_size_fit,
    lesion_size_table,
    paired_difference,
    paired_difference_seeds,
    seed_summary,
    slice_detection_curve,
    table1,
    table1_markdown,
)
from uadlab.evaluation.inference import make_maps

SIZE = 12
RAW = {"erosion_iterations": 0, "median_size": 1}


def _maps(subject_id, lesion_residual, *, partial=None, rng=None):
    """A box brain, a lesion of 16 voxels in slice 5 and 4 in slice 6, missed by ``lesion_residual``.

    ``partial``: residual of the lesion's first half in slice 5 (the rest keeps ``lesion_residual``).
    """
    brain = np.zeros((SIZE,) * 3, bool)
    brain[1:-1, 1:-1, 1:-1] = True
    lesion = np.zeros_like(brain)
    lesion[3:7, 3:7, 5] = True
    lesion[3:5, 3:5, 6] = True
    image = np.where(brain, 0.5, 0.0).astype(np.float32)
    res = np.where(lesion, lesion_residual, 0.0)
    if partial is not None:
        res[3:5, 3:7, 5] = partial
    if rng is not None:
        res = res + rng.uniform(0, 0.01, res.shape) * brain
    return make_maps(subject_id, image, (image - res).astype(np.float32), brain, lesion, postprocess_kwargs=RAW)


# --- Fig. 4 ---------------------------------------------------------------------------------------------

def test_lesion_size_table_drops_undefined_and_sorts():
    per_subject = pd.DataFrame({"subject_id": ["a", "b", "c", "d"], "cohort": ["t"] * 4,
                                "lesion_voxels": [1000, 0, 10, 100], "dice": [0.5, np.nan, 0.1, np.nan],
                                "auprc": [0.4, np.nan, 0.1, 0.2]})
    table = lesion_size_table(per_subject)
    assert table["subject_id"].tolist() == ["c", "a"]
    assert list(table.columns) == ["subject_id", "cohort", "lesion_voxels", "log10_lesion_voxels", "dice"]
    np.testing.assert_allclose(table["log10_lesion_voxels"], [1.0, 3.0])


def test_lesion_size_table_validates():
    with pytest.raises(TypeError, match="`per_subject` must be a pandas DataFrame, got dict"):
        lesion_size_table({"dice": [1]})
    with pytest.raises(ValueError, match="missing \\['lesion_voxels'\\]"):
        lesion_size_table(pd.DataFrame({"subject_id": ["a"], "dice": [0.5]}))


def test_cubic_fit_recovers_an_exact_cubic():
    x = np.linspace(-2, 3, 9)
    p = cubic_fit(x, 0.5 * x ** 3 - x ** 2 + 2 * x - 3)
    np.testing.assert_allclose(p.coeffs, [0.5, -1, 2, -3], atol=1e-9)
    assert isinstance(p, np.poly1d)


def test_lesion_size_fit_is_cubic_in_log10_voxels():
    voxels = np.array([10, 30, 100, 300, 1000, 3000])
    log_v = np.log10(voxels)
    dice = 0.1 * log_v ** 3 - 0.2 * log_v + 0.05
    table = lesion_size_table(pd.DataFrame({"subject_id": list("abcdef"), "lesion_voxels": voxels, "dice": dice}))
    p = lesion_size_fit(table)
    np.testing.assert_allclose(p.coeffs, [0.1, 0.0, -0.2, 0.05], atol=1e-9)
    assert p(np.log10(500)) == pytest.approx(0.1 * np.log10(500) ** 3 - 0.2 * np.log10(500) + 0.05)


def test_cubic_fit_validates():
    with pytest.raises(ValueError, match="at least 4 distinct values for a cubic fit, got 3"):
        cubic_fit([1, 2, 3, 3], [0, 1, 2, 3])
    with pytest.raises(ValueError, match="1D arrays of one length"):
        cubic_fit([1, 2, 3, 4], [1, 2, 3])
    with pytest.raises(ValueError, match="must be finite"):
        cubic_fit([1, 2, 3, 4, 5], [1, 2, np.nan, 4, 5])


# --- Fig. 5 ---------------------------------------------------------------------------------------------

def test_data_size_table_one_row_per_run_and_cohort():
    def run(auprc):
        return {"auprc": auprc[0], "cohorts": {"tumour": {"auprc": auprc[0], "dice_d": 0.3, "dice_s_mean": None},
                                               "stroke": {"auprc": auprc[1], "dice_d": 0.2, "dice_s_mean": 0.1}}}

    results = [("3D-None", 1.0, run((0.4, 0.3))), ("3D-None", 0.2, run((0.3, 0.2))),
               ("2D-None", 0.1, run((0.1, 0.05))), ("2D-None", 1.0, {"auprc": 0.2, "dice_d": 0.1})]
    table = data_size_table(results)
    assert table[["experiment", "percent", "dataset"]].values.tolist() == [
        ["2D-None", 100, ""], ["2D-None", 10, "stroke"], ["2D-None", 10, "tumour"],
        ["3D-None", 20, "stroke"], ["3D-None", 100, "stroke"], ["3D-None", 20, "tumour"], ["3D-None", 100, "tumour"]]
    assert table["spatial_dims"].tolist() == [2, 2, 2, 3, 3, 3, 3]
    assert table.loc[6, "auprc"] == 0.4 and np.isnan(table.loc[6, "dice_s_mean"])


def test_data_size_table_validates():
    with pytest.raises(ValueError, match="`fraction` must be in \\(0, 1\\], got 0"):
        data_size_table([("3D-None", 0, {"auprc": 0.1})])
    with pytest.raises(ValueError, match="must hold 'auprc'"):
        data_size_table([("3D-None", 0.5, {"dice_d": 0.1})])


# --- Fig. 6 ---------------------------------------------------------------------------------------------

def test_slice_detection_curve_matches_sklearn(rng):
    maps = [_maps("a", 0.6, rng=rng), _maps("b", 0.0, rng=rng)]  # b: lesion invisible
    precision, recall, ap = slice_detection_curve(maps)
    # slices 1..10 hold brain; 5 and 6 are abnormal in each subject
    scores = np.concatenate([m.residual[:, :, 1:-1].sum((0, 1)) / 100 for m in maps])
    labels = np.tile(np.isin(np.arange(1, SIZE - 1), [5, 6]), 2)
    expected_p, expected_r, _ = precision_recall_curve(labels, scores)
    np.testing.assert_allclose(precision, expected_p)
    np.testing.assert_allclose(recall, expected_r)
    assert ap == pytest.approx(average_precision_score(labels, scores))
    assert 0.5 < ap < 1.0


def test_slice_detection_curve_perfect_and_validation():
    _, _, ap = slice_detection_curve({"a": _maps("a", 0.6)})
    assert ap == pytest.approx(1.0)
    with pytest.raises(ValueError, match="`maps` must hold at least one subject"):
        slice_detection_curve([])
    unlabelled = _maps("u", 0.6)
    unlabelled = make_maps("u", unlabelled.image, unlabelled.recon, unlabelled.brain_mask)
    with pytest.raises(ValueError, match="`maps` must be labelled, got subject 'u'"):
        slice_detection_curve([unlabelled])


# --- Fig. 7 ---------------------------------------------------------------------------------------------

def test_example_cases_best_median_worst_on_the_slice_with_most_lesion():
    maps = {"worst": _maps("worst", 0.1), "best": _maps("best", 0.6), "mid": _maps("mid", 0.6, partial=0.1)}
    cases = example_cases(maps, threshold=0.25)
    assert [(c.label, c.subject_id) for c in cases] == [("best", "best"), ("median", "mid"), ("worst", "worst")]
    assert [c.dice for c in cases] == pytest.approx([1.0, 2 * 12 / (12 + 20), 0.0])
    best = cases[0]
    assert best.slice_index == 5
    assert best.image.shape == best.prediction.shape == best.lesion_mask.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(best.prediction, best.lesion_mask)
    np.testing.assert_allclose(best.residual, 0.6 * best.lesion_mask, atol=1e-6)
    assert [c.subject_id for c in example_cases(maps, 0.25, n=1)] == ["best"]


def test_example_cases_validates():
    maps = [_maps("a", 0.6)]
    with pytest.raises(ValueError, match="`n` must be an int in \\[1, 1\\], got 2"):
        example_cases(maps, 0.25, n=2)
    with pytest.raises(ValueError, match="`threshold` must be a finite number"):
        example_cases(maps, float("inf"), n=1)


# --- Table 1 --------------------------------------------------------------------------------------------

ROWS = pd.DataFrame({
    "experiment": ["my-model", "3D-None", "3D-None", "2D-None", "2D-None"],
    "dataset": ["tumour", "tumour", "stroke", "tumour", "stroke"],
    "dice_d": [0.5, 0.2814, 0.3068, 0.268, 0.2472],
    "dice_s_mean": [0.4, 0.2693, 0.1442, 0.253, 0.1123],
    "dice_s_std": [0.1, 0.124, 0.1606, 0.1237, 0.1366],
    "auprc": [0.45, 0.2469, 0.2374, 0.2119, float("nan")],
    "threshold": [0.1] * 5,
})


def test_table1_orders_rows_and_converts_to_percent():
    table = table1(ROWS)
    assert table.index.tolist() == ["2D-None", "3D-None", "my-model"]
    assert table.columns.get_level_values(0).unique().tolist() == ["tumour", "stroke"]
    assert table.loc["3D-None", ("stroke", "DICE_D")] == pytest.approx(30.68)
    assert table.loc["2D-None", ("tumour", "DICE_S_sd")] == pytest.approx(12.37)
    assert np.isnan(table.loc["my-model", ("stroke", "AUPRC")])


def test_table1_markdown_known_layout():
    assert table1_markdown(ROWS) == (
        "| Method | tumour DICE_D | tumour DICE_S | tumour AUPRC | stroke DICE_D | stroke DICE_S | stroke AUPRC |\n"
        "|---|---|---|---|---|---|---|\n"
        "| 2D-None | 26.80 | 25.30 ± 12.37 | 21.19 | 24.72 | 11.23 ± 13.66 | – |\n"
        "| 3D-None | 28.14 | 26.93 ± 12.40 | 24.69 | 30.68 | 14.42 ± 16.06 | 23.74 |\n"
        "| my-model | 50.00 | 40.00 ± 10.00 | 45.00 | – | – | – |\n"
    )
    assert table1_markdown(table1(ROWS)) == table1_markdown(ROWS)


def test_table1_validates():
    with pytest.raises(ValueError, match="one row per \\(experiment, dataset\\), got \\('3D-None', 'tumour'\\)"):
        table1(pd.concat([ROWS, ROWS.iloc[[1]]]))
    with pytest.raises(ValueError, match="missing \\['auprc'\\]"):
        table1(ROWS.drop(columns="auprc"))
    with pytest.raises(TypeError, match="`table` must be the rows of table1\\(\\) or its output"):
        table1_markdown(pd.DataFrame({"a": [1]}))


def _subjects(values, cohort="tumour", metric="dice"):
    return pd.DataFrame({"subject_id": [f"{cohort}_{i:03d}" for i in range(len(values))], "cohort": cohort,
                         metric: values})


def test_paired_difference_sees_a_small_consistent_gain_that_unpaired_intervals_miss(rng):
    base = rng.uniform(0.1, 0.9, size=40)  # subjects differ a lot ...
    better = base + rng.uniform(0.01, 0.03, size=40)  # ... the method gains a little on every one
    row = paired_difference(_subjects(better), _subjects(base)).iloc[0]
    assert row["n_subjects"] == 40 and row["difference"] == pytest.approx(np.mean(better - base))
    assert 0.01 <= row["ci_low"] < row["difference"] < row["ci_high"] <= 0.03
    low_better, _ = metrics.bootstrap_ci(better)
    _, high_base = metrics.bootstrap_ci(base)
    assert low_better < high_base  # the per-method intervals overlap


def test_paired_difference_aligns_subjects_per_cohort_and_skips_undefined():
    a = pd.concat([_subjects([0.5, 0.7, np.nan]), _subjects([0.2, 0.4], cohort="stroke")], ignore_index=True)
    b = a.iloc[::-1].assign(dice=[0.3, 0.1, 0.6, 0.6, 0.2])  # other order: stroke 1, 0; tumour 2, 1, 0
    table = paired_difference(a, b, n_resamples=50)
    assert table["cohort"].tolist() == ["tumour", "stroke"]
    tumour, stroke = table.iloc[0], table.iloc[1]
    assert tumour["n_subjects"] == 2 and tumour["difference"] == pytest.approx(((0.5 - 0.2) + (0.7 - 0.6)) / 2)
    assert stroke["mean_a"] == pytest.approx(0.3) and stroke["mean_b"] == pytest.approx(0.2)
    swapped = paired_difference(b, a, n_resamples=50)  # cohorts in the order of its first table
    assert swapped["cohort"].tolist() == ["stroke", "tumour"]
    assert swapped["difference"].tolist() == pytest.approx([-0.1, -0.2])


def test_paired_difference_validates():
    a = _subjects([0.5, 0.6])
    with pytest.raises(ValueError, match="only in one of them: \\['tumour_001', 'tumour_002'\\]"):
        paired_difference(a, _subjects([0.5, 0.6, 0.7]).drop(index=1))
    with pytest.raises(ValueError, match="each subject once, got 'tumour_000' twice"):
        paired_difference(pd.concat([a, a.iloc[[0]]]), a)
    with pytest.raises(ValueError, match="no 'tumour' subject where 'dice' is defined in both"):
        paired_difference(a, a.assign(dice=np.nan))
    with pytest.raises(ValueError, match="`metric` must be 'dice' or 'auprc'"):
        paired_difference(a, a, metric="dice_d")
    with pytest.raises(ValueError, match="missing \\['auprc'\\]"):
        paired_difference(a, a, metric="auprc")
    with pytest.raises(TypeError, match="`b` must be a pandas DataFrame"):
        paired_difference(a, a["dice"])


def test_ablation_differences_compares_each_method_with_its_dimensions_baseline():
    tables = {"3D-Cube-n": _subjects([0.6, 0.7]), "2D-None": _subjects([0.4, 0.4]), "3D-None": _subjects([0.5, 0.5]),
              "2D-Patch-0": _subjects([0.5, 0.3]), "2D-Half-Slice-n": _subjects([0.4, 0.4])}
    table = ablation_differences(tables, n_resamples=50)
    assert table[["experiment", "baseline"]].values.tolist() == [
        ["2D-Patch-0", "2D-None"], ["3D-Cube-n", "3D-None"], ["2D-Half-Slice-n", "2D-None"]]  # Table 1 order
    assert table["difference"].tolist() == pytest.approx([0.0, 0.15, 0.0])
    assert ablation_differences({"3D-Cube-n": tables["3D-Cube-n"]}).empty
    with pytest.raises(ValueError, match="keyed by experiment names, got 'my-model'"):
        ablation_differences({"my-model": tables["2D-None"]})


# --- several seeds -----------------------------------------------------------------------------------

def _seed_rows():
    return pd.DataFrame({
        "experiment": ["3D-None"] * 3 + ["2D-None"] * 3,
        "dataset": "tumour", "seed": [0, 1, 2] * 2,
        "dice_d": [0.30, 0.20, 0.25, 0.10, 0.10, 0.10], "dice_s_mean": [0.3, 0.2, 0.1, 0.1, 0.1, 0.1],
        "dice_s_std": [0.1, 0.2, 0.3, 0.1, 0.1, 0.1], "auprc": [0.2, 0.2, 0.2, None, 0.1, 0.1],
        "threshold": [0.1, 0.2, 0.3, 0.1, 0.1, 0.1],
    })


def test_seed_summary_means_and_sample_sd_over_seeds():
    summary = seed_summary(_seed_rows())
    assert list(summary["experiment"]) == ["3D-None", "2D-None"] and (summary["n_seeds"] == 3).all()
    row = summary.iloc[0]
    assert row.dice_d == pytest.approx(0.25) and row.dice_d_seed_sd == pytest.approx(0.05)
    assert row.dice_s_std == pytest.approx(0.2)  # the sd over subjects, averaged over seeds
    assert row.threshold == pytest.approx(0.2) and row.auprc_seed_sd == pytest.approx(0.0)
    assert summary.iloc[1].auprc == pytest.approx(0.1)  # a null metric of one seed is skipped
    one = seed_summary(_seed_rows()[_seed_rows()["seed"] == 0])
    assert one["dice_d_seed_sd"].isna().all() and (one["n_seeds"] == 1).all()


def test_table1_markdown_prints_the_seed_sd_beside_each_mean():
    text = table1_markdown(seed_summary(_seed_rows()))
    lines = text.splitlines()
    assert lines[2] == "| 2D-None | 10.00 (±0.00) | 10.00 ± 10.00 (±0.00) | 10.00 (±0.00) |"
    assert lines[3] == "| 3D-None | 25.00 (±5.00) | 20.00 ± 20.00 (±10.00) | 20.00 (±0.00) |"
    assert lines[-1].startswith("Mean over 3 training seeds; (±x): sd over seeds")
    single = table1_markdown(seed_summary(_seed_rows()[_seed_rows()["seed"] == 0]))
    assert "(±" not in single.splitlines()[2]


def test_seed_summary_validates():
    with pytest.raises(ValueError, match="missing \\['seed'\\]"):
        seed_summary(_seed_rows().drop(columns="seed"))
    duplicate = "one row per \\(experiment, dataset, seed\\), got \\('3D-None', 'tumour', 0\\)"
    with pytest.raises(ValueError, match=duplicate):
        seed_summary(pd.concat([_seed_rows(), _seed_rows().iloc[:1]]))


def _seed_subjects(values, cohort="tumour"):
    return pd.DataFrame({"subject_id": [f"s{i}" for i in range(len(values))], "cohort": cohort, "dice": values})


def test_paired_difference_seeds_with_one_seed_is_the_subject_bootstrap(rng):
    a, b = rng.uniform(0.3, 0.6, 20), rng.uniform(0.2, 0.5, 20)
    seeds = paired_difference_seeds({0: _seed_subjects(a)}, {0: _seed_subjects(b)}, n_resamples=2000)
    plain = paired_difference(_seed_subjects(a), _seed_subjects(b), n_resamples=2000)
    assert seeds["difference"].iloc[0] == pytest.approx(plain["difference"].iloc[0])
    assert seeds["ci_low"].iloc[0] == pytest.approx(plain["ci_low"].iloc[0], abs=0.02)
    assert seeds["ci_high"].iloc[0] == pytest.approx(plain["ci_high"].iloc[0], abs=0.02)


def test_paired_difference_seeds_widens_the_interval_by_the_seed_spread(rng):
    """Method a beats b by 0.02 on every subject in seed 0 only: seed noise, not a method gain."""
    base = rng.uniform(0.2, 0.6, 30)
    a = {0: _seed_subjects(base + 0.10), 1: _seed_subjects(base - 0.06), 2: _seed_subjects(base + 0.02)}
    b = {0: _seed_subjects(base), 1: _seed_subjects(base + 0.01), 2: _seed_subjects(base - 0.01)}
    result = paired_difference_seeds(a, b, n_resamples=2000).iloc[0]
    assert result.difference == pytest.approx(0.02) and result.n_seeds_a == 3 and result.n_subjects == 30
    assert result.ci_low < 0 < result.ci_high  # the seeds disagree: no claim
    only_seed0 = paired_difference_seeds({0: a[0]}, {0: b[0]}, n_resamples=2000).iloc[0]
    assert only_seed0.ci_low > 0.09  # one seed each: a confident, misleading gain


def test_paired_difference_seeds_skips_undefined_and_validates():
    a = {0: _seed_subjects([0.5, np.nan, 0.5]), 1: _seed_subjects([0.5, 0.4, 0.5])}
    b = {0: _seed_subjects([0.4, 0.4, 0.4])}
    assert paired_difference_seeds(a, b, n_resamples=50)["n_subjects"].iloc[0] == 2
    with pytest.raises(ValueError, match="`a` must hold at least one seed"):
        paired_difference_seeds({}, b)
    with pytest.raises(TypeError, match="`b` must be a mapping seed -> DataFrame"):
        paired_difference_seeds(a, [b[0]])
    with pytest.raises(ValueError, match="`b` must score the same 'tumour' subjects"):
        paired_difference_seeds(a, {0: _seed_subjects([0.4, 0.4])})
    with pytest.raises(ValueError, match="`metric` must be 'dice', 'auprc' or 'dice_d'"):
        paired_difference_seeds(a, b, metric="dice_s")
    with pytest.raises(ValueError, match="missing.*overlap_voxels|overlap_voxels.*missing|overlap_voxels"):
        paired_difference_seeds(a, b, metric="dice_d")


def _pooled(overlap, predicted, lesion=(40, 10, 10)):
    return pd.DataFrame({"subject_id": ["big", "small1", "small2"], "cohort": "tumour", "lesion_voxels": lesion,
                         "predicted_voxels": predicted, "overlap_voxels": overlap})


def test_paired_difference_seeds_pools_dice_d_per_run_then_averages_seeds():
    # a: seed 0 finds the large lesion exactly (DICE_D 2·40/(40+60) = 0.8), seed 1 all three (1.0)
    a = {0: _pooled([40, 0, 0], [40, 0, 0]), 1: _pooled([40, 10, 10], [40, 10, 10])}
    b = {0: _pooled([0, 10, 10], [0, 10, 10])}  # the two small ones only: 2·20/(20+60) = 0.5
    row = paired_difference_seeds(a, b, metric="dice_d", n_resamples=500).iloc[0]
    assert row.mean_a == pytest.approx(0.9) and row.mean_b == pytest.approx(0.5)
    assert row.difference == pytest.approx(0.4) and row.ci_low <= 0.4 <= row.ci_high
    # DICE_S would call b better on two of three subjects; pooled voxels weigh the large lesion
    assert paired_difference_seeds({0: a[0].assign(dice=[1.0, 0, 0])}, {0: b[0].assign(dice=[0, 1.0, 1.0])},
                                   n_resamples=50).iloc[0].difference < 0


def test_ablation_differences_seeds_pairs_each_method_with_its_baseline(rng):
    tables = {name: {s: _seed_subjects(rng.uniform(0, 1, 5)) for s in (0, 1)}
              for name in ("3D-Cube-n", "2D-None", "3D-None", "2D-Patch-n")}
    result = ablation_differences_seeds(tables, n_resamples=50)
    assert list(zip(result["experiment"], result["baseline"])) == [("2D-Patch-n", "2D-None"),
                                                                    ("3D-Cube-n", "3D-None")]
    assert ablation_differences_seeds({"2D-None": tables["2D-None"]}).empty
    with pytest.raises(ValueError, match="keyed by experiment names"):
        ablation_differences_seeds({"mine": tables["2D-None"]})
