"""Tests of uadlab.studies.executors: runs here, several at once, or as SLURM jobs; a killed sweep resumes.

Runs that execute in other processes (``--jobs``, submitit) cannot see a monkeypatched profile, so these
tests train the real ``smoke`` profile on the tiny blob data set of conftest (3 healthy training volumes).
"""

from __future__ import annotations

import dataclasses
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from uadlab import cli
from uadlab.errors import RunError
from uadlab.profiles import get_profile
from uadlab.studies import RunSpec, executors, run_study
from uadlab.studies import context as study_context
from uadlab.training import run_status

EXPERIMENTS = ["3D-None", "mean-image:3D-None"]


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["reproduce", "--profile", "smoke", "--data", str(data), "--out", str(out),
            "--experiments", ",".join(EXPERIMENTS), "--seeds", "0,1", *extra]


# --- executors --------------------------------------------------------------------------------------------

def test_slurm_options_reach_submitit_from_the_command_line(monkeypatch, blob_dataset, tmp_path, capsys):
    seen = {}

    class FakeAutoExecutor:
        def __init__(self, folder, cluster=None):
            seen.update(folder=folder, cluster=cluster)

        def update_parameters(self, **parameters):
            seen.update(parameters)

        def submit(self, function, *args):
            raise RuntimeError("no sbatch here")

    import submitit

    monkeypatch.setattr(submitit, "AutoExecutor", FakeAutoExecutor)
    out = tmp_path / "out"
    assert cli.main(["-q", *_args(blob_dataset, out, "--executor", "slurm", "--slurm-partition", "gpu",
                                  "--slurm-gpus", "1", "--slurm-time", "240", "--slurm-cpus", "8",
                                  "--slurm-mem", "32")]) == 2
    assert "uadlab: error: submitting to SLURM failed: no sbatch here" in capsys.readouterr().err
    assert seen == {"folder": out / "slurm", "cluster": "slurm", "name": "uadlab", "slurm_partition": "gpu",
                    "gpus_per_node": 1, "timeout_min": 240, "cpus_per_task": 8, "mem_gb": 32}


def test_runs_in_child_processes_get_the_study_s_options(monkeypatch, blob_dataset, tmp_path):
    lines = []

    def fake_run(command, **kwargs):  # stands in for the child: records its command line, trains nothing
        lines.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(executors.subprocess, "run", fake_run)
    run_study("bengs2021", tmp_path, profile="smoke", data=blob_dataset, experiments=["mean-image:3D-None"],
              seeds=[0, 1], jobs=2, overwrite=True, max_epochs=1, device="cpu")  # the driver trains them itself
    assert len(lines) == 2
    for line in lines:
        assert line[line.index("--experiments") + 1] == "mean-image:3D-None" and "--overwrite" in line
        assert line[line.index("--max-epochs") + 1] == "1" and line[line.index("--device") + 1] == "cpu"
    lines.clear()
    run_study("bengs2021", tmp_path, profile="smoke", data=blob_dataset, experiments=["mean-image:3D-None"],
              seeds=[0, 1], jobs=2, max_epochs=1, device="cpu")
    assert lines == []  # every run finished: nothing to start


def test_a_custom_profile_is_not_sent_to_other_processes_by_its_name(blob_dataset, tmp_path):
    custom = dataclasses.replace(get_profile("smoke"), max_epochs=1)  # named "smoke", but not smoke's schedule
    for options in ({"jobs": 2}, {"executor": "slurm"}):
        with pytest.raises(ValueError, match="a custom Profile \\(here 'smoke'\\) runs in this process only"):
            run_study("bengs2021", tmp_path / "out", profile=custom, data=blob_dataset,
                      experiments=["mean-image:3D-None"], **options)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_run_starts_once_the_run_it_needs_has_finished_not_its_whole_wave(tmp_path, monkeypatch):
    events, lock = [], threading.Lock()
    durations = {"2D-None": 0.6, "ddpm_2D-None": 0.05, "ddpm_3D-None": 0.05}

    def fake_run(self, spec, command, ctx):
        with lock:
            events.append(("start", spec.name))
        time.sleep(durations.get(spec.name, 0.05))
        with lock:
            events.append(("end", spec.name))
        return spec, tmp_path / f"{spec.name}.log", 1 if spec.name == "ddpm_3D-None" else 0

    monkeypatch.setattr(executors.LocalExecutor, "_run", fake_run)
    slow, recon, broken = RunSpec("2D-None"), RunSpec("ddpm:2D-None"), RunSpec("ddpm:3D-None")
    segmenter, orphan = RunSpec("ddpm:2D-None", labels="synthetic"), RunSpec("ddpm:3D-None", labels="synthetic")
    waves = [[(slow, []), (recon, []), (broken, [])], [(segmenter, []), (orphan, [])]]
    ctx = SimpleNamespace(layout=SimpleNamespace(logs=tmp_path / "logs"))
    with pytest.raises(RunError, match="1 run\\(s\\) failed: ddpm_3D-None seed 0"):
        executors.LocalExecutor(jobs=2).execute(waves, ctx)
    order = [f"{kind} {name}" for kind, name in events]
    # the segmenter started after its DDPM and before the slow VAE of the first wave ended
    assert order.index(f"start {segmenter.name}") > order.index("end ddpm_2D-None")
    assert order.index(f"start {segmenter.name}") < order.index("end 2D-None")
    assert f"start {orphan.name}" not in order  # its DDPM failed: never started


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
                                                                               capsys, monkeypatch):
    tables, trained = {}, []

    def counting_train(config, run_dir, **kwargs):
        if not ((Path(run_dir) / "checkpoint.pt").exists() and run_status(run_dir)["finished"]):
            trained.append(Path(run_dir))
        return real_train(config, run_dir, **kwargs)

    real_train = study_context.train
    monkeypatch.setattr(study_context, "train", counting_train)
    for label, extra in (("local", []), ("jobs", ["--jobs", "2"]), ("slurm", ["--executor", "slurm"])):
        out = tmp_path / label
        if label == "slurm":  # submitit's local executor: the jobs run as processes on this machine
            run_study("bengs2021", out, profile="smoke", data=blob_dataset, experiments=EXPERIMENTS, seeds=[0, 1],
                      executor="slurm", slurm={"cluster": "local"})
        else:
            assert cli.main(["-q", *_args(blob_dataset, out, *extra)]) == 0, capsys.readouterr().err
        tables[label] = (out / "table1_seeds.csv").read_text()
        assert len(trained) == (4 if label == "local" else 0)  # elsewhere the runs trained, not the driver
        trained.clear()
    assert tables["jobs"] == tables["local"] and tables["slurm"] == tables["local"]
    assert sorted(p.name for p in (tmp_path / "jobs" / "logs").iterdir()) == [
        f"{run}-seed{seed}.log" for run in ("3D-None", "mean-image_3D-None") for seed in (0, 1)]
    assert any((tmp_path / "slurm" / "slurm").iterdir())  # submitit's scripts and logs
