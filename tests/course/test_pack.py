"""Tests of uadlab.course.pack: prepare (record, resume, refusals), verify (damage, mismatch), lend (links only).

Packs here come from stand-in labs that write a small results folder; labs reading a real smoke pack,
read-only, are tested with the notebooks (tests/integration/test_notebooks.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest
from conftest import set_writable, tree_snapshot

import uadlab
from uadlab.course import NO_PACK, PACK_FILE, PACK_VARIABLE, prepare_pack, use_pack, verify_pack
from uadlab.errors import PackError
from uadlab.layout import RUN_CHECKPOINT
from uadlab.profiles import get_profile

#: The files the stand-in labs write (relative path -> content), for SEED 0.
FILES = {
    "data/dataset.json": '{"name": "phantom"}\n',
    "data/subjects.csv": "subject_id\nh0\n",
    "data/images/h0.nii.gz": "volume bytes",
    "runs/2D-None/seed0/config.yaml": "experiment: 2D-None\n",
    "runs/2D-None/seed0/checkpoint.pt": "weights " * 100,
    "runs/2D-None/seed0/history.csv": "epoch\n1\n",
    "evaluation/2D-None/seed0/metrics.json": '{"dice_d": 0.5}\n',
    "evaluation/2D-None/seed0/subjects.csv": "subject_id\nt0\n",
    "07_recon_plus_supervised/study/behrendt2024/runs/ddpm_2D-None/seed0/checkpoint.pt": "ddpm weights",
    "table1.csv": "experiment\n2D-None\n",
    "01_vae_2d/metrics.json": "{}\n",
    ".data.lock": "",  # hidden: a lock file, never listed
}


def fake_labs(out: Path, seed: int) -> None:
    """Stand-in for the labs: the results folder they write (runs under ``seed<seed>``)."""
    for rel, text in FILES.items():
        path = out / rel.replace("seed0", f"seed{seed}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def pack(tmp_path, monkeypatch):
    """A complete pack of the stand-in labs (profile smoke, SEED 0)."""
    monkeypatch.delenv(PACK_VARIABLE, raising=False)
    prepare_pack(tmp_path / "pack", fake_labs, profile="smoke")
    return tmp_path / "pack"


# ----------------------------------------------------------------------------------------------
# prepare_pack
# ----------------------------------------------------------------------------------------------

def test_prepare_records_every_file_with_its_size_and_sha256(pack):
    record = json.loads((pack / PACK_FILE).read_text())
    assert record["complete"] is True and record["format"] == 1
    assert (record["profile"], record["seeds"], record["uadlab_version"]) == ("smoke", [0], uadlab.__version__)
    assert record["settings"] == json.loads(json.dumps(asdict(get_profile("smoke"))))
    assert record["root"] == os.path.realpath(pack)
    assert sorted(record["files"]) == sorted(rel for rel in FILES if not rel.startswith("."))
    for rel, entry in record["files"].items():
        data = (pack / rel).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_prepare_runs_the_labs_once_per_seed(tmp_path, monkeypatch):
    monkeypatch.delenv(PACK_VARIABLE, raising=False)
    calls = []
    result = prepare_pack(tmp_path / "pack", lambda out, seed: calls.append(seed) or fake_labs(out, seed),
                          profile="smoke", seeds=[0, 2])
    assert calls == [0, 2] and result.seeds == (0, 2)
    listed = [p for p in (tmp_path / "pack").rglob("*") if p.is_file() and p.name[0] != "." and p.name != PACK_FILE]
    assert "runs/2D-None/seed2/checkpoint.pt" in result.files and result.size == sum(p.stat().st_size for p in listed)


def test_a_stopped_prepare_is_refused_by_verify_and_continued_by_prepare(tmp_path, monkeypatch):
    monkeypatch.delenv(PACK_VARIABLE, raising=False)
    out = tmp_path / "pack"

    def stopped(folder, seed):
        (folder / "runs").mkdir(parents=True)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prepare_pack(out, stopped, profile="smoke")
    with pytest.raises(PackError, match=rf"{out / PACK_FILE}: an incomplete pack \(its `uadlab course prepare` "
                                        r"stopped\)"):
        verify_pack(out)
    assert prepare_pack(out, fake_labs, profile="smoke").files  # continued in the same folder, not refused
    assert verify_pack(out, full=True).profile == "smoke"


def test_prepare_refuses_a_folder_it_must_not_fill(tmp_path, monkeypatch, pack):
    other = tmp_path / "results"
    (other / "runs").mkdir(parents=True)
    with pytest.raises(PackError, match=rf"{other}: not empty and not a course pack \(no pack.json\); .* "
                                        r"reuse=True \(--reuse\)"):
        prepare_pack(other, fake_labs, profile="smoke")
    assert prepare_pack(other, fake_labs, profile="smoke", reuse=True).files  # kept, and made a pack
    with pytest.raises(PackError, match=rf"{pack / PACK_FILE}: a pack of profile 'smoke', seeds \[0\].* this one "
                                        r"would be profile 'lab', seeds \[0\]: choose another --out"):
        prepare_pack(pack, fake_labs, profile="lab")
    with pytest.raises(PackError, match=r"seeds \[0, 1\]: choose another --out"):
        prepare_pack(pack, fake_labs, profile="smoke", seeds=[0, 1])
    (tmp_path / "file").write_text("x")
    with pytest.raises(PackError, match="exists and is not a folder"):
        prepare_pack(tmp_path / "file", fake_labs, profile="smoke")
    student = tmp_path / "student"
    use_pack(pack, student, profile="smoke", seed=0)
    with pytest.raises(PackError, match=r"a symbolic link \(a folder that reads a course pack\?\)"):
        prepare_pack(student, fake_labs, profile="smoke", reuse=True)
    monkeypatch.setenv(PACK_VARIABLE, str(pack))
    with pytest.raises(PackError, match=f"{PACK_VARIABLE}={pack}: set, so the labs would read that pack"):
        prepare_pack(tmp_path / "new", fake_labs, profile="smoke")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(("seeds", "error"), [([], ValueError), ([0, 0], ValueError), ([-1], ValueError),
                                              ("0", TypeError), ([True], ValueError)])
def test_prepare_checks_the_seeds(tmp_path, seeds, error):
    with pytest.raises(error, match="`seeds` must be"):
        prepare_pack(tmp_path / "pack", fake_labs, profile="smoke", seeds=seeds)
    assert not (tmp_path / "pack").exists()


# ----------------------------------------------------------------------------------------------
# verify_pack
# ----------------------------------------------------------------------------------------------

def test_a_missing_or_truncated_file_or_an_edited_record_is_found_at_every_start(pack):
    record = pack / PACK_FILE
    history = pack / "runs/2D-None/seed0/history.csv"
    history.write_text(history.read_text().replace("1", "2"))  # same size, another record
    with pytest.raises(PackError, match=rf"^{history}: its sha256 is not the one pack.json lists; the pack is "
                                        rf"damaged \({record} lists every file\)"):
        verify_pack(pack)
    history.write_text(FILES["runs/2D-None/seed0/history.csv"])
    checkpoint = pack / "runs/2D-None/seed0/checkpoint.pt"
    checkpoint.write_text("x")
    (pack / "data/images/h0.nii.gz").unlink()
    with pytest.raises(PackError, match=rf"^{pack / 'data/images/h0.nii.gz'}: missing \(2 damaged files in all\)"):
        verify_pack(pack)
    (pack / "data/images/h0.nii.gz").write_text(FILES["data/images/h0.nii.gz"])
    with pytest.raises(PackError, match=rf"^{checkpoint}: 1 bytes, pack.json lists 800"):
        verify_pack(pack)


def test_full_verification_hashes_weights_and_volumes_too(pack):
    checkpoint = pack / "runs/2D-None/seed0/checkpoint.pt"
    checkpoint.write_text(checkpoint.read_text().upper())  # same size
    assert verify_pack(pack).root == pack.resolve()  # the start's check: weights by size
    with pytest.raises(PackError, match=rf"{checkpoint}: its sha256 is not the one pack.json lists"):
        verify_pack(pack, full=True)


def test_a_mismatched_or_moved_pack_is_refused_in_one_line(pack, tmp_path, monkeypatch):
    record = pack / PACK_FILE
    with pytest.raises(PackError, match=rf"^{record}: a pack of profile 'smoke', the lab runs profile 'lab'; set the "
                                        r"lab's PROFILE to 'smoke', or PACK to 'none' to train your own$"):
        verify_pack(pack, profile="lab")
    custom = get_profile("smoke").__class__(**{**asdict(get_profile("smoke")), "max_epochs": 3})
    with pytest.raises(PackError, match=rf"^{record}: prepared with other settings of profile 'smoke' than the lab's "
                                        r"\(max_epochs\); prepare the pack again$"):
        verify_pack(pack, profile=custom)
    with pytest.raises(PackError, match=rf"^{record}: holds the runs of SEED 0, the lab's SEED is 1; set SEED to one "
                                        r"of them, or PACK to 'none' to train your own$"):
        verify_pack(pack, seed=1)
    version = uadlab.__version__
    monkeypatch.setattr(uadlab, "__version__", "9.9")
    with pytest.raises(PackError, match=rf"^{record}: prepared by uadlab {version}, this is uadlab 9.9; prepare"):
        verify_pack(pack)
    monkeypatch.undo()
    moved = pack.rename(tmp_path / "moved")
    pack.symlink_to(moved)  # the folder it was prepared in, now a link to where it lies: the same folder
    assert verify_pack(moved).root == verify_pack(pack).root == moved.resolve()
    pack.unlink()
    with pytest.raises(PackError, match=rf"^{moved / PACK_FILE}: prepared in {pack}, read from {moved}; its runs name "
                                        "their data set by path"):
        verify_pack(moved)
    with pytest.raises(PackError, match=rf"{tmp_path / 'none' / PACK_FILE}: missing; not a course pack"):
        verify_pack(tmp_path / "none")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / PACK_FILE).write_text("[1]")
    with pytest.raises(PackError, match="not a course pack record of format 1"):
        verify_pack(tmp_path / "bad")


# ----------------------------------------------------------------------------------------------
# use_pack
# ----------------------------------------------------------------------------------------------

def test_use_pack_lends_data_runs_and_evaluations_by_links_and_writes_nothing_in_the_pack(pack, tmp_path):
    before = tree_snapshot(pack)
    set_writable(pack, False)
    student = tmp_path / "student"
    try:
        assert use_pack(pack, student, profile="smoke", seed=0).root == pack.resolve()
        assert use_pack(str(pack), student, profile=get_profile("smoke"), seed=0) is not None  # again: no change
    finally:
        set_writable(pack, True)
    assert tree_snapshot(pack) == before
    links = {p.relative_to(student).as_posix(): Path(os.readlink(p)) for p in student.rglob("*") if p.is_symlink()}
    assert links == {
        "data": pack.resolve() / "data",  # the data set: one link to its folder
        **{rel: pack.resolve() / rel for rel in FILES if "/runs/" in f"/{rel}" or rel.startswith("evaluation/")},
    }
    assert not any(p.is_symlink() for p in student.rglob("*") if p.is_dir() and p.name != "data")  # real folders
    assert not (student / "table1.csv").exists() and not (student / "01_vae_2d").exists()  # made by the labs


def test_use_pack_keeps_what_the_student_made_and_re_points_old_links(pack, tmp_path):
    student = tmp_path / "student"
    own_run = student / "runs/2D-None/seed0"
    own_run.mkdir(parents=True)
    (own_run / RUN_CHECKPOINT).write_text("the student's own run")
    (student / "evaluation/2D-None/seed0").mkdir(parents=True)
    os.symlink(tmp_path / "old-pack/metrics.json", student / "evaluation/2D-None/seed0/metrics.json")
    use_pack(pack, student, profile="smoke", seed=0)
    assert sorted(p.name for p in own_run.iterdir()) == [RUN_CHECKPOINT]  # nothing lent into the student's run
    assert (own_run / RUN_CHECKPOINT).read_text() == "the student's own run"
    lent = student / "evaluation/2D-None/seed0/metrics.json"
    assert os.readlink(lent) == str(pack.resolve() / "evaluation/2D-None/seed0/metrics.json")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "data").mkdir(parents=True)
    with pytest.raises(PackError, match=rf"^{elsewhere / 'data'}: a data set of this OUT_DIR's own, but the pack's "
                                        "runs were trained on the pack's"):
        use_pack(pack, elsewhere, profile="smoke", seed=0)
    with pytest.raises(PackError, match=rf"{pack / 'student'}: inside the course pack {pack}"):
        use_pack(pack, pack / "student", profile="smoke", seed=0)


def test_use_pack_reads_the_environment_when_the_parameter_is_empty(pack, tmp_path, monkeypatch):
    monkeypatch.delenv(PACK_VARIABLE, raising=False)
    assert use_pack("", tmp_path / "a", profile="smoke", seed=0) is None and not (tmp_path / "a").exists()
    monkeypatch.setenv(PACK_VARIABLE, str(pack))
    assert use_pack("", tmp_path / "b", profile="smoke", seed=0).root == pack.resolve()
    assert (tmp_path / "b" / "data").is_symlink()
    assert use_pack(NO_PACK, tmp_path / "e", profile="lab", seed=1) is None and not (tmp_path / "e").exists()
    with pytest.raises(PackError, match="the lab runs profile 'lab'"):
        use_pack("", tmp_path / "c", profile="lab", seed=0)
    with pytest.raises(TypeError, match="`pack` must be a str or path, got None"):
        use_pack(None, tmp_path / "d", profile="smoke", seed=0)
