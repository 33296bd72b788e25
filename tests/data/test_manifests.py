"""Tests of uadlab.data.manifests: schema, the shipped manifests, case discovery on fake trees in the real
layouts, ``data check`` (library and CLI), splits, and reading a case."""

from __future__ import annotations

import dataclasses
import re
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from uadlab.cli import main
from uadlab.data import manifests
from uadlab.data.manifests import (
    Case,
    assign_splits,
    check_manifest,
    discover_cases,
    load_case,
    load_manifest,
    phantom_sources,
    split_sizes,
)
from uadlab.errors import ManifestError, VolumeError

MANIFESTS = Path(__file__).resolve().parents[2] / "data_manifests"
SHIPPED = ["phantom", "ixi_t1", "brats2019", "atlas_v1_2", "sample_real"]
BRATS_IDS = ["BraTS19_2013_10_1", "BraTS19_CBICA_AAB_1", "BraTS19_TCIA01_131_1", "BraTS19_2013_0_1",
             "BraTS19_TMC_06290_1", "BraTS19_TCIA10_103_1", "BraTS19_2013_9_1"]


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), path)
    return path


def _brain(rng) -> np.ndarray:
    """An 8³ skull-stripped T1: positive inside a 4³ cube, zero outside."""
    image = np.zeros((8, 8, 8), np.float32)
    image[2:6, 2:6, 2:6] = rng.uniform(0.5, 1.0, size=(4, 4, 4))
    return image


def _lesion(index: int = 0) -> np.ndarray:
    seg = np.zeros((8, 8, 8), np.int16)
    seg[3, 3, 2 + index % 4] = [1, 2, 4][index % 3]
    return seg


def _brats_tree(root: Path, rng, ids=BRATS_IDS) -> Path:
    """Fake MICCAI_BraTS_2019_Data_Training in the real layout (HGG and LGG folders)."""
    for i, subject in enumerate(ids):
        grade = "LGG" if "TMC" in subject or "2013_0" in subject else "HGG"
        folder = root / "MICCAI_BraTS_2019_Data_Training" / grade / subject
        _nifti(folder / f"{subject}_t1.nii.gz", _brain(rng))
        _nifti(folder / f"{subject}_seg.nii.gz", _lesion(i))
        _nifti(folder / f"{subject}_flair.nii.gz", _brain(rng))  # other modalities are ignored
    (root / "MICCAI_BraTS_2019_Data_Training" / "name_mapping.csv").write_text("ignored\n")
    return root


def _atlas_tree(root: Path, rng) -> Path:
    """Fake ATLAS R1.2 (native): two subjects, the second with two lesion files; user brain masks."""
    for subject, n_lesions in (("c0001s0004t01", 1), ("c0003s0002t01", 2)):
        folder = root / "ATLAS_R1.2" / "native" / subject[:5] / subject[:10] / "t01"
        image = rng.uniform(0.1, 1.0, size=(8, 8, 8)).astype(np.float32)  # not skull-stripped
        _nifti(folder / f"{subject}_t1w_deface_stx.nii.gz", image)
        _nifti(folder / f"{subject}_LesionSmooth_stx.nii.gz", _lesion(0))
        if n_lesions == 2:
            _nifti(folder / f"{subject}_LesionSmooth_1_stx.nii.gz", _lesion(1))
        mask = np.zeros((8, 8, 8), np.uint8)
        mask[1:7, 1:7, 1:7] = 1
        _nifti(root / "brain_masks" / f"{subject}_mask.nii.gz", mask)
    return root


