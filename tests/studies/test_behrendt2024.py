"""Tests of ``uadlab reproduce --study behrendt2024`` (uadlab.studies.behrendt2024) on tiny blob data, two epochs."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
from conftest import write_blob_dataset

from uadlab.cli import main
from uadlab.errors import UadlabWarning
from uadlab.profiles import get_profile
from uadlab.studies import Behrendt2024, make_study, plan_study, run_study
from uadlab.studies.behrendt2024 import COLUMNS, RECON_EXPERIMENTS, SEGMENTER_EXPERIMENTS
from uadlab.training import load_segmenter

pytestmark = pytest.mark.xdist_group("behrendt2024")  # one worker builds the module's study once

#: The study's runs here: its 2D and 3D DDPM (each with three segmenters) and one VAE; the other
#: reconstruction rows of the default (:data:`RECON_EXPERIMENTS`) take the same path as the VAE.
EXPERIMENTS = ["2D-None", "ddpm:2D-None", "ddpm:3D-None"]


@pytest.fixture(scope="module")
def tiny_profile():
    """The smoke profile with a two-level VAE backbone, two epochs and small batches. The DDPM's U-Net
    keeps three levels, so that its self-attention (the deepest level) spans 8³ tokens in 3D, not 16³:
    at 16³ attention took two thirds of this module's time (109 of 161 s)."""
    return dataclasses.replace(get_profile("smoke"), name="tiny", channels=(8, 16), diffusion_channels=(8, 16, 16),
                               max_epochs=2, patience=2, batch_size=16)


@pytest.fixture(scope="module")
def blob_dataset(tmp_path_factory):
    """The blob data set of conftest, recorded as built with the tiny profile."""
    return write_blob_dataset(tmp_path_factory.mktemp("blob_data") / "data", profile="tiny")


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_profile, blob_dataset):
    out = tmp_path_factory.mktemp("results")
    return out, run_study("behrendt2024", out, profile=tiny_profile, data=blob_dataset, labelled_cases=1,
                          experiments=EXPERIMENTS)


def test_the_default_study_has_2d_and_3d_rows(blob_dataset):
    study = make_study("behrendt2024", data=blob_dataset)
    assert study.recon == RECON_EXPERIMENTS == ("2D-None", "spatial-vae:2D-None", "ddpm:2D-None", "3D-None",
                                                "spatial-vae:3D-None", "ddpm:3D-None")
    assert study.segmenters == SEGMENTER_EXPERIMENTS == ("ddpm:2D-None", "ddpm:3D-None")


def test_more_labelled_cases_than_a_cohort_can_spare_are_capped_with_a_warning(tmp_path, blob_dataset):
    with pytest.warns(UadlabWarning) as caught:  # 2 validation cases per cohort: 1 to train on, 1 for the threshold
        lines = plan_study("behrendt2024", tmp_path, data=blob_dataset, labelled_cases=2, seeds=[0, 1],
                           experiments=["ddpm:2D-None"])
    assert [str(w.message) for w in caught] == [  # once, not once per seed
        f"{cohort}: the weakly supervised segmenter trains on 1 labelled case(s), not 2: the cohort's validation "
        "split holds 2, and one must remain to fit the threshold" for cohort in ("tumour", "stroke")]
    assert sum(line.endswith("--only-run ddpm_2D-None__synthetic+1-tumour") for line in lines) == 2  # a run per seed


