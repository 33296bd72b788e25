"""Tests of the segmenter (Behrendt et al. 2024): uadlab.models.segmenter, uadlab.training.anomaly_pools,
uadlab.training.segmenter (training through the fit core, run folder, resume) and uadlab.evaluation.supervised."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from uadlab.data.dataset import load_dataset
from uadlab.errors import RunError
from uadlab.evaluation.protocol import evaluate_maps
from uadlab.evaluation.supervised import predict_segmented
from uadlab.models import MeanImage
from uadlab.models.segmenter import Segmenter, segment
from uadlab.profiles import get_profile
from uadlab.training import SegmenterConfig, load_segmenter, split_labelled, train_segmenter
from uadlab.training import segmenter as training
from uadlab.training.anomaly_pools import labelled_pool, synthetic_pool
from uadlab.training.fit import fit
from uadlab.training.synthetic_anomalies import KINDS

SIZE = 32


@pytest.fixture(scope="module")
def dataset(blob_dataset):
    return load_dataset(blob_dataset)


@pytest.fixture(scope="module")
def mean_model(dataset):
    model = MeanImage(image_size=SIZE)
    images, _ = dataset.stack(dataset.ids(cohort="healthy", split="train"))
    model.fit(images[:, None])
    return model.eval()


def _config(spatial_dims: int, **kwargs) -> SegmenterConfig:
    options = {"channels": (4, 8), "num_res_units": 0, "copies": 1, "batch_size": 8, "max_epochs": 2,
               "patience": 2, "device": "cpu", **kwargs}
    return SegmenterConfig(spatial_dims, SIZE, **options)


class _Recording:
    """A data set that records every subject it hands out."""

    def __init__(self, dataset):
        self.dataset, self.read = dataset, set()

    def ids(self, **kwargs):
        return self.dataset.ids(**kwargs)

    @property
    def lesion_cohorts(self):
        return self.dataset.lesion_cohorts

    def subject(self, subject_id):
        self.read.add(subject_id)
        return self.dataset.subject(subject_id)

    def stack(self, ids):
        self.read.update(ids)
        return self.dataset.stack(ids)


def test_synthetic_pool_masks_are_the_changed_voxels_inside_the_brain(dataset, rng):
    images, brains = dataset.stack(dataset.ids(cohort="healthy", split="train"))
    pool = synthetic_pool(images, brains, lambda v: v * 0.5, rng, copies=3, subject_ids=["a", "b", "c"])
    assert len(pool) == 9 and pool.subject_ids == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    assert pool.kinds == [KINDS[i % len(KINDS)] for i in range(9)]  # kinds cycle
    originals = np.repeat(images, 3, axis=0)
    assert np.array_equal(pool.masks, pool.images != originals)
    assert not (pool.masks & ~pool.brain_masks).any()
    np.testing.assert_array_equal(pool.recons, pool.images * 0.5)  # the reconstruction of the anomalous image
    again = synthetic_pool(images, brains, lambda v: v * 0.5, np.random.default_rng(1234), copies=3)
    np.testing.assert_array_equal(again.images, pool.images)  # seeded


def test_split_labelled_is_disjoint_seeded_and_leaves_a_threshold_case(dataset):
    labelled, rest = split_labelled(dataset, "tumour", 1, seed=0)
    assert len(labelled) == 1 and len(rest) == 1
    assert set(labelled + rest) == set(dataset.ids(cohort="tumour", split="val"))
    assert split_labelled(dataset, "tumour", 1, seed=0) == (labelled, rest)
    assert split_labelled(dataset, "tumour", 0) == ([], dataset.ids(cohort="tumour", split="val"))
    with pytest.raises(ValueError, match=r"`labelled_cases` must be an int in \[0, 2\)"):
        split_labelled(dataset, "tumour", 2)


def test_labelled_pool_refuses_test_and_healthy_subjects(dataset, mean_model):
    with pytest.raises(ValueError, match="must be validation subjects of a lesion cohort.*tumour-test-0"):
        labelled_pool(dataset, ["tumour-test-0"], lambda v: v)
    with pytest.raises(ValueError, match="healthy-val-0"):
        labelled_pool(dataset, ["healthy-val-0"], lambda v: v)
    pool = labelled_pool(dataset, ["stroke-val-1"], lambda v: v)
    assert pool.kinds == ["lesion"] and pool.masks.sum() == dataset.subject("stroke-val-1").lesion_mask.sum()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_training_never_reads_a_test_subject(tmp_path, dataset, mean_model, spatial_dims):
    recording = _Recording(dataset)
    labelled, threshold_ids = split_labelled(dataset, "tumour", 1)
    result = train_segmenter(mean_model, recording, _config(spatial_dims), tmp_path / "seg", labelled_ids=labelled)
    test_ids = {i for c in ("tumour", "stroke") for i in dataset.ids(cohort=c, split="test")}
    assert recording.read and not recording.read & test_ids
    assert not set(threshold_ids) & recording.read  # the threshold's cases stay out of training too
    assert set(result.training_ids) == set(dataset.ids(cohort="healthy", split="train")) | set(labelled)
    assert result.validation_ids == dataset.ids(cohort="healthy", split="val")
    assert list(result.history.columns) == ["epoch", "train_loss", "val_loss", "val_dice", "seconds"]
    assert 1 <= result.best_epoch <= 2 and not result.segmenter.training


def test_a_test_subject_among_the_labelled_cases_is_refused_before_training(tmp_path, dataset, mean_model):
    recording = _Recording(dataset)
    with pytest.raises(ValueError, match=r"must never contain test subjects, got \['stroke-test-0'\]"):
        train_segmenter(mean_model, recording, _config(3), tmp_path / "seg", labelled_ids=["stroke-test-0"])
    assert not any(i.startswith("healthy") for i in recording.read)  # nothing was trained
    assert not (tmp_path / "seg").exists()


def test_segment_and_the_supervised_maps_go_through_the_protocol(dataset, mean_model):
    torch.manual_seed(0)
    segmenter = Segmenter(2, (4, 8), 0).eval()
    subject = dataset.subject("tumour-val-0")
    recon = np.asarray(mean_model.mean[0])
    probability = segment(segmenter, subject.image, recon)
    assert probability.shape == subject.image.shape and 0 <= probability.min() and probability.max() <= 1
    np.testing.assert_array_equal(segment(segmenter, subject.image[None], recon[None])[0], probability)
    ids = dataset.ids(cohort="tumour")
    maps = predict_segmented(mean_model, segmenter, dataset, ids)
    one = maps["tumour-val-0"]
    assert one.anomaly_map.max() <= 1 and not (one.anomaly_map[~one.brain_mask] != 0).any()
    np.testing.assert_allclose(one.residual, np.abs(subject.image - recon), atol=1e-6)
    result = evaluate_maps([maps[i] for i in dataset.ids(cohort="tumour", split="val")],
                           [maps[i] for i in dataset.ids(cohort="tumour", split="test")])
    assert 0 <= result.auprc <= 1
    with pytest.raises(ValueError, match="`val_maps` must not contain test subjects"):
        evaluate_maps(list(maps.values()), [maps["tumour-test-0"]])


def test_config_from_profile_and_checks():
    config = SegmenterConfig.from_profile(get_profile("lab"), 3, 64)
    # the lab's segmenter budget (Profile.epoch_limits, synthetic_copies): about 10 minutes on 2 cores
    assert config.channels == (16, 32, 64, 128) and config.batch_size == 8
    assert (config.max_epochs, config.copies) == (10, 2)
    smoke = SegmenterConfig.from_profile(get_profile("smoke"), 2, 32)
    assert (smoke.max_epochs, smoke.copies) == (get_profile("smoke").max_epochs, 4)
    assert SegmenterConfig.from_profile(get_profile("lab"), 2, 64, max_epochs=3, copies=1).max_epochs == 3
    assert dataclasses.replace(config, copies=4).copies == 4
    with pytest.raises(ValueError, match="`kinds` must be a non-empty tuple"):
        SegmenterConfig(2, 32, kinds=("tumour",))
    with pytest.raises(ValueError, match="`image_size` must be a positive multiple of 8"):
        SegmenterConfig(2, 36, channels=(4, 8, 16, 32))
    with pytest.raises(TypeError, match="`copies` must be a positive int"):
        SegmenterConfig(2, 32, copies=1.5)
    with pytest.raises(ValueError, match="`precision` must be one of"):
        SegmenterConfig(2, 32, precision="bf16")
    with pytest.raises(ValueError, match="`device` must be a torch device"):
        SegmenterConfig(2, 32, device="tpu-9")


@pytest.mark.parametrize(("args", "match"), [
    ((4, (4, 8), 0), "`spatial_dims` must be 2 or 3"),
    ((2, (), 0), "`channels` must be positive ints"),
    ((2, (4, -8), 0), "`channels` must be positive ints"),
    ((2, (4, 8), -1), "`num_res_units` must be an int >= 0"),
])
def test_segmenter_module_checks_its_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        Segmenter(*args)


def test_segment_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="`images` and `recons` must be"):
        segment(Segmenter(2, (4, 8), 0), np.zeros((8, 8, 8)), np.zeros((8, 8, 4)))


# --- the run folder: reuse, resume, refusal ---------------------------------------------------------


def _weights(run_dir):
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    return {**{f"model.{k}": v for k, v in checkpoint["model"].items()},
            **{f"best.{k}": v for k, v in checkpoint["best_model"].items()}}


def test_a_segmenter_run_writes_its_folder_and_a_finished_run_is_reused(tmp_path, dataset, mean_model,
                                                                        monkeypatch):
    result = train_segmenter(mean_model, dataset, _config(2), tmp_path / "seg")
    assert sorted(p.name for p in result.run_dir.iterdir()) == ["checkpoint.pt", "config.yaml", "history.csv"]
    assert SegmenterConfig.from_yaml(tmp_path / "seg" / "config.yaml") == _config(2)
    history = pd.read_csv(tmp_path / "seg" / "history.csv")
    pd.testing.assert_frame_equal(history, result.history, check_dtype=False)
    assert result.finished and (history["seconds"] > 0).all()
    loaded = load_segmenter(tmp_path / "seg", device="cpu")
    assert not loaded.training
    for key, value in result.segmenter.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    monkeypatch.setattr(training, "_pools", _fail)  # a finished run is returned without training
    again = train_segmenter(mean_model, dataset, _config(2, device=None), tmp_path / "seg")  # the device may change
    pd.testing.assert_frame_equal(again.history, result.history)
    assert (again.best_epoch, again.training_ids, again.validation_ids) == (
        result.best_epoch, result.training_ids, result.validation_ids)


def _fail(*args, **kwargs):
    raise AssertionError("must not be called")


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_a_stopped_segmenter_run_resumed_gives_the_same_weights(tmp_path, dataset, mean_model, monkeypatch,
                                                                 spatial_dims):
    config = _config(spatial_dims, max_epochs=3, patience=3)
    full = train_segmenter(mean_model, dataset, config, tmp_path / "full")
    with monkeypatch.context() as patch:  # as if the process had been killed after epoch 1's checkpoint
        patch.setattr(training, "fit", lambda *args, **kwargs: fit(*args, **kwargs, _stop_after_epoch=1))
        cut = train_segmenter(mean_model, dataset, config, tmp_path / "cut")
    assert not cut.finished and len(cut.history) == 1
    torch.manual_seed(123)  # the resume restores every generator itself
    resumed = train_segmenter(mean_model, dataset, config, tmp_path / "cut")
    assert resumed.finished and resumed.best_epoch == full.best_epoch
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(full.history.drop(columns="seconds"), resumed.history.drop(columns="seconds"))


def test_a_changed_segmenter_config_or_other_subjects_are_refused(tmp_path, dataset, mean_model):
    train_segmenter(mean_model, dataset, _config(2, max_epochs=1), tmp_path / "seg")
    with pytest.raises(RunError, match=r"cannot resume, the config differs in max_epochs \(stored 1, given 2\); "
                                       r"lr \(stored 0.001, given 0.01\)"):
        train_segmenter(mean_model, dataset, _config(2, max_epochs=2, lr=0.01), tmp_path / "seg")
    labelled = split_labelled(dataset, "tumour", 1)[0]
    with pytest.raises(RunError, match="differs in training_ids"):
        train_segmenter(mean_model, dataset, _config(2, max_epochs=1), tmp_path / "seg", labelled_ids=labelled)
    with pytest.raises(RunError, match="holds a training run; pass resume=True"):
        train_segmenter(mean_model, dataset, _config(2, max_epochs=1), tmp_path / "seg", resume=False)
    result = train_segmenter(mean_model, dataset, _config(2, max_epochs=2), tmp_path / "seg", overwrite=True)
    assert len(result.history) == 2
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("x")
    with pytest.raises(RunError, match="not a training run"):
        train_segmenter(mean_model, dataset, _config(2), tmp_path / "notes")


def test_segmenter_trains_at_the_configured_precision_with_progress(tmp_path, dataset, mean_model, capsys):
    fp32 = train_segmenter(mean_model, dataset, _config(2, max_epochs=1), tmp_path / "fp32")
    bf16 = train_segmenter(mean_model, dataset, _config(2, max_epochs=1, precision="bf16-mixed"), tmp_path / "bf16",
                           progress=True)
    assert fp32.history["train_loss"].iloc[0] != bf16.history["train_loss"].iloc[0]  # autocast is on
    assert bf16.history["val_loss"].iloc[0] == pytest.approx(fp32.history["val_loss"].iloc[0], rel=0.05)
    assert "segmenter: 100%" in capsys.readouterr().err


def test_load_segmenter_without_a_run_raises(tmp_path):
    with pytest.raises(RunError, match="not a segmenter run"):
        load_segmenter(tmp_path, device="cpu")
    _config(2).to_yaml(tmp_path / "config.yaml")
    with pytest.raises(RunError, match="no checkpoint.pt"):
        load_segmenter(tmp_path, device="cpu")
    (tmp_path / "config.yaml").write_text("- a list")
    with pytest.raises(RunError, match="the segmenter config must be a mapping"):
        load_segmenter(tmp_path, device="cpu")