def _write_manifest(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


REAL = """\
    name: tiny
    kind: real
    description: d
    licence: l
    citation: c
    cohorts:
      - name: healthy
        role: healthy
        cases: "healthy/*.nii.gz"
        image: "{anchor}"
        brain_mask: nonzero
        split: {train: 0.5, val: 0.5}
"""


def _edited(tmp_path: Path, edit) -> Path:
    """The REAL manifest after ``edit(data)`` changed its parsed YAML."""
    data = yaml.safe_load(textwrap.dedent(REAL))
    edit(data)
    path = tmp_path / "edited.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --------------------------------------------------------------------------------------------------
# Schema and the shipped manifests


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_manifests_load(name):
    manifest = load_manifest(MANIFESTS / f"{name}.yaml")
    assert manifest.name == name
    assert manifest.licence.strip() and manifest.citation.strip() and manifest.description.strip()
    assert all(c.role == "healthy" or "train" not in c.split for c in manifest.cohorts)


def test_shipped_manifests_hold_the_papers_splits():
    assert load_manifest(MANIFESTS / "brats2019.yaml").cohort("brats").split == {"val": 133, "test": 202}
    assert load_manifest(MANIFESTS / "atlas_v1_2.yaml").cohort("atlas").split == {"val": 121, "test": 183}
    assert load_manifest(MANIFESTS / "ixi_t1.yaml").cohort("healthy").split == {"train": 0.9, "val": 0.1}
    phantom = load_manifest(MANIFESTS / "phantom.yaml")
    assert phantom.kind == "phantom" and phantom.phantom.sources == "mni152" and phantom.phantom.seed == 0
    assert phantom.phantom.counts == {"healthy": 200, "tumour": 60, "stroke": 60}
    assert [(c.name, c.role, c.split) for c in phantom.cohorts] == [
        ("healthy", "healthy", {"train": 0.9, "val": 0.1}),
        ("tumour", "lesion", {"val": 0.4, "test": 0.6}),
        ("stroke", "lesion", {"val": 0.4, "test": 0.6}),
    ]


def test_phantom_section_defaults(tmp_path):
    text = (MANIFESTS / "phantom.yaml").read_text()
    start = text.index("phantom:\n  sources")
    end = text.index("cohorts:")
    path = _write_manifest(tmp_path / "p.yaml", text[:start] + "phantom:\n  counts: {healthy: 5}\n" + text[end:])
    spec = load_manifest(path).phantom
    assert spec.sources == "mni152" and spec.seed == 0 and spec.params == {}
    assert spec.counts == {"healthy": 5, "tumour": 60, "stroke": 60}


def test_unknown_top_level_key_is_named(tmp_path):
    path = _edited(tmp_path, lambda d: d.update(licnece="typo"))
    with pytest.raises(ManifestError, match=r"edited\.yaml: invalid manifest: licnece: unknown key"):
        load_manifest(path)


def test_unknown_cohort_key_is_named_with_cohort(tmp_path):
    path = _edited(tmp_path, lambda d: d["cohorts"][0].update(splitt={"test": "all"}, sede=1))
    with pytest.raises(ManifestError, match=r"cohorts\[healthy\]\.splitt: unknown key.*cohorts\[healthy\]\.sede"):
        load_manifest(path)


def test_missing_key_is_named(tmp_path):
    path = _edited(tmp_path, lambda d: d.pop("citation"))
    with pytest.raises(ManifestError, match="citation: missing required key"):
        load_manifest(path)


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ({"train": 0.9, "val": 0.2}, "split fractions must lie in"),
        ({"train": 0.9, "val": 1}, "split values must be all fractions"),
        ({"test": "all", "val": 0.5}, "'all' must be the only entry"),
        ({"tset": 1}, r"unknown split name\(s\) \['tset'\]"),
        ({"val": 0, "test": 3}, "split counts must be >= 1"),
        ({}, "split must name at least one"),
        ({"test": "most"}, "split values must be all fractions"),
    ],
)
def test_bad_splits(tmp_path, split, message):
    path = _edited(tmp_path, lambda d: d["cohorts"][0].update(split=split))
    with pytest.raises(ManifestError, match=rf"cohorts\[healthy\]\.split: {message}"):
        load_manifest(path)


