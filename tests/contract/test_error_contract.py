"""The error contract of the command line (README, "What uadlab promises"), case by case.

Each case is what a careless or hostile user can do. Every test asserts the exit code, that the
message is one line naming the file, and that nothing the user had changed. Data: a tiny fake real
data set (4 healthy scans, 2 lesion cases, 40 x 48 x 40 voxels of 4 mm) built with the smoke profile,
and a one-epoch smoke run on it. Concurrency cases hold a lock in one real process and run the
command in another (or run two commands at once).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FAKE_SHAPE, LockHolder, fake_scan, save_nifti, write_fake_real

from uadlab.cli import main as _cli_main
from uadlab.data import preprocessing
from uadlab.data.dataset import build_dataset, load_dataset
from uadlab.errors import DatasetError, RunError, UadlabWarning
from uadlab.layout import ResultsLayout
from uadlab.studies import DataSource, RunSpec, StudyContext
from uadlab.studies import context as study_context
from uadlab.training import TrainConfig, train
from uadlab.training import reconstruction as training

REPO = Path(__file__).resolve().parents[2]


def _digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``, by relative path (to show that nothing changed)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def main(argv: list[str]) -> int:
    """``uadlab -q ARGV`` in this process (no progress bars on stderr)."""
    return _cli_main(["-q", *argv])


def _one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("uadlab: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err
    return err


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1", "UADLAB_CACHE": str(cache)}


def _cli(args: list[str], cache: Path) -> subprocess.Popen:
    """``uadlab -q ARGS`` in a separate process."""
    return subprocess.Popen([sys.executable, "-m", "uadlab.cli", "-q", *args], env=_env(cache), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """``(root, manifest, data, run, cache)``: the fake tree, its smoke build, a one-epoch run."""
    base = tmp_path_factory.mktemp("contract")
    manifest = write_fake_real(base / "root", name="contract")
    cache = base / "cache"
    data = build_dataset(manifest, base / "data", root=base / "root", profile="smoke", cache_dir=cache)
    config = TrainConfig(experiment="3D-None", profile="smoke", data=str(data), max_epochs=1, seed=1, device="cpu")
    run = train(config, base / "run").run_dir
    return base / "root", manifest, data, run, cache


@pytest.fixture
def cache_env(world, monkeypatch):
    """Point the CLI's preprocessing cache at the module's cache."""
    monkeypatch.setenv("UADLAB_CACHE", str(world[4]))
    return world[4]


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--experiment", "3D-None", "--profile", "smoke", "--data", str(data), "--out", str(out),
            "--device", "cpu", "--max-epochs", "1", *extra]


# --------------------------------------------------------------------------------------------------
# Crashes and data loss


@pytest.mark.slow  # spawns two worker processes
def test_parallel_build_of_a_real_manifest_equals_the_serial_build(world, tmp_path):
    root, manifest, data, _, cache = world
    not_a_cache = tmp_path / "cache"
    not_a_cache.write_text("a file")  # no cache at all: the workers really work, and warn
    with pytest.warns(UadlabWarning, match="cannot write the preprocessing cache") as caught:
        parallel = build_dataset(manifest, tmp_path / "parallel", root=root, profile="smoke", workers=2,
                                 cache_dir=not_a_cache)
    assert 1 <= len(caught) <= 2  # reported in this process, at most once per worker
    assert _digest(parallel) == _digest(data)


def test_train_overwrite_with_a_bad_data_folder_keeps_the_run(world, tmp_path, capsys):
    _, _, data, run, _ = world
    copy = shutil.copytree(run, tmp_path / "run")
    before = _digest(copy)
    assert main(_train_args(tmp_path / "typo", copy, "--overwrite")) == 2
    _one_line_error(capsys, f"{tmp_path / 'typo'}: no data-set folder here")
    assert _digest(copy) == before


@pytest.mark.slow  # two processes that import torch
def test_two_trainings_into_one_folder_one_fails_and_nothing_is_lost(world, tmp_path):
    _, _, data, _, cache = world
    out = tmp_path / "run"
    processes = [_cli(_train_args(data, out), cache) for _ in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in processes]
    results = [(p.returncode, err) for p, err in zip(processes, errors)]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    err = next(err for code, err in results if code == 2)
    assert err.count("\n") == 1 and str(out) in err
    assert "in use by another uadlab process" in err or "holds a training run" in err
    assert training.run_status(out)["finished"]


@pytest.mark.parametrize("command", ["train", "evaluate", "data build"])
def test_a_locked_folder_is_refused_with_one_line(world, tmp_path, capsys, cache_env, command):
    root, manifest, data, run, _ = world
    out = tmp_path / "out"
    args = {"train": _train_args(data, out),
            "evaluate": ["evaluate", "--run", str(run), "--data", str(data), "--out", str(out)],
            "data build": ["data", "build", "--manifest", str(manifest), "--root", str(root), "--out", str(out),
                           "--profile", "smoke"]}[command]
    with LockHolder(out):
        assert main(args) == 2
    _one_line_error(capsys, f"{out}: in use by another uadlab process")
    assert not out.exists()


def test_a_lock_dies_with_its_process_even_on_kill_9(world, tmp_path, capsys):
    _, _, data, _, _ = world
    out = tmp_path / "run"
    holder = LockHolder(out)
    holder.process.kill()  # SIGKILL: no cleanup code runs
    holder.process.wait(timeout=30)
    assert (tmp_path / ".run.lock").exists()  # the file stays; the lock does not
    assert main(_train_args(data, out)) == 0
    assert "finished after 1 epoch" in capsys.readouterr().out


def test_train_never_writes_into_a_data_set(world, tmp_path, capsys):
    _, _, data, _, _ = world
    target = shutil.copytree(data, tmp_path / "data")
    before = _digest(target)
    for extra in ((), ("--overwrite",)):
        assert main(_train_args(data, target, *extra)) == 2
        _one_line_error(capsys, f"{target}: holds", "a built data set")
    assert _digest(target) == before


def test_evaluate_never_writes_into_a_data_set_or_a_file(world, tmp_path, capsys):
    _, _, data, run, _ = world
    target = shutil.copytree(data, tmp_path / "data")
    before = _digest(target)
    assert main(["evaluate", "--run", str(run), "--data", str(data), "--out", str(target), "--overwrite"]) == 2
    _one_line_error(capsys, f"{target}: holds a built data set")
    assert _digest(target) == before
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    assert main(["evaluate", "--run", str(run), "--data", str(data), "--out", str(a_file)]) == 2
    _one_line_error(capsys, f"{a_file}: exists and is not a folder")
    assert a_file.read_text() == "mine"


def test_reproduce_keeps_a_table_it_did_not_write_and_refuses_a_file(tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "table1.csv").write_text("mine\n")
    assert main(["reproduce", "--profile", "smoke", "--out", str(out)]) == 2
    _one_line_error(capsys, f"{out / 'table1.csv'}: exists and was not written by `uadlab reproduce`",
                    "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == ["table1.csv"] and (out / "table1.csv").read_text() == "mine\n"
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    assert main(["reproduce", "--profile", "smoke", "--out", str(a_file)]) == 2
    _one_line_error(capsys, f"{a_file}: exists and is not a folder")


def test_reproduce_never_writes_into_a_data_set_or_a_run(world, tmp_path, capsys):
    _, _, data, run, _ = world
    for folder, what in ((data, "a built data set (dataset.json)"), (run, "a training run (config.yaml)")):
        before = _digest(folder)
        assert main(["reproduce", "--profile", "smoke", "--out", str(folder), "--experiments", "3D-None"]) == 2
        _one_line_error(capsys, f"{folder}: holds {what}")
        assert _digest(folder) == before


def test_reproduce_refuses_an_empty_experiment_list(tmp_path, capsys):
    for value in ("", ",", "3D-None,"):
        assert main(["reproduce", "--profile", "smoke", "--out", str(tmp_path / "r"), "--experiments", value]) == 2
        _one_line_error(capsys, "`experiments` must name at least one experiment")
    assert not (tmp_path / "r").exists()


def test_data_build_overwrite_repairs_a_damaged_build(world, tmp_path, capsys, cache_env):
    root, manifest, data, _, _ = world
    target = shutil.copytree(data, tmp_path / "data")
    image = next((target / "images").iterdir())
    image.write_bytes(image.read_bytes()[:200])  # truncated
    args = ["data", "build", "--manifest", str(manifest), "--root", str(root), "--out", str(target),
            "--profile", "smoke"]
    assert main(args + ["--overwrite"]) == 0
    assert _digest(target) == _digest(data)
    capsys.readouterr()


def test_resume_is_checked_against_the_checkpoints_own_config(world, tmp_path, capsys):
    _, _, data, run, _ = world
    copy = shutil.copytree(run, tmp_path / "run")
    (copy / "config.yaml").unlink()
    before = _digest(copy)
    assert main(_train_args(data, copy, "--resume", "--seed", "99")) == 2
    _one_line_error(capsys, f"{copy}: cannot resume, the config differs in seed (stored 1, given 99)")
    assert _digest(copy) == before


def test_a_checkpoint_without_its_config_and_without_config_yaml_is_not_resumed(world, tmp_path, capsys):
    _, _, data, run, _ = world
    copy = shutil.copytree(run, tmp_path / "run")
    checkpoint = torch.load(copy / "checkpoint.pt", weights_only=True)
    del checkpoint["config"]  # as written before checkpoints carried their config
    torch.save(checkpoint, copy / "checkpoint.pt")
    (copy / "config.yaml").unlink()
    before = _digest(copy)
    assert main(_train_args(data, copy, "--resume", "--seed", "1")) == 2
    _one_line_error(capsys, f"{copy}: checkpoint.pt records no config and config.yaml is missing")
    assert _digest(copy) == before


def test_a_study_with_overwrite_restarts_only_a_run_whose_config_differs(world, tmp_path):
    _, _, data, run, _ = world
    out = ResultsLayout(tmp_path / "out")
    copy = shutil.copytree(run, out.run("3D-None", seed=1))

    def context(**options):
        return StudyContext(out, out, "smoke", {"data": DataSource("data", built=data)}, device="cpu", **options)

    with pytest.raises(RunError, match="cannot resume, the config differs in max_epochs"):
        context(max_epochs=2).train(RunSpec("3D-None", seed=1))
    before = _digest(copy)
    context(max_epochs=1, overwrite=True).train(RunSpec("3D-None", seed=1))
    assert _digest(copy) == before  # finished with the same config: kept
    context(max_epochs=2, overwrite=True).train(RunSpec("3D-None", seed=1))
    assert "max_epochs: 2" in (copy / "config.yaml").read_text() and training.run_status(copy)["finished"]


def test_experiment_names_are_stored_canonical_and_resume_in_any_case(world, tmp_path, capsys):
    _, _, data, _, _ = world
    out = tmp_path / "run"
    args = _train_args(data, out)
    args[args.index("3D-None")] = "3d-none"
    assert main(args) == 0
    assert "experiment: 3D-None" in (out / "config.yaml").read_text()
    args[args.index("3d-none")] = "3D-NONE"
    assert main(args + ["--resume"]) == 0
    assert "finished after 1 epoch" in capsys.readouterr().out


def test_a_profile_other_than_the_data_sets_is_refused(world, tmp_path, capsys):
    _, _, data, _, _ = world
    args = _train_args(data, tmp_path / "run")
    args[args.index("smoke")] = "lab"
    assert main(args) == 2
    _one_line_error(capsys, f"{data}: built with profile 'smoke', but the run uses profile 'lab'")
    assert not (tmp_path / "run").exists()


def test_workers_are_capped_at_the_usable_cores(world, tmp_path, capsys, cache_env, monkeypatch):
    root, manifest, data, _, _ = world
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    assert main(["data", "build", "--manifest", str(manifest), "--root", str(root), "--out", str(tmp_path / "d"),
                 "--profile", "smoke", "--workers", "1000"]) == 0
    err = capsys.readouterr().err
    assert err == "uadlab: warning: workers=1000 (--workers) is more than the 1 usable CPU core(s); using 1\n"
    assert _digest(tmp_path / "d") == _digest(data)


# --------------------------------------------------------------------------------------------------
# Silently wrong data


@pytest.mark.parametrize("defect", ["empty lesion", "lesion outside the brain", "label -1", "image all zero"])
def test_data_build_refuses_what_data_check_reports(tmp_path, capsys, cache_env, defect):
    manifest = write_fake_real(tmp_path / "root", name="contract")
    case = tmp_path / "root" / "lesion" / "case1"
    seg = np.asanyarray(nib.load(case / "seg.nii.gz").dataobj).astype(np.int16)
    if defect == "empty lesion":
        seg[:] = 0
    elif defect == "lesion outside the brain":
        seg[:] = 0
        seg[0:5, 0:5, 0:5] = 1  # a corner of the box: the brain is an ellipsoid in the middle
    elif defect == "label -1":
        seg[10:12, 20:22, 20:22] = -1
    if defect == "image all zero":
        save_nifti(case / "t1.nii.gz", np.zeros(FAKE_SHAPE, np.float32))
    else:
        save_nifti(case / "seg.nii.gz", seg)
    message = {"empty lesion": "case1 (brats): lesion mask is empty",
               "lesion outside the brain": "case1 (brats): lesion mask lies entirely outside the brain mask",
               "label -1": "seg.nii.gz: holds label(s) -1 outside the documented set",
               "image all zero": "t1.nii.gz: image is all zero inside the brain mask"}[defect]
    assert main(["data", "check", "--manifest", str(manifest), "--root", str(tmp_path / "root")]) == 1
    assert message in capsys.readouterr().err
    assert main(["data", "build", "--manifest", str(manifest), "--root", str(tmp_path / "root"),
                 "--out", str(tmp_path / "data"), "--profile", "smoke"]) == 2
    _one_line_error(capsys, message)
    assert not (tmp_path / "data").exists()


@pytest.mark.slow  # a second build and training
def test_a_lesion_lost_on_the_built_grid_is_recorded_and_not_scored(tmp_path, capsys, monkeypatch):
    """Preprocessing keeps at least the voxel of highest overlap of any lesion inside the brain, so
    the loss is simulated; what is tested is that it is recorded, warned about and never scored 0."""
    monkeypatch.setenv("UADLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(preprocessing, "_lesion_threshold", lambda fraction: np.zeros(fraction.shape, bool))
    manifest = write_fake_real(tmp_path / "root", name="contract")
    with pytest.warns(UadlabWarning, match="has no voxel on the built grid"):
        data = build_dataset(manifest, tmp_path / "data", root=tmp_path / "root", profile="smoke")
    info = load_dataset(data).info
    assert len(info["warnings"]) == 2 and all("it is not scored" in w for w in info["warnings"])
    run = train(TrainConfig(experiment="3D-None", profile="smoke", data=str(data), max_epochs=1, device="cpu"),
                tmp_path / "run").run_dir
    code = main(["evaluate", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert code == 2 and "no test subject has a lesion voxel to score" in err
    assert "uadlab: warning: " in err and "not scored: case" in err


def test_an_unfinished_run_is_evaluated_with_a_warning_and_recorded(world, tmp_path, capsys):
    _, _, data, _, _ = world
    dataset = load_dataset(data)
    images, masks = dataset.stack(dataset.ids(cohort="healthy", split="train"))
    val, _ = dataset.stack(dataset.ids(cohort="healthy", split="val"))
    config = TrainConfig(experiment="3D-None", profile="smoke", data=str(data), max_epochs=3, patience=3,
                         device="cpu")
    run = training._prepare_run_dir(config, tmp_path / "run", resume=False, overwrite=False)
    training._train_arrays(config, run, images, masks, val, _stop_after_epoch=1)
    assert main(["evaluate", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "eval")]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"uadlab: warning: {run}: training did not finish")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["training"] == {"epochs": 1, "best_epoch": 1, "max_epochs": 3, "finished": False}
    assert metrics["unscored_subjects"] == [] and metrics["data_warnings"] == []


# --------------------------------------------------------------------------------------------------
# One line instead of a traceback


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_during_data_build_is_one_line_and_leaves_nothing(world, tmp_path, capsys, cache_env,
                                                                      monkeypatch):
    root, manifest, _, _, _ = world
    monkeypatch.setattr(nib, "save", _enospc)
    assert main(["data", "build", "--manifest", str(manifest), "--root", str(root), "--out", str(tmp_path / "d"),
                 "--profile", "smoke"]) == 2
    _one_line_error(capsys, "No space left on device", str(tmp_path / "d"))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".d.lock"]


def _torch_full_disk(*args, **kwargs):
    """How torch's zip writer reports a full disk (measured: a 3 MB tmpfs as --out)."""
    raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 2636032 vs 2635920")


