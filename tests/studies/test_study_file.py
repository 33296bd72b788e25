"""Tests of uadlab.studies: study files, `data check --study`, and a study end to end on fake real trees."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

import uadlab.data.dataset as data_module
from uadlab import profiles
from uadlab.cli import main
from uadlab.errors import DatasetError, ManifestError
from uadlab.studies import Behrendt2024, Bengs2021, Lambert2021, check_study, is_study_file, load_study, run_study

REPO = Path(__file__).resolve().parents[2]
PAPER_REAL = REPO / "studies" / "paper_real.yaml"
VOXEL_MM = 4.0  # stored on the smoke grid: no resampling work
SHAPE = (40, 48, 40)
RAS = np.diag([VOXEL_MM] * 3 + [1.0])
IXI_IDS = [f"IXI{i:03d}-{site}-{1000 + i}" for i, site in enumerate(["Guys", "HH", "IOP"] * 3)]
BRATS_IDS = ["BraTS19_2013_10_1", "BraTS19_CBICA_AAB_1", "BraTS19_TCIA01_131_1", "BraTS19_2013_0_1"]
ATLAS_IDS = ["c0001s0004t01", "c0001s0005t01", "c0003s0002t01", "c0003s0007t01"]


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), RAS), path)


def _brain(rng) -> tuple[np.ndarray, np.ndarray]:
    """A noisy ellipsoid brain (intensity about 80, below 150) and its mask."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), axis=-1)
    centre = np.array(SHAPE) / 2 + rng.uniform(-1, 1, 3)
    brain = (((grid - centre) / np.array([15.0, 19.0, 15.0])) ** 2).sum(axis=-1) <= 1.0
    image = np.clip(80 + 10 * rng.standard_normal(SHAPE), 1, 140).astype(np.float32) * brain
    return image, brain


def _lesion(rng, image: np.ndarray) -> np.ndarray:
    """A 4³ hypointense lesion inside the brain; returns the label volume."""
    x, y, z = rng.integers(15, 22), rng.integers(18, 26), rng.integers(15, 22)
    seg = np.zeros(SHAPE, np.uint8)
    seg[x:x + 4, y:y + 4, z:z + 4] = 1
    image[seg > 0] = 15.0
    return seg


def _fake_trees(base: Path, rng, *, skip=()) -> Path:
    """$UADLAB_DATA in the layouts of studies/paper_real.yaml: IXI (whole head), BraTS 2019, ATLAS R1.2."""
    for subject in IXI_IDS:
        image, _ = _brain(rng)
        scalp = ~np.pad(np.ones(np.subtract(SHAPE, 4), bool), 2)
        _save(base / "IXI" / "IXI-T1" / f"{subject}-T1.nii.gz", image + 200.0 * scalp)
    for i, subject in enumerate(BRATS_IDS):
        folder = base / "BraTS2019" / "MICCAI_BraTS_2019_Data_Training" / ("LGG" if i == 3 else "HGG") / subject
        image, _ = _brain(rng)
        seg = _lesion(rng, image)
        _save(folder / f"{subject}_t1.nii.gz", image)
        if f"{subject}_seg" not in skip:
            _save(folder / f"{subject}_seg.nii.gz", seg * 2)
    for subject in ATLAS_IDS:
        folder = base / "ATLAS" / "ATLAS_R1.2" / "native" / subject[:5] / subject[:10] / "t01"
        image, brain = _brain(rng)
        seg = _lesion(rng, image)
        _save(folder / f"{subject}_t1w_deface_stx.nii.gz", image)
        _save(folder / f"{subject}_LesionSmooth_stx.nii.gz", seg)
        if f"{subject}_mask" not in skip:
            _save(base / "ATLAS" / "brain_masks" / f"{subject}_mask.nii.gz", brain.astype(np.uint8))
    return base


def _fake_strip(image, affine, *, method):
    """Stands in for deepbet (minutes per volume): the fake scalp is brighter than any brain voxel."""
    return (image > 0) & (image < 150)