def _lesion_cohort(d):
    d["cohorts"].append({"name": "brats", "role": "lesion", "cases": "b/*/", "image": "{case_dir}/t1.nii.gz",
                         "brain_mask": "nonzero", "lesion_mask": "{case_dir}/seg.nii.gz", "split": {"test": "all"}})


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["cohorts"][0].update(image="{case}/t1.nii.gz"),
         r"image uses unknown placeholder\(s\) \['case'\]"),
        (lambda d: d["cohorts"][0].update(subject_id="{subject_id}"),
         r"subject_id uses unknown placeholder\(s\) \['subject_id'\]"),
        (lambda d: d["cohorts"][0].update(image="{anchor"), "image is not a valid template"),
        (lambda d: d["cohorts"][0].update(image="/abs/t1.nii.gz"), "image must be a path relative to the data root"),
        (lambda d: d["cohorts"][0].update(cases="../*.nii.gz"), "cases must be a path relative to the data root"),
        (lambda d: d["cohorts"][0].update(match="(unclosed"), "match is not a valid regular expression"),
        (lambda d: d["cohorts"][0].update(lesion_mask="x.nii.gz"),
         "healthy cohort 'healthy' may not have a lesion_mask"),
        (lambda d: d["cohorts"][0].pop("brain_mask"), r"real cohort 'healthy' needs key\(s\) \['brain_mask'\]"),
        (lambda d: d["cohorts"].append(dict(d["cohorts"][0])), r"cohort names must be unique, got \['healthy'\]"),
        (lambda d: d.update(phantom={}), "a real manifest may not have a `phantom:` section"),
        (lambda d: d.update(kind="phantom"), "a phantom manifest needs a `phantom:` section"),
        (lambda d: d.update(kind="simulated"), "kind: Input should be 'real' or 'phantom'"),
        (lambda d: d.update(name="has space"), "name: String should match pattern"),
        (lambda d: d["cohorts"][0].update(lesion_rule=">= 1"), "lesion_rule: Input should be '> 0'"),
        (lambda d: (_lesion_cohort(d), d["cohorts"][1].update(split={"train": 0.5, "test": 0.5})),
         "lesion cohort 'brats' may not have a train split"),
        (lambda d: (_lesion_cohort(d), d["cohorts"][1].pop("lesion_mask")),
         r"real cohort 'brats' needs key\(s\) \['lesion_mask'\]"),
    ],
)
def test_schema_rules(tmp_path, edit, message):
    path = _edited(tmp_path, edit)
    with pytest.raises(ManifestError, match=message):
        load_manifest(path)


def test_phantom_cohort_rules(tmp_path):
    text = (MANIFESTS / "phantom.yaml").read_text()
    path = _write_manifest(tmp_path / "p.yaml", text.replace("  - name: stroke", "  - name: infarct"))
    with pytest.raises(ManifestError, match="phantom cohort 'infarct' with role 'lesion'"):
        load_manifest(path)
    path = _write_manifest(tmp_path / "p.yaml", text.replace("role: healthy\n", "role: healthy\n    image: a.nii\n"))
    with pytest.raises(ManifestError, match=r"phantom cohort 'healthy' may not set file keys \['image'\]"):
        load_manifest(path)
    path = _write_manifest(tmp_path / "p.yaml", text.replace("sources: mni152", "sources: [/abs/*.nii.gz]"))
    with pytest.raises(ManifestError, match="phantom.sources: sources must be 'mni152' or a non-empty list"):
        load_manifest(path)
    path = _write_manifest(tmp_path / "p.yaml", text.replace("tumour: 60,", "tumour: -1,"))
    with pytest.raises(ManifestError, match=r"phantom.counts: counts must be >= 0, got \{'tumour': -1\}"):
        load_manifest(path)


def test_bad_files(tmp_path):
    with pytest.raises(ManifestError, match=r"nope\.yaml: manifest not found"):
        load_manifest(tmp_path / "nope.yaml")
    with pytest.raises(ManifestError, match=r"bad\.yaml: not valid YAML"):
        load_manifest(_write_manifest(tmp_path / "bad.yaml", "name: [unclosed\n"))
    with pytest.raises(ManifestError, match=r"dup\.yaml: not valid YAML: duplicate key 'name'"):
        load_manifest(_write_manifest(tmp_path / "dup.yaml", textwrap.dedent(REAL) + "name: again\n"))
    with pytest.raises(ManifestError, match=r"list\.yaml: a manifest must be a YAML mapping, got list"):
        load_manifest(_write_manifest(tmp_path / "list.yaml", "- a\n- b\n"))
    with pytest.raises(TypeError, match="`path` must be a str or path, got 1"):
        load_manifest(1)


def test_cohort_lookup():
    manifest = load_manifest(MANIFESTS / "sample_real.yaml")
    assert manifest.cohort("mslub").role == "lesion"
    with pytest.raises(KeyError, match="has no cohort 'atlas'"):
        manifest.cohort("atlas")


# --------------------------------------------------------------------------------------------------
# Discovery and checks on fake trees in the real layouts


def test_discover_brats_layout(tmp_path, rng):
    root = _brats_tree(tmp_path / "root", rng)
    cases = discover_cases(load_manifest(MANIFESTS / "brats2019.yaml"), root)
    assert sorted(c.subject_id for c in cases) == sorted(BRATS_IDS)
    case = next(c for c in cases if c.subject_id == "BraTS19_TMC_06290_1")
    folder = root / "MICCAI_BraTS_2019_Data_Training" / "LGG" / "BraTS19_TMC_06290_1"
    assert case == Case("BraTS19_TMC_06290_1", "brats", "lesion", folder / "BraTS19_TMC_06290_1_t1.nii.gz", None,
                        (folder / "BraTS19_TMC_06290_1_seg.nii.gz",), None, "> 0")
    assert check_manifest(load_manifest(MANIFESTS / "brats2019.yaml"), root) == []


