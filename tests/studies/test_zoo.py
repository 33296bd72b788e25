"""Tests of uadlab.studies.zoo: every family in 2D and 3D planned, honest and oracle thresholds side by side."""

from __future__ import annotations

import shlex

import numpy as np
import pandas as pd
import pytest

from uadlab.models import MODELS
from uadlab.studies import plan_study, run_study
from uadlab.studies.zoo import dimension_pairs, family_experiments, rank_pairs, zoo_experiments


def test_zoo_plan_lists_every_family_in_every_dimension(blob_dataset, tmp_path):
    lines = plan_study("zoo", tmp_path / "out", data=blob_dataset)
    commands = [shlex.split(line) for line in lines if "--only-run" in line]
    names = [c[c.index("--only-run") + 1] for c in commands]
    expected = [(name, d) for name in MODELS for d in MODELS[name].spatial_dims]
    assert len(names) == len(expected) and len(MODELS) >= 9
    for (name, d), run in zip(expected, names):
        assert run.startswith(f"{name}_{d}D-")
    assert "cevae_2D-Patch-n" in names and "cevae_3D-Cube-n" in names  # the ceVAE learns from erased inputs
    assert all("--experiments" not in c for c in commands)  # the whole zoo is the study's default
    assert zoo_experiments() == [e for name in MODELS for e in family_experiments(name)]


def test_zoo_pairs_each_family_across_dimensions_and_down_the_ranking():
    assert dimension_pairs(["dae:2D-None", "zscore:3D-None", "dae:3D-None", "cevae:2D-Patch-n"]) == \
        [("dae:3D-None", "dae:2D-None")]
    summary = pd.DataFrame({"experiment": ["x", "y", "z"], "dice_d": [0.1, 0.3, np.nan]})
    assert rank_pairs(summary) == [("y", "x"), ("x", "z")]  # undefined last


@pytest.mark.slow  # about 10 s: three tiny runs, two seeds
def test_zoo_study_writes_honest_oracle_and_label_free_scores_with_seed_intervals(blob_dataset, tmp_path):
    experiments = ["ae-dense:2D-None", "ae-dense:3D-None", "zscore:3D-None"]
    outputs = run_study("zoo", tmp_path / "out", profile="smoke", data=blob_dataset, experiments=experiments,
                        seeds=[0, 1], max_epochs=2)
    per_seed, summary = pd.read_csv(outputs["zoo_seeds.csv"]), pd.read_csv(outputs["zoo.csv"])
    assert len(per_seed) == 3 * 2 * 2 and set(per_seed["dataset"]) == {"tumour", "stroke"}
    assert per_seed[["dice_d", "oracle_dice_d", "dice_d_fpr1", "auprc"]].notna().all().all()
    np.testing.assert_allclose(per_seed["optimism_gap"], per_seed["oracle_dice_d"] - per_seed["dice_d"])
    assert (per_seed["optimism_gap"] >= -1e-9).all()  # the oracle's threshold is the best on the test labels
    assert (per_seed["train_seconds_per_epoch"] > 0).all() and (per_seed["seconds_per_volume"] > 0).all()
    assert (summary["n_seeds"] == 2).all() and "dice_d_seed_sd" in summary.columns
    assert set(summary.loc[summary["family"] == "zscore", "spatial_dims"]) == {3}
    paired = pd.read_csv(outputs["paired.csv"])
    pairs = set(zip(paired["experiment"], paired["baseline"]))
    assert ("ae-dense:3D-None", "ae-dense:2D-None") in pairs and len(pairs) >= 2
    report = outputs["report.md"].read_text()
    assert "| rank | family | dims | DICE_D (val thr.) |" in report and "oracle" in report
    assert any(v in report for v in ("beats", "loses to", "not distinguishable from"))
    assert outputs["figure"].stat().st_size > 0