@pytest.mark.parametrize(("save", "needles"), [
    (_enospc, ("No space left on device",)),
    (_torch_full_disk, ("checkpoint.pt: writing the checkpoint failed", "is the disk full?")),
], ids=["OSError", "torch RuntimeError"])
def test_a_full_disk_during_training_keeps_the_previous_checkpoint(world, tmp_path, capsys, monkeypatch, save,
                                                                   needles):
    _, _, data, _, _ = world
    dataset = load_dataset(data)
    images, masks = dataset.stack(dataset.ids(cohort="healthy", split="train"))
    val, _ = dataset.stack(dataset.ids(cohort="healthy", split="val"))
    config = TrainConfig(experiment="3D-None", profile="smoke", data=str(data), max_epochs=3, device="cpu")
    run = training._prepare_run_dir(config, tmp_path / "run", resume=False, overwrite=False)
    training._train_arrays(config, run, images, masks, val, _stop_after_epoch=1)  # as if killed after epoch 1
    before = _digest(run)
    monkeypatch.setattr(torch, "save", save)
    assert main(_train_args(data, run, "--resume", "--max-epochs", "3")) == 2
    _one_line_error(capsys, *needles, str(run))
    assert _digest(run) == before


def test_a_read_only_folder_is_one_line(world, tmp_path, capsys, monkeypatch):
    """Permissions do not bind root (tests may run as root), so the refusal is simulated where uadlab
    creates folders."""
    _, _, data, run, _ = world
    target = tmp_path / "ro" / "eval"

    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert main(["evaluate", "--run", str(run), "--data", str(data), "--out", str(target)]) == 2
    _one_line_error(capsys, f"{tmp_path / 'ro'}: Permission denied")