def test_two_missing_files_are_all_reported(tmp_path, rng, capsys):
    root = _brats_tree(tmp_path / "root", rng)
    base = root / "MICCAI_BraTS_2019_Data_Training"
    gone_t1 = base / "HGG" / "BraTS19_2013_10_1" / "BraTS19_2013_10_1_t1.nii.gz"
    gone_seg = base / "LGG" / "BraTS19_TMC_06290_1" / "BraTS19_TMC_06290_1_seg.nii.gz"
    gone_t1.unlink()
    gone_seg.unlink()
    manifest_path = MANIFESTS / "brats2019.yaml"
    manifest = load_manifest(manifest_path)

    with pytest.raises(ManifestError, match=r"2 problem\(s\)") as info:
        discover_cases(manifest, root)
    assert str(gone_t1) in str(info.value) and str(gone_seg) in str(info.value)

    problems = check_manifest(manifest, root)
    assert problems == [
        f"BraTS19_2013_10_1 (brats): missing image {gone_t1}",
        f"BraTS19_TMC_06290_1 (brats): missing lesion mask {gone_seg}",
    ]

    code = None
    try:
        code = main(["data", "check", "--manifest", str(manifest_path), "--root", str(root)])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 1
    assert "2 problem(s)" in err and str(gone_t1) in err and str(gone_seg) in err


def test_cli_data_check_passes_on_complete_tree(tmp_path, rng, capsys):
    root = _brats_tree(tmp_path / "root", rng, ids=BRATS_IDS[:2])
    assert main(["data", "check", "--manifest", str(MANIFESTS / "brats2019.yaml"), "--root", str(root)]) == 0
    assert "all files present and readable" in capsys.readouterr().out


def test_check_manifest_reads_the_files(tmp_path, rng):
    root = _brats_tree(tmp_path / "root", rng, ids=BRATS_IDS[:4])
    folders = {s: next((root / "MICCAI_BraTS_2019_Data_Training").glob(f"*/{s}")) for s in BRATS_IDS[:4]}
    corrupt = folders[BRATS_IDS[0]] / f"{BRATS_IDS[0]}_t1.nii.gz"
    corrupt.write_bytes(corrupt.read_bytes()[:100])
    _nifti(folders[BRATS_IDS[1]] / f"{BRATS_IDS[1]}_seg.nii.gz", np.zeros((8, 8, 9), np.int16))  # wrong shape
    _nifti(folders[BRATS_IDS[2]] / f"{BRATS_IDS[2]}_seg.nii.gz", np.zeros((8, 8, 8), np.int16))  # no lesion
    _nifti(folders[BRATS_IDS[3]] / f"{BRATS_IDS[3]}_t1.nii.gz", np.zeros((8, 8, 8), np.float32))  # no brain
    problems = check_manifest(load_manifest(MANIFESTS / "brats2019.yaml"), root)
    assert len(problems) == 4, problems  # content is checked only once the files are readable and on one grid
    text = "\n".join(problems)
    assert f"{BRATS_IDS[0]} (brats): {corrupt}: " in text  # unreadable (header or data, depending on cut)
    assert f"{BRATS_IDS[1]} (brats): " in text and "shape (8, 8, 9) differs from (8, 8, 8)" in text
    assert f"{BRATS_IDS[2]} (brats): lesion mask is empty" in text
    assert f"{BRATS_IDS[3]} (brats): brain mask is empty" in text and "is all zero" in text


def test_atlas_layout_merges_lesion_files(tmp_path, rng):
    root = _atlas_tree(tmp_path / "root", rng)
    manifest = load_manifest(MANIFESTS / "atlas_v1_2.yaml")
    cases = discover_cases(manifest, root)
    assert [c.subject_id for c in cases] == ["c0001s0004t01", "c0003s0002t01"]
    assert [len(c.lesion_masks) for c in cases] == [1, 2]
    assert cases[1].brain_mask == root / "brain_masks" / "c0003s0002t01_mask.nii.gz"
    assert all(p.name.startswith("c0003s0002t01_LesionSmooth") for p in cases[1].lesion_masks)
    volumes = load_case(cases[1])
    expected = (_lesion(0) > 0) | (_lesion(1) > 0)
    np.testing.assert_array_equal(volumes.lesion_mask, expected)
    assert volumes.lesion_mask.sum() == 2
    assert volumes.brain_mask.sum() == 6**3  # the supplied mask, not image != 0
    assert check_manifest(manifest, root) == []