def _study(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(textwrap.dedent(text))
    return path


# --- loading ------------------------------------------------------------------------------------------

def test_shipped_paper_real_study_resolves_roots_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("UADLAB_DATA", str(tmp_path))
    study = load_study(PAPER_REAL)
    assert [d.name for d in study.sources] == ["ixi_t1", "brats2019", "atlas_v1_2"]
    assert [d.role for d in study.sources] == ["train", "test", "test"]
    assert study.sources[0].root == tmp_path / "IXI" and study.sources[2].root == tmp_path / "ATLAS"
    assert study.sources[0].manifest == REPO / "data_manifests" / "ixi_t1.yaml"
    assert study.profile == "lab" and study.seeds == (0, 1, 2) and study.protocol == "bengs2021"
    assert study.experiments == ["2D-None", "2D-Patch-n", "3D-None", "3D-Cube-n"]
    monkeypatch.delenv("UADLAB_DATA")
    with pytest.raises(ManifestError, match=r"paper_real.yaml: train.root: environment variable\(s\) "
                                            r"\['\$\{UADLAB_DATA\}'\] not set"):
        load_study(PAPER_REAL)


@pytest.mark.parametrize("path", sorted((REPO / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_study_loads(path, monkeypatch, tmp_path):
    monkeypatch.setenv("UADLAB_DATA", str(tmp_path))
    study = load_study(path)
    assert study.name == path.stem and study.sources[0].role == "train" and study.argument == str(path)


def test_shipped_phantom_study_needs_no_root():
    study = load_study(REPO / "studies" / "phantom.yaml")
    assert [d.name for d in study.sources] == ["phantom"] and study.sources[0].root is None
    assert check_study(study) == {"phantom": []}


BASE = """\
name: s
train: {manifest: %s, root: data}
"""


@pytest.mark.parametrize(("extra", "message"), [
    ("trian: 1\n", "trian: unknown key"),
    ("seeds: [0, 0]\n", "seeds: `seeds` must be distinct integers"),
    ("experiments: [3D-Sphere-n]\n", "experiments: "),
    ("profile: huge\n", "profile: profile must be one of ['lab', 'paper', 'smoke'], got 'huge'"),
    ("test: [{manifest: %s, rot: x}]\n", "test[0].rot: unknown key"),
    ("test: [{manifest: %s, root: y, val_data: nowhere}]\n", "val_data of 'brats2019' must name another data set"),
    ("test: [{manifest: %s, root: y}, {manifest: %s, root: z}]\n", "distinct manifest names, got ['brats2019']"),
])
def test_bad_study_files_are_refused_naming_file_and_key(tmp_path, extra, message):
    brats = str(REPO / "data_manifests" / "brats2019.yaml")
    text = BASE % (REPO / "data_manifests" / "ixi_t1.yaml") + extra.replace("%s", brats)
    with pytest.raises(ManifestError, match="study.yaml: ") as error:
        load_study(_study(tmp_path, text))
    assert message in str(error.value)


def test_training_set_needs_a_healthy_cohort_and_real_sets_a_root(tmp_path):
    brats = REPO / "data_manifests" / "brats2019.yaml"
    with pytest.raises(ManifestError, match="train: brats2019 has no healthy cohort"):
        load_study(_study(tmp_path, f"name: s\ntrain: {{manifest: {brats}, root: x}}\n"))
    with pytest.raises(ManifestError, match="train.root: missing; a real data set"):
        load_study(_study(tmp_path, f"name: s\ntrain: {{manifest: {REPO / 'data_manifests' / 'ixi_t1.yaml'}}}\n"))
    with pytest.raises(ManifestError, match="train.manifest: .*nothing.yaml: manifest not found"):
        load_study(_study(tmp_path, "name: s\ntrain: {manifest: nothing.yaml, root: x}\n"))


def test_is_study_file():
    assert is_study_file("a/b.YML") and is_study_file(Path("s.yaml")) and not is_study_file("lambert2021")


# --- data check ---------------------------------------------------------------------------------------

def test_data_check_lists_every_missing_file_of_every_data_set(monkeypatch, tmp_path, capsys):
    base = _fake_trees(tmp_path / "data", np.random.default_rng(0),
                       skip={f"{BRATS_IDS[1]}_seg", f"{ATLAS_IDS[0]}_mask", f"{ATLAS_IDS[2]}_mask"})
    monkeypatch.setenv("UADLAB_DATA", str(base))
    with pytest.raises(SystemExit) as exit_code:
        main(["data", "check", "--study", str(PAPER_REAL)])
    assert exit_code.value.code == 1
    captured = capsys.readouterr()
    assert "ixi_t1 (ixi_t1.yaml under" in captured.out and "all files present and readable" in captured.out
    err = captured.err
    assert "brats2019 (brats2019.yaml under" in err and f"{BRATS_IDS[1]} (brats): missing lesion mask" in err
    assert f"{ATLAS_IDS[0]} (atlas): missing brain mask" in err and f"{ATLAS_IDS[2]} (atlas): missing brain mask" in err
    assert err.rstrip().endswith("3 problem(s) in 2 data set(s)")
    with pytest.raises(ManifestError, match="3 problem"):  # run_study stops before any work
        run_study(PAPER_REAL, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert main(["data", "check", "--study", str(PAPER_REAL), "--root", str(base)]) == 2  # --root is for --manifest


@pytest.mark.slow  # about 10 s: builds two small data sets
def test_a_cohort_without_validation_cases_stops_the_study_before_training(monkeypatch, tmp_path, tiny_smoke):
    base = _fake_trees(tmp_path / "data", np.random.default_rng(2))
    monkeypatch.setenv("UADLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data_module, "skull_strip", _fake_strip)
    brats = tmp_path / "brats_test_only.yaml"
    brats.write_text((REPO / "data_manifests" / "brats2019.yaml").read_text()
                     .replace("split: {val: 133, test: 202}", "split: {test: all}"))
    study = _study(tmp_path, f"""\
        name: s
        train: {{manifest: {REPO / 'data_manifests' / 'ixi_t1.yaml'}, root: {base / 'IXI'}}}
        test: [{{manifest: {brats}, root: {base / 'BraTS2019'}}}]
        experiments: [2D-None]
        """)
    with pytest.raises(DatasetError, match="threshold of brats2019:brats; give that data set a `val_data`"):
        run_study(study, tmp_path / "out")
    assert not (tmp_path / "out" / "runs").exists()


# --- end to end -----------------------------------------------------------------------------------------

@pytest.fixture
def tiny_smoke(monkeypatch):
    """The smoke profile with a three-epoch schedule and a 6/4/4 phantom, installed under the name "smoke"."""
    tiny = dataclasses.replace(profiles.PROFILES["smoke"], max_epochs=3, patience=3,
                               phantom_counts={"healthy": 6, "tumour": 4, "stroke": 4})
    monkeypatch.setitem(profiles.PROFILES, "smoke", tiny)
    return tiny


@pytest.mark.slow  # about 30 s: builds three data sets, trains 2 experiments x 2 seeds at 32³
def test_paper_real_study_end_to_end_on_fake_trees(monkeypatch, tmp_path, capsys, tiny_smoke):
    base = _fake_trees(tmp_path / "data", np.random.default_rng(1))
    monkeypatch.setenv("UADLAB_DATA", str(base))
    monkeypatch.setenv("UADLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(data_module, "skull_strip", _fake_strip)
    out = tmp_path / "results"
    args = ["-q", "reproduce", "--study", str(PAPER_REAL), "--profile", "smoke", "--out", str(out),
            "--experiments", "2D-None,2D-Patch-n", "--seeds", "0,1"]
    assert main(args) == 0, capsys.readouterr().err

    summary = json.loads((out / "reproduce.json").read_text())
    assert summary["profile"] == "smoke" and summary["seeds"] == [0, 1]
    assert summary["scored"] == ["brats2019", "atlas_v1_2"]  # IXI has no lesion cohort
    assert sorted(p.name for p in (out / "data").iterdir() if not p.name.startswith(".")) == [  # not the locks
        "atlas_v1_2", "brats2019", "ixi_t1"]
    assert sorted(str(p.relative_to(out / "runs")) for p in (out / "runs").glob("*/seed*")) == [
        "2D-None/seed0", "2D-None/seed1", "2D-Patch-n/seed0", "2D-Patch-n/seed1"]
    per_seed = pd.read_csv(out / "table1_seeds.csv")
    assert len(per_seed) == 2 * 2 * 2 and set(per_seed["dataset"]) == {"brats", "atlas"}
    table = pd.read_csv(out / "table1.csv")
    assert list(zip(table["experiment"], table["dataset"])) == [
        ("2D-None", "brats"), ("2D-None", "atlas"), ("2D-Patch-n", "brats"), ("2D-Patch-n", "atlas")]
    assert (table["n_seeds"] == 2).all()
    first = per_seed[(per_seed["experiment"] == "2D-None") & (per_seed["dataset"] == "brats")]["dice_d"]
    assert table.loc[0, "dice_d"] == pytest.approx(first.mean())
    assert table.loc[0, "dice_d_seed_sd"] == pytest.approx(first.std(ddof=1))
    assert table[["dice_d", "auprc"]].apply(lambda c: c.between(0, 1)).all().all()
    metrics = json.loads((out / "evaluation" / "2D-None" / "seed1" / "brats2019" / "metrics.json").read_text())
    assert metrics["cohorts"]["brats"]["threshold_source"].startswith("val split of brats in ")
    assert metrics["cohorts"]["brats"]["n_subjects"] == 2 and metrics["cohorts"]["brats"]["n_val_subjects"] == 2
    assert metrics["healthy_val_data"].endswith("ixi_t1")  # FPR thresholds from the training data
    assert "training seeds" in (out / "table1.md").read_text()
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["seeds_auprc.png", "seeds_dice_d.png"]
    report = (out / "report.md").read_text()
    assert report.startswith("# Study paper_real") and "| ixi_t1 | train |" in report
    assert (out / "table1.md").read_text().strip() in report
    assert "read these intervals as rough" in report  # 2 seeds, 2 test subjects
    assert report.count("| 2D-Patch-n | 2D-None |") == 4 and "![DICE_D per seed](figures/seeds_dice_d.png)" in report
    paired = pd.read_csv(out / "paired.csv")
    assert list(zip(paired["experiment"], paired["baseline"], paired["cohort"], paired["metric"])) == [
        ("2D-Patch-n", "2D-None", c, m) for m in ("dice", "auprc") for c in ("brats", "atlas")]
    assert (paired["n_seeds_a"] == 2).all() and (paired["ci_low"] <= paired["difference"]).all()

    stamps = {p: p.stat().st_mtime_ns for p in [*out.glob("runs/*/*/checkpoint.pt"),
                                                 *out.glob("evaluation/*/*/*/metrics.json")]}
    assert main(args) == 0  # a rerun trains and evaluates nothing again
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


@pytest.mark.slow  # about 60 s: builds the 17 real brains and a small phantom at 32³, trains one model, two seeds
@pytest.mark.real_data
def test_real_sample_study(real_data_dir, tmp_path, monkeypatch, capsys, tiny_smoke):
    """studies/sample_real.yaml: train on the 17 real healthy brains, score the real BraTS and MSLUB cases.

    Their thresholds come from the phantom's tumour and stroke validation cases (the sample has no
    labelled validation case of its own); the numbers are printed, not asserted (3 epochs).
    """
    monkeypatch.setenv("UADLAB_CACHE", str(tmp_path / "cache"))
    study = REPO / "studies" / "sample_real.yaml"
    assert load_study(study).sources[0].root.resolve() == real_data_dir.resolve()
    outputs = run_study(study, tmp_path / "out", experiments=["3D-None"], seeds=[0, 1])
    table = pd.read_csv(outputs["table1.csv"])
    assert (table["n_seeds"] == 2).all() and "dice_d_seed_sd" in table.columns
    assert set(table["dataset"]) == {"brats2014", "mslub", "tumour", "stroke"}
    with capsys.disabled():
        print("\nreal sample study (smoke, 3D-None, 3 epochs):\n" + table.round(3).to_string(index=False))
    metrics = json.loads((tmp_path / "out" / "evaluation" / "3D-None" / "seed0" / "sample_real" /
                          "metrics.json").read_text())
    assert metrics["cohorts"]["mslub"]["threshold_source"].endswith("(pooled)")
    assert table[["dice_d", "auprc"]].apply(lambda c: c.between(0, 1)).all().all()


@pytest.mark.slow  # about 15 s: a 6/4/4 phantom, one experiment, two seeds
def test_reproduce_with_several_seeds_runs_the_builtin_phantom_study(monkeypatch, tmp_path, tiny_smoke):
    monkeypatch.setenv("UADLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "results"
    assert main(["-q", "reproduce", "--out", str(out), "--experiments", "3D-None,mean-image:3D-None",
                 "--seeds", "0,1"]) == 0  # the built-in study with several seeds: the seed tables, no Fig. 5 runs
    table = pd.read_csv(out / "table1.csv")
    assert list(zip(table["experiment"], table["dataset"])) == [
        ("3D-None", "tumour"), ("3D-None", "stroke"),
        ("mean-image:3D-None", "tumour"), ("mean-image:3D-None", "stroke")]
    assert (table["n_seeds"] == 2).all()
    assert (out / "runs" / "mean-image_3D-None" / "seed1" / "checkpoint.pt").is_file()  # no ":" in folder names
    assert sorted(p.name for p in (out / "runs").glob("[!.]*")) == ["3D-None", "mean-image_3D-None"]
    assert json.loads((out / "reproduce.json").read_text())["study"] == "bengs2021"
    assert (out / "paired.csv").is_file() and (out / "report.md").is_file()


def test_reproduce_seed_and_study_arguments(tmp_path, capsys, monkeypatch):
    assert main(["reproduce", "--out", str(tmp_path), "--seeds", "0,x"]) == 2
    assert "`--seeds` must be comma-separated integers such as 0,1,2, got '0,x'" in capsys.readouterr().err
    assert main(["reproduce", "--out", str(tmp_path), "--seed", "1", "--seeds", "0,1"]) == 2
    assert "--seed and --seeds: give one of them" in capsys.readouterr().err
    monkeypatch.setenv("UADLAB_DATA", str(tmp_path))
    assert main(["reproduce", "--out", str(tmp_path / "out"), "--study", str(PAPER_REAL), "--seeds", "1,1"]) == 2
    assert "`seeds` must be distinct integers in [0, 2**32), at least one, got [1, 1]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    for extra in (["--only-run", "2D-None"], ["--jobs", "2"], ["--executor", "slurm"], ["--overwrite"]):
        assert main(["reproduce", "--out", str(tmp_path / "out"), "--study", str(PAPER_REAL), "--plan", *extra]) == 2
        assert f"--plan and {extra[0]}: a plan only writes commands" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_study_file_names_any_protocol(tmp_path):
    phantom = REPO / "data_manifests" / "phantom.yaml"
    for protocol, kind in (("bengs2021", Bengs2021), ("lambert2021", Lambert2021), ("behrendt2024", Behrendt2024)):
        study = load_study(_study(tmp_path, f"name: s\nprotocol: {protocol}\ntrain: {{manifest: {phantom}}}\n"
                                            "experiments: [spatial-vae:2D-None, ddpm:2D-None]\n"))
        assert isinstance(study, kind) and study.protocol == protocol and study.folder is None
    assert load_study(_study(tmp_path, f"name: s\nprotocol: behrendt2024\ntrain: {{manifest: {phantom}}}\n"
                                       "labelled_cases: 0\n")).labelled_cases == 0
    with pytest.raises(ManifestError, match="labelled_cases: only for protocol behrendt2024, not bengs2021"):
        load_study(_study(tmp_path, f"name: s\ntrain: {{manifest: {phantom}}}\nlabelled_cases: 1\n"))
    with pytest.raises(ManifestError, match="protocol: "):
        load_study(_study(tmp_path, f"name: s\nprotocol: chatterjee\ntrain: {{manifest: {phantom}}}\n"))


@pytest.mark.parametrize("seeds", ['["1"]', "[true]", "[1.0]"])
def test_study_file_seeds_must_be_integers(tmp_path, seeds):
    phantom = REPO / "data_manifests" / "phantom.yaml"
    with pytest.raises(ManifestError, match="seeds"):
        load_study(_study(tmp_path, f"name: s\ntrain: {{manifest: {phantom}}}\nseeds: {seeds}\n"))


@pytest.mark.slow  # about 30 s: a 6/4/4 phantom, two models with Lambert et al.'s loss
def test_a_lambert_study_file_runs_end_to_end(tmp_path, tiny_smoke, monkeypatch):
    monkeypatch.setenv("UADLAB_CACHE", str(tmp_path / "cache"))
    study = _study(tmp_path, f"name: spatial\nprotocol: lambert2021\n"
                             f"train: {{manifest: {REPO / 'data_manifests' / 'phantom.yaml'}}}\n"
                             "experiments: [spatial-vae:3D-None, 3D-None]\n")
    outputs = run_study(study, tmp_path / "out")
    table = pd.read_csv(outputs["lambert2021.csv"])
    assert list(dict.fromkeys(table["model"])) == ["Spatial 3D", "Dense 3D"]
    assert outputs["lambert2021.csv"] == tmp_path / "out" / "lambert2021.csv"
    config = (tmp_path / "out" / "runs" / "spatial-vae_3D-None" / "seed0" / "config.yaml").read_text()
    assert "loss: lambert" in config
