"""Tests of reconstruction runs (uadlab.training: reconstruction, config, runs, devices, fit): subsets, config,
determinism, resume, run folders, the training step."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import TINY_PROFILE, TINY_SIZE, blob_volumes

from uadlab import profiles
from uadlab.errors import DatasetError, RunError
from uadlab.models import DenseVAE
from uadlab.profiles import get_profile
from uadlab.training import (
    HISTORY_COLUMNS,
    TrainConfig,
    devices,
    load_run,
    runs,
    seed_everything,
    train,
    training_subset,
)
from uadlab.training import reconstruction as training
from uadlab.training.config import resume_differences


@pytest.fixture
def arrays(rng):
    """(images, brain_masks, val_images) of 6 training and 2 validation subjects at 16³."""
    images, brain_masks = blob_volumes(8, rng)
    return images[:6], brain_masks[:6], images[6:]


def _config(experiment: str = "3D-None", **kwargs) -> TrainConfig:
    return TrainConfig(experiment=experiment, profile=TINY_PROFILE, data="in-memory", device="cpu", **kwargs)


def _run(config: TrainConfig, run_dir: Path, arrays, *, resume=False, overwrite=False, **kwargs):
    """Train on in-memory arrays through the same folder logic as :func:`train`."""
    run_dir = training._prepare_run_dir(config, run_dir, resume=resume, overwrite=overwrite)
    checkpoint = training._resume_checkpoint(run_dir, config) if resume else None
    if checkpoint is not None and checkpoint["finished"]:
        return training._result(run_dir, checkpoint)
    if overwrite:
        runs.clear_run(run_dir)
    return training._train_arrays(config, run_dir, *arrays, checkpoint=checkpoint, **kwargs)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    return {**{f"model.{k}": v for k, v in checkpoint["model"].items()},
            **{f"best.{k}": v for k, v in checkpoint["best_model"].items()}}


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --- training_subset --------------------------------------------------------------------------------


def test_training_subset_is_nested_deterministic_and_order_free():
    ids = [f"sub-{i:02d}" for i in range(20)]
    subsets = {f: training_subset(ids, f, seed=3) for f in (0.1, 0.2, 0.6, 1.0)}
    assert [len(s) for s in subsets.values()] == [2, 4, 12, 20]
    assert set(subsets[0.1]) < set(subsets[0.2]) < set(subsets[0.6]) < set(subsets[1.0]) == set(ids)
    assert training_subset(list(reversed(ids)), 0.6, seed=3) == subsets[0.6]
    assert training_subset(ids, 0.6, seed=4) != subsets[0.6]
    assert training_subset(ids, 0.01, seed=3) == subsets[0.1][:1]  # at least one subject


@pytest.mark.parametrize(("ids", "fraction", "seed", "error", "match"), [
    (["a"], 0.0, 0, ValueError, r"`fraction` must be in \(0, 1\]"),
    (["a"], 1.5, 0, ValueError, r"`fraction` must be in \(0, 1\]"),
    (["a"], "1", 0, TypeError, "`fraction` must be a number"),
    (["a"], 0.5, 1.0, TypeError, "`seed` must be an int"),
    ([], 0.5, 0, ValueError, "`ids` must not be empty"),
    ("abc", 0.5, 0, TypeError, "`ids` must be a sequence of subject ids"),
])
def test_training_subset_rejects_bad_arguments(ids, fraction, seed, error, match):
    with pytest.raises(error, match=match):
        training_subset(ids, fraction, seed)


# --- TrainConfig, seed_everything ----------------------------------------------------------------


@pytest.mark.parametrize(("changes", "error", "match"), [
    ({"experiment": 3}, TypeError, "`experiment` must be a str"),
    ({"experiment": "3D-Sphere-n"}, ValueError, "`experiment` must be a Table 1 name"),
    ({"profile": "huge"}, ValueError, "`profile` must be one of"),
    ({"profile": 1}, TypeError, "`profile` must be a profile name"),
    ({"data": 1}, TypeError, "`data` must be a path"),
    ({"fraction": 0}, ValueError, r"`fraction` must be in \(0, 1\]"),
    ({"seed": -1}, ValueError, r"`seed` must be a non-negative int below 2\*\*32"),
    ({"seed": 2**32}, ValueError, r"`seed` must be a non-negative int below 2\*\*32"),
    ({"seed": True}, TypeError, "`seed` must be an int"),
    ({"loss": "mse"}, ValueError, "`loss` must be one of"),
    ({"lr": 0.0}, ValueError, "`lr` must be > 0"),
    ({"batch_size": 0}, ValueError, "`batch_size` must be a positive int"),
    ({"max_epochs": 2.0}, TypeError, "`max_epochs` must be an int"),
    ({"device": "gpu7"}, ValueError, "`device` must be a torch device"),
])
def test_train_config_rejects_bad_fields(changes, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(**{"experiment": "3D-None", "profile": "smoke", "data": "d", **changes})


def test_train_config_resolves_profile_defaults_and_round_trips_yaml(tmp_path):
    config = TrainConfig(experiment="2D-Patch-n", profile="lab", data=tmp_path, max_epochs=5)
    assert config.data == str(tmp_path)
    assert (config.resolved("batch_size"), config.resolved("max_epochs")) == (32, 5)
    assert config.resolved("patience") == get_profile("lab").patience
    # 3D batches hold volumes: the lab profile makes them smaller so an epoch still makes enough steps
    assert TrainConfig(experiment="3D-Cube-n", profile="lab", data=tmp_path).resolved("batch_size") == 8
    assert TrainConfig(experiment="3D-Cube-n", profile="paper", data=tmp_path).resolved("batch_size") == 32
    assert TrainConfig(experiment="3D-None", profile="lab", data=tmp_path, batch_size=4).resolved("batch_size") == 4
    assert TrainConfig.from_yaml(config.to_yaml(tmp_path / "a.yaml")) == config
    # the lab's diffusion budget: a family's own epoch limit, unless the run or a shorter profile sets less
    assert TrainConfig(experiment="ddpm:2D-None", profile="lab", data=tmp_path).resolved("max_epochs") == 6
    assert TrainConfig(experiment="cddpm:3D-None", profile="lab", data=tmp_path).resolved("max_epochs") == 6
    given = TrainConfig(experiment="ddpm:2D-None", profile="lab", data=tmp_path, max_epochs=9)
    assert given.resolved("max_epochs") == 9
    assert TrainConfig(experiment="2D-None", profile="lab", data=tmp_path).resolved("max_epochs") == 40
    short = dataclasses.replace(get_profile("lab"), max_epochs=4)
    assert TrainConfig(experiment="ddpm:2D-None", profile=short, data=tmp_path).resolved("max_epochs") == 4
    custom = _config(seed=7, loss="lambert")
    assert TrainConfig.from_yaml(custom.to_yaml(tmp_path / "b.yaml")) == custom


def test_train_config_accepts_numpy_numbers_and_writes_plain_yaml(tmp_path):
    config = TrainConfig(experiment="3D-None", profile="smoke", data="d", fraction=np.float64(0.5),
                         seed=np.int64(3), lr=np.float32(0.5), batch_size=np.int64(2))
    assert [type(v) for v in (config.fraction, config.seed, config.lr, config.batch_size)] == [float, int, float, int]
    assert TrainConfig.from_yaml(config.to_yaml(tmp_path / "c.yaml")) == config


@pytest.mark.parametrize(("text", "match"), [
    ("experiment: 3D-None\nprofile: smoke\ndata: d\ncolour: red\n", r"unknown config field\(s\) \['colour'\]"),
    ("- a list\n", "must be a mapping"),
    ("experiment: 3D-None\nprofile: smoke\ndata: d\nfraction: 2\n", "invalid run config"),
    ("experiment: 3D-None\nprofile: {name: x, wrong: 1}\ndata: d\n", "invalid profile"),
    ("a: [unclosed\n", "cannot read the run config"),
])
def test_train_config_from_yaml_rejects_bad_files(tmp_path, text, match):
    (tmp_path / "config.yaml").write_text(text)
    with pytest.raises(RunError, match=match):
        TrainConfig.from_yaml(tmp_path / "config.yaml")


def test_seed_everything_repeats_all_generators():
    import random

    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    seed_everything(5)
    first = draw()
    seed_everything(5)
    assert draw() == first
    with pytest.raises(ValueError, match=r"`seed` must be in \[0, 2\*\*32\)"):
        seed_everything(2**32)
    with pytest.raises(TypeError, match="`seed` must be an int"):
        seed_everything("5")


# --- the loop -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("experiment", ["2D-None", "3D-None", "3D-Cube-n"])
def test_train_writes_run_folder_and_load_run_returns_best_model(tmp_path, arrays, experiment):
    result = _run(_config(experiment), tmp_path / "run", arrays)
    assert result.finished and len(result.history) == 3
    assert list(result.history.columns) == list(HISTORY_COLUMNS)
    assert result.history["epoch"].tolist() == [1, 2, 3]
    assert np.isfinite(result.history.drop(columns="epoch").to_numpy()).all()
    assert result.best_val == result.history["val_l1_per_voxel"].min()
    assert result.best_epoch == int(result.history["epoch"][result.history["val_l1_per_voxel"].idxmin()])
    assert "best epoch" in result.summary() and "finished" in result.summary()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "run" / "history.csv"), result.history,
                                  check_exact=False, rtol=1e-12)

    model, config = load_run(tmp_path / "run", device="cpu")
    assert config == dataclasses.replace(_config(experiment), batch_size=4, max_epochs=3, patience=3,
                                         precision="32")  # as resolved: smoke trains in float32
    assert not model.training
    best = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["best_model"]
    _assert_same_weights(model.state_dict(), best)
    spatial_dims = int(experiment[0])
    x = torch.from_numpy(arrays[2][:1, None] if spatial_dims == 3 else arrays[2][:1, None, :, :, TINY_SIZE // 2])
    val_recon, _ = training._validate(model, arrays[2][:1], spatial_dims, batch_size=4, device=torch.device("cpu"))
    assert model(x).recon.shape == x.shape and val_recon > 0


def test_same_seed_gives_identical_weights_and_other_seed_differs(tmp_path, arrays):
    runs = {name: _run(_config("3D-Cube-n", seed=seed, max_epochs=2), tmp_path / name, arrays)
            for name, seed in (("a", 0), ("b", 0), ("c", 1))}
    _assert_same_weights(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    pd.testing.assert_frame_equal(runs["a"].history.drop(columns="seconds"),
                                  runs["b"].history.drop(columns="seconds"))
    first, other = _weights(tmp_path / "a"), _weights(tmp_path / "c")
    assert any(not torch.equal(first[key], other[key]) for key in first)


@pytest.mark.parametrize(("experiment", "loss"),
                         [("3D-Cube-n", "elbo"), ("2D-Patch-n", "lambert"), ("ddpm:2D-None", "elbo"),
                          ("cevae:3D-Cube-n", "elbo"), ("dae:2D-None", "elbo"),
                          ("anoddpm:2D-None", "elbo"), ("pddpm:2D-None", "elbo"), ("cddpm:3D-None", "elbo"),
                          ("fanogan:2D-None", "elbo")])
def test_resume_ends_bit_identical_to_an_uninterrupted_run(tmp_path, arrays, experiment, loss):
    config = _config(experiment, loss=loss)
    full = _run(config, tmp_path / "full", arrays)
    stopped = _run(config, tmp_path / "cut", arrays, _stop_after_epoch=1)
    assert not stopped.finished and len(stopped.history) == 1 and "interrupted" in stopped.summary()
    with pytest.raises(RunError, match="holds a training run"):
        _run(config, tmp_path / "cut", arrays)
    np.random.seed(123)  # the resumed process starts with other global RNG states
    torch.manual_seed(123)
    resumed = _run(config, tmp_path / "cut", arrays, resume=True)
    assert resumed.finished and (resumed.best_epoch, resumed.best_val) == (full.best_epoch, full.best_val)
    _assert_same_weights(_weights(tmp_path / "full"), _weights(tmp_path / "cut"))
    pd.testing.assert_frame_equal(full.history.drop(columns="seconds"), resumed.history.drop(columns="seconds"))


def test_resuming_a_finished_run_returns_without_training(tmp_path, arrays, monkeypatch):
    config = _config(max_epochs=2)
    first = _run(config, tmp_path / "run", arrays)
    monkeypatch.setattr(training, "train_pass", _fail)
    monkeypatch.setattr(training, "load_dataset", _fail)
    again = train(config, tmp_path / "run", resume=True)
    assert again.finished and again.best_val == first.best_val
    pd.testing.assert_frame_equal(again.history, first.history)


def _fail(*args, **kwargs):
    raise AssertionError("must not be called")


def test_existing_run_is_refused_unless_overwrite(tmp_path, arrays):
    config = _config(max_epochs=1)
    _run(config, tmp_path / "run", arrays)
    with pytest.raises(RunError, match="pass resume=True .* or overwrite=True"):
        _run(_config(max_epochs=2), tmp_path / "run", arrays)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.yaml").write_text("half-written")
    with pytest.raises(RunError, match="holds a training run"):
        _run(config, tmp_path / "other", arrays)
    result = _run(_config(max_epochs=2), tmp_path / "run", arrays, overwrite=True)
    assert len(result.history) == 2
    assert TrainConfig.from_yaml(tmp_path / "run" / "config.yaml").max_epochs == 2
    with pytest.raises(ValueError, match="`resume` and `overwrite` must not both be True"):
        _run(config, tmp_path / "run", arrays, resume=True, overwrite=True)
    (tmp_path / "history").mkdir()
    (tmp_path / "history" / "history.csv").write_text("epoch\n1\n")  # a history alone is a run too
    with pytest.raises(RunError, match="holds a training run"):
        _run(config, tmp_path / "history", arrays)
    assert (tmp_path / "history" / "history.csv").read_text() == "epoch\n1\n"
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="is not a folder"):
        _run(config, tmp_path / "file", arrays)


def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, arrays, monkeypatch):
    run_dir = tmp_path / "run"
    _run(_config(max_epochs=2), run_dir, arrays, _stop_after_epoch=1)
    before = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "rng", "best_model", "best_epoch", "finished"} <= set(before)
    assert before["optimizer"]["state"]  # Adam's moments are saved, not only the weights

    def crash(obj, path):  # the process dies half-way through writing the next checkpoint
        Path(path).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(training.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        _run(_config(max_epochs=2), run_dir, arrays, resume=True)
    after = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert after["epoch"] == 1 and not after["finished"]
    _assert_same_weights(after["model"], before["model"])
    assert sorted(p.name for p in run_dir.iterdir()) == ["checkpoint.pt", "config.yaml", "history.csv"]


def test_resume_with_a_different_config_names_the_fields(tmp_path, arrays):
    _run(_config(max_epochs=1), tmp_path / "run", arrays, _stop_after_epoch=1)
    with pytest.raises(RunError, match=r"differs in seed \(stored 0, given 1\); max_epochs"):
        _run(_config(max_epochs=2, seed=1), tmp_path / "run", arrays, resume=True)
    moved = dataclasses.replace(_config(max_epochs=1), device="cuda")  # the device may change
    training._prepare_run_dir(moved, tmp_path / "run", resume=True, overwrite=False)


def test_config_yaml_records_the_resolved_profile_values(tmp_path, arrays):
    _run(_config(), tmp_path / "run", arrays, _stop_after_epoch=1)
    stored = TrainConfig.from_yaml(tmp_path / "run" / "config.yaml")
    assert (stored.batch_size, stored.max_epochs, stored.patience) == (4, 3, 3)  # TINY_PROFILE's
    assert _run(_config(), tmp_path / "run", arrays, resume=True).finished  # the same command resumes


def test_resume_is_refused_when_a_named_profile_changed(tmp_path, arrays, monkeypatch):
    config = dataclasses.replace(_config(), profile="smoke")
    _run(config, tmp_path / "run", arrays, _stop_after_epoch=1)
    smoke = get_profile("smoke")
    monkeypatch.setitem(profiles.PROFILES, "smoke", dataclasses.replace(smoke, batch_size_3d=2))
    with pytest.raises(RunError, match=r"differs in batch_size \(stored 8, given 2\)"):
        _run(config, tmp_path / "run", arrays, resume=True)
    monkeypatch.setitem(profiles.PROFILES, "smoke", dataclasses.replace(smoke, latent_3d=16))
    with pytest.raises(RunError, match=r"checkpoint's dense-vae differs in latent_dim \(stored 64, given 16\)"):
        _run(config, tmp_path / "run", arrays, resume=True)
    assert TrainConfig.from_yaml(tmp_path / "run" / "config.yaml") == dataclasses.replace(
        config, batch_size=8, max_epochs=20, patience=5, precision="32")  # left as the run wrote it


def test_resume_without_a_run_starts_afresh(tmp_path, arrays, capsys):
    result = _run(_config(max_epochs=1), tmp_path / "new", arrays, resume=True)
    assert result.finished and len(result.history) == 1
    assert capsys.readouterr() == ("", "")  # quiet without progress=True


def test_progress_bars_show_epochs_and_loss(tmp_path, arrays, capsys):
    _run(_config(max_epochs=2), tmp_path / "run", arrays, progress=True)
    err = capsys.readouterr().err
    assert "3D-None: 100%" in err and "2/2" in err and "loss=" in err


def test_validation_error_falls_on_structured_data(tmp_path, rng):
    images, brain_masks = blob_volumes(10, rng)
    config = _config("2D-None", max_epochs=6, patience=6, batch_size=8, lr=3e-3)
    history = _run(config, tmp_path / "run", (images[:8], brain_masks[:8], images[8:])).history
    assert history["val_l1_per_voxel"].is_monotonic_decreasing  # seeds 1, 2, 1234: 0.44 -> 0.20-0.21
    assert history["val_l1_per_voxel"].iloc[-1] < 0.6 * history["val_l1_per_voxel"].iloc[0]
    assert history["train_loss"].iloc[-1] < 0.6 * history["train_loss"].iloc[0]


@pytest.mark.parametrize("experiment", ["2D-None", "3D-None"])
def test_train_and_val_l1_share_the_per_voxel_unit(tmp_path, arrays, experiment):
    """Train and val l1 of the same images and (nearly unchanged) weights are on one per-voxel scale."""
    images, brain_masks, _ = arrays
    config = _config(experiment, max_epochs=1, lr=1e-12)  # the weights barely move within the epoch
    history = _run(config, tmp_path / "run", (images, brain_masks, images)).history
    train_l1, val_l1 = history.loc[0, ["train_l1_per_voxel", "val_l1_per_voxel"]]
    assert 0 < val_l1 < 1
    # training samples the latent and sees only slices with brain (2D), validation uses z = mu and
    # every slice: not equal, but the same order, where the old summed l1 was 16² or 16³ times larger
    assert 0.2 < train_l1 / val_l1 < 5


def test_old_run_history_columns_are_converted_to_per_voxel(tmp_path, arrays):
    """A run written with the old ``train_recon`` (summed per sample) / ``val_recon`` columns loads and resumes."""
    reference = _run(_config("2D-None"), tmp_path / "reference", arrays).history
    _run(_config("2D-None"), tmp_path / "run", arrays, _stop_after_epoch=1)
    path = tmp_path / "run" / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    for row in checkpoint["history"]:  # as written before the l1 columns were per voxel
        row["train_recon"] = row.pop("train_l1_per_voxel") * TINY_SIZE ** 2  # a 2D sample is one 16 x 16 slice
        row["val_recon"] = row.pop("val_l1_per_voxel")
    torch.save(checkpoint, path)
    assert set(runs.load_checkpoint(tmp_path / "run")["history"][0]) == set(HISTORY_COLUMNS)
    resumed = _run(_config("2D-None"), tmp_path / "run", arrays, resume=True).history
    assert len(resumed) == 3
    pd.testing.assert_frame_equal(resumed.drop(columns="seconds"), reference.drop(columns="seconds"),
                                  check_exact=False, rtol=1e-6)
    assert list(pd.read_csv(tmp_path / "run" / "history.csv").columns) == list(HISTORY_COLUMNS)


def test_patience_stops_early_and_keeps_the_best_epoch(tmp_path, arrays, monkeypatch):
    errors = iter([0.5, 0.3, 0.4, 0.35, 0.2])
    monkeypatch.setattr(training, "_validate", lambda *a, **k: (next(errors), 1.0))
    result = _run(_config(max_epochs=5, patience=2), tmp_path / "run", arrays)
    assert result.finished and result.history["epoch"].tolist() == [1, 2, 3, 4]
    assert (result.best_epoch, result.best_val) == (2, 0.3)


class _ZeroErasing:
    """Erases every brain voxel (a copy); records that it was used."""

    calls = 0

    def apply_batch(self, images, brain_masks, rng):
        _ZeroErasing.calls += 1
        assert isinstance(rng, np.random.Generator)
        return images.masked_fill(brain_masks, 0.0)


class _FakeExperiment(NamedTuple):
    spatial_dims: int
    model: str = "dense-vae"

    @property
    def name(self):
        return f"{self.spatial_dims}D-None"

    def erasing(self, p=0.5):
        return _ZeroErasing()


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_erasing_changes_the_input_and_never_the_target(tmp_path, arrays, monkeypatch, spatial_dims):
    seen_inputs, targets = [], []
    real_loss = DenseVAE.training_loss

    def loss(self, inputs, target):
        seen_inputs.append(inputs.clone())
        targets.append(target.detach().clone())
        return real_loss(self, inputs, target)

    monkeypatch.setattr(DenseVAE, "training_loss", loss)
    monkeypatch.setattr(training, "parse_experiment", lambda name: _FakeExperiment(spatial_dims))
    _ZeroErasing.calls = 0
    _run(_config(max_epochs=1), tmp_path / "run", arrays)

    samples = training._TrainingSamples(arrays[0], arrays[1], spatial_dims, torch.device("cpu"))
    clean = {s.numpy().tobytes() for s in samples.images(np.arange(len(samples)))}
    assert _ZeroErasing.calls > 0 and targets
    for target in targets:
        assert all(t.numpy().tobytes() in clean for t in target)  # every target is a clean sample
        assert target.abs().sum() > 0
    assert all(float(x.abs().sum()) == 0.0 for x in seen_inputs)  # the model saw the erased input


def test_2d_samples_are_axial_slices_with_brain_voxels():
    images = np.arange(2 * 3 * 3 * 4, dtype=np.float32).reshape(2, 3, 3, 4)
    brain_masks = np.zeros(images.shape, bool)
    brain_masks[0, 1, 1, 2] = brain_masks[1, 0, 0, [0, 3]] = True
    samples = training._TrainingSamples(images, brain_masks, 2, torch.device("cpu"))
    everything = np.arange(3)
    assert len(samples) == 3 and samples.voxels == 9 and samples.brain_masks(everything).dtype == torch.bool
    np.testing.assert_array_equal(samples.images(everything)[:, 0],
                                  [images[0, :, :, 2], images[1, :, :, 0], images[1, :, :, 3]])
    np.testing.assert_array_equal(samples.images(np.array([0, 2]))[:, 0], [images[0, :, :, 2], images[1, :, :, 3]])
    np.testing.assert_array_equal(samples.brain_masks(np.array([1]))[0, 0], brain_masks[1, :, :, 0])
    volumes = training._TrainingSamples(images, brain_masks, 3, torch.device("cpu"))
    assert len(volumes) == 2 and volumes.voxels == 36 and volumes.images(np.arange(2)).shape == (2, 1, 3, 3, 4)


def test_3d_training_samples_on_the_cpu_are_the_arrays_given(rng):
    """Kept on the CPU, the volumes of a 3D run are not copied."""
    images, brain_masks = blob_volumes(3, rng)
    samples = training._TrainingSamples(images, brain_masks, 3, torch.device("cpu"))
    assert samples._images.data_ptr() == images.ctypes.data
    assert samples._brain_masks.data_ptr() == brain_masks.ctypes.data


#: Two epochs' losses, best healthy val l1 and the weights' sum with the loop that batched and erased on the
#: host, in numpy (commit ee0cf32, 2-core AMD EPYC, float32); today's loop gave the same numbers, bit for bit.
_HOST_LOOP = {
    "2D-Multi-Patch-n": ([110.37466837565104, 105.00219980875652], 0.43717165663838387, 15.638962129909487),
    "2D-Half-Slice-0": ([110.3410415649414, 104.92020416259766], 0.4374281205236912, 15.945222200774879),
    "3D-Cube-n": ([1944.5479125976562, 1925.7979736328125], 0.480933278799057, 57.45741283294774),
    "3D-Multi-Cube-0": ([1944.5824584960938, 1925.9580688476562], 0.48093193769454956, 57.42048350700861),
    "3D-Half-Volume-n": ([1944.19482421875, 1926.3004150390625], 0.48094457387924194, 57.804113009231514),
}


@pytest.mark.parametrize("experiment", sorted(_HOST_LOOP))
def test_a_short_training_keeps_the_numbers_of_the_host_loop(tmp_path, experiment):
    """Batches gathered and erased on the training device, not in numpy: the same training.

    Compared within 1e-6 (another CPU may round convolutions otherwise); a changed batch or erasing moves
    these numbers by 1e-5 (3D losses) to 1e-3 (weights) or more.
    """
    images, brain_masks = blob_volumes(8, np.random.default_rng(0))
    result = _run(_config(experiment, precision="32", max_epochs=2), tmp_path / "run",
                  (images[:6], brain_masks[:6], images[6:]))
    losses, best_val, weights = _HOST_LOOP[experiment]
    model = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    assert result.history["train_loss"].tolist() == pytest.approx(losses, rel=1e-6, abs=0)
    assert result.best_val == pytest.approx(best_val, rel=1e-6, abs=0)
    assert float(sum(v.double().sum() for v in model.values() if v.is_floating_point())) == pytest.approx(
        weights, rel=1e-6, abs=0)


class _ZeroModel(torch.nn.Module):
    """Reconstructs zeros with KL = 0 (the validation side of the model protocol)."""

    def validation_terms(self, x):
        return torch.zeros_like(x), torch.zeros(len(x))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_validate_is_mean_l1_per_voxel(rng, spatial_dims):
    val_images = rng.random((3, 4, 4, 4), dtype=np.float32)
    recon, kl = training._validate(_ZeroModel(), val_images, spatial_dims, batch_size=2, device=torch.device("cpu"))
    assert recon == pytest.approx(val_images.mean(), rel=1e-6) and kl == 0.0


@pytest.mark.parametrize(("experiment", "change", "match"), [
    ("3D-None", lambda i, m, v: (i[:, :8], m, v), "stack of cubes"),
    ("3D-None", lambda i, m, v: (i, m[:2], v), r"brain masks .* do not match"),
    ("3D-None", lambda i, m, v: (i, m, v[:, :8]), "validation images"),
    ("2D-None", lambda i, m, v: (i, np.zeros_like(m), v), "no training sample holds a brain voxel"),
])
def test_bad_arrays_raise_dataset_error(tmp_path, arrays, experiment, change, match):
    config = _config(experiment)
    run_dir = training._prepare_run_dir(config, tmp_path / "run", resume=False, overwrite=False)
    with pytest.raises(DatasetError, match=match):
        training._train_arrays(config, run_dir, *change(*arrays))
    assert not run_dir.exists()  # a failed start leaves no half-made run


# --- the data-set wrapper, load_run, devices ------------------------------------------------------


class _FakeDataset:
    """Stands in for uadlab.data.dataset.BuiltDataset."""

    def __init__(self, arrays, val=True):
        images, brain_masks, val_images = arrays
        self.volumes = {f"h{i}": (images[i], brain_masks[i]) for i in range(len(images))}
        self.volumes.update({f"v{i}": (v, v > 0) for i, v in enumerate(val_images)} if val else {})
        self.stacked = []

    cohorts = ["healthy"]

    def ids(self, *, cohort=None, split=None):
        assert cohort == "healthy"
        return sorted(k for k in self.volumes if k.startswith("h" if split == "train" else "v"))

    def stack(self, ids):
        self.stacked.append(list(ids))
        return (np.stack([self.volumes[i][0] for i in ids]), np.stack([self.volumes[i][1] for i in ids]))


def test_train_loads_the_healthy_subset_of_the_data_set(tmp_path, arrays, monkeypatch):
    dataset = _FakeDataset(arrays)
    monkeypatch.setattr(training, "load_dataset", lambda path: dataset)
    config = _config(max_epochs=1, fraction=0.5, seed=2)
    result = train(config, tmp_path / "run")
    assert dataset.stacked == [training_subset(dataset.ids(cohort="healthy", split="train"), 0.5, 2), ["v0", "v1"]]
    assert len(dataset.stacked[0]) == 3 and result.finished
    with pytest.raises(TypeError, match="`config` must be a TrainConfig"):
        train({"experiment": "3D-None"}, tmp_path / "x")


def test_train_without_healthy_validation_raises_dataset_error(tmp_path, arrays, monkeypatch):
    monkeypatch.setattr(training, "load_dataset", lambda path: _FakeDataset(arrays, val=False))
    with pytest.raises(DatasetError, match="found 6 and 0"):
        train(_config(), tmp_path / "run")


def test_train_without_a_healthy_cohort_raises_dataset_error(tmp_path, arrays, monkeypatch):
    dataset = _FakeDataset(arrays)
    dataset.cohorts = ["tumour"]
    monkeypatch.setattr(training, "load_dataset", lambda path: dataset)
    with pytest.raises(DatasetError, match="no 'healthy' cohort"):
        train(_config(), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_train_end_to_end_on_a_built_data_set_folder(tmp_path, rng, write_nifti):
    """A folder in the layout of docs/ARCHITECTURE.md, read by the real uadlab.data.dataset.load_dataset."""
    images, brain_masks = blob_volumes(5, rng)
    rows = []
    for i, (image, brain_mask) in enumerate(zip(images, brain_masks)):
        subject_id = f"healthy-{i}"
        write_nifti(f"data/images/{subject_id}.nii.gz", image)
        write_nifti(f"data/brain_masks/{subject_id}.nii.gz", brain_mask.astype(np.uint8))
        rows.append({"subject_id": subject_id, "cohort": "healthy", "split": "train" if i < 3 else "val",
                     "image": f"images/{subject_id}.nii.gz", "brain_mask": f"brain_masks/{subject_id}.nii.gz",
                     "lesion_mask": "", "lesion_voxels": 0, "lesion_volume_mm3": 0.0, "source": "blobs"})
    pd.DataFrame(rows).to_csv(tmp_path / "data" / "subjects.csv", index=False)
    info = {"name": "blobs", "profile": "tiny", "image_size": TINY_SIZE, "spacing_mm": 1.0,
            "preprocessing": {"pad_shape_mm": [TINY_SIZE] * 3}, "cohorts": {"healthy": {"role": "healthy"}}}
    (tmp_path / "data" / "dataset.json").write_text(json.dumps(info))
    config = TrainConfig(experiment="2D-Half-Slice-n", profile=TINY_PROFILE, data=str(tmp_path / "data"),
                         max_epochs=1, device="cpu")
    result = train(config, tmp_path / "run")
    assert result.finished and result.best_epoch == 1
    model, stored = load_run(tmp_path / "run")
    assert stored == dataclasses.replace(config, batch_size=4, patience=3, precision="32")
    assert model.spatial_dims == 2 and model.precision == "32"


def test_load_run_without_a_run_raises(tmp_path, arrays):
    with pytest.raises(RunError, match="not a training run"):
        load_run(tmp_path)
    _config().to_yaml(tmp_path / "config.yaml")
    with pytest.raises(RunError, match="no checkpoint.pt"):
        load_run(tmp_path)
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="unreadable checkpoint"):
        load_run(tmp_path)


def test_device_defaults_to_cuda_when_available():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert devices.resolve_device(None).type == expected
    assert devices.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="`device` must be a torch device"):
        devices.resolve_device("tpu-9")


# --- precision and compilation ----------------------------------------------------------------------


def test_train_config_checks_precision_and_compile():
    assert _config(precision=32).precision == "32"  # a YAML int reads as the string
    with pytest.raises(ValueError, match="`precision` must be one of"):
        _config(precision="bf16")
    with pytest.raises(TypeError, match="`compile` must be a bool"):
        _config(compile="yes")


def test_precision_falls_back_to_the_profile_then_the_device(monkeypatch):
    assert _config().resolved_precision() == "32"  # TINY_PROFILE inherits smoke's float32
    free = dataclasses.replace(TINY_PROFILE, precision=None)
    config = TrainConfig(experiment="3D-None", profile=free, data="in-memory", device="cpu")
    monkeypatch.setattr(devices, "bf16_supported", lambda device: True)
    assert devices.default_precision("cpu") == "bf16-mixed" == config.resolved_precision()
    assert devices.default_precision("cuda:0") == "32"  # TF32 convolutions beat bf16 autocast on an H200
    monkeypatch.setattr(devices, "bf16_supported", lambda device: False)
    assert config.resolved_precision() == "32"
    assert dataclasses.replace(config, precision="16-mixed").resolved_precision() == "16-mixed"


def test_a_config_from_before_precision_existed_reads_as_float32_eager(tmp_path):
    _config().to_yaml(tmp_path / "config.yaml")
    raw = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del raw["precision"], raw["compile"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    old = TrainConfig.from_yaml(tmp_path / "config.yaml")
    assert (old.precision, old.compile) == ("32", False)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_and_resumes_bit_identically(tmp_path, arrays, precision):
    config = _config("2D-Patch-n", precision=precision, max_epochs=2)
    full = _run(config, tmp_path / "full", arrays)
    assert np.isfinite(full.history[["train_loss", "val_l1_per_voxel"]].to_numpy()).all()
    assert yaml.safe_load((tmp_path / "full" / "config.yaml").read_text())["precision"] == precision
    _run(config, tmp_path / "part", arrays, _stop_after_epoch=1)
    _run(dataclasses.replace(config, precision=None), tmp_path / "part", arrays, resume=True)  # keeps it
    _assert_same_weights(_weights(tmp_path / "full"), _weights(tmp_path / "part"))
    checkpoint = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    assert (checkpoint["scaler"] is not None) == (precision == "16-mixed")  # loss scaling for float16
    model, _ = load_run(tmp_path / "full")
    assert model.precision == precision


def test_mixed_precision_changes_the_numbers_but_not_the_model(tmp_path, arrays):
    fp32 = _run(_config(max_epochs=1), tmp_path / "fp32", arrays)
    bf16 = _run(_config(max_epochs=1, precision="bf16-mixed"), tmp_path / "bf16", arrays)
    assert fp32.history["train_loss"].iloc[0] != bf16.history["train_loss"].iloc[0]  # autocast is on
    assert bf16.history["val_l1_per_voxel"].iloc[0] == pytest.approx(fp32.history["val_l1_per_voxel"].iloc[0], rel=0.05)


def test_resume_refuses_a_changed_precision_and_allows_compile(tmp_path, arrays):
    _run(_config(max_epochs=2), tmp_path / "run", arrays, _stop_after_epoch=1)
    with pytest.raises(RunError, match=r"differs in precision \(stored '32', given 'bf16-mixed'\)"):
        _run(_config(max_epochs=2, precision="bf16-mixed"), tmp_path / "run", arrays, resume=True)
    # compilation only changes how the same computation runs
    assert resume_differences(_config(max_epochs=2), _config(max_epochs=2, compile=True)) == []


def test_resume_compares_the_data_folder_with_links_followed(tmp_path):
    tmp_path = tmp_path.resolve()
    (tmp_path / "data").mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "data").symlink_to(tmp_path / "data")  # a course pack's data set, lent to a lab
    stored = dataclasses.replace(_config(), data=str(tmp_path / "data"))
    assert resume_differences(stored, dataclasses.replace(_config(), data=str(tmp_path / "out" / "data"))) == []
    assert resume_differences(stored, dataclasses.replace(_config(), data=str(tmp_path / "out"))) == [
        f"data (stored {str(tmp_path / 'data')!r}, given {str(tmp_path / 'out')!r})"]


@pytest.mark.slow
def test_compiled_training_matches_eager_within_float_rounding(tmp_path, arrays):
    eager = _run(_config("2D-None", max_epochs=1), tmp_path / "eager", arrays)
    compiled = _run(_config("2D-None", max_epochs=1, compile=True), tmp_path / "compiled", arrays)
    first_val = eager.history["val_l1_per_voxel"].iloc[0]
    assert compiled.history["val_l1_per_voxel"].iloc[0] == pytest.approx(first_val, rel=1e-3)


# ---------------------------------------------------------------------------------------------------
# Other models through the same loop


@pytest.mark.parametrize("experiment", ["spatial-vae:2D-None", "spatial-vae:3D-Cube-n"])
def test_spatial_vae_trains_resumes_and_loads_like_the_dense_one(tmp_path, arrays, experiment):
    config = _config(experiment, max_epochs=2)
    full = _run(config, tmp_path / "full", arrays)
    _run(config, tmp_path / "cut", arrays, _stop_after_epoch=1)
    resumed = _run(config, tmp_path / "cut", arrays, resume=True)
    assert resumed.finished and resumed.best_val == full.best_val
    _assert_same_weights(_weights(tmp_path / "full"), _weights(tmp_path / "cut"))
    model, stored = load_run(tmp_path / "full")
    assert type(model).__name__ == "SpatialVAE" and stored.experiment == experiment
    record = yaml.safe_load((tmp_path / "full" / "config.yaml").read_text())["model"]
    assert record["name"] == "spatial-vae" and record["config"]["channels"] == [4, 8]


def test_train_with_model_prefix_stores_the_canonical_name(tmp_path, arrays):
    config = _config(" Spatial-VAE:3d-none", max_epochs=1)
    assert config.experiment == "spatial-vae:3D-None" and config.model == "spatial-vae"
    assert _config("3d-cube-n").experiment == "3D-Cube-n"


def test_mean_image_is_fitted_once_and_reconstructs_the_training_mean(tmp_path, arrays):
    result = _run(_config("mean-image:3D-None", max_epochs=5), tmp_path / "run", arrays)
    assert result.finished and len(result.history) == 1 and result.best_epoch == 1
    model, _ = load_run(tmp_path / "run")
    np.testing.assert_allclose(model.mean[0].numpy(), arrays[0].mean(axis=0), atol=1e-6)
    expected_l1 = np.abs(arrays[2] - arrays[0].mean(axis=0)).mean()
    assert result.best_val == pytest.approx(expected_l1, rel=1e-5)


def test_lambert_loss_is_for_vaes_only():
    with pytest.raises(ValueError, match="`loss` 'lambert' applies to the VAE models only"):
        _config("mean-image:3D-None", loss="lambert")


def test_resume_refuses_another_model(tmp_path, arrays):
    _run(_config("3D-None", max_epochs=2), tmp_path / "run", arrays, _stop_after_epoch=1)
    with pytest.raises(RunError, match="config differs in experiment"):
        _run(_config("spatial-vae:3D-None", max_epochs=2), tmp_path / "run", arrays, resume=True)


def test_a_run_from_before_the_model_registry_loads_and_resumes(tmp_path, arrays):
    """Old checkpoints hold ``model_args`` (the VAE's arguments) and no model record."""
    config = _config("3D-None", max_epochs=2)
    _run(config, tmp_path / "run", arrays, _stop_after_epoch=1)
    path = tmp_path / "run" / "checkpoint.pt"
    checkpoint = torch.load(path, weights_only=True)
    record = checkpoint.pop("model_record")
    checkpoint["model_args"] = {k: record["config"][k] for k in ("spatial_dims", "image_size", "latent_dim")}
    checkpoint["model_args"]["channels"] = tuple(record["config"]["channels"])
    torch.save(checkpoint, path)
    raw = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    raw.pop("model")
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))

    model, stored = load_run(tmp_path / "run")
    assert type(model).__name__ == "DenseVAE" and stored.experiment == "3D-None"
    torch.testing.assert_close(model.state_dict()["to_mu.weight"], checkpoint["best_model"]["to_mu.weight"])
    resumed = _run(config, tmp_path / "run", arrays, resume=True)
    assert resumed.finished and len(resumed.history) == 2


def test_a_named_profile_and_the_same_profile_object_are_one_run(tmp_path, arrays):
    named = _config(max_epochs=2)
    _run(named, tmp_path / "run", arrays, _stop_after_epoch=1)
    same = dataclasses.replace(named, profile=named.resolved_profile)  # what a lab passes
    assert _run(same, tmp_path / "run", arrays, resume=True).finished
    other = dataclasses.replace(named, profile=dataclasses.replace(named.resolved_profile, latent_3d=7))
    with pytest.raises(RunError, match="config differs in profile"):
        _run(other, tmp_path / "run", arrays, resume=True)
