"""Tests of uadlab.studies.executors: runs here, several at once, or as SLURM jobs; a killed sweep resumes.

Runs that execute in other processes (``--jobs``, submitit) cannot see a monkeypatched profile, so these
tests train the real ``smoke`` profile on the tiny blob data set of conftest (3 healthy training volumes).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from uadlab import cli
from uadlab.studies import executors, run_study

REPO = Path(__file__).resolve().parents[2]
EXPERIMENTS = ["3D-None", "mean-image:3D-None"]


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["reproduce", "--profile", "smoke", "--data", str(data), "--out", str(out),
            "--experiments", ",".join(EXPERIMENTS), "--seeds", "0,1", *extra]


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
def test_local_jobs_and_slurm_through_submitit_give_the_table_of_one_process(blob_dataset, tmp_path, one_thread,
                                                                               capsys):
    tables = {}
    for label, extra in (("local", []), ("jobs", ["--jobs", "2"]), ("slurm", ["--executor", "slurm"])):
        out = tmp_path / label
        if label == "slurm":  # submitit's local executor: the jobs run as processes on this machine
            run_study("bengs2021", out, profile="smoke", data=blob_dataset, experiments=EXPERIMENTS, seeds=[0, 1],
                      executor="slurm", slurm={"cluster": "local"})
        else:
            assert cli.main(["-q", *_args(blob_dataset, out, *extra)]) == 0, capsys.readouterr().err
        tables[label] = (out / "table1_seeds.csv").read_text()
    assert tables["jobs"] == tables["local"] and tables["slurm"] == tables["local"]
    assert sorted(p.name for p in (tmp_path / "jobs" / "logs").iterdir()) == [
        f"{run}-seed{seed}.log" for run in ("3D-None", "mean-image_3D-None") for seed in (0, 1)]
    assert any((tmp_path / "slurm" / "slurm").iterdir())  # submitit's scripts and logs
