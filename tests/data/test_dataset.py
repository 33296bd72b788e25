"""Tests of uadlab.data.dataset: building a data-set folder (real and phantom) and loading it back."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import FAKE_SHAPE, FAKE_VOXEL_MM, fake_scan, save_nifti, write_fake_real

import uadlab.data.dataset as data_module
from uadlab.data.dataset import COLUMNS, BuiltDataset, Subject, build_dataset, load_dataset
from uadlab.data.io import load_volume
from uadlab.data.phantom import PhantomParams
from uadlab.data.preprocessing import PreprocessingParams, preprocess
from uadlab.errors import DatasetError, VolumeError
from uadlab.profiles import get_profile

MANIFESTS = Path(__file__).resolve().parents[2] / "data_manifests"
LESION_VOXELS = 4**3  # the 4-voxel cube of write_fake_real


@pytest.fixture(scope="module")
def fake_tree(tmp_path_factory) -> tuple[Path, Path]:
    """A fake real data set (4 healthy scans, 2 lesion cases, one stored LPS) and its manifest."""
    root = tmp_path_factory.mktemp("fake_real")
    return root, write_fake_real(root, lps_case=True)


@pytest.fixture(scope="module")
def built(fake_tree, tmp_path_factory) -> tuple[Path, Path]:
    """The fake data set built with the smoke profile: ``(folder, cache folder)``."""
    root, manifest = fake_tree
    base = tmp_path_factory.mktemp("built")
    out = build_dataset(manifest, base / "data", root=root, profile="smoke", cache_dir=base / "cache")
    return out, base / "cache"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name)


# --------------------------------------------------------------------------------------------------
# Real data: layout and content


def test_real_build_layout_and_table(built, fake_tree):
    out, _ = built
    assert (out / "dataset.json").is_file() and (out / "subjects.csv").is_file()
    table = pd.read_csv(out / "subjects.csv", keep_default_na=False)
    assert tuple(table.columns) == COLUMNS
    assert sorted(table["subject_id"]) == ["case0", "case1", "sub0", "sub1", "sub2", "sub3"]
    healthy = table[table["cohort"] == "healthy"]
    lesion = table[table["cohort"] == "brats"]
    assert sorted(healthy["split"]) == ["train", "train", "train", "val"]
    assert sorted(lesion["split"]) == ["test", "val"]
    assert (healthy["lesion_mask"] == "").all() and (healthy["lesion_voxels"] == 0).all()
    assert (lesion["lesion_voxels"] > 0).all()
    np.testing.assert_allclose(lesion["lesion_volume_mm3"], LESION_VOXELS * FAKE_VOXEL_MM**3)
    assert set(lesion["source"]) == {"lesion/case0/t1.nii.gz", "lesion/case1/t1.nii.gz"}
    for _, row in table.iterrows():
        assert row["image"] == f"images/{row['subject_id']}.nii.gz"
        for column in ("image", "brain_mask", "lesion_mask"):
            assert row[column] == "" or (out / row[column]).is_file()
    mask = nib.load(out / lesion["lesion_mask"].iloc[0])
    assert mask.get_data_dtype() == np.uint8 and mask.shape == (32, 32, 32)
    info = json.loads((out / "dataset.json").read_text())
    assert info["name"] == "fake_real" and info["profile"] == "smoke"
    assert info["image_size"] == 32 and info["spacing_mm"] == FAKE_VOXEL_MM
    assert info["manifest"]["sha256"] == __import__("hashlib").sha256(fake_tree[1].read_bytes()).hexdigest()
    assert info["cohorts"]["brats"] == {"role": "lesion", "counts": {"train": 0, "val": 1, "test": 1}}
    assert info["preprocessing"]["out_size"] == 32 and info["uadlab_version"]
    assert _leftovers(out.parent) == []


def test_lesions_keep_their_world_position_ras_and_lps(built):
    """Both lesion boxes sit at the same world position (case1 is stored LPS); the built affines say so."""
    dataset = load_dataset(built[0])
    truth = np.array([19.5, 21.5, 19.5]) * FAKE_VOXEL_MM  # centre of voxels 18..21, 20..23, 18..21 in RAS mm
    for subject_id in ("case0", "case1"):
        subject = dataset.subject(subject_id)
        centre = subject.affine[:3, :3] @ np.argwhere(subject.lesion_mask).mean(axis=0) + subject.affine[:3, 3]
        np.testing.assert_allclose(centre, truth, atol=3.0)  # within half an output voxel (~5-6 mm)


def test_built_dataset_api(built):
    dataset = load_dataset(built[0])
    assert isinstance(dataset, BuiltDataset) and dataset.root == built[0]
    assert dataset.image_size == 32
    assert dataset.cohorts == ["healthy", "brats"] and dataset.lesion_cohorts == ["brats"]
    assert len(dataset.ids()) == 6
    assert dataset.ids(cohort="healthy", split="val") == dataset.table.query("split == 'val' and cohort == 'healthy'")[
        "subject_id"].tolist()
    assert len(dataset.ids(split="train")) == 3 and dataset.ids(cohort="brats", split="train") == []
    subject = dataset.subject("sub0")
    assert isinstance(subject, Subject) and subject.cohort == "healthy"
    assert subject.image.shape == subject.brain_mask.shape == subject.lesion_mask.shape == (32, 32, 32)
    assert subject.image.dtype == np.float32 and subject.brain_mask.dtype == bool
    assert not subject.lesion_mask.any() and subject.affine.shape == (4, 4)
    assert subject.image.min() >= 0 and subject.image.max() <= 1 and np.all(subject.image[~subject.brain_mask] == 0)
    lesion = dataset.subject("case0")
    assert lesion.lesion_mask.dtype == bool and np.all(lesion.brain_mask[lesion.lesion_mask])
    images, brains = dataset.stack(["sub0", "case1"])
    assert images.shape == brains.shape == (2, 32, 32, 32)
    assert images.dtype == np.float32 and brains.dtype == bool
    np.testing.assert_array_equal(images[0], subject.image)
    summary = dataset.summary()
    for text in ("fake_real", "healthy", "brats", "32^3", "brats lesions: 4.1-4.1 cm^3"):
        assert text in summary
    with pytest.raises(ValueError, match="`cohort` must be one of"):
        dataset.ids(cohort="atlas")
    with pytest.raises(ValueError, match="`split` must be one of"):
        dataset.ids(split="training")
    with pytest.raises(KeyError, match="nobody"):
        dataset.subject("nobody")
    with pytest.raises(TypeError, match="`ids` must be a sequence"):
        dataset.stack("sub0")


# --------------------------------------------------------------------------------------------------
# Rebuilds, caching, overwriting, failures


def test_rebuild_returns_the_same_folder_without_work(built, fake_tree, monkeypatch):
    out, cache = built
    stamp = (out / "dataset.json").stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("no work expected")

    monkeypatch.setattr(data_module, "discover_cases", fail)
    assert build_dataset(fake_tree[1], out, root=fake_tree[0], profile="smoke", cache_dir=cache) == out
    assert (out / "dataset.json").stat().st_mtime_ns == stamp


def test_second_folder_from_the_cache_does_no_preprocessing(built, fake_tree, tmp_path, monkeypatch, capsys):
    out, cache = built

    def fail(*args, **kwargs):
        raise AssertionError("preprocess must not run on a cache hit")

    monkeypatch.setattr(data_module, "preprocess", fail)
    again = build_dataset(fake_tree[1], tmp_path / "again", root=fake_tree[0], profile="smoke", cache_dir=cache,
                          progress=True)
    assert "building fake_real" in capsys.readouterr().err  # the tqdm bar, only with progress=True
    first, second = load_dataset(out), load_dataset(again)
    pd.testing.assert_frame_equal(first.table, second.table)
    np.testing.assert_array_equal(first.subject("case1").image, second.subject("case1").image)


def test_other_profile_needs_overwrite_then_replaces(fake_tree, tmp_path):
    root, manifest = fake_tree
    out = build_dataset(manifest, tmp_path / "data", root=root, profile="smoke", cache_dir=tmp_path / "cache")
    tiny = dataclasses.replace(get_profile("smoke"), name="tiny", image_size=16)
    with pytest.raises(DatasetError, match="pass overwrite=True"):
        build_dataset(manifest, out, root=root, profile=tiny, cache_dir=tmp_path / "cache")
    assert load_dataset(out).info["image_size"] == 32  # untouched
    build_dataset(manifest, out, root=root, profile=tiny, overwrite=True, cache_dir=tmp_path / "cache")
    assert load_dataset(out).info["image_size"] == 16 and load_dataset(out).subject("sub0").image.shape == (16,) * 3
    assert _leftovers(tmp_path) == []


def test_failure_in_the_middle_leaves_no_partial_output(fake_tree, tmp_path, monkeypatch):
    root, manifest = fake_tree
    calls = []
    real_save = data_module.save_volume

    def flaky_save(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(data_module, "save_volume", flaky_save)
    with pytest.raises(OSError, match="disk full"):
        build_dataset(manifest, tmp_path / "data", root=root, profile="smoke", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "data").exists()
    assert _leftovers(tmp_path) == []
    with pytest.raises(DatasetError, match="no data-set folder"):
        load_dataset(tmp_path / "data")


def test_failure_during_overwrite_keeps_the_old_data_set(built, fake_tree, tmp_path, monkeypatch):
    root, manifest = fake_tree
    out = build_dataset(manifest, tmp_path / "data", root=root, profile="smoke", cache_dir=built[1])
    monkeypatch.setattr(data_module, "save_volume", lambda *a, **k: (_ for _ in ()).throw(OSError("boom")))
    tiny = dataclasses.replace(get_profile("smoke"), name="tiny", image_size=16)
    with pytest.raises(OSError, match="boom"):
        build_dataset(manifest, out, root=root, profile=tiny, overwrite=True, cache_dir=built[1])
    assert load_dataset(out).info["image_size"] == 32
    assert _leftovers(tmp_path) == []


def test_never_replaces_something_that_is_not_a_data_set(fake_tree, tmp_path):
    root, manifest = fake_tree
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(DatasetError, match="not a uadlab data set"):
        build_dataset(manifest, user, root=root, profile="smoke", overwrite=True, cache_dir=tmp_path / "c")
    assert (user / "notes.txt").read_text() == "keep me"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        build_dataset(manifest, a_file, root=root, profile="smoke", overwrite=True, cache_dir=tmp_path / "c")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert build_dataset(manifest, empty, root=root, profile="smoke", cache_dir=tmp_path / "c") == empty
    assert len(load_dataset(empty).ids()) == 6


def test_mismatched_mask_grid_raises_volume_error(fake_tree, tmp_path):
    root, manifest = fake_tree
    bad = tmp_path / "root"
    (bad / "lesion" / "x").mkdir(parents=True)
    (bad / "healthy").mkdir()
    for name in ("healthy/sub0.nii.gz", "lesion/case0/t1.nii.gz", "lesion/case0/brain_mask.nii.gz"):
        (bad / name).parent.mkdir(parents=True, exist_ok=True)
        (bad / name).write_bytes((root / name).read_bytes())
    seg = np.zeros((FAKE_SHAPE[0], FAKE_SHAPE[1], FAKE_SHAPE[2] - 1), np.uint8)
    seg[10, 10, 10] = 1
    save_nifti(bad / "lesion" / "case0" / "seg.nii.gz", seg, np.diag([FAKE_VOXEL_MM] * 3 + [1.0]))
    (bad / "lesion" / "x").rmdir()
    with pytest.raises(VolumeError, match="seg.nii.gz: shape"):
        build_dataset(manifest, tmp_path / "data", root=bad, profile="smoke", cache_dir=tmp_path / "cache")
    assert _leftovers(tmp_path) == [] and not (tmp_path / "data").exists()


def test_build_validation(fake_tree, tmp_path):
    root, manifest = fake_tree
    with pytest.raises(TypeError, match="`overwrite` must be a bool"):
        build_dataset(manifest, tmp_path / "d", root=root, overwrite="yes")
    with pytest.raises(TypeError, match="`out` must be a str or path"):
        build_dataset(manifest, 3, root=root)
    with pytest.raises(ValueError, match="`profile` must be one of"):
        build_dataset(manifest, tmp_path / "d", root=root, profile="huge")
    with pytest.raises(ValueError, match="`workers` must be at least 1, got 0"):
        build_dataset(manifest, tmp_path / "d", root=root, workers=0)
    with pytest.raises(TypeError, match="`workers` must be an int"):
        build_dataset(manifest, tmp_path / "d", root=root, workers=2.0)
    with pytest.raises(ValueError, match="`root` must be the folder of the real data set"):
        build_dataset(manifest, tmp_path / "d", profile="smoke", cache_dir=tmp_path / "c")
    assert not (tmp_path / "d").exists()


def test_load_dataset_names_what_is_missing(built, tmp_path):
    out, _ = built
    with pytest.raises(DatasetError, match="no data-set folder"):
        load_dataset(tmp_path / "nothing")
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "subjects.csv").write_text((out / "subjects.csv").read_text())
    with pytest.raises(DatasetError, match="missing dataset.json"):
        load_dataset(copy)
    (copy / "dataset.json").write_text((out / "dataset.json").read_text())
    with pytest.raises(DatasetError, match=r"missing file\(s\): images/"):
        load_dataset(copy)
    (copy / "subjects.csv").write_text("subject_id,cohort\nsub0,healthy\n")
    with pytest.raises(DatasetError, match="missing columns"):
        load_dataset(copy)
    (copy / "dataset.json").write_text("[1, 2]")
    with pytest.raises(DatasetError, match="expected a JSON object"):
        load_dataset(copy)


# --------------------------------------------------------------------------------------------------
# Phantom


@pytest.fixture(scope="module")
def tiny_phantom_profile():
    """The smoke profile with fewer subjects: 3 healthy, 2 tumour, 2 stroke."""
    return dataclasses.replace(get_profile("smoke"), phantom_counts={"healthy": 3, "tumour": 2, "stroke": 2})


@pytest.mark.slow
def test_phantom_build_is_deterministic_and_varied(tmp_path, tiny_phantom_profile):
    manifest = MANIFESTS / "phantom.yaml"
    first = build_dataset(manifest, tmp_path / "a", profile=tiny_phantom_profile, cache_dir=tmp_path / "cache_a")
    second = build_dataset(manifest, tmp_path / "b", profile=tiny_phantom_profile, cache_dir=tmp_path / "cache_b",
                           workers=2)  # parallel processes build the same subjects
    a, b = load_dataset(first), load_dataset(second)
    pd.testing.assert_frame_equal(a.table, b.table)
    for subject_id in a.ids():
        sa, sb = a.subject(subject_id), b.subject(subject_id)
        np.testing.assert_array_equal(sa.image, sb.image)
        np.testing.assert_array_equal(sa.lesion_mask, sb.lesion_mask)
    assert a.cohorts == ["healthy", "tumour", "stroke"] and a.lesion_cohorts == ["tumour", "stroke"]
    assert a.info["seed"] == 0 and a.info["kind"] == "phantom"
    healthy = a.ids(cohort="healthy")
    assert len(healthy) == 3 and set(a.table.loc[a.table["cohort"] == "healthy", "split"]) <= {"train", "val"}
    images, brains = a.stack(healthy)
    assert np.abs(images[0] - images[1]).mean() > 0.01  # subjects differ from each other
    for cohort in ("tumour", "stroke"):
        rows = a.table[a.table["cohort"] == cohort]
        assert set(rows["split"]) <= {"val", "test"}
        assert (rows["lesion_voxels"] > 0).all() and (rows["lesion_volume_mm3"] > 0).all()
        for subject_id in rows["subject_id"]:
            subject = a.subject(subject_id)
            assert subject.lesion_mask.any()
            assert (subject.lesion_mask & subject.brain_mask).sum() >= 0.9 * subject.lesion_mask.sum()
    assert set(a.table["source"]) == {"mni152_2009"}


@pytest.mark.slow
def test_a_phantom_build_is_reused_only_with_the_same_params_and_counts(tmp_path, tiny_phantom_profile, monkeypatch):
    """The manifest text alone does not pin a phantom down: under new PhantomParams defaults or other
    counts with the same profile name, the old build is refused (not served) and --overwrite rebuilds."""
    manifest, out, cache = MANIFESTS / "phantom.yaml", tmp_path / "data", tmp_path / "cache"
    build_dataset(manifest, out, profile=tiny_phantom_profile, cache_dir=cache)
    stamp = (out / "dataset.json").stat().st_mtime_ns
    build_dataset(manifest, out, profile=tiny_phantom_profile, cache_dir=cache)
    assert (out / "dataset.json").stat().st_mtime_ns == stamp  # same everything: reused
    before = load_dataset(out).subject("healthy_000").image

    monkeypatch.setattr(PhantomParams, "rotation_deg", PhantomParams.rotation_deg + 5.0)  # a changed default
    with pytest.raises(DatasetError, match="another manifest, root, profile or phantom parameters"):
        build_dataset(manifest, out, profile=tiny_phantom_profile, cache_dir=cache)
    build_dataset(manifest, out, profile=tiny_phantom_profile, cache_dir=cache, overwrite=True)
    dataset = load_dataset(out)
    assert dataset.info["build"]["phantom"]["params"]["rotation_deg"] == PhantomParams.rotation_deg
    assert not np.array_equal(dataset.subject("healthy_000").image, before)

    more = dataclasses.replace(tiny_phantom_profile, phantom_counts={"healthy": 4, "tumour": 2, "stroke": 2})
    with pytest.raises(DatasetError, match="another manifest"):
        build_dataset(manifest, out, profile=more, cache_dir=cache)
    rebuilt = build_dataset(manifest, out, profile=more, cache_dir=cache, overwrite=True)
    assert len(load_dataset(rebuilt).ids(cohort="healthy")) == 4


# --------------------------------------------------------------------------------------------------
# Real sample cases (../shared/data/real)

LESION_ONLY_MANIFEST = """\
name: sample_lesions
kind: real
description: the two real lesion cases of ../shared/data/real
licence: see SOURCES.md
citation: see SOURCES.md
cohorts:
  - name: brats2014
    role: lesion
    cases: "lesion/brats2014_*/"
    image: "{case_dir}/t1.nii.gz"
    brain_mask: "{case_dir}/brain_mask.nii.gz"
    lesion_mask: "{case_dir}/seg.nii.gz"
    split: {test: all}
  - name: mslub
    role: lesion
    cases: "lesion/mslub_*/"
    image: "{case_dir}/t1.nii.gz"
    brain_mask: nonzero
    lesion_mask: "{case_dir}/lesion_mask.nii.gz"
    split: {test: all}
