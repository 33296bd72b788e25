"""Tests of uadlab.training.segmenter and uadlab.evaluation.supervised: pools, the test-split guard, training, maps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from uadlab.data.dataset import load_dataset
from uadlab.evaluation.protocol import evaluate_maps
from uadlab.evaluation.supervised import predict_segmented
from uadlab.models import MeanImage
from uadlab.profiles import get_profile
from uadlab.training.segmenter import (
    Segmenter,
    SegmenterConfig,
    labelled_pool,
    load_segmenter,
    save_segmenter,
    segment,
    split_labelled,
    synthetic_pool,
    train_segmenter,
)
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
    return SegmenterConfig(spatial_dims, SIZE, channels=(4, 8), num_res_units=0, copies=1, batch_size=8,
                           max_epochs=2, patience=2, **kwargs)


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
def test_training_never_reads_a_test_subject(dataset, mean_model, spatial_dims):
    recording = _Recording(dataset)
    labelled, threshold_ids = split_labelled(dataset, "tumour", 1)
    result = train_segmenter(mean_model, recording, _config(spatial_dims), labelled_ids=labelled, device="cpu")
    test_ids = {i for c in ("tumour", "stroke") for i in dataset.ids(cohort=c, split="test")}
    assert recording.read and not recording.read & test_ids
    assert not set(threshold_ids) & recording.read  # the threshold's cases stay out of training too
    assert set(result.training_ids) == set(dataset.ids(cohort="healthy", split="train")) | set(labelled)
    assert result.validation_ids == dataset.ids(cohort="healthy", split="val")
    assert list(result.history.columns) == ["epoch", "train_loss", "val_loss", "val_dice"]
    assert 1 <= result.best_epoch <= 2 and not result.segmenter.training


def test_a_test_subject_among_the_labelled_cases_is_refused_before_training(dataset, mean_model):
    recording = _Recording(dataset)
    with pytest.raises(ValueError, match=r"must never contain test subjects, got \['stroke-test-0'\]"):
        train_segmenter(mean_model, recording, _config(3), labelled_ids=["stroke-test-0"])
    assert not any(i.startswith("healthy") for i in recording.read)  # nothing was trained


def test_segment_and_the_supervised_maps_go_through_the_protocol(tmp_path, dataset, mean_model):
    torch.manual_seed(0)
    segmenter = Segmenter(_config(2)).eval()
    subject = dataset.subject("tumour-val-0")
    recon = np.asarray(mean_model.mean[0])
    probability = segment(segmenter, subject.image, recon)
    assert probability.shape == subject.image.shape and 0 <= probability.min() and probability.max() <= 1
    np.testing.assert_array_equal(segment(segmenter, subject.image[None], recon[None])[0], probability)
    path = save_segmenter(segmenter, tmp_path / "segmenter.pt")
    np.testing.assert_array_equal(segment(load_segmenter(path), subject.image, recon), probability)
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
    assert config.channels == (16, 32, 64, 128) and config.batch_size == 8 and config.max_epochs == 40
    assert dataclasses.replace(config, copies=4).copies == 4
    with pytest.raises(ValueError, match="`kinds` must be a non-empty tuple"):
        SegmenterConfig(2, 32, kinds=("tumour",))
    with pytest.raises(ValueError, match="`image_size` must be a positive multiple of 8"):
        SegmenterConfig(2, 36, channels=(4, 8, 16, 32))
    with pytest.raises(TypeError, match="`copies` must be a positive int"):
        SegmenterConfig(2, 32, copies=1.5)
