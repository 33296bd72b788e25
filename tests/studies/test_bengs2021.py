"""Tests of the main job, ``uadlab reproduce``, on a tiny phantom with a two-epoch schedule."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex

import pandas as pd
import pytest

from uadlab import cli, profiles
from uadlab.cli import main
from uadlab.errors import DatasetError
from uadlab.layout import run_name
from uadlab.profiles import get_profile
from uadlab.studies import plan_study, run_study

EXPERIMENTS = ["2D-None", "3D-Cube-n"]


@pytest.fixture(scope="module")
def tiny_profile():
    """The smoke profile with 6 healthy, 4 tumour and 4 stroke subjects and two epochs."""
    return dataclasses.replace(get_profile("smoke"), phantom_counts={"healthy": 6, "tumour": 4, "stroke": 4},
                               max_epochs=2, patience=2, fractions=(0.5, 1.0))


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny_profile):
    out = tmp_path_factory.mktemp("results")
    return out, run_study("bengs2021", out, profile=tiny_profile, experiments=EXPERIMENTS)


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
    assert all((outputs["runs"] / run / "seed0" / "checkpoint.pt").is_file() for run in runs)
    figures = {p.name for p in outputs["figures"].iterdir()}
    best = pd.read_csv(outputs["table1.csv"]).groupby("experiment")["dice_d"].mean().idxmax()
    assert figures == {"fig4_lesion_size_tumour.png", "fig4_lesion_size_stroke.png", "fig5_data_size_auprc.png",
                       "fig5_data_size_dice_d.png", "fig6_slice_detection.png",
                       *(f"fig7_examples_{c}_{best}.{ext}" for c in ("tumour", "stroke") for ext in ("png", "html"))}


@pytest.mark.slow
def test_rerun_neither_retrains_nor_reevaluates(results, tiny_profile, capsys):
    out, outputs = results
    files = [*out.glob("runs/*/seed0/checkpoint.pt"), *out.glob("evaluation/*/seed0/metrics.json")]
    assert len(files) == 8
    stamps = {p: p.stat().st_mtime_ns for p in files}
    table = outputs["table1.csv"].read_text()
    run_study("bengs2021", out, profile=tiny_profile, experiments=EXPERIMENTS, progress=True)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert outputs["table1.csv"].read_text() == table
    err = capsys.readouterr().err  # tqdm writes to stderr outside Jupyter
    assert "reproduce: runs" in err and "4/4" in err

    # an evaluation written before subjects.csv gained its voxel counts is made again, the others reused
    old = out / "evaluation" / EXPERIMENTS[0] / "seed0" / "subjects.csv"
    table = pd.read_csv(old)
    table.drop(columns=["predicted_voxels", "overlap_voxels"]).to_csv(old, index=False)
    os.utime(old.parent / "metrics.json")  # still newer than its run
    run_study("bengs2021", out, profile=tiny_profile, experiments=EXPERIMENTS)
    pd.testing.assert_frame_equal(pd.read_csv(old), table)
    assert sum(p.stat().st_mtime_ns != t for p, t in stamps.items()) == 1  # that one metrics.json


def test_unknown_experiment_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="3D-Sphere-n"):
        run_study("bengs2021", tmp_path, experiments=["3D-Sphere-n"])
    assert not any(tmp_path.iterdir())


def test_a_folder_that_is_no_data_set_is_named(tmp_path):
    with pytest.raises(DatasetError, match="no dataset.json"):
        run_study("bengs2021", tmp_path / "out", data=tmp_path)


# --- plan: the study as commands for a job runner ---------------------------------------------------


def test_plan_lists_data_then_every_run_then_the_collect_step(tmp_path):
    lines = plan_study("bengs2021", tmp_path / "out", profile="lab", experiments=["2D-None", "3D-Cube-n"], seeds=[3],
                       workers=2)
    commands = [shlex.split(line) for line in lines if not line.startswith("#")]
    assert commands[0][:3] == ["uadlab", "data", "build"] and "--workers" in commands[0]
    runs = [c[c.index("--only-run") + 1] for c in commands[1:-1]]
    assert runs == ["2D-None", "3D-Cube-n", "2D-None@10", "2D-None@20", "2D-None@60",
                    "3D-Cube-n@10", "3D-Cube-n@20", "3D-Cube-n@60"]
    assert all(c[c.index("--data") + 1] == str(tmp_path / "out" / "data") for c in commands[1:-1])
    assert all(c[c.index("--seed") + 1] == "3" for c in commands[1:-1])
    assert "--only-run" not in commands[-1] and commands[-1][commands[-1].index("--data") + 1] == "phantom"
    assert commands[-1][commands[-1].index("--seeds") + 1] == "3"
    for command in commands:  # every line is a valid uadlab command line
        cli._parser().parse_args(command[1:])
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert [run["name"] for run in plan["runs"]] == runs and plan["commands"] == lines[1:]
    assert not (tmp_path / "out" / "data").exists()  # planning builds nothing


def test_plan_and_only_run_refuse_what_a_command_line_cannot_hold(tmp_path, tiny_profile):
    with pytest.raises(TypeError, match="`profile` must be a profile name"):
        plan_study("bengs2021", tmp_path, profile=tiny_profile)
    with pytest.raises(DatasetError, match="no dataset.json"):
        plan_study("bengs2021", tmp_path, data=tmp_path)
    with pytest.raises(ValueError, match="`only_run` must be a run of this study such as .*got '2D-None@30'"):
        run_study("bengs2021", tmp_path, only_run="2D-None@30")
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_running_the_plan_line_by_line_leaves_the_final_reproduce_only_collecting(tmp_path, tiny_profile,
                                                                                  monkeypatch, capsys):
    monkeypatch.setitem(profiles.PROFILES, "smoke", tiny_profile)
    monkeypatch.chdir(tmp_path)
    lines = [line for line in plan_study("bengs2021", "out", experiments=["2D-None"]) if not line.startswith("#")]
    for line in lines[:-1]:
        assert cli.main(["-q", *shlex.split(line)[1:]]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out" / "runs").glob("[!.]*")) == ["2D-None", "2D-None@50"]
    assert all((tmp_path / "out" / "evaluation" / n / "seed0" / "metrics.json").exists()
               for n in ("2D-None", "2D-None@50"))
    done = [*tmp_path.glob("out/runs/*/seed0/checkpoint.pt"), *tmp_path.glob("out/evaluation/*/seed0/metrics.json")]
    stamps = {p: p.stat().st_mtime_ns for p in done}
    assert cli.main(["-q", *shlex.split(lines[0])[1:]]) == 0  # a rerun line does nothing new
    assert cli.main(["-q", *shlex.split(lines[1])[1:]]) == 0
    assert cli.main(["-q", *shlex.split(lines[-1])[1:]]) == 0  # collect
    assert {p: p.stat().st_mtime_ns for p in done} == stamps  # nothing trained or evaluated again
    table = pd.read_csv(tmp_path / "out" / "table1.csv")
    assert list(table["experiment"]) == ["2D-None", "2D-None"]


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
    evaluate = ["-q", "evaluate", "--run", str(run), "--data", str(out / "data"), "--out", str(tmp_path / "eval")]
    assert main(evaluate) == 0
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
    outputs = run_study("bengs2021", out, profile=tiny_profile, data=data,
                        experiments=["2D-None", "mean-image:3D-None"])
    table = pd.read_csv(outputs["table1.csv"])
    assert list(table["experiment"]) == ["2D-None", "2D-None", "mean-image:3D-None", "mean-image:3D-None"]
    assert "| mean-image:3D-None |" in outputs["table1.md"].read_text()
    assert (out / "runs" / "mean-image_3D-None" / "seed0" / "checkpoint.pt").exists()