def test_atlas_without_user_brain_masks(tmp_path, rng):
    root = _atlas_tree(tmp_path / "root", rng)
    for mask in (root / "brain_masks").iterdir():
        mask.unlink()
    problems = check_manifest(load_manifest(MANIFESTS / "atlas_v1_2.yaml"), root)
    assert problems == [
        f"{s} (atlas): missing brain mask {root / 'brain_masks' / f'{s}_mask.nii.gz'}"
        for s in ("c0001s0004t01", "c0003s0002t01")
    ]


def test_ixi_layout_and_match_filter(tmp_path, rng):
    """IXI is whole-head: ``brain_mask: deepbet`` needs no mask file; load_case leaves the mask to preprocessing."""
    root = tmp_path / "root"
    for name in ("IXI002-Guys-0828", "IXI012-HH-1211"):
        _nifti(root / "IXI-T1" / f"{name}-T1.nii.gz", _brain(rng))
    _nifti(root / "IXI-T1" / "IXIbad-T1.nii.gz", _brain(rng))  # not matched by `match`: skipped
    manifest = load_manifest(MANIFESTS / "ixi_t1.yaml")
    assert manifest.cohort("healthy").brain_mask == "deepbet"
    cases = discover_cases(manifest, root)
    assert [c.subject_id for c in cases] == ["IXI002-Guys-0828", "IXI012-HH-1211"]
    assert cases[0].lesion_masks == () and cases[0].lesion_rule is None and cases[0].role == "healthy"
    assert cases[0].brain_mask is None and cases[0].skull_strip == "deepbet"
    assert check_manifest(manifest, root) == []
    volumes = load_case(cases[0])
    assert volumes.brain_mask is None and volumes.image.shape == _brain(rng).shape


def test_deepbet_case_is_checked_without_a_brain_mask(tmp_path):
    """A whole-head image has no mask before skull stripping: an all-zero image is the problem, not its mask."""
    root = tmp_path / "root"
    path = _nifti(root / "IXI-T1" / "IXI002-Guys-0828-T1.nii.gz", np.zeros((8, 8, 8), np.float32))
    assert check_manifest(load_manifest(MANIFESTS / "ixi_t1.yaml"), root) == [
        f"IXI002-Guys-0828 (healthy): {path}: image is all zero (nothing to skull strip)"]
    (root / "IXI-T1" / "IXI002-Guys-0828-T1.nii.gz").write_bytes(b"not a nifti")
    problems = check_manifest(load_manifest(MANIFESTS / "ixi_t1.yaml"), root)
    assert len(problems) == 1 and problems[0].startswith("IXI002-Guys-0828 (healthy): ")


def test_discovery_problems(tmp_path, rng):
    root = tmp_path / "root"
    _nifti(root / "healthy" / "a b.nii.gz", _brain(rng))  # a space: not a file-name-safe id
    path = _edited(tmp_path, lambda d: d["cohorts"].append(
        {"name": "other", "role": "healthy", "cases": "other/*.nii.gz", "image": "{anchor}",
         "brain_mask": "nonzero", "split": {"val": "all"}}))
    problems = check_manifest(load_manifest(path), root)
    assert problems == [
        "a b (healthy): subject id from 'healthy/a b.nii.gz' is not usable as a file name",
        f"cohort 'other': no case matches 'other/*.nii.gz' under {root}",
    ]


def test_duplicate_subject_ids_and_ambiguous_patterns(tmp_path, rng):
    root = tmp_path / "root"
    for folder in ("x", "y"):
        _nifti(root / folder / "s1" / "t1_a.nii.gz", _brain(rng))
        _nifti(root / folder / "s1" / "t1_b.nii.gz", _brain(rng))
    path = _edited(tmp_path, lambda d: d["cohorts"][0].update(cases="*/s1/", image="{case_dir}/t1_*.nii.gz"))
    problems = check_manifest(load_manifest(path), root)
    assert problems == ["s1 (healthy): image pattern '{case_dir}/t1_*.nii.gz' matches 2 files"] * 2
    path = _edited(tmp_path, lambda d: d["cohorts"][0].update(cases="*/s1/", image="{case_dir}/t1_a.nii.gz"))
    problems = check_manifest(load_manifest(path), root)
    assert problems == ["subject id 's1' is found 2 times"]


