"""Tests of uadlab.studies.lambert2021: their four models, their protocol and Bengs et al.'s, one seed and two."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from uadlab.layout import RUN_CHECKPOINT, RUN_CONFIG, ResultsLayout
from uadlab.studies import run_study


@pytest.fixture(scope="module")
def one_seed(tmp_path_factory, blob_dataset):
    """The study with one seed on the blob data set (smoke profile, two epochs a model)."""
    out = tmp_path_factory.mktemp("lambert")
    return out, run_study("lambert2021", out, profile="smoke", data=blob_dataset, max_epochs=2)


@pytest.mark.slow
def test_lambert2021_study_writes_their_table_for_four_models(one_seed, blob_dataset):
    out, outputs = one_seed
    table = pd.read_csv(outputs["lambert2021.csv"])
    assert list(table.columns[:3]) == ["model", "experiment", "dataset"] and "seed" not in table.columns
    assert list(dict.fromkeys(table["model"])) == ["Spatial 2D", "Spatial 3D", "Dense 2D", "Dense 3D"]
    assert set(table["dataset"]) == {"tumour", "stroke"} and len(table) == 8
    assert table[["specificity", "mae", "bengs_dice_d"]].notna().all().all()
    study = ResultsLayout(out).study("lambert2021")
    for experiment in table["experiment"].unique():
        assert yaml.safe_load((study.run(experiment) / RUN_CONFIG).read_text())["loss"] == "lambert"
    assert "| Spatial 3D |" in outputs["lambert2021.md"].read_text()
    with pytest.raises(ValueError, match="`study` must be one of"):
        run_study("chatterjee", out, profile="smoke", data=blob_dataset)


@pytest.mark.slow  # about a minute: seed 1 of Lambert et al.'s four models (seed 0 is reused)
def test_lambert2021_with_two_seeds_writes_mean_and_sd(one_seed, blob_dataset):
    out, _ = one_seed
    study = ResultsLayout(out).study("lambert2021")
    seed0 = {p: p.stat().st_mtime_ns for p in study.runs.glob(f"*/seed0/{RUN_CHECKPOINT}")}
    outputs = run_study("lambert2021", out, profile="smoke", data=blob_dataset, seeds=[0, 1], max_epochs=2)
    assert {p: p.stat().st_mtime_ns for p in seed0} == seed0 and len(seed0) == 4  # seed 0 reused, not retrained
    per_seed, summary = pd.read_csv(outputs["lambert2021_seeds.csv"]), pd.read_csv(outputs["lambert2021.csv"])
    assert len(per_seed) == 4 * 2 * 2 and set(per_seed["seed"]) == {0, 1}
    assert len(summary) == 4 * 2 and (summary["n_seeds"] == 2).all()
    assert {"dice_mean_seed_sd", "bengs_dice_d_seed_sd"} <= set(summary.columns)
    row = per_seed[(per_seed["model"] == "Dense 3D") & (per_seed["dataset"] == "tumour")]
    assert summary.set_index(["model", "dataset"]).loc[("Dense 3D", "tumour"), "bengs_dice_d"] == pytest.approx(
        row["bengs_dice_d"].mean())
    paired = pd.read_csv(outputs["paired.csv"])
    assert set(zip(paired["experiment"], paired["baseline"])) == {("spatial-vae:2D-None", "2D-None"),
                                                                  ("spatial-vae:3D-None", "3D-None")}