@pytest.mark.slow
def test_the_study_has_every_row(study):
    out, outputs = study
    assert outputs["behrendt2024.csv"] == out / "behrendt2024" / "behrendt2024.csv"
    table = pd.read_csv(outputs["behrendt2024.csv"]).fillna({"view": "", "labels": ""})
    assert list(table.columns) == list(COLUMNS)
    keys = set(zip(table["method"], table["model"], table["labels"], table["dataset"], table["view"]))
    expected = {("reconstruction", m, "healthy", c, "") for m in EXPERIMENTS for c in ("tumour", "stroke")}
    for m in ("ddpm:2D-None", "ddpm:3D-None"):
        expected |= {("segmenter", m, "synthetic", c, "") for c in ("tumour", "stroke")}
        expected |= {("segmenter", m, "synthetic + 1 tumour", "tumour", "in-domain"),
                     ("segmenter", m, "synthetic + 1 tumour", "stroke", "unseen pathology"),
                     ("segmenter", m, "synthetic + 1 stroke", "stroke", "in-domain"),
                     ("segmenter", m, "synthetic + 1 stroke", "tumour", "unseen pathology")}
    assert keys == expected and len(table) == len(expected)
    assert table[["dice_d", "auprc", "sample_auroc", "sample_ap"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (table["train_seconds"] > 0).all()
    # In-domain, the threshold saw only the validation case the segmenter did not train on.
    in_domain = table[table["view"] == "in-domain"]
    assert (in_domain["n_val"] == 1).all() and (table.loc[table["view"] != "in-domain", "n_val"] == 2).all()
    assert "| reconstruction | ddpm:2D-None | healthy |" in outputs["behrendt2024.md"].read_text()
    assert "| segmenter | ddpm:3D-None | synthetic |" in outputs["behrendt2024.md"].read_text()


@pytest.mark.slow
@pytest.mark.parametrize("dims", ["2D", "3D"])
def test_the_segmenters_never_trained_on_a_test_case(study, dims):
    out, outputs = study
    runs = sorted(p for p in outputs["runs"].glob(f"ddpm_{dims}-None__*/seed0"))
    assert [p.parent.name for p in runs] == [f"ddpm_{dims}-None__synthetic", f"ddpm_{dims}-None__synthetic+1-stroke",
                                             f"ddpm_{dims}-None__synthetic+1-tumour"]
    payloads = {p.parent.name: torch.load(p / "checkpoint.pt", weights_only=False) for p in runs}
    for payload in payloads.values():
        assert payload["training_ids"] and payload["validation_ids"]
        assert not [i for i in payload["training_ids"] + payload["validation_ids"] if "-test-" in i]
    assert any("tumour-val" in i for i in payloads[f"ddpm_{dims}-None__synthetic+1-tumour"]["training_ids"])
    assert load_segmenter(runs[0]).spatial_dims == int(dims[0])


@pytest.mark.slow
def test_a_rerun_trains_nothing(study, tiny_profile, blob_dataset):
    out, outputs = study
    files = [*out.glob("behrendt2024/runs/*/seed0/checkpoint.pt")]
    assert len(files) == 9  # 3 reconstruction models, 6 segmenters
    stamps = {p: p.stat().st_mtime_ns for p in files}
    table = outputs["behrendt2024.csv"].read_text()
    run_study("behrendt2024", out, profile=tiny_profile, data=blob_dataset, labelled_cases=1, experiments=EXPERIMENTS)
    assert {p: p.stat().st_mtime_ns for p in files} == stamps
    assert outputs["behrendt2024.csv"].read_text() == table
    run_study("behrendt2024", out, profile=tiny_profile, data=blob_dataset, labelled_cases=1, experiments=EXPERIMENTS,
              overwrite=True)
    assert {p: p.stat().st_mtime_ns for p in files} == stamps  # --overwrite keeps finished runs of the same config


def test_bad_study_options_are_refused(tmp_path, blob_dataset, capsys):
    with pytest.raises(ValueError, match="`labelled_cases` must be an int >= 0"):
        run_study("behrendt2024", tmp_path, data=blob_dataset, labelled_cases=-1)
    sources = make_study("behrendt2024", data=blob_dataset).sources
    with pytest.raises(ValueError, match="`segmenter_experiments` must be among the experiments \\['2D-None'\\]"):
        Behrendt2024(sources, ["2D-None"], segmenter_experiments=["ddpm:2D-None"])
    assert Behrendt2024(sources, ["2D-None"]).segmenters == ()  # no DDPM: no segmenter
    with pytest.raises(ValueError, match="`labelled_cases` .--labelled-cases. is for behrendt2024, not bengs2021"):
        run_study("bengs2021", tmp_path, data=blob_dataset, labelled_cases=1)
    assert not any(tmp_path.iterdir())
    assert main(["reproduce", "--study", "behrendt2025", "--data", str(blob_dataset), "--out", str(tmp_path)]) == 2
    assert "`study` must be one of ['bengs2021', 'lambert2021', 'behrendt2024', 'zoo'] or a study file" in \
        capsys.readouterr().err


@pytest.mark.slow
def test_test_only_cohorts_take_their_threshold_from_val_data(tmp_path, tiny_profile, blob_dataset):
    """As the real sample: lesion cases in the test split only; the threshold comes from another data set."""
    data = write_blob_dataset(tmp_path / "test_only", seed=1, splits={"healthy": {"train": 3, "val": 2},
                                                                     "tumour": {"test": 2}, "mslub": {"test": 1}},
                              profile="tiny")
    study = Behrendt2024(make_study("behrendt2024", data=data, val_data=blob_dataset).sources,
                         ["2D-None"], segmenter_experiments=("2D-None",))
    outputs = run_study(study, tmp_path / "out", profile=tiny_profile)
    table = pd.read_csv(outputs["behrendt2024.csv"])
    assert sorted(zip(table["method"], table["dataset"])) == [
        ("reconstruction", "mslub"), ("reconstruction", "tumour"), ("segmenter", "mslub"), ("segmenter", "tumour")]
    assert (table.loc[table["dataset"] == "tumour", "n_val"] == 2).all()  # val_data's tumour val split
    assert (table.loc[table["dataset"] == "mslub", "n_val"] == 4).all()  # pooled tumour + stroke val of val_data


@pytest.mark.slow
def test_behrendt2024_with_two_seeds_writes_mean_and_sd(tmp_path, one_thread):
    data = write_blob_dataset(tmp_path / "data")  # recorded as built with the smoke profile
    outputs = run_study("behrendt2024", tmp_path / "out", profile="smoke", data=data, seeds=[0, 1], labelled_cases=0,
                        max_epochs=1, experiments=["2D-None", "ddpm:2D-None"])
    per_seed, summary = pd.read_csv(outputs["behrendt2024_seeds.csv"]), pd.read_csv(outputs["behrendt2024.csv"])
    assert set(per_seed["seed"]) == {0, 1} and len(per_seed) == 2 * len(summary)
    assert (summary["n_seeds"] == 2).all() and "sample_auroc_seed_sd" in summary.columns
    paired = pd.read_csv(outputs["paired.csv"])
    assert set(zip(paired["experiment"], paired["baseline"])) == {("ddpm_2D-None__synthetic", "ddpm_2D-None")}
