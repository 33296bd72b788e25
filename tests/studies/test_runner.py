"""Tests of uadlab.studies.runner: every kind of study planned for every seed, in dependency order."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from uadlab import cli
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
