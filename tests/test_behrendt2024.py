"""Tests of ``uadlab reproduce --study behrendt2024`` (uadlab.behrendt2024) on tiny blob data, two epochs."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
from conftest import write_blob_dataset

from uadlab.behrendt2024 import COLUMNS, RECON_EXPERIMENTS, run_study
from uadlab.cli import main
from uadlab.data.dataset import load_dataset
from uadlab.profiles import get_profile
from uadlab.reproduce import reproduce
from uadlab.training import load_segmenter


@pytest.fixture(scope="module")
def tiny_profile():
    """The smoke profile with a two-level backbone, two epochs and small batches."""
    return dataclasses.replace(get_profile("smoke"), name="tiny", channels=(8, 16), max_epochs=2, patience=2,
                               batch_size=16)


@pytest.fixture(scope="module")
def blob_dataset(tmp_path_factory):
    """The blob data set of conftest, recorded as built with the tiny profile."""
    return write_blob_dataset(tmp_path_factory.mktemp("blobs") / "data", profile="tiny")


@pytest.fixture(scope="module")
def study(tmp_path_factory, tiny_profile, blob_dataset):
    out = tmp_path_factory.mktemp("results")
    return out, reproduce(tiny_profile, blob_dataset, out, study="behrendt2024", labelled_cases=1)


@pytest.mark.slow
def test_the_study_has_every_row(study):
    out, outputs = study
    assert outputs["behrendt2024.csv"] == out / "behrendt2024" / "behrendt2024.csv"
    table = pd.read_csv(outputs["behrendt2024.csv"]).fillna({"view": "", "labels": ""})
    assert list(table.columns) == list(COLUMNS)
    keys = set(zip(table["method"], table["model"], table["labels"], table["dataset"], table["view"]))
    expected = {("reconstruction", m, "healthy", c, "") for m in RECON_EXPERIMENTS for c in ("tumour", "stroke")}
    expected |= {("segmenter", "ddpm:2D-None", "synthetic", c, "") for c in ("tumour", "stroke")}
    expected |= {("segmenter", "ddpm:2D-None", "synthetic + 1 tumour", "tumour", "in-domain"),
                 ("segmenter", "ddpm:2D-None", "synthetic + 1 tumour", "stroke", "unseen pathology"),
                 ("segmenter", "ddpm:2D-None", "synthetic + 1 stroke", "stroke", "in-domain"),
                 ("segmenter", "ddpm:2D-None", "synthetic + 1 stroke", "tumour", "unseen pathology")}
    assert keys == expected and len(table) == len(expected)
    assert table[["dice_d", "auprc", "sample_auroc", "sample_ap"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (table["train_seconds"] > 0).all()
    # In-domain, the threshold saw only the validation case the segmenter did not train on.
    in_domain = table[table["view"] == "in-domain"]
    assert (in_domain["n_val"] == 1).all() and (table.loc[table["view"] != "in-domain", "n_val"] == 2).all()
    assert "| reconstruction | ddpm:2D-None | healthy |" in outputs["behrendt2024.md"].read_text()


@pytest.mark.slow
def test_the_weakly_supervised_segmenter_never_trained_on_a_test_case(study, blob_dataset):
    out, outputs = study
    payloads = {p.name: torch.load(p, weights_only=True) for p in outputs["segmenters"].glob("*.pt")}
    assert len(payloads) == 3
    for payload in payloads.values():
        assert not [i for i in payload["training_ids"] + payload["validation_ids"] if "-test-" in i]
    assert any("tumour-val" in i for i in payloads["ddpm_2D-None__synthetic+1-tumour.pt"]["training_ids"])
    load_segmenter(outputs["segmenters"] / "ddpm_2D-None__synthetic.pt")


@pytest.mark.slow
def test_a_rerun_trains_nothing(study, tiny_profile, blob_dataset):
    out, outputs = study
    files = [*out.glob("behrendt2024/runs/*/checkpoint.pt"), *outputs["segmenters"].glob("*.pt")]
    stamps = {p: p.stat().st_mtime_ns for p in files}
    table = outputs["behrendt2024.csv"].read_text()
    reproduce(tiny_profile, blob_dataset, out, study="behrendt2024", labelled_cases=1)
    assert {p: p.stat().st_mtime_ns for p in files} == stamps
    assert outputs["behrendt2024.csv"].read_text() == table


def test_bad_study_options_are_refused(tmp_path, blob_dataset, capsys):
    with pytest.raises(ValueError, match="`labelled_cases` must be an int >= 0"):
        run_study("smoke", blob_dataset, None, tmp_path, labelled_cases=-1)
    with pytest.raises(ValueError, match="`segmenter_experiments` must be among `recon_experiments`"):
        run_study("smoke", blob_dataset, None, tmp_path, recon_experiments=("2D-None",))
    assert main(["reproduce", "--study", "behrendt2025", "--data", str(blob_dataset), "--out", str(tmp_path)]) == 2
    assert "`study` must be one of ['bengs2021', 'lambert2021', 'behrendt2024']" in capsys.readouterr().err


@pytest.mark.slow
def test_test_only_cohorts_take_their_threshold_from_val_data(tmp_path, tiny_profile, blob_dataset):
    """As the real sample: lesion cases in the test split only; the threshold comes from another data set."""
    data = write_blob_dataset(tmp_path / "test_only", seed=1, splits={"healthy": {"train": 3, "val": 2},
                                                                     "tumour": {"test": 2}, "mslub": {"test": 1}},
                              profile="tiny")
    outputs = run_study(tiny_profile, data, load_dataset(data), tmp_path / "out", recon_experiments=("2D-None",),
                        segmenter_experiments=("2D-None",), val_data=blob_dataset)
    table = pd.read_csv(outputs["behrendt2024.csv"])
    assert sorted(zip(table["method"], table["dataset"])) == [
        ("reconstruction", "mslub"), ("reconstruction", "tumour"), ("segmenter", "mslub"), ("segmenter", "tumour")]
    assert (table.loc[table["dataset"] == "tumour", "n_val"] == 2).all()  # val_data's tumour val split
    assert (table.loc[table["dataset"] == "mslub", "n_val"] == 4).all()  # pooled tumour + stroke val of val_data
    with pytest.raises(ValueError, match="`val_data` must be None for study 'bengs2021'"):
        reproduce(tiny_profile, data, tmp_path / "x", val_data=blob_dataset)
