"""Tests of the study engine: seeds and plans for every kind of study, executors, and a killed sweep.

Runs that execute in other processes (``--jobs``, submitit) cannot see a monkeypatched profile, so these
tests train the real ``smoke`` profile on the tiny blob data set of conftest (3 healthy training volumes).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import write_blob_dataset

from uadlab import cli
from uadlab.studies import context as study_context
from uadlab.studies import executors, plan_study, run_study
from uadlab.training import run_status

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = ["3D-None", "mean-image:3D-None"]


@pytest.fixture(scope="module")
def blobs(tmp_path_factory):
    return write_blob_dataset(tmp_path_factory.mktemp("blobs") / "data")


@pytest.fixture
def one_thread(monkeypatch):
    """Every process of a test on one thread, so that tables made here and in child processes agree to the bit."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("UADLAB_THREADS_SET", raising=False)


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["reproduce", "--profile", "smoke", "--data", str(data), "--out", str(out),
            "--experiments", ",".join(EXPERIMENTS), "--seeds", "0,1", *extra]


# --- plans ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["bengs2021", "lambert2021", "behrendt2024", "file"])
def test_every_kind_of_study_plans_every_seed_in_dependency_order(kind, blobs, tmp_path):
    study = str(REPO / "studies" / "sample_real.yaml") if kind == "file" else kind
    choices = {} if kind == "file" else {"data": blobs}
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


# --- executors --------------------------------------------------------------------------------------------

def test_slurm_options_reach_submitit(monkeypatch, tmp_path):
    seen = {}

    class FakeAutoExecutor:
        def __init__(self, folder, cluster=None):
            seen.update(folder=folder, cluster=cluster)

        def update_parameters(self, **parameters):
            seen.update(parameters)

    import submitit

    monkeypatch.setattr(submitit, "AutoExecutor", FakeAutoExecutor)
    executor = executors.make_executor("slurm", slurm={"partition": "gpu", "gpus": 1, "time": 240, "cpus": 8,
                                                       "mem": 32})
    executor.executor(tmp_path / "slurm")
    assert seen == {"folder": tmp_path / "slurm", "cluster": "slurm", "name": "uadlab", "slurm_partition": "gpu",
                    "gpus_per_node": 1, "timeout_min": 240, "cpus_per_task": 8, "mem_gb": 32}
    args = cli._parser().parse_args(["reproduce", "--executor", "slurm", "--slurm-partition", "gpu", "--slurm-gpus",
                                     "1", "--slurm-time", "240", "--slurm-cpus", "8", "--slurm-mem", "32"])
    assert (args.executor, args.slurm_partition, args.slurm_gpus, args.slurm_time) == ("slurm", "gpu", 1, 240)


@pytest.mark.parametrize(("name", "options", "message"), [
    ("pbs", {}, "`executor` must be 'local' or 'slurm', got 'pbs'"),
    ("local", {"slurm": {"gpus": 1}}, "SLURM options (gpus) need --executor slurm"),
    ("slurm", {"jobs": 2}, "`jobs` (--jobs) is for --executor local"),
    ("local", {"jobs": 0}, "`jobs` must be a positive int"),
])
def test_bad_executor_options_are_refused(name, options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        executors.make_executor(name, **options)


@pytest.mark.slow  # about a minute: 2 experiments x 2 seeds, three ways
def test_local_jobs_and_slurm_through_submitit_give_the_table_of_one_process(blobs, tmp_path, one_thread, capsys):
    tables = {}
    for label, extra in (("local", []), ("jobs", ["--jobs", "2"]), ("slurm", ["--executor", "slurm"])):
        out = tmp_path / label
        if label == "slurm":  # submitit's local executor: the jobs run as processes on this machine
            run_study("bengs2021", out, profile="smoke", data=blobs, experiments=EXPERIMENTS, seeds=[0, 1],
                      executor="slurm", slurm={"cluster": "local"})
        else:
            assert cli.main(["-q", *_args(blobs, out, *extra)]) == 0, capsys.readouterr().err
        tables[label] = (out / "table1_seeds.csv").read_text()
    assert tables["jobs"] == tables["local"] and tables["slurm"] == tables["local"]
    assert sorted(p.name for p in (tmp_path / "jobs" / "logs").iterdir()) == [
        f"{run}-seed{seed}.log" for run in ("3D-None", "mean-image_3D-None") for seed in (0, 1)]
    assert any((tmp_path / "slurm" / "slurm").iterdir())  # submitit's scripts and logs


@pytest.mark.slow  # about a minute
def test_a_killed_sweep_finishes_on_rerun_without_retraining_a_finished_run(blobs, tmp_path, monkeypatch, one_thread):
    out = tmp_path / "out"
    args = _args(blobs, out, "--jobs", "2")
    driver = subprocess.Popen([sys.executable, "-m", "uadlab.cli", "-q", *args], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240

    def finished() -> list[Path]:
        return [p for p in out.glob("runs/*/seed*") if (p / "checkpoint.pt").exists() and run_status(p)["finished"]]

    while not finished() and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.2)
    driver.kill()  # kill -9 of the driver mid-sweep; its runs die with it
    driver.wait()
    assert driver.returncode == -9, "the sweep ended before it could be killed"
    done = {p: (p / "checkpoint.pt").stat().st_mtime_ns for p in finished()}
    assert 0 < len(done) < 4
    trained = []

    def counting_train(config, run_dir, **kwargs):
        if not ((Path(run_dir) / "checkpoint.pt").exists() and run_status(run_dir)["finished"]):
            trained.append(Path(run_dir))
        return real_train(config, run_dir, **kwargs)

    real_train = study_context.train
    monkeypatch.setattr(study_context, "train", counting_train)
    assert cli.main(["-q", *args[:-2]]) == 0  # the same study, in this process
    assert {p: (p / "checkpoint.pt").stat().st_mtime_ns for p in done} == done  # finished runs untouched
    assert sorted(trained) == sorted(set(out.glob("runs/*/seed*")) - set(done))  # only the unfinished ones trained
    table = pd.read_csv(out / "table1_seeds.csv")
    assert len(table) == 2 * 2 * 2 and table["dice_d"].notna().all()
    for path in out.rglob("*.json"):  # every visible file is whole
        if not path.name.startswith("."):
            json.loads(path.read_text())


# --- seeds for every study ----------------------------------------------------------------------------------

@pytest.mark.slow  # about a minute: Lambert et al.'s four models, two seeds
def test_lambert2021_with_two_seeds_writes_mean_and_sd(blobs, tmp_path, one_thread):
    outputs = run_study("lambert2021", tmp_path, profile="smoke", data=blobs, seeds=[0, 1], max_epochs=2)
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


@pytest.mark.slow
def test_behrendt2024_with_two_seeds_writes_mean_and_sd(blobs, tmp_path, one_thread):
    outputs = run_study("behrendt2024", tmp_path, profile="smoke", data=blobs, seeds=[0, 1], labelled_cases=0,
                        max_epochs=1, experiments=["2D-None", "ddpm:2D-None"])
    per_seed, summary = pd.read_csv(outputs["behrendt2024_seeds.csv"]), pd.read_csv(outputs["behrendt2024.csv"])
    assert set(per_seed["seed"]) == {0, 1} and len(per_seed) == 2 * len(summary)
    assert (summary["n_seeds"] == 2).all() and "sample_auroc_seed_sd" in summary.columns
    paired = pd.read_csv(outputs["paired.csv"])
    assert set(zip(paired["experiment"], paired["baseline"])) == {("ddpm_2D-None__synthetic", "ddpm_2D-None")}