"""


def _check_real_lesions(dataset: BuiltDataset, size: int) -> None:
    for cohort in ("brats2014", "mslub"):
        (subject_id,) = dataset.ids(cohort=cohort, split="test")
        subject = dataset.subject(subject_id)
        assert subject.image.shape == (size,) * 3
        inside = (subject.lesion_mask & subject.brain_mask).sum()
        assert inside > 0 and inside >= 0.9 * subject.lesion_mask.sum(), cohort
        row = dataset.table.set_index("subject_id").loc[subject_id]
        assert row["lesion_volume_mm3"] > 0 and row["lesion_voxels"] == subject.lesion_mask.sum()


@pytest.mark.real_data
def test_real_lesion_cases_overlap_their_brains(real_data_dir, tmp_path):
    manifest = tmp_path / "lesions.yaml"
    manifest.write_text(LESION_ONLY_MANIFEST)
    out = build_dataset(manifest, tmp_path / "data", root=real_data_dir, profile="smoke", cache_dir=tmp_path / "c")
    _check_real_lesions(load_dataset(out), 32)


@pytest.mark.slow
@pytest.mark.real_data
def test_sample_real_builds_at_64(real_data_dir, tmp_path):
    out = build_dataset(MANIFESTS / "sample_real.yaml", tmp_path / "data", root=real_data_dir, profile="lab",
                        cache_dir=tmp_path / "c")
    dataset = load_dataset(out)
    assert len(dataset.ids(cohort="healthy")) == 17
    assert set(dataset.table.loc[dataset.table["cohort"] == "healthy", "split"]) == {"train", "val"}
    _check_real_lesions(dataset, 64)


def test_whole_head_cases_are_skull_stripped_once_and_cached(tmp_path, monkeypatch):
    """``brain_mask: deepbet``: the mask comes from skull_strip, is cached, and reused by another profile."""
    rng = np.random.default_rng(3)
    ras = np.diag([FAKE_VOXEL_MM] * 3 + [1.0])
    brains = {}
    for i in range(2):
        image, brain = fake_scan(rng)
        image = np.clip(image, 1.0, 140.0) * brain
        scalp = ~np.pad(np.ones(np.subtract(FAKE_SHAPE, 4), bool), 2)  # a bright 2-voxel shell off the brain
        assert not (scalp & brain).any()
        save_nifti(tmp_path / "root" / "IXI-T1" / f"IXI00{i}-Guys-0001-T1.nii.gz", image + 200.0 * scalp, ras)
        brains[f"IXI00{i}-Guys-0001"] = brain
    calls = []

    def fake_strip(image, affine, *, method):
        calls.append(method)
        return (image > 0) & (image < 150)  # the brain, not the scalp

    monkeypatch.setattr(data_module, "skull_strip", fake_strip)
    manifest = MANIFESTS / "ixi_t1.yaml"
    out = build_dataset(manifest, tmp_path / "data", root=tmp_path / "root", profile="smoke",
                        cache_dir=tmp_path / "cache")
    assert calls == ["deepbet", "deepbet"]
    dataset = load_dataset(out)
    params = PreprocessingParams.from_profile(get_profile("smoke"))
    for subject_id in dataset.ids():
        subject = dataset.subject(subject_id)
        image, _ = load_volume(tmp_path / "root" / "IXI-T1" / f"{subject_id}-T1.nii.gz")
        expected = preprocess(image, ras, brains[subject_id], params=params)  # as if the true mask were given
        np.testing.assert_array_equal(subject.brain_mask, expected.brain_mask)
        np.testing.assert_allclose(subject.image, expected.image, atol=1e-6)
    assert len(list(tmp_path.joinpath("cache").glob("*.mask.npz"))) == 2
    tiny = dataclasses.replace(get_profile("smoke"), name="tiny", image_size=16)
    build_dataset(manifest, tmp_path / "data16", root=tmp_path / "root", profile=tiny, cache_dir=tmp_path / "cache")
    assert calls == ["deepbet", "deepbet"]  # the full-resolution masks came from the cache
    assert load_dataset(tmp_path / "data16").subject("IXI000-Guys-0001").brain_mask.shape == (16,) * 3


def test_bias_correction_runs_on_the_cohorts_that_ask_and_is_part_of_the_cache_key(fake_tree, tmp_path,
                                                                                    monkeypatch):
    root, manifest = fake_tree
    n4_manifest = tmp_path / "n4.yaml"
    n4_manifest.write_text(manifest.read_text().replace("    brain_mask: nonzero\n",
                                                         "    brain_mask: nonzero\n    bias_correction: n4\n"))
    calls = []

    def fake_n4(image, affine, brain_mask):
        calls.append(int(brain_mask.sum()))
        return image * 2.0  # a global factor: standardisation to [0, 1] makes it invisible

    monkeypatch.setattr(data_module, "bias_correct", fake_n4)
    cache = tmp_path / "cache"
    plain = load_dataset(build_dataset(manifest, tmp_path / "plain", root=root, profile="smoke", cache_dir=cache))
    assert calls == []
    n4 = load_dataset(build_dataset(n4_manifest, tmp_path / "n4", root=root, profile="smoke", cache_dir=cache))
    assert len(calls) == 4 and all(c > 0 for c in calls)  # the 4 healthy scans, not from the plain build's cache
    np.testing.assert_allclose(n4.subject("sub0").image, plain.subject("sub0").image, atol=1e-5)
    build_dataset(n4_manifest, tmp_path / "n4-again", root=root, profile="smoke", cache_dir=cache)
    assert len(calls) == 4  # cached under its own key