def test_discover_arguments(tmp_path):
    manifest = load_manifest(MANIFESTS / "sample_real.yaml")
    with pytest.raises(ManifestError, match=r"data root of manifest 'sample_real' not found"):
        discover_cases(manifest, tmp_path / "missing")
    missing = tmp_path / "missing"
    assert check_manifest(manifest, missing) == [f"{missing}: data root not found or not a folder"]
    with pytest.raises(TypeError, match="`manifest` must be a Manifest"):
        discover_cases({"name": "x"}, tmp_path)
    with pytest.raises(TypeError, match="`root` must be a str or path, got None"):
        discover_cases(manifest, None)
    with pytest.raises(ValueError, match="`manifest` must be a real-data manifest, got kind 'phantom'"):
        discover_cases(load_manifest(MANIFESTS / "phantom.yaml"), tmp_path)


def test_phantom_sources(tmp_path, rng):
    manifest = load_manifest(MANIFESTS / "phantom.yaml")
    assert phantom_sources(manifest) is None
    assert check_manifest(manifest, tmp_path) == []
    text = (MANIFESTS / "phantom.yaml").read_text().replace("sources: mni152", 'sources: ["healthy/*.nii.gz", "x/*"]')
    globbed = load_manifest(_write_manifest(tmp_path / "p.yaml", text))
    _nifti(tmp_path / "healthy" / "b.nii.gz", _brain(rng))
    _nifti(tmp_path / "healthy" / "a.nii.gz", _brain(rng))
    with pytest.raises(ManifestError, match=r"phantom source glob\(s\) \['x/\*'\] match no file"):
        phantom_sources(globbed, tmp_path)
    assert check_manifest(globbed, tmp_path)[0].startswith("manifest 'phantom': phantom source glob(s) ['x/*']")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "c.nii.gz").write_bytes(b"junk")
    assert phantom_sources(globbed, tmp_path) == [tmp_path / p for p in ("healthy/a.nii.gz", "healthy/b.nii.gz",
                                                                          "x/c.nii.gz")]
    problems = check_manifest(globbed, tmp_path)
    assert len(problems) == 1
    assert problems[0].startswith(f"phantom source: {tmp_path / 'x' / 'c.nii.gz'}: not a readable")
    with pytest.raises(ManifestError, match="its phantom sources are globs; pass the data root"):
        phantom_sources(globbed)
    with pytest.raises(ValueError, match="`manifest` must be a phantom manifest, got kind 'real'"):
        phantom_sources(load_manifest(MANIFESTS / "sample_real.yaml"))


# --------------------------------------------------------------------------------------------------
# Splits


@pytest.mark.parametrize(
    ("n", "split", "expected"),
    [
        (17, {"train": 0.9, "val": 0.1}, {"train": 15, "val": 2}),
        (10, {"train": 0.9, "val": 0.1}, {"train": 9, "val": 1}),
        (5, {"train": 0.9, "val": 0.1}, {"train": 4, "val": 1}),  # val would round to 0: takes one
        (1, {"train": 0.9, "val": 0.1}, {"train": 1, "val": 0}),
        (0, {"val": 0.4, "test": 0.6}, {"val": 0, "test": 0}),
        (335, {"val": 133, "test": 202}, {"val": 133, "test": 202}),
        (400, {"val": 133, "test": 202}, {"val": 133, "test": 202}),  # surplus left out
        (100, {"val": 133, "test": 202}, {"val": 40, "test": 60}),  # scaled down
        (304, {"val": 121, "test": 183}, {"val": 121, "test": 183}),
        (60, {"val": 0.4, "test": 0.6}, {"val": 24, "test": 36}),
        (2, {"test": "all"}, {"test": 2}),
    ],
)
def test_split_sizes(n, split, expected):
    sizes = split_sizes(n, split)
    assert sizes == expected and list(sizes) == list(expected)


def test_split_sizes_validates():
    with pytest.raises(TypeError, match="`n` must be an int, got 2.0"):
        split_sizes(2.0, {"test": "all"})
    with pytest.raises(ValueError, match="`n` must be >= 0, got -1"):
        split_sizes(-1, {"test": "all"})
    with pytest.raises(ValueError, match="`split` must be a valid split mapping.*sum to 1"):
        split_sizes(3, {"train": 0.5, "val": 0.1})


def _count_manifest(tmp_path: Path, split: str, seed: int = 0) -> Path:
    return _edited(tmp_path, lambda d: d["cohorts"][0].update(split=yaml.safe_load(split), seed=seed))