@pytest.mark.parametrize("damage", ["entry is a folder", "cache is a file", "disk full"])
def test_a_broken_cache_falls_back_to_building_without_it(world, tmp_path, monkeypatch, damage):
    root, manifest, data, _, _ = world
    cache = tmp_path / "cache"
    if damage == "cache is a file":
        cache.write_text("not a folder")
    elif damage == "disk full":
        monkeypatch.setattr(np, "savez_compressed", _enospc)
    else:
        build_dataset(manifest, tmp_path / "first", root=root, profile="smoke", cache_dir=cache)
        for entry in cache.iterdir():
            entry.unlink()
            entry.mkdir()
    with pytest.warns(UadlabWarning, match="cannot write the preprocessing cache.*continuing without it") as caught:
        out = build_dataset(manifest, tmp_path / "data", root=root, profile="smoke", cache_dir=cache)
    assert len(caught) == 1  # once, not once per subject
    assert _digest(out) == _digest(data)


def _huge_header(path: Path, shape: tuple[int, int, int]) -> None:
    """A gzipped NIfTI whose header declares ``shape`` but holds 8 voxels."""
    image = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    raw = bytearray(image.header.binaryblock) + b"\0" * 4 + np.zeros(8, np.float32).tobytes()
    raw[40:56] = np.array([3, *shape, 1, 1, 1, 1], dtype="<i2").tobytes()  # dim[0..7]
    with gzip.open(path, "wb") as handle:
        handle.write(bytes(raw))


