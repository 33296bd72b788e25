"""Tests of uadlab.studies.runner: every kind of study planned for every seed, in dependency order; studies
sharing one output folder at once."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import LockHolder

from uadlab import cli
from uadlab.errors import UadlabWarning
from uadlab.layout import EVAL_METRICS, RUN_CHECKPOINT, ResultsLayout
from uadlab.studies import plan_study, run_study

REPO = Path(__file__).resolve().parents[2]
# --- plans ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["bengs2021", "lambert2021", "behrendt2024", "zoo", "file"])
def test_every_kind_of_study_plans_every_seed_in_dependency_order(kind, blob_dataset, tmp_path):
    study = str(REPO / "studies" / "sample_real.yaml") if kind == "file" else kind
    choices = {} if kind == "file" else {"data": blob_dataset}
    lines = plan_study(study, tmp_path / "out", seeds=[0, 1], **choices)
    commands = [shlex.split(line) for line in lines if not line.startswith("#")]
    runs = [c for c in commands if "--only-run" in c]
    seeds = [int(c[c.index("--seed") + 1]) for c in runs]
    assert seeds.count(0) == seeds.count(1) > 0
    names = [c[c.index("--only-run") + 1] for c in runs]
    segmenters = [i for i, n in enumerate(names) if "__" in n]
    assert all(i > max(j for j, n in enumerate(names) if "__" not in n) for i in segmenters)  # after their models
    assert (kind == "behrendt2024") == bool(segmenters)
    assert commands[-1][commands[-1].index("--seeds") + 1] == "0,1"
    for command in commands:
        cli._parser().parse_args(command[1:])
    plan = json.loads((tmp_path / "out" / ("" if kind in ("bengs2021", "file") else kind) / "plan.json").read_text())
    assert sorted((r["name"], r["seed"]) for r in plan["runs"]) == sorted(zip(names, seeds))
    assert all(r["depends_on"] == r["name"].split("__")[0] for r in plan["runs"] if r["stage"] == "segmenter")


@pytest.mark.parametrize(("kind", "experiments"), [("lambert2021", ["spatial-vae:3D-None"]),
                                                   ("behrendt2024", ["2D-None", "ddpm:2D-None"])])
def test_a_plan_keeps_the_studys_experiments_in_every_line(kind, experiments, blob_dataset, tmp_path):
    options = {"labelled_cases": 0} if kind == "behrendt2024" else {}
    lines = plan_study(kind, tmp_path / "out", data=blob_dataset, experiments=experiments, **options)
    commands = [shlex.split(line) for line in lines if line.startswith("uadlab reproduce")]
    assert all(c[c.index("--experiments") + 1] == ",".join(experiments) for c in commands)
    names = [c[c.index("--only-run") + 1] for c in commands if "--only-run" in c]
    assert names == [e.replace(":", "_") for e in experiments] + (["ddpm_2D-None__synthetic"] if kind == "behrendt2024"
                                                                  else [])


def test_only_run_takes_a_run_name_in_any_letter_case(blob_dataset, tmp_path):
    with pytest.raises(ValueError, match="`only_run` must be a run of this study such as"):
        run_study("bengs2021", tmp_path, data=blob_dataset, only_run="3D-Sphere-n")
    with pytest.raises(ValueError, match="--executor and --jobs are for a sweep"):
        run_study("bengs2021", tmp_path, data=blob_dataset, only_run="3D-None", jobs=2)


# --- studies sharing one output folder -------------------------------------------------------------------

FLOOR = "mean-image:3D-None"  # no training to speak of: a study of it takes seconds


@pytest.fixture(scope="module")
def finished(blob_dataset, tmp_path_factory) -> ResultsLayout:
    """An output folder where a study of :data:`FLOOR` has finished (what another process would leave)."""
    out = tmp_path_factory.mktemp("finished") / "out"
    run_study("bengs2021", out, profile="smoke", data=blob_dataset, experiments=[FLOOR])
    return ResultsLayout(out)


@pytest.mark.parametrize("held", ["run", "evaluation"])
def test_a_study_waits_for_a_folder_another_process_writes_then_reuses_it(held, finished, blob_dataset, tmp_path):
    layout = ResultsLayout(tmp_path / "out")
    run, evaluation = layout.run(FLOOR), layout.evaluation(FLOOR)
    if held == "evaluation":  # the other process trained the run already and is evaluating it
        shutil.copytree(finished.run(FLOOR), run)
    folder = run if held == "run" else evaluation
    holder = LockHolder(folder)
    waiting = f"{folder}: in use by another uadlab process; waiting"

    def other_process_finishes(caught):  # once the study waits for it, it writes the folder and lets go
        deadline = time.monotonic() + 120
        while not any(str(w.message).startswith(waiting) for w in list(caught)) and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.copytree(finished.run(FLOOR) if held == "run" else finished.evaluation(FLOOR), folder)
        holder.release()

    with pytest.warns(UadlabWarning, match=re.escape(waiting)) as caught:
        other = threading.Thread(target=other_process_finishes, args=(caught,))
        other.start()
        try:
            outputs = run_study("bengs2021", layout.root, profile="smoke", data=blob_dataset, experiments=[FLOOR])
        finally:
            other.join()
    assert pd.read_csv(outputs["table1.csv"])["experiment"].unique().tolist() == [FLOOR]
    written = run / RUN_CHECKPOINT if held == "run" else evaluation / EVAL_METRICS
    source = finished.run(FLOOR) / RUN_CHECKPOINT if held == "run" else finished.evaluation(FLOOR) / EVAL_METRICS
    assert written.stat().st_mtime_ns == source.stat().st_mtime_ns  # reused, not written again


@pytest.mark.slow  # two processes that import torch
def test_two_studies_run_at_once_in_one_output_folder(blob_dataset, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "uadlab.cli", "-q", "reproduce", "--profile", "smoke", "--data", str(blob_dataset),
               "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    processes = [subprocess.Popen([*command, "--experiments", f"{FLOOR},zscore:3D-None"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]  # the same data set, runs, evaluations and tables
    errors = [p.communicate(timeout=600)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0] and not any("error" in err for err in errors), errors
    assert pd.read_csv(out / "table1.csv")["experiment"].unique().tolist() == [FLOOR, "zscore:3D-None"]
    assert json.loads((out / "reproduce.json").read_text())["complete"]