def _healthy_cases(n: int) -> list[Case]:
    return [Case(f"s{i:02d}", "healthy", "healthy", Path(f"s{i:02d}.nii.gz"), None, ()) for i in range(n)]


def test_assign_splits_counts_disjoint_and_deterministic(tmp_path):
    manifest = load_manifest(_count_manifest(tmp_path, "{train: 6, val: 3, test: 2}"))
    cases = _healthy_cases(14)
    first = assign_splits(cases, manifest)
    again = assign_splits(list(reversed(cases)), manifest)  # input order does not matter
    assert first == again
    by_split = {s: {c.subject_id for c in first if c.split == s} for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in by_split.items()} == {"train": 6, "val": 3, "test": 2}
    assert not (by_split["train"] & by_split["val"]) and not (by_split["val"] & by_split["test"])
    assert not (by_split["train"] & by_split["test"])
    assert len(first) == 11  # 3 surplus cases left out
    assert [c.subject_id for c in first] == sorted(c.subject_id for c in first)


def test_assign_splits_known_permutation(tmp_path):
    manifest = load_manifest(_count_manifest(tmp_path, "{train: 0.5, val: 0.5}", seed=7))
    result = assign_splits(_healthy_cases(6), manifest)
    order = np.random.default_rng(7).permutation(6)
    expected_train = {f"s{i:02d}" for i in order[:3]}
    assert {c.subject_id for c in result if c.split == "train"} == expected_train
    other = assign_splits(_healthy_cases(6), load_manifest(_count_manifest(tmp_path, "{train: 0.5, val: 0.5}", 8)))
    assert [c.split for c in other] != [c.split for c in result]


def test_assign_splits_on_sample_layout_scales_counts(tmp_path, rng):
    root = _brats_tree(tmp_path / "root", rng)
    manifest = load_manifest(MANIFESTS / "brats2019.yaml")
    result = assign_splits(discover_cases(manifest, root), manifest)
    assert len(result) == 7
    assert sum(c.split == "val" for c in result) == 3 and sum(c.split == "test" for c in result) == 4


def test_assign_splits_validates(tmp_path):
    manifest = load_manifest(MANIFESTS / "sample_real.yaml")
    with pytest.raises(TypeError, match="`cases` must hold Case items"):
        assign_splits(["s1"], manifest)
    stray = Case("s1", "atlas", "lesion", Path("a"), None, ())
    with pytest.raises(ValueError, match=r"`cases` name cohort\(s\) \['atlas'\] that manifest 'sample_real' lacks"):
        assign_splits([stray], manifest)
    twice = _healthy_cases(1) * 2
    with pytest.raises(ValueError, match=r"`cases` must have unique subject ids, got \['s00'\]"):
        assign_splits(twice, manifest)
    with pytest.raises(TypeError, match="`manifest` must be a Manifest"):
        assign_splits([], "sample_real.yaml")


# --------------------------------------------------------------------------------------------------
# load_case


def test_load_case_nonzero_brain_keeps_negative_voxels(tmp_path):
    image = np.zeros((4, 4, 4), np.float32)
    image[1:3, 1:3, 1:3] = [-0.01, 0.5]  # bias correction leaves small negatives inside the brain
    path = _nifti(tmp_path / "t1.nii.gz", image)
    volumes = load_case(Case("s", "healthy", "healthy", path, None, ()))
    assert volumes.brain_mask.dtype == bool and volumes.brain_mask.sum() == 8
    assert volumes.lesion_mask is None and volumes.image.dtype == np.float32
    np.testing.assert_allclose(volumes.affine, np.eye(4))


def test_load_case_errors(tmp_path, rng):
    image = _nifti(tmp_path / "t1.nii.gz", _brain(rng))
    shifted = np.eye(4)
    shifted[2, 3] = 4.0
    moved = _nifti(tmp_path / "seg.nii.gz", _lesion(), shifted)
    with pytest.raises(VolumeError, match=r"seg\.nii\.gz: affine differs from that of .*t1\.nii\.gz by up to 4 mm"):
        load_case(Case("s", "brats", "lesion", image, None, (moved,), None, "> 0"))
    empty = _nifti(tmp_path / "mask.nii.gz", np.zeros((8, 8, 8), np.uint8))
    with pytest.raises(VolumeError, match=r"s \(healthy\): brain mask is empty \(.*mask\.nii\.gz\)"):
        load_case(Case("s", "healthy", "healthy", image, empty, ()))
    with pytest.raises(VolumeError, match=r"missing\.nii\.gz: file not found"):
        load_case(Case("s", "healthy", "healthy", tmp_path / "missing.nii.gz", None, ()))
    with pytest.raises(TypeError, match="`case` must be a Case"):
        load_case(str(image))