def test_huge_headers_and_voxels_are_refused_before_allocating(tmp_path, capsys, cache_env):
    manifest = write_fake_real(tmp_path / "root", name="contract")
    _huge_header(tmp_path / "root" / "healthy" / "sub0.nii.gz", (32767, 32767, 32767))
    save_nifti(tmp_path / "root" / "healthy" / "sub1.nii.gz", fake_scan(np.random.default_rng(0))[0],
          np.diag([1000.0, 1000.0, 1000.0, 1.0]))
    assert main(["data", "check", "--manifest", str(manifest), "--root", str(tmp_path / "root")]) == 1
    err = capsys.readouterr().err
    assert "sub0.nii.gz: header declares shape (32767, 32767, 32767)" in err
    assert "sub1.nii.gz: field of view [40000, 48000, 40000] mm" in err
    assert main(["data", "build", "--manifest", str(manifest), "--root", str(tmp_path / "root"),
                 "--out", str(tmp_path / "data"), "--profile", "smoke"]) == 2
    built = capsys.readouterr().err  # every problem, as data check lists them
    assert built.startswith("uadlab: error: manifest 'contract': 2 problem(s)") and "Traceback" not in built
    assert "sub0.nii.gz: header declares shape (32767, 32767, 32767)" in built and "sub1.nii.gz: field of" in built
    assert not (tmp_path / "data").exists()


