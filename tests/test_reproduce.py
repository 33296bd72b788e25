"""Tests of the main job, ``uadlab reproduce``, on a tiny phantom with a two-epoch schedule."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest
import yaml

from uadlab.cli import main
from uadlab.errors import DatasetError
from uadlab.profiles import get_profile
from uadlab.reproduce import reproduce, run_name

EXPERIMENTS = ["2D-None", "3D-Cube-n"]


@pytest.fixture(scope="module")
def tiny_profile():
    """The smoke profile with 6 healthy, 4 tumour and 4 stroke subjects and two epochs."""
    return dataclasses.replace(get_profile("smoke"), phantom_counts={"healthy": 6, "tumour": 4, "stroke": 4},
                               max_epochs=2, patience=2, fractions=(0.5, 1.0))


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny_profile):
    out = tmp_path_factory.mktemp("results")
    return out, reproduce(tiny_profile, "phantom", out, experiments=EXPERIMENTS)


@pytest.mark.slow
def test_table1_has_one_row_per_experiment_and_test_set(results):
    out, outputs = results
    table = pd.read_csv(outputs["table1.csv"])
    assert list(table.columns) == ["experiment", "dataset", "dice_d", "dice_s_mean", "dice_s_std", "auprc", "threshold"]
    assert list(zip(table["experiment"], table["dataset"])) == [
        ("2D-None", "tumour"), ("2D-None", "stroke"), ("3D-Cube-n", "tumour"), ("3D-Cube-n", "stroke")]
    assert table[["dice_d", "auprc"]].apply(lambda c: c.between(0, 1)).all().all()
    markdown = outputs["table1.md"].read_text()
    assert "tumour DICE_D" in markdown and "| 3D-Cube-n |" in markdown


@pytest.mark.slow
def test_every_run_and_figure_is_written(results):
    out, outputs = results
    runs = sorted(p.name for p in outputs["runs"].iterdir() if not p.name.startswith("."))  # not lock files
    assert runs == sorted(EXPERIMENTS + [run_name(e, 0.5) for e in EXPERIMENTS])  # both are data-size experiments
    figures = {p.name for p in outputs["figures"].iterdir()}
    best = pd.read_csv(outputs["table1.csv"]).groupby("experiment")["dice_d"].mean().idxmax()
    assert figures == {"fig4_lesion_size_tumour.png", "fig4_lesion_size_stroke.png", "fig5_data_size_auprc.png",
                       "fig5_data_size_dice_d.png", "fig6_slice_detection.png",
                       *(f"fig7_examples_{c}_{best}.{ext}" for c in ("tumour", "stroke") for ext in ("png", "html"))}


@pytest.mark.slow
def test_rerun_neither_retrains_nor_reevaluates(results, tiny_profile):
    out, outputs = results
    stamps = {p: p.stat().st_mtime_ns for p in [*out.glob("runs/*/checkpoint.pt"), *out.glob("evaluation/*/metrics.json")]}
    table = outputs["table1.csv"].read_text()
    reproduce(tiny_profile, "phantom", out, experiments=EXPERIMENTS)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert outputs["table1.csv"].read_text() == table


def test_unknown_experiment_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="3D-Sphere-n"):
        reproduce("smoke", "phantom", tmp_path, experiments=["3D-Sphere-n"])
    assert not any(tmp_path.iterdir())


def test_a_folder_that_is_no_data_set_is_named(tmp_path):
    with pytest.raises(DatasetError, match="no dataset.json"):
        reproduce("smoke", tmp_path, tmp_path / "out")


@pytest.mark.slow
def test_another_model_trains_resumes_and_evaluates_from_the_command_line(results, tmp_path, capsys):
    out, _ = results
    run = tmp_path / "spatial"
    args = ["train", "--model", "spatial-vae", "--experiment", "3D-None", "--data", str(out / "data"),
            "--profile", "smoke", "--out", str(run), "--max-epochs", "2"]
    assert main(["-q", *args]) == 0
    assert main(["-q", *args, "--resume"]) == 0  # finished: returns at once
    assert "finished after 2 epoch(s)" in capsys.readouterr().out
    same = ["-q", "train", "--experiment", "spatial-vae:3D-None", *args[5:], "--resume"]
    assert main(same) == 0  # the prefix spelling is the same run
    assert main(["-q", "evaluate", "--run", str(run), "--data", str(out / "data"), "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["experiment"] == "spatial-vae:3D-None" and set(metrics["cohorts"]) == {"tumour", "stroke"}
    assert main(["-q", *args[:2], "dense-vae", *args[3:], "--resume"]) == 2  # another model: refused
    assert "config differs in experiment (stored 'spatial-vae:3D-None', given '3D-None')" in capsys.readouterr().err
    assert main([*same[:4], "--model", "dense-vae", *same[4:]]) == 2  # two models named at once
    assert "names model 'spatial-vae', but `model` is 'dense-vae'" in capsys.readouterr().err


@pytest.mark.slow
def test_the_mean_image_floor_is_a_table1_row(results, tiny_profile, tmp_path):
    data = results[0] / "data"
    out = tmp_path
    outputs = reproduce(tiny_profile, data, out, experiments=["2D-None", "mean-image:3D-None"])
    table = pd.read_csv(outputs["table1.csv"])
    assert list(table["experiment"]) == ["2D-None", "2D-None", "mean-image:3D-None", "mean-image:3D-None"]
    assert "| mean-image:3D-None |" in outputs["table1.md"].read_text()
    assert (out / "runs" / "mean-image_3D-None" / "checkpoint.pt").exists()


@pytest.mark.slow
def test_lambert2021_study_writes_their_table_for_four_models(results, tiny_profile, tmp_path):
    data, out = results[0] / "data", tmp_path
    outputs = reproduce(tiny_profile, data, out, study="lambert2021")
    table = pd.read_csv(outputs["lambert2021.csv"])
    assert list(dict.fromkeys(table["model"])) == ["Spatial 2D", "Spatial 3D", "Dense 2D", "Dense 3D"]
    assert set(table["dataset"]) == {"tumour", "stroke"} and len(table) == 8
    assert table[["specificity", "mae", "bengs_dice_d"]].notna().all().all()
    for experiment in table["experiment"].unique():
        config = yaml.safe_load((out / "lambert2021" / "runs" / run_name(experiment) / "config.yaml").read_text())
        assert config["loss"] == "lambert"
    assert "| Spatial 3D |" in outputs["lambert2021.md"].read_text()
    with pytest.raises(ValueError, match="`experiments` must be None for study 'lambert2021'"):
        reproduce(tiny_profile, data, out, study="lambert2021", experiments=["2D-None"])
    with pytest.raises(ValueError, match="`study` must be one of"):
        reproduce(tiny_profile, data, out, study="chatterjee")