def _lesion_case(tmp_path, rng, seg: np.ndarray, *, image=None, affine=None) -> Case:
    image_path = _nifti(tmp_path / "t1.nii.gz", _brain(rng) if image is None else image, affine)
    seg_path = _nifti(tmp_path / "seg.nii.gz", seg, affine)
    return Case("s", "brats", "lesion", image_path, None, (seg_path,), None, "> 0")


def _outside_lesion() -> np.ndarray:
    seg = np.zeros((8, 8, 8), np.int16)
    seg[0, 0, 0] = 1  # the brain is the cube [2:6]^3
    return seg


def _negative_label() -> np.ndarray:
    seg = _lesion()
    seg[4, 4, 4] = -1  # would be dropped silently by the rule "> 0"
    return seg


@pytest.mark.parametrize(("seg", "image", "affine", "message"), [
    (np.zeros((8, 8, 8), np.int16), None, None, r"s \(brats\): lesion mask is empty \(no voxel > 0 in .*seg"),
    (_outside_lesion(), None, None, r"s \(brats\): lesion mask lies entirely outside the brain mask"),
    (_negative_label(), None, None, r"seg\.nii\.gz: holds label\(s\) -1 outside the documented set"),
    (_lesion(), "zero inside", None, r"t1\.nii\.gz: image is all zero inside the brain mask"),
    (_lesion(), None, np.diag([1000.0, 1000.0, 1000.0, 1.0]),
     r"t1\.nii\.gz: field of view \[8000, 8000, 8000\] mm .* is larger than a head"),
])
def test_load_case_and_check_refuse_silently_wrong_cases(tmp_path, rng, seg, image, affine, message):
    """Each case would build with exit 0 and score DICE 0.000 as if it were a result: refused by both
    ``load_case`` (so ``data build``) and ``check_manifest`` (``data check``), with the same words."""
    if image == "zero inside":  # a valid brain mask file, but the image is zero everywhere in it
        brain = _nifti(tmp_path / "brain.nii.gz", (_brain(rng) > 0).astype(np.uint8))
        case = _lesion_case(tmp_path, rng, seg, image=np.zeros((8, 8, 8), np.float32))
        case = dataclasses.replace(case, brain_mask=brain)
    else:
        case = _lesion_case(tmp_path, rng, seg, affine=affine)
    with pytest.raises(VolumeError, match=message):
        load_case(case)
    problems = manifests._volume_problems(case)
    assert len(problems) == 1 and re.search(message, problems[0]), problems


def test_a_file_name_with_a_trailing_newline_is_not_a_subject_id(tmp_path, rng):
    root = tmp_path / "root"
    _nifti(root / "healthy" / "good.nii.gz", _brain(rng))
    _nifti(root / "healthy" / "bad\n.nii.gz", _brain(rng))
    manifest = load_manifest(_write_manifest(tmp_path / "m.yaml", REAL))
    problems = check_manifest(manifest, root)
    assert len(problems) == 1 and "is not usable as a file name" in problems[0], problems
    with pytest.raises(ManifestError, match="not usable as a file name"):
        discover_cases(manifest, root)


# --------------------------------------------------------------------------------------------------
# The real sample (../shared/data/real), skipped when absent


@pytest.mark.real_data
def test_sample_real_manifest(real_data_dir):
    manifest = load_manifest(MANIFESTS / "sample_real.yaml")
    cases = discover_cases(manifest, real_data_dir)
    counts = {name: sum(c.cohort == name for c in cases) for name in ("healthy", "brats2014", "mslub")}
    assert counts == {"healthy": 17, "brats2014": 1, "mslub": 1}
    brats = next(c for c in cases if c.cohort == "brats2014")
    assert brats.brain_mask.name == "brain_mask.nii.gz" and [p.name for p in brats.lesion_masks] == ["seg.nii.gz"]
    splits = assign_splits(cases, manifest)
    assert sum(c.split == "train" for c in splits) == 15 and sum(c.split == "val" for c in splits) == 2
    assert {c.split for c in splits if c.role == "lesion"} == {"test"}
    # full read of the smallest cohort only (reading all 19 volumes takes seconds)
    mslub_only = manifest.model_copy(update={"cohorts": [manifest.cohort("mslub")]})
    assert check_manifest(mslub_only, real_data_dir) == []