def test_a_missing_cuda_device_is_one_line(world, tmp_path, capsys):
    _, _, data, _, _ = world
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    args = _train_args(data, tmp_path / "run")
    args[args.index("cpu")] = f"cuda:{n}"
    assert main(args) == 2
    _one_line_error(capsys, f"`device` must be a device of this machine, got 'cuda:{n}'")
    assert not (tmp_path / "run").exists()


def test_output_piped_into_a_reader_that_stops_is_quiet(world, tmp_path):
    root, manifest, _, _, cache = world
    process = subprocess.Popen([sys.executable, "-m", "uadlab.cli", "data", "check", "--manifest", str(manifest),
                                "--root", str(root)], env=_env(cache), cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()  # like `| head -0`: the reader is gone before anything is printed
    code = process.wait(timeout=120)
    err = process.stderr.read().decode()
    assert code == 141 and err == "", err


# --------------------------------------------------------------------------------------------------
# Repeatability


def test_a_seeded_train_twice_is_bit_identical_apart_from_seconds(world, tmp_path, capsys):
    _, _, data, _, _ = world
    for name in ("a", "b"):
        assert main(_train_args(data, tmp_path / name, "--seed", "5", "--max-epochs", "2")) == 0
    a, b = (torch.load(tmp_path / n / "checkpoint.pt", weights_only=True) for n in ("a", "b"))
    for key in ("model", "best_model"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    history_a, history_b = (pd.read_csv(tmp_path / n / "history.csv") for n in ("a", "b"))
    assert len(history_a) == 2
    pd.testing.assert_frame_equal(history_a.drop(columns="seconds"), history_b.drop(columns="seconds"))
    assert (tmp_path / "a" / "config.yaml").read_bytes() == (tmp_path / "b" / "config.yaml").read_bytes()


# --- every study, the same guards (bengs2021, lambert2021, behrendt2024, a study file) -------------------

STUDY_KINDS = ["bengs2021", "lambert2021", "behrendt2024", "file"]


def _study_args(kind: str, tmp_path: Path) -> list[str]:
    """``--study ...`` of each kind; a study file on the phantom (nothing to check on disk)."""
    if kind != "file":
        return ["--study", kind]
    study = tmp_path / "phantom_study.yaml"
    study.write_text(f"name: guard\ntrain: {{manifest: {REPO / 'data_manifests' / 'phantom.yaml'}}}\n"
                     "experiments: [3D-None]\n")
    return ["--study", str(study)]


def _tables_folder(kind: str, out: Path) -> tuple[Path, str]:
    """Where a study of ``kind`` writes its tables, and its first table's name."""
    if kind in ("lambert2021", "behrendt2024"):
        return out / kind, f"{kind}.csv"
    return out, "table1.csv"


@pytest.mark.parametrize("kind", STUDY_KINDS)
@pytest.mark.parametrize("table", [0, 1])
def test_every_study_keeps_a_table_it_did_not_write(kind, table, tmp_path, capsys):
    out = tmp_path / "results"
    folder, first = _tables_folder(kind, out)
    name = first if table == 0 else first.replace(".csv", ".md")
    folder.mkdir(parents=True)
    (folder / name).write_text("mine\n")
    for extra in ([], ["--seeds", "0,1"]):
        assert main(["reproduce", *_study_args(kind, tmp_path), "--profile", "smoke", "--out", str(out), *extra]) == 2
        _one_line_error(capsys, f"{folder / name}: exists and was not written by `uadlab reproduce`", "--overwrite")
    assert sorted(p.name for p in folder.iterdir()) == [name] and (folder / name).read_text() == "mine\n"


@pytest.mark.parametrize("kind", STUDY_KINDS)
def test_no_study_writes_into_a_data_set_or_a_run(kind, world, tmp_path, capsys):
    _, _, data, run, _ = world
    for folder, what in ((data, "a built data set (dataset.json)"), (run, "a training run (config.yaml)")):
        before = _digest(folder)
        assert main(["reproduce", *_study_args(kind, tmp_path), "--profile", "smoke", "--out", str(folder)]) == 2
        _one_line_error(capsys, f"{folder}: holds {what}")
        assert _digest(folder) == before


def test_a_study_never_replaces_another_studys_tables(tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "table1.csv").write_text("bengs2021's\n")
    (out / "reproduce.json").write_text(json.dumps({"study": "bengs2021"}))
    assert main(["reproduce", *_study_args("file", tmp_path), "--out", str(out)]) == 2
    _one_line_error(capsys, f"{out / 'table1.csv'}: written by another study (bengs2021)", "--overwrite")
    assert (out / "table1.csv").read_text() == "bengs2021's\n"


@pytest.mark.parametrize("kind", STUDY_KINDS)
def test_a_study_waits_for_a_folder_another_process_writes_and_gives_up_with_one_line(kind, tmp_path, capsys,
                                                                                      monkeypatch):
    out = tmp_path / "results"
    data = out / "data" / "phantom" if kind == "file" else out / "data"  # the study's first write: its data set
    monkeypatch.setattr(study_context, "LOCK_WAIT_S", 0.5)
    with LockHolder(data):  # another study (or lab) building it
        assert main(["reproduce", *_study_args(kind, tmp_path), "--profile", "smoke", "--out", str(out)]) == 2
    warning, error = capsys.readouterr().err.splitlines()
    assert warning.startswith(f"uadlab: warning: {data}: in use by another uadlab process; waiting for it"), warning
    assert error == (f"uadlab: error: {data}: still in use by another uadlab process after 0.5 s (lock .{data.name}"
                     ".lock); run again to wait longer, or choose another folder")
    assert not data.exists()


@pytest.mark.parametrize(("flag", "value", "message"), [
    ("--data", "phantom.yaml", "--data: not for a study file, which names its own data sets"),
    ("--root", "somewhere", "--root: not for a study file"),
    ("--val-data", "somewhere", "--val-data: not for a study file"),
    ("--labelled-cases", "1", "uadlab: error: --labelled-cases is for protocol behrendt2024, not bengs2021"),
])
def test_a_study_file_refuses_options_it_would_ignore(flag, value, message, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["reproduce", *_study_args("file", tmp_path), "--out", str(out), flag, value]) == 2
    _one_line_error(capsys, message)
    assert not out.exists()


def test_a_study_file_takes_seed_and_overwrite(tmp_path, capsys, monkeypatch):
    args = ["reproduce", *_study_args("file", tmp_path), "--out", str(tmp_path / "results")]
    assert main([*args, "--seed", "3", "--plan"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("--seed ")[1].split()[0] for line in lines if "--only-run" in line] == ["3"]
    asked = {}

    def build(*args, **kwargs):  # stands in for the build: records what it was asked, then stops the study
        asked.update(kwargs)
        raise DatasetError("stop here")

    monkeypatch.setattr(study_context, "build_dataset", build)
    assert main([*args, "--profile", "lab", "--overwrite"]) == 2
    assert asked["overwrite"] is True and asked["profile"] == "lab"


# --- a killed sweep: kill -9 of a run or of the driver, then the same command ------------------------------

SWEEP = ["3D-None", "mean-image:3D-None"]


def _sweep_args(data: Path, out: Path) -> list[str]:
    return ["reproduce", "--profile", "smoke", "--data", str(data), "--out", str(out), "--experiments",
            ",".join(SWEEP), "--seeds", "0,1", "--jobs", "2"]


def _processes_writing(out: Path, *, marker: str = "") -> list[int]:
    """Processes whose command line names ``out`` (and ``marker``), from Linux's ``/proc``."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:  # ended meanwhile
            continue
        if str(out).encode() in cmdline and marker.encode() in cmdline:
            found.append(int(proc.name))
    return found


def _wait(condition, deadline: float) -> None:
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.1)


@pytest.mark.slow  # about two minutes: the sweep (2 models x 2 seeds) started three times
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="runs die with their driver on Linux")
def test_a_killed_sweep_finishes_on_rerun_without_retraining_a_finished_run(blob_dataset, tmp_path, monkeypatch,
                                                                             one_thread):
    out = tmp_path / "out"
    args, deadline = _sweep_args(blob_dataset, out), time.monotonic() + 480
    command = [sys.executable, "-m", "uadlab.cli", "-q", *args]

    def finished() -> dict[Path, int]:
        return {p: (p / "checkpoint.pt").stat().st_mtime_ns for p in out.glob("runs/*/seed*")
                if (p / "checkpoint.pt").exists() and training.run_status(p)["finished"]}

    # kill -9 of the driver once a run has finished: its runs die with it
    driver = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    _wait(lambda: finished() or driver.poll() is not None, deadline)
    driver.kill()
    assert driver.wait() == -9, "the sweep ended before it could be killed"
    _wait(lambda: not _processes_writing(out), deadline)
    assert not _processes_writing(out), "a run outlived its driver"
    done = finished()
    assert 0 < len(done) < 4

    # the same command, and kill -9 of one of its runs: the driver names it and its log in one line
    driver = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    _wait(lambda: _processes_writing(out, marker="--only-run") or driver.poll() is not None, deadline)
    os.kill(_processes_writing(out, marker="--only-run")[0], 9)
    assert driver.wait() == 2
    err = driver.stderr.read()
    assert err.startswith("uadlab: error: 1 run(s) failed: ") and "(log " in err and err.count("\n") == 1, err
    assert {p: t for p, t in finished().items() if p in done} == done  # finished runs untouched

    # the same command again finishes the sweep; its runs train only what was not finished
    trained = []

    def counting_train(config, run_dir, **kwargs):
        trained.append(Path(run_dir))  # the driver trains nothing: its runs did
        return real_train(config, run_dir, **kwargs)

    real_train = study_context.train
    monkeypatch.setattr(study_context, "train", counting_train)
    assert main(args) == 0
    assert len(finished()) == 4 and {p: t for p, t in finished().items() if p in done} == done
    assert all(training.run_status(p)["finished"] for p in trained)  # the driver only read finished runs
    assert len(pd.read_csv(out / "table1_seeds.csv")) == 2 * 2 * 2
    for path in out.rglob("*.json"):  # every visible file is whole
        if not path.name.startswith("."):
            json.loads(path.read_text())


# --- one line for every mistake, everywhere (issue 28) -----------------------------------------------------

def test_the_command_line_names_flags_not_python_arguments(tmp_path, capsys):
    assert main(["reproduce", "--study", "lambert2021", "--out", str(tmp_path / "o"), "--labelled-cases", "1"]) == 2
    err = _one_line_error(capsys, "--labelled-cases is for behrendt2024")
    assert "labelled_cases" not in err and "=True" not in err
    assert main(["reproduce", "--out", str(tmp_path / "o"), "--jobs", "2", "--only-run", "3D-None"]) == 2
    assert "`only_run`" not in _one_line_error(capsys, "--only-run executes one run here")


def test_version_and_argument_errors_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_code:
        main(["--version"])
    assert exit_code.value.code == 0 and capsys.readouterr().out == "uadlab 0.1.0\n"
    for argv, needle in ((["train", "--profile", "smoke"], "the following arguments are required: --experiment"),
                         ([], "the following arguments are required: command"),
                         (["reproduce", "--jobs", "two"], "argument --jobs: invalid int value: 'two'")):
        with pytest.raises(SystemExit) as exit_code:
            _cli_main(argv)
        assert exit_code.value.code == 2
        _one_line_error(capsys, needle, "-h` shows the usage")


@pytest.mark.parametrize("device", ["mps", "xpu", "meta", "cpu:7"])
def test_a_device_uadlab_does_not_run_on_is_refused_before_anything_is_written(world, tmp_path, capsys, device):
    _, _, data, _, _ = world
    assert main(["train", "--experiment", "3D-None", "--profile", "smoke", "--data", str(data),
                 "--out", str(tmp_path / "run"), "--device", device]) == 2
    _one_line_error(capsys, f"`device` must be 'cpu', 'cuda' or 'cuda:N' (what uadlab runs on), got {device!r}")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("extra", "message"), [
    (["--model", ""], "`model` must name a registered model"),
    (["--experiment", "mean-image:3D-None", "--compile"], "uadlab: error: --compile has nothing to compile"),
])
def test_options_that_would_be_ignored_are_refused(world, tmp_path, capsys, extra, message):
    _, _, data, _, _ = world
    args = ["train", "--experiment", "3D-None", "--profile", "smoke", "--data", str(data), "--out", str(tmp_path / "r")]
    assert main([*args, *extra]) == 2
    _one_line_error(capsys, message)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("seed", ["-3", "12345678901234567890"])
def test_a_plan_with_a_bad_seed_is_refused_before_planning(tmp_path, capsys, seed):
    assert main(["reproduce", "--out", str(tmp_path / "out"), "--seed", seed, "--plan"]) == 2
    _one_line_error(capsys, "`seeds` must be distinct integers in [0, 2**32)")
    assert not (tmp_path / "out").exists() and capsys.readouterr().out == ""


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("OMP_NUM_THREADS", "0", "a positive integer"), ("OMP_NUM_THREADS", "-3", "a positive integer"),
    ("UADLAB_PROCESSES", "abc", "a positive integer"), ("UADLAB_ADAPTIVE_THREADS", "off", "0 or 1"),
])
def test_a_bad_thread_variable_is_one_warning_line(monkeypatch, tmp_path, capsys, name, value, expected):
    monkeypatch.setenv(name, value)
    assert main(["data", "check", "--manifest", str(tmp_path / "no.yaml"), "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"uadlab: warning: {name}={value!r} is not {expected}; ignored (this process "
                             "uses ") and err[1].startswith("uadlab: error: ") and len(err) == 2


def test_a_bad_omp_num_threads_never_reaches_libgomp(world, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "abc"}
    env.pop("UADLAB_THREADS_SET", None)
    done = subprocess.run([sys.executable, "-m", "uadlab.cli", "-q", "train", "--experiment", "3D-None", "--profile",
                           "smoke", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 2 and "libgomp" not in done.stderr
    assert done.stderr.startswith("uadlab: warning: OMP_NUM_THREADS='abc' is not a positive integer")


def test_a_killed_builds_leftovers_are_removed_by_the_next_build(world, tmp_path, cache_env):
    root, manifest, _, _, cache = world
    leftovers = [tmp_path / "data.partial-0123abcd", tmp_path / "data.old-89abcdef"]
    for folder in leftovers:
        folder.mkdir()
        (folder / "subjects.csv").write_text("half")
    mine = tmp_path / "data.partial-notes"  # not a build's name: kept
    mine.mkdir()
    build_dataset(manifest, tmp_path / "data", root=root, profile="smoke", cache_dir=cache)
    assert not any(folder.exists() for folder in leftovers) and mine.is_dir()


@pytest.mark.parametrize("kind", STUDY_KINDS)
def test_every_study_refuses_an_out_that_is_a_file(kind, tmp_path, capsys):
    a_file = tmp_path / "afile"
    a_file.write_text("mine")
    assert main(["reproduce", *_study_args(kind, tmp_path), "--profile", "smoke", "--out", str(a_file)]) == 2
    _one_line_error(capsys, f"{a_file}: exists and is not a folder; choose another --out")
    assert a_file.read_text() == "mine"


def test_labelled_cases_outside_behrendt2024_or_below_zero_are_refused(tmp_path, capsys):
    assert main(["reproduce", "--out", str(tmp_path / "o"), "--labelled-cases", "-7"]) == 2
    _one_line_error(capsys, "uadlab: error: --labelled-cases is for behrendt2024, not bengs2021")
    assert main(["reproduce", "--study", "behrendt2024", "--out", str(tmp_path / "o"), "--labelled-cases", "-7"]) == 2
    _one_line_error(capsys, "`labelled_cases` must be an int >= 0, got -7")
    assert not (tmp_path / "o").exists()


def test_data_fetch_checks_its_out_before_any_download(tmp_path, capsys, monkeypatch):
    from uadlab.data import fetch as fetch_module

    def no_network(*args, **kwargs):
        raise AssertionError("downloaded before the folder was checked")

    monkeypatch.setattr(fetch_module, "_download", no_network)
    assert main(["data", "fetch", "ixi", "--out", ""]) == 2
    _one_line_error(capsys, "uadlab: error: --out must name a folder, got ''")
    a_file = tmp_path / "afile"
    a_file.write_text("mine")
    assert main(["data", "fetch", "ixi", "--out", str(a_file)]) == 2
    _one_line_error(capsys, f"{a_file}: exists and is not a folder; choose another --out")

    def read_only(*args, dir=None, **kwargs):  # permissions do not bind root: simulated
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))

    monkeypatch.setattr(fetch_module.tempfile, "NamedTemporaryFile", read_only)
    assert main(["data", "fetch", "ixi", "--out", str(tmp_path / "ro")]) == 2
    _one_line_error(capsys, f"{tmp_path / 'ro'}: Permission denied")


def test_data_build_reports_every_problem_data_check_finds(world, tmp_path, capsys, cache_env):
    root = shutil.copytree(world[0], tmp_path / "root")
    manifest = root / world[1].name
    (root / "lesion" / "case0" / "seg.nii.gz").unlink()  # found when the cases are discovered
    (root / "healthy" / "sub1.nii.gz").write_bytes(b"garbage")  # found when it is read
    save_nifti(root / "lesion" / "case1" / "brain_mask.nii.gz", np.zeros(FAKE_SHAPE, np.uint8))  # likewise
    assert main(["data", "check", "--manifest", str(manifest), "--root", str(root)]) == 1
    checked = capsys.readouterr().err
    assert main(["data", "build", "--manifest", str(manifest), "--root", str(root), "--out", str(tmp_path / "d"),
                 "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("uadlab: error: manifest 'contract': 3 problem(s) under ")
    assert [line for line in err.splitlines() if line.startswith("  - ")] == [
        line for line in checked.splitlines() if line.startswith("  - ")]
    assert not (tmp_path / "d").exists()

