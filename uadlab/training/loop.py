"""Training loop of Bengs et al. 2021, Sec. 2.3: in-memory batches, early stopping, checkpoints, resume.

A registered model (:mod:`uadlab.models`; the dense VAE of Table 1 by default) is trained on the
healthy training split of a built data set with Adam (lr 1e-3) and its training loss (for the VAEs
the ELBO, or Lambert et al.'s loss), reached only through the
:class:`~uadlab.models.base.ReconstructionModel` protocol. A model fitted in closed form
(``mean-image``) is fitted once and finishes after one epoch. Spatial erasing (Sec. 2.2) is applied to
the *input* only; the reconstruction target is always the unerased image. The number of epochs is
chosen on the healthy validation reconstruction error: the best epoch's weights are kept and
training stops after ``patience`` epochs without improvement (or at ``max_epochs``).

Batches are made in memory from the stacked arrays of :meth:`uadlab.data.dataset.BuiltDataset.stack`:

- 3D: whole volumes.
- 2D: axial slices ``volume[:, :, k]`` of all training volumes. Slices without a single brain voxel
  are skipped for training (they are all-zero images and would only teach the model to output
  zeros); validation reconstructs every slice, like :func:`uadlab.models.base.reconstruct` at test time.

Each epoch shuffles the samples with a generator seeded from ``(seed, epoch)`` and splits them evenly
into ``ceil(n / batch_size)`` batches of at most ``batch_size`` samples (so no batch of one sample,
which would upset batch statistics, unless there is only one sample). Erasing and the VAE's latent
sampling draw from generators seeded the same way, so a resumed run ends with bit-identical weights
(on CPU) to an uninterrupted one.

Run folder::

    config.yaml      the TrainConfig (checked on resume) and, under ``model``, the model record
    checkpoint.pt    written atomically after every epoch (in a background thread while the next
                     epoch trains; ``train`` returns once the last one is on disk): weights,
                     optimiser, loss state, best weights, best epoch and validation error, epochs
                     since best, RNG states, history,
                     `finished`, the model record (registry name and config), and the run's config
                     (so a resume is checked even without config.yaml)
    history.csv      epoch, train_loss, train_l1_per_voxel, train_kl, val_l1_per_voxel, val_kl, seconds
                     (``seconds`` is wall-clock time: the one column that differs between two
                     otherwise bit-identical seeded runs; runs written before the l1 columns were
                     per voxel, with ``train_recon`` summed per sample and ``val_recon``, are
                     converted when loaded)

Shape:
    - 3D training batch: ``(B, 1, X, Y, Z)`` float32 in [0, 1].
    - 2D training batch: ``(B, 1, X, Y)`` float32 in [0, 1] (axial slices).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from uadlab._checks import check_int, check_real
from uadlab.data.dataset import load_dataset
from uadlab.data.io import atomic_write, folder_lock
from uadlab.errors import DatasetError, RunError
from uadlab.layout import RUN_CHECKPOINT as _CHECKPOINT_FILE
from uadlab.layout import RUN_CONFIG as _CONFIG_FILE
from uadlab.layout import RUN_HISTORY as _HISTORY_FILE
from uadlab.models.base import ReconstructionModel, volumes_to_samples
from uadlab.models.precision import PRECISIONS, autocast, bf16_supported, to_device
from uadlab.models.registry import (
    build_from_record,
    build_model,
    get_spec,
    model_config,
    model_record,
)
from uadlab.profiles import Profile, get_profile
from uadlab.training import distributed
from uadlab.training.experiments import parse_experiment

__all__ = ["TrainConfig", "TrainResult", "train", "load_run", "run_status", "seed_everything",
           "training_subset", "default_precision", "HISTORY_COLUMNS"]

#: Columns of ``history.csv`` and :attr:`TrainResult.history`.
HISTORY_COLUMNS: tuple[str, ...] = ("epoch", "train_loss", "train_l1_per_voxel", "train_kl", "val_l1_per_voxel",
                                    "val_kl", "seconds")

_RUN_FILES = (_CONFIG_FILE, _CHECKPOINT_FILE, _HISTORY_FILE)
_LOSSES = ("elbo", "lambert")  # uadlab.models.vae.LOSSES; "elbo" is also every other model's own objective
_HEALTHY = "healthy"  # the cohort of healthy subjects in a built data set (uadlab.data.dataset)
_ERASING_P = 0.5  # Sec. 2.2: erasing is applied with probability 0.5
# Fields that may differ on resume: the device and compilation only decide where and how the same
# computation runs.
_RESUME_FREE_FIELDS = ("device", "compile")
#: Fields that fall back to the run's profile when ``None`` (see :meth:`TrainConfig.resolved`).
_PROFILE_FIELDS = ("batch_size", "max_epochs", "patience")


@dataclass
class TrainConfig:
    """Everything that defines one training run; saved as ``config.yaml`` in the run folder.

    Attributes:
        experiment: experiment name (:mod:`uadlab.training.experiments`): a Table 1 name such as
            ``"3D-Cube-n"`` (the dense VAE) or ``"MODEL:NAME"`` such as ``"spatial-vae:2D-None"``;
            stored in its canonical spelling.
        profile: profile name (``smoke``, ``lab``, ``paper``) or a :class:`~uadlab.profiles.Profile`
            (stored in full in ``config.yaml``); gives the schedule and the VAEs' backbone and latent size.
        data: folder built by ``uadlab data build``.
        fraction: share of the healthy training split, in (0, 1] (data-set-size study, Fig. 5).
        seed: seed of the subset, initial weights, shuffling, erasing and latent sampling.
        loss: ``"elbo"`` (Sec. 2.3; for a model without a latent, its own objective) or ``"lambert"``
            (Lambert et al.'s collapse-robust loss, VAE models only).
        lr: Adam learning rate (paper: 1e-3).
        batch_size: samples per batch (volumes in 3D, slices in 2D); ``None``: the profile's
            (:meth:`~uadlab.profiles.Profile.batch_size_for`).
        max_epochs: epoch limit; ``None``: the profile's.
        patience: epochs without validation improvement before stopping; ``None``: the profile's.
            The run folder's ``config.yaml`` records the values these three resolved to, and a
            resume is refused when they (or the profile's backbone) no longer match.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None``: CUDA when available, else CPU.
        precision: ``"32"``, ``"bf16-mixed"`` or ``"16-mixed"`` (:data:`uadlab.models.precision.PRECISIONS`):
            autocast around the forward pass and loss of training, validation and inference (float16
            with loss scaling); ``None``: the profile's, else :func:`default_precision` for the
            device. ``config.yaml`` records the value used; a resume keeps the run's precision when
            none is given and refuses a different one. A ``config.yaml`` written before this field
            existed reads as ``"32"``.
        compile: run the model through ``torch.compile`` (same results up to float rounding; pays only
            where its compile time is won back, see the README). May change on resume.

    Raises:
        TypeError: a field of the wrong type.
        ValueError: a field with an invalid value (unknown experiment, profile or loss, fraction
            outside (0, 1], non-positive lr, batch size, epochs or patience, seed outside
            [0, 2**32), unknown precision).

    NumPy numbers are converted to ``int``/``float`` so that the config can be written as YAML.
    """

    experiment: str
    profile: str | Profile
    data: str
    fraction: float = 1.0
    seed: int = 0
    loss: str = "elbo"
    lr: float = 1e-3
    batch_size: int | None = None
    max_epochs: int | None = None
    patience: int | None = None
    device: str | None = None
    precision: str | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.experiment, str):
            raise TypeError(f"`experiment` must be a str, got {self.experiment!r}")
        try:
            self.experiment = parse_experiment(self.experiment).name
        except ValueError as error:
            raise ValueError(f"`experiment` must be a Table 1 name such as '3D-Cube-n' or '2D-None', "
                             f"optionally 'MODEL:' in front, got {self.experiment!r} ({error})") from None
        if isinstance(self.data, os.PathLike):
            self.data = os.fspath(self.data)
        if not isinstance(self.data, str):
            raise TypeError(f"`data` must be a path, got {self.data!r}")
        if not isinstance(self.profile, (str, Profile)):
            raise TypeError(f"`profile` must be a profile name or a Profile, got {self.profile!r}")
        get_profile(self.profile)  # ValueError for an unknown name
        check_real("fraction", self.fraction, "a number", lambda v: True)
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"`fraction` must be in (0, 1], got {self.fraction!r}")
        check_int("seed", self.seed, "an int")
        if not 0 <= self.seed < 2**32:  # the range seed_everything accepts
            raise ValueError(f"`seed` must be a non-negative int below 2**32, got {self.seed!r}")
        if self.loss not in _LOSSES:
            raise ValueError(f"`loss` must be one of {list(_LOSSES)}, got {self.loss!r}")
        if self.loss != "elbo" and "loss" not in {f.name for f in fields(get_spec(self.model).config_cls)}:
            raise ValueError(f"`loss` {self.loss!r} applies to the VAE models only, got model {self.model!r}")
        check_real("lr", self.lr, "a number", lambda v: True)
        if not self.lr > 0:
            raise ValueError(f"`lr` must be > 0, got {self.lr!r}")
        for name in _PROFILE_FIELDS:
            value = getattr(self, name)
            if value is not None:
                check_int(name, value, "an int")
                if value < 1:
                    raise ValueError(f"`{name}` must be a positive int or None, got {value!r}")
                setattr(self, name, int(value))
        self.fraction, self.seed, self.lr = float(self.fraction), int(self.seed), float(self.lr)
        if self.device is not None:
            _resolve_device(self.device)
        if self.precision == 32 and not isinstance(self.precision, bool):  # YAML or Python int 32
            self.precision = "32"
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ValueError(f"`precision` must be one of {list(PRECISIONS)} or None, got {self.precision!r}")
        if not isinstance(self.compile, (bool, np.bool_)):
            raise TypeError(f"`compile` must be a bool, got {self.compile!r}")
        self.compile = bool(self.compile)

    def resolved_precision(self, device: str | torch.device | None = None) -> str:
        """``precision``, else the profile's, else :func:`default_precision` of ``device`` (``None``:
        this config's device).
        """
        if self.precision is not None:
            return self.precision
        if self.resolved_profile.precision is not None:
            return self.resolved_profile.precision
        return default_precision(_resolve_device(self.device if device is None else device))

    @property
    def model(self) -> str:
        """Registry name of the run's model (from the experiment name)."""
        return parse_experiment(self.experiment).model

    @property
    def resolved_profile(self) -> Profile:
        """The :class:`~uadlab.profiles.Profile` this run uses."""
        return get_profile(self.profile)

    def resolved(self, name: str) -> int:
        """``batch_size``, ``max_epochs`` or ``patience``, falling back to the profile's value (for
        ``batch_size``, the profile's for this experiment's 2D or 3D VAE).
        """
        value = getattr(self, name)
        if value is not None:
            return value
        if name == "batch_size":
            return self.resolved_profile.batch_size_for(parse_experiment(self.experiment).spatial_dims)
        return getattr(self.resolved_profile, name)

    def to_dict(self) -> dict[str, Any]:
        """Plain-YAML representation (a custom profile becomes a mapping)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if isinstance(self.profile, Profile):
            out["profile"] = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.profile).items()}
        return out

    def to_yaml(self, path: str | Path, *, model: dict | None = None) -> Path:
        """Write the config to ``path`` (atomically) and return the path.

        Args:
            path: the file.
            model: the run's model record (:func:`uadlab.models.registry.model_record`), written under
                ``model`` for the reader; :meth:`from_yaml` skips it (the checkpoint's copy is used).
        """
        path = Path(path)
        text = yaml.safe_dump({**self.to_dict(), **({"model": model} if model else {})}, sort_keys=False)
        _atomic_save(path, lambda tmp: Path(tmp).write_text(text))
        return path

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a config written by :meth:`to_yaml`.

        Raises:
            RunError: the file is missing, not YAML, or has unknown/missing/invalid fields.
        """
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as error:
            raise RunError(f"{path}: cannot read the run config ({error})") from None
        return cls._from_dict(raw, path)

    @classmethod
    def _from_dict(cls, raw: Any, path: str | Path) -> TrainConfig:
        """A config from :meth:`to_dict`'s mapping; RunError naming ``path`` when it is not one."""
        if not isinstance(raw, dict):
            raise RunError(f"{path}: the run config must be a mapping, got {type(raw).__name__}")
        raw = dict(raw)
        raw.pop("model", None)  # the model record train() writes beside the config; the checkpoint has it too
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise RunError(f"{path}: unknown config field(s) {unknown}")
        # Runs from before these fields existed trained in float32, eagerly.
        raw.setdefault("precision", "32")
        raw.setdefault("compile", False)
        if isinstance(raw.get("profile"), dict):
            try:
                raw["profile"] = Profile(**{k: tuple(v) if isinstance(v, list) else v
                                            for k, v in raw["profile"].items()})
            except TypeError as error:
                raise RunError(f"{path}: invalid profile ({error})") from None
        try:
            return cls(**raw)
        except (TypeError, ValueError) as error:
            raise RunError(f"{path}: invalid run config ({error})") from None


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes:
        run_dir: the run folder.
        history: one row per finished epoch, columns :data:`HISTORY_COLUMNS`. ``train_loss``,
            ``train_kl``: the loss and its KL term averaged over the epoch's samples (the loss sums
            the l1 error over a sample's voxels and the KL over latent units,
            :func:`uadlab.models.vae.elbo_loss`). ``train_l1_per_voxel``: the loss's reconstruction
            term divided by the voxels of a sample (slice in 2D), i.e. the mean l1 error *per voxel*
            of the (erased) training inputs' reconstructions. ``val_l1_per_voxel``: mean l1 error
            per voxel over all voxels of the healthy validation split (eval mode, ``z = mu``). Both
            l1 columns are in intensity units (images in [0, 1]), so they share one axis.
            ``val_kl``: KL per sample (per slice in 2D). ``seconds``: the epoch's wall time.
        best_epoch: 1-based epoch with the lowest ``val_l1_per_voxel`` (0 before the first epoch).
        best_val: that lowest ``val_l1_per_voxel`` (``inf`` before the first epoch).
        finished: ``True`` when training stopped (patience or ``max_epochs``), ``False`` when it was
            interrupted and can be resumed.
    """

    run_dir: Path
    history: pd.DataFrame = field(repr=False)
    best_epoch: int
    best_val: float
    finished: bool

    def summary(self) -> str:
        """One human-readable paragraph for the command line."""
        epochs = len(self.history)
        state = "finished" if self.finished else "interrupted (resume with --resume)"
        return (f"{self.run_dir}: {state} after {epochs} epoch(s); best epoch {self.best_epoch} "
                f"with healthy validation l1 error {self.best_val:.5f} per voxel")


def default_precision(device: str | torch.device) -> str:
    """The precision a run uses on ``device`` when neither its config nor its profile names one.

    ``"bf16-mixed"`` on a CPU that runs bfloat16 natively (AVX512-BF16 or AMX:
    :func:`uadlab.models.precision.bf16_supported`), else ``"32"``, CUDA included.

    On the CPU, measured on a 2-core AMD EPYC with AVX512-BF16, lab profile, nothing else running: the
    bare training step of the dense VAE 1.9x (2D, batch 32) and 1.5x (3D, batch 8) faster than
    float32, whole epochs 1.3-1.6x (runs 6 and 7 of ``benchmarks/train_epoch.py``); the healthy
    validation l1 of ``3D-None`` after 15 epochs was 0.0473 with bf16 and 0.0512 with float32, of
    ``3D-Cube-n`` after 20 epochs 0.0440 and 0.0446 (mean of seeds 0-2; bf16 trailed by 15 % after 5
    epochs; README, "Speed"). On CUDA float32 convolutions already run on the tensor cores as TF32
    (PyTorch's cuDNN default), and bf16 autocast did not pay: on an H200 it made the bare step
    0.29-0.99x as fast and a lab epoch 0.84x (2D) and 0.72x (3D) as fast (``docs/speed_gpu.md``).
    float16 is never a default: it needs loss scaling and buys nothing over bfloat16 where both exist.
    """
    device = torch.device(device)
    return "bf16-mixed" if device.type == "cpu" and bf16_supported(device) else "32"


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA).

    Also makes cuDNN deterministic (``deterministic=True``, ``benchmark=False``), which is cheap;
    ``torch.use_deterministic_algorithms`` is left alone because it is global and needs
    ``CUBLAS_WORKSPACE_CONFIG`` on GPUs.

    Args:
        seed: non-negative int below 2**32.

    Raises:
        TypeError: ``seed`` is not an int.
        ValueError: ``seed`` is negative or >= 2**32.
    """
    check_int("seed", seed, "an int")
    if not 0 <= seed < 2**32:
        raise ValueError(f"`seed` must be in [0, 2**32), got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def training_subset(ids: Sequence[str], fraction: float, seed: int) -> list[str]:
    """The first ``ceil(fraction * n)`` ids (at least one) of one seeded permutation of the sorted ids.

    Subsets are nested for one seed: the 10 % subset lies inside the 20 % one, which lies inside
    60 % and 100 % (data-set-size study, Bengs et al. 2021, Fig. 5). The result keeps the permuted
    order.

    Args:
        ids: subject ids of the healthy training split (order and duplicates do not matter).
        fraction: share in (0, 1].
        seed: seed of the permutation.

    Returns:
        The selected ids.

    Raises:
        TypeError: ``ids`` is a single string, or ``fraction`` or ``seed`` of the wrong type.
        ValueError: ``fraction`` outside (0, 1] or ``ids`` empty.

    >>> ids = [f"s{i}" for i in range(10)]
    >>> small, large = training_subset(ids, 0.2, seed=0), training_subset(ids, 0.6, seed=0)
    >>> len(small), len(large), set(small) <= set(large)
    (2, 6, True)
    """
    if isinstance(ids, str):
        raise TypeError(f"`ids` must be a sequence of subject ids, got {ids!r}")
    check_real("fraction", fraction, "a number", lambda v: True)
    check_int("seed", seed, "an int")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"`fraction` must be in (0, 1], got {fraction!r}")
    unique = sorted(set(ids))
    if not unique:
        raise ValueError(f"`ids` must not be empty, got {ids!r}")
    order = np.random.default_rng(seed).permutation(len(unique))
    count = max(1, math.ceil(fraction * len(unique) - 1e-9))  # 1e-9: 0.6 * 10 must give 6, not 7
    return [unique[i] for i in order[:count]]


def train(config: TrainConfig, out_dir: str | Path, *, resume: bool = False, overwrite: bool = False,
          progress: bool = False) -> TrainResult:
    """Train one experiment on the healthy cohort of a built data set (Bengs et al. 2021, Sec. 2.3).

    The run folder is locked (:func:`uadlab.data.io.folder_lock`) while training, so a second process
    aiming at it fails at once. A seeded run is repeatable: on one machine and device, the same
    config gives bit-identical weights and ``history.csv`` except its wall-clock ``seconds`` column.

    Args:
        config: the run's configuration.
        out_dir: run folder; created if needed. An existing folder must be empty or hold a run:
            uadlab never writes a run into another folder (a data set, an evaluation...).
        resume: continue from ``checkpoint.pt`` if the folder holds a run with the same config
            (a finished run returns at once); start afresh when there is none. The config is checked
            against both ``config.yaml`` and the copy the checkpoint carries.
        overwrite: discard a run already in ``out_dir`` (its ``config.yaml``, ``checkpoint.pt``,
            ``history.csv``) and start afresh; the old run is deleted only after the new one's data
            set has loaded, so a failed start keeps it.
        progress: show tqdm bars for epochs and batches.

    Returns:
        The :class:`TrainResult`; weights are in ``out_dir/checkpoint.pt`` (see :func:`load_run`).

    Raises:
        TypeError: ``config`` is not a :class:`TrainConfig`.
        ValueError: both ``resume`` and ``overwrite``; ``config.device`` is not a device of this
            machine (``cuda:9``).
        RunError: ``out_dir`` is a file, holds something other than a run, or holds a run and
            neither flag is set; the config stored in ``config.yaml`` or in the checkpoint differs
            from ``config`` on resume; the checkpoint is unreadable.
        DatasetError: the data set is missing, was built with another profile, or has no healthy
            cohort or no healthy train/val subjects.
        uadlab.errors.UadlabError: another process is training into ``out_dir``.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"`config` must be a TrainConfig, got {config!r}")
    _available_device(config.device)
    run_dir = _prepare_run_dir(config, out_dir, resume=resume, overwrite=overwrite)
    main_rank = distributed.launched_rank() == 0  # under torchrun, rank 0 alone locks, clears and writes
    with folder_lock(run_dir) if main_rank else contextlib.nullcontext():
        run_dir = _prepare_run_dir(config, out_dir, resume=resume, overwrite=overwrite)  # again, now locked
        checkpoint = _resume_checkpoint(run_dir, config) if resume else None
        if checkpoint is not None and checkpoint["finished"]:
            return _result(run_dir, checkpoint)
        images, brain_masks, val_images = _load_training_data(config)
        if overwrite and main_rank:  # only now: a typo in --data or a bad data set must not cost the old run
            _clear_run(run_dir)
        return _train_arrays(config, run_dir, images, brain_masks, val_images, checkpoint=checkpoint,
                             progress=progress)


def _load_training_data(config: TrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Healthy training subset and validation volumes of ``config.data``, checked against the config."""
    dataset = load_dataset(config.data)
    built_with = getattr(dataset, "info", {}).get("profile")
    if built_with is not None and built_with != config.resolved_profile.name:
        raise DatasetError(f"{config.data}: built with profile {built_with!r}, but the run uses profile "
                           f"{config.resolved_profile.name!r}; train with --profile {built_with} or build the "
                           f"data with --profile {config.resolved_profile.name}")
    if _HEALTHY not in dataset.cohorts:
        raise DatasetError(f"{config.data}: no {_HEALTHY!r} cohort to train on (cohorts: {dataset.cohorts})")
    train_ids = dataset.ids(cohort=_HEALTHY, split="train")
    val_ids = dataset.ids(cohort=_HEALTHY, split="val")
    if not train_ids or not val_ids:
        raise DatasetError(f"{config.data}: training needs healthy 'train' and 'val' subjects, found "
                           f"{len(train_ids)} and {len(val_ids)}")
    images, brain_masks = dataset.stack(training_subset(train_ids, config.fraction, config.seed))
    val_images, _ = dataset.stack(val_ids)
    return images, brain_masks, val_images


def load_run(run_dir: str | Path, *,
             device: str | torch.device | None = None) -> tuple[ReconstructionModel, TrainConfig]:
    """The best-epoch model of a run (in eval mode) and its config.

    The model is rebuilt from the record its checkpoint carries (registry name and config), so any
    registered model loads; a dense-VAE run from before the model registry (its checkpoint holds
    ``model_args``) loads as ``dense-vae``.

    Args:
        run_dir: folder written by :func:`train`.
        device: where to put the model; ``None``: CUDA when available, else CPU.

    The model's ``precision`` attribute is the run's training precision, which
    :func:`uadlab.models.reconstruct` (and so :func:`uadlab.evaluation.inference.predict`) uses.

    Raises:
        ValueError: ``device`` is not a device of this machine (e.g. ``cuda:9``).
        RunError: no ``config.yaml``/``checkpoint.pt`` in ``run_dir``, or they are unreadable.
    """
    run_dir = Path(run_dir)
    target = _available_device(device)
    if not (run_dir / _CONFIG_FILE).is_file():
        raise RunError(f"{run_dir}: not a training run (no {_CONFIG_FILE})")
    config = TrainConfig.from_yaml(run_dir / _CONFIG_FILE)
    checkpoint = _load_checkpoint(run_dir)
    if checkpoint is None:
        raise RunError(f"{run_dir}: no {_CHECKPOINT_FILE}; train the run first")
    model = build_from_record(_checkpoint_record(checkpoint, config))
    model.load_state_dict(checkpoint["best_model"])
    to_device(model, target)
    model.eval()
    model.precision = config.resolved_precision(device)  # inference runs at the training precision
    return model, config


def run_status(run_dir: str | Path) -> dict[str, Any]:
    """How far a run's training got, from its checkpoint: recorded with every evaluation.

    Args:
        run_dir: folder written by :func:`train`.

    Returns:
        ``{"epochs": epochs trained, "best_epoch": the epoch whose weights are used (1-based),
        "max_epochs": the run's limit, "finished": whether training stopped by itself (patience or
        max_epochs) rather than being interrupted}``.

    Raises:
        RunError: no run in ``run_dir``, or an unreadable checkpoint or config.
    """
    run_dir = Path(run_dir)
    checkpoint = _load_checkpoint(run_dir)
    if checkpoint is None or not (run_dir / _CONFIG_FILE).is_file():
        raise RunError(f"{run_dir}: not a training run (no {_CHECKPOINT_FILE} or {_CONFIG_FILE})")
    config = TrainConfig.from_yaml(run_dir / _CONFIG_FILE)
    return {"epochs": int(checkpoint["epoch"]), "best_epoch": int(checkpoint["best_epoch"]),
            "max_epochs": config.resolved("max_epochs"), "finished": bool(checkpoint["finished"])}


# ---------------------------------------------------------------------------------------------------
# The loop


def _train_arrays(config: TrainConfig, run_dir: Path, images: np.ndarray, brain_masks: np.ndarray,
                  val_images: np.ndarray, *, checkpoint: dict | None = None, progress: bool = False,
                  _stop_after_epoch: int | None = None) -> TrainResult:
    """Train on in-memory arrays and write ``run_dir`` (``config.yaml``, checkpoint, history).

    Args:
        config: the run's configuration.
        run_dir: run folder, checked by :func:`_prepare_run_dir`.
        images: healthy training volumes ``(N, X, Y, Z)`` float32 in [0, 1], cubic.
        brain_masks: their brain masks ``(N, X, Y, Z)`` bool.
        val_images: healthy validation volumes ``(M, X, Y, Z)`` float32.
        checkpoint: a loaded checkpoint to continue from, or ``None`` to start afresh.
        progress: tqdm bars.
        _stop_after_epoch: test hook: return (unfinished) after saving this epoch's checkpoint, as if
            the process had been killed.

    Raises:
        DatasetError: arrays of the wrong shape, or no training sample with brain voxels.
    """
    experiment = parse_experiment(config.experiment)
    spatial_dims = experiment.spatial_dims
    images, brain_masks, val_images = _check_arrays(images, brain_masks, val_images, config.data)
    profile = config.resolved_profile
    batch_size, max_epochs, patience = (config.resolved(n) for n in ("batch_size", "max_epochs", "patience"))
    context, device = distributed.setup(_resolve_device(config.device))  # one rank of torchrun, or alone
    if config.precision is None and checkpoint is not None and (run_dir / _CONFIG_FILE).exists():
        config = replace(config, precision=TrainConfig.from_yaml(run_dir / _CONFIG_FILE).precision)
    precision = config.resolved_precision(device)
    samples, sample_masks = _training_samples(images, brain_masks, spatial_dims)
    if len(samples) == 0:
        raise DatasetError(f"{config.data}: no training sample holds a brain voxel")
    erasing = experiment.erasing(p=_ERASING_P)
    options = {"loss": config.loss} if config.loss != "elbo" else {}
    model_cfg = model_config(experiment.model, profile, spatial_dims, int(images.shape[1]), **options)
    record = model_record(experiment.model, model_cfg)
    if checkpoint is not None:
        _check_same_model(_checkpoint_record(checkpoint, config), record, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # The values the run uses, not None: a later change to a named profile cannot alter a run silently.
    stored_config = replace(config, batch_size=batch_size, max_epochs=max_epochs, patience=patience,
                            precision=precision)
    context.barrier()  # every rank has checked the folder before rank 0 writes into it
    if context.is_main:
        stored_config.to_yaml(run_dir / _CONFIG_FILE, model=record)

    seed_everything(config.seed)
    model = to_device(build_model(experiment.model, model_cfg), device)
    if config.compile:
        model.compile()  # in place: its __call__ (so training_loss, validation) runs compiled; same weights
    parameters = list(model.parameters())
    # Fused Adam (one kernel over all parameters, CPU and CUDA): a tenth of a 2D lab epoch saved on 2 cores.
    fused = device.type in ("cpu", "cuda")
    optimizer = torch.optim.Adam(parameters, lr=config.lr, fused=fused) if parameters else None
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")  # float16 loss scaling
    state = {"epoch": 0, "best_model": copy.deepcopy(model.state_dict()), "best_epoch": 0,
             "best_val": math.inf, "epochs_since_best": 0, "history": [], "finished": False}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        if optimizer is not None:
            optimizer.load_state_dict(checkpoint["optimizer"])
        model.load_loss_state(checkpoint.get("loss_state"))
        if checkpoint.get("scaler"):
            scaler.load_state_dict(checkpoint["scaler"])
        _set_rng_states(checkpoint["rng"])
        state.update({k: checkpoint[k] for k in state})

    epoch_bar = _progress_bar(progress, total=max_epochs, initial=state["epoch"],
                              desc=f"{config.experiment} epochs", unit="epoch")
    writer = _CheckpointWriter()
    try:
        for epoch in range(state["epoch"] + 1, max_epochs + 1):
            start = time.perf_counter()
            rng = _epoch_rng(config.seed, epoch)
            torch.manual_seed(int(rng.integers(2**63)) + context.rank)  # the VAE's latent sampling
            if model.fitted_in_closed_form:
                train_terms = _fit_epoch(model, samples, batch_size=batch_size, device=device)
            else:
                train_terms = _train_epoch(model, optimizer, samples, sample_masks, erasing, rng,
                                           batch_size=batch_size, device=device, progress=progress,
                                           precision=precision, scaler=scaler, context=context,
                                           erase_rng=_epoch_rng(config.seed, epoch, context.rank))
                distributed.average_buffers(model, context)
            val_recon, val_kl = _validate(model, val_images, spatial_dims, batch_size=batch_size, device=device,
                                          precision=precision)
            state["history"].append({"epoch": epoch, **train_terms, "val_l1_per_voxel": val_recon, "val_kl": val_kl,
                                     "seconds": time.perf_counter() - start})
            if val_recon < state["best_val"]:
                state.update(best_val=val_recon, best_epoch=epoch, epochs_since_best=0,
                             best_model=copy.deepcopy(model.state_dict()))
            else:
                state["epochs_since_best"] += 1
            state["epoch"] = epoch
            state["finished"] = (epoch >= max_epochs or state["epochs_since_best"] >= patience
                                 or model.fitted_in_closed_form)
            if context.is_main:
                _save_checkpoint(run_dir, state, model, optimizer, record, stored_config, scaler, writer)
            epoch_bar.set_postfix(loss=f"{train_terms['train_loss']:.4g}", val=f"{val_recon:.4g}")
            epoch_bar.update(1)
            if state["finished"] or epoch == _stop_after_epoch:
                break
    except BaseException:
        writer.wait(raise_error=False)  # the last epoch's checkpoint is complete, whatever stopped the run
        raise
    writer.wait()
    epoch_bar.close()
    return _result(run_dir, state)


def _train_epoch(model: ReconstructionModel, optimizer: torch.optim.Optimizer, samples: np.ndarray,
                 sample_masks: np.ndarray, erasing: Any, rng: np.random.Generator, *, batch_size: int,
                 device: torch.device, progress: bool, precision: str = "32",
                 scaler: torch.amp.GradScaler | None = None, context: distributed.Context | None = None,
                 erase_rng: np.random.Generator | None = None) -> dict[str, float]:
    """One pass over the shuffled samples; returns sample-weighted mean loss terms.

    The loss runs under :func:`uadlab.models.precision.autocast` at ``precision``; ``scaler`` (enabled
    for float16) scales the loss before the backward pass and unscales the gradients. Under
    ``torchrun`` (``context`` of several ranks) each rank trains on its shard of every batch, erases
    with ``erase_rng`` (seeded per rank) and the gradients are averaged over the ranks
    (:mod:`uadlab.training.distributed`); alone, erasing draws from ``rng``.
    """
    context = context if context is not None else distributed.Context()
    erase_rng = erase_rng if context.active else rng
    scaler = scaler if scaler is not None else torch.amp.GradScaler(device.type, enabled=False)
    model.train()
    totals = {"train_loss": 0.0, "train_recon": 0.0, "train_kl": 0.0}
    n = len(samples)
    batches = np.array_split(rng.permutation(n), math.ceil(n / batch_size))
    bar = _progress_bar(progress, total=len(batches), desc="batches", unit="batch", leave=False)
    for batch in batches:
        index = distributed.shard(np.sort(batch), context)
        if len(index) == 0:  # a batch smaller than the ranks: this rank only joins the gradient average
            optimizer.zero_grad(set_to_none=True)
            distributed.average_gradients(model, 0.0, context)
            scaler.step(optimizer)
            scaler.update()
            bar.update(1)
            continue
        target = samples[index]
        inputs = target if erasing is None else erasing.apply_batch(target, sample_masks[index], erase_rng)
        target_t = torch.from_numpy(target).to(device)
        inputs_t = torch.as_tensor(np.asarray(inputs), dtype=torch.float32).to(device)
        with autocast(precision, device):
            terms = model.training_loss(inputs_t, target_t)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(terms.total).backward()
        distributed.average_gradients(model, len(index) / len(batch), context)
        scaler.step(optimizer)
        scaler.update()
        for key, value in zip(totals, (terms.total, terms.recon, terms.kl)):
            totals[key] += float(value.detach()) * len(index)
        bar.set_postfix(loss=f"{float(terms.total.detach()):.4g}")
        bar.update(1)
    bar.close()
    terms = {key: value / n for key, value in zip(totals, distributed.all_sum(list(totals.values()), context))}
    terms["train_l1_per_voxel"] = terms.pop("train_recon") / samples[0].size  # as val_l1_per_voxel
    return terms


@torch.no_grad()
def _fit_epoch(model: ReconstructionModel, samples: np.ndarray, *, batch_size: int,
               device: torch.device) -> dict[str, float]:
    """A model fitted in closed form (``mean-image``): fit on all samples, then report its loss terms."""
    model.fit(torch.from_numpy(samples).to(device))
    model.eval()
    totals = {"train_loss": 0.0, "train_recon": 0.0, "train_kl": 0.0}
    for start in range(0, len(samples), batch_size):
        x = torch.from_numpy(samples[start:start + batch_size]).to(device)
        for key, value in zip(totals, model.training_loss(x, x)):
            totals[key] += float(value) * len(x)
    terms = {key: value / len(samples) for key, value in totals.items()}
    terms["train_l1_per_voxel"] = terms.pop("train_recon") / samples[0].size  # as val_l1_per_voxel
    return terms


@torch.no_grad()
def _validate(model: ReconstructionModel, val_images: np.ndarray, spatial_dims: int, *, batch_size: int,
              device: torch.device, precision: str = "32") -> tuple[float, float]:
    """Mean l1 error per voxel over all validation voxels, and mean KL per sample (eval mode).

    2D reconstructs every axial slice of every volume; KL is then averaged over slices. The forward
    pass runs at ``precision``; the errors are summed in float32.
    """
    model.eval()
    samples = volumes_to_samples(val_images, spatial_dims)
    abs_error, kl, n = 0.0, 0.0, len(samples)
    for start in range(0, n, batch_size):
        x = torch.from_numpy(samples[start:start + batch_size]).to(device)
        with autocast(precision, device):
            recon, sample_kl = model.validation_terms(x)
        abs_error += float((recon.float() - x).abs().sum())
        kl += float(sample_kl.float().sum())
    return abs_error / samples.size, kl / n


def _training_samples(images: np.ndarray, brain_masks: np.ndarray,
                      spatial_dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Training samples ``(S, 1, X, Y[, Z])``: volumes (3D) or axial slices with brain voxels (2D)."""
    samples, masks = volumes_to_samples(images, spatial_dims), volumes_to_samples(brain_masks, spatial_dims)
    if spatial_dims == 2:
        keep = masks.reshape(len(masks), -1).any(axis=1)
        samples, masks = samples[keep], masks[keep]
    return np.ascontiguousarray(samples), np.ascontiguousarray(masks)


def _check_arrays(images: np.ndarray, brain_masks: np.ndarray, val_images: np.ndarray,
                  source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32/bool copies of the arrays; DatasetError unless they are (N, S, S, S) alike."""
    images = np.asarray(images, dtype=np.float32)
    brain_masks = np.asarray(brain_masks, dtype=bool)
    val_images = np.asarray(val_images, dtype=np.float32)
    if images.ndim != 4 or len(set(images.shape[1:])) != 1 or len(images) == 0:
        raise DatasetError(f"{source}: training images must be a non-empty (N, S, S, S) stack of cubes, "
                           f"got shape {images.shape}")
    if brain_masks.shape != images.shape:
        raise DatasetError(f"{source}: brain masks {brain_masks.shape} do not match images {images.shape}")
    if val_images.ndim != 4 or val_images.shape[1:] != images.shape[1:] or len(val_images) == 0:
        raise DatasetError(f"{source}: validation images {val_images.shape} do not match training "
                           f"images {images.shape}")
    return images, brain_masks, val_images


def _epoch_rng(seed: int, epoch: int, rank: int | None = None) -> np.random.Generator:
    """The generator of one epoch (shuffling, erasing, latent seed), derived from ``(seed, epoch)``;
    with ``rank``, a rank's own erasing generator under ``torchrun``.
    """
    return np.random.default_rng([seed, epoch] if rank is None else [seed, epoch, rank])


# ---------------------------------------------------------------------------------------------------
# Run folder, checkpoints, RNG states


def _prepare_run_dir(config: TrainConfig, out_dir: str | Path, *, resume: bool, overwrite: bool) -> Path:
    """Check the run folder; see :func:`train` for the rules. Nothing is written or deleted here.

    ``config.yaml`` is written later, by :func:`_train_arrays`, once the data has loaded, and an
    ``overwrite`` clears the old run (:func:`_clear_run`) only then, so that a failed start leaves the
    folder as it was.
    """
    if resume and overwrite:
        raise ValueError("`resume` and `overwrite` must not both be True")
    run_dir = Path(out_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir}: exists and is not a folder")
    config_path = run_dir / _CONFIG_FILE
    has_run = any((run_dir / name).exists() for name in _RUN_FILES)
    if not has_run and run_dir.is_dir():
        foreign = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
        if foreign:
            what = "a built data set" if "dataset.json" in foreign else "not a training run"
            raise RunError(f"{run_dir}: holds {len(foreign)} other item(s) ({', '.join(foreign[:3])}"
                           f"{', ...' if len(foreign) > 3 else ''}), {what}; choose an empty or new --out "
                           "(it is never written into)")
    if has_run and resume and config_path.exists():
        _check_same_config(TrainConfig.from_yaml(config_path), config, run_dir)
    elif has_run and not (resume or overwrite):
        raise RunError(f"{run_dir}: holds a training run; pass resume=True (--resume) to continue it "
                       "or overwrite=True (--overwrite) to discard it")
    return run_dir


def _clear_run(run_dir: Path) -> None:
    """Delete the run files of ``run_dir`` (for ``overwrite``, once the new run is known to start)."""
    for name in _RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)


def _resume_checkpoint(run_dir: Path, config: TrainConfig) -> dict | None:
    """The checkpoint to resume from (``None``: none yet), checked against ``config``.

    The checkpoint carries the config it was trained with, so a resume is checked even when
    ``config.yaml`` was deleted or edited; a checkpoint from before that (no ``config``) is resumed
    only while ``config.yaml`` is there to vouch for it.
    """
    checkpoint = _load_checkpoint(run_dir)
    if checkpoint is None:
        return None
    stored = checkpoint.get("config")
    if stored is not None:
        _check_same_config(TrainConfig._from_dict(stored, run_dir / _CHECKPOINT_FILE), config, run_dir)
    elif not (run_dir / _CONFIG_FILE).exists():
        raise RunError(f"{run_dir}: {_CHECKPOINT_FILE} records no config and {_CONFIG_FILE} is missing, so "
                       "what it was trained with is unknown; pass overwrite=True (--overwrite) to start afresh")
    return checkpoint


def _check_same_config(stored: TrainConfig, given: TrainConfig, run_dir: Path) -> None:
    """RunError naming every field (except the device and compilation) where ``stored`` and ``given``
    differ; a ``precision`` of ``None`` in ``given`` means the run's own.

    ``batch_size``, ``max_epochs`` and ``patience`` are compared as resolved, so that a run started
    with the profile's values resumes under the same command, and refuses to when the profile changed.
    ``profile`` is compared as the :class:`~uadlab.profiles.Profile` it names: a named profile and an
    identical ``Profile`` object (what the labs pass) are the same run.
    """
    def value(config: TrainConfig, name: str) -> Any:
        if name == "profile":
            return config.resolved_profile
        return config.resolved(name) if name in _PROFILE_FIELDS else getattr(config, name)

    free = _RESUME_FREE_FIELDS + (("precision",) if given.precision is None else ())  # None: keep the run's
    diffs = [f"{f.name} (stored {value(stored, f.name)!r}, given {value(given, f.name)!r})"
             for f in fields(TrainConfig)
             if f.name not in free and value(stored, f.name) != value(given, f.name)]
    if diffs:
        raise RunError(f"{run_dir}: cannot resume, the config differs in " + "; ".join(diffs)
                       + "; pass overwrite=True (--overwrite) to start afresh")


def _check_same_model(stored: dict, given: dict, run_dir: Path) -> None:
    """RunError when the checkpoint's model differs from the one the config builds now (another model,
    a named profile's channels or latent size changed since the run began, or the data's image size).
    """
    if stored["name"] != given["name"]:
        raise RunError(f"{run_dir}: cannot resume, the checkpoint holds model {stored['name']!r}, the config "
                       f"builds {given['name']!r}; pass overwrite=True (--overwrite) to start afresh")
    old, new = stored["config"], given["config"]
    diffs = [f"{k} (stored {old.get(k)!r}, given {new[k]!r})" for k in new if old.get(k) != new[k]]
    if diffs:
        raise RunError(f"{run_dir}: cannot resume, the checkpoint's {given['name']} differs in " + "; ".join(diffs)
                       + "; pass overwrite=True (--overwrite) to start afresh")


def _checkpoint_record(checkpoint: dict, config: TrainConfig) -> dict:
    """The checkpoint's model record; a checkpoint from before the registry (``model_args``) is a dense VAE."""
    if "model_record" in checkpoint:
        return checkpoint["model_record"]
    old = checkpoint["model_args"]
    return {"name": "dense-vae", "config": {**old, "channels": list(old["channels"]), "in_channels": 1,
                                            "loss": config.loss}}


def _save_checkpoint(run_dir: Path, state: dict, model: ReconstructionModel,
                     optimizer: torch.optim.Optimizer | None, record: dict, config: TrainConfig,
                     scaler: torch.amp.GradScaler | None, writer: _CheckpointWriter) -> None:
    """Write ``checkpoint.pt`` (with the run's config, checked on resume) and ``history.csv`` atomically.

    The files are written from a copy of this moment's state, in ``writer``'s thread, while the next
    epoch trains.
    """
    checkpoint = {**state, "model": model.state_dict(),
                  "optimizer": None if optimizer is None else optimizer.state_dict(),
                  "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
                  "loss_state": model.loss_state(), "model_record": record, "rng": _get_rng_states(),
                  "config": config.to_dict()}
    # The weights and optimiser moments change in place in the next epoch and the history list grows.
    checkpoint.update(copy.deepcopy({k: checkpoint[k] for k in ("model", "optimizer", "scaler", "loss_state",
                                                                 "history")}))
    history = pd.DataFrame(checkpoint["history"], columns=list(HISTORY_COLUMNS))

    def write() -> None:
        _atomic_save(run_dir / _CHECKPOINT_FILE, lambda tmp: torch.save(checkpoint, tmp))
        _atomic_save(run_dir / _HISTORY_FILE, lambda tmp: history.to_csv(tmp, index=False))

    writer.submit(write)


class _CheckpointWriter:
    """Runs each epoch's checkpoint write in one background thread, overlapping the next epoch.

    Serialising a checkpoint (weights, best weights and Adam's two moments: four copies of the
    parameters) takes 0.4-0.5 s for the 3D lab model on a 2-core CPU, a third of a 40-volume bf16
    epoch (``benchmarks/train_epoch.py``). One write is in flight at a time: :meth:`submit` first
    waits for the previous one. :meth:`wait` joins the write in flight and raises its error, if any
    (a full disk fails the run as a synchronous write would; the write is atomic, so the previous
    checkpoint stays). The training loop waits before it returns, so a finished ``train`` has
    everything on disk, and the run folder's lock is held until then.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, write: Callable[[], None]) -> None:
        """Wait for the write in flight, then start ``write()`` in a new thread."""
        self.wait()

        def run() -> None:
            try:
                write()
            except BaseException as error:  # re-raised in the training thread by wait()
                self._error = error

        self._thread = threading.Thread(target=run, name="uadlab-checkpoint", daemon=False)
        self._thread.start()

    def wait(self, *, raise_error: bool = True) -> None:
        """Block until the write in flight is done; raise its error (unless ``raise_error`` is False)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None and raise_error:
            error, self._error = self._error, None
            raise error


def _load_checkpoint(run_dir: Path) -> dict | None:
    """The checkpoint in ``run_dir`` (``None`` when there is none); RunError if unreadable."""
    path = run_dir / _CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt files
        raise RunError(f"{path}: unreadable checkpoint ({type(error).__name__}: {error})") from None
    _upgrade_history(checkpoint)
    return checkpoint


def _upgrade_history(checkpoint: dict) -> None:
    """Rename the l1 columns of a run written before they were both per voxel, in place.

    Such runs stored ``train_recon`` (l1 summed over a sample's voxels) and ``val_recon`` (already
    per voxel); the training value is divided by the voxels of one sample (``image_size **
    spatial_dims``: a slice in 2D, a volume in 3D; from the model record, or ``model_args`` before
    the registry).
    """
    args = (checkpoint.get("model_record") or {}).get("config") or checkpoint.get("model_args") or {}
    voxels = int(args.get("image_size", 0)) ** int(args.get("spatial_dims", 0))
    for row in checkpoint.get("history", []):
        if "val_recon" in row:
            row["val_l1_per_voxel"] = row.pop("val_recon")
        if "train_recon" in row:
            train_recon = row.pop("train_recon")
            row["train_l1_per_voxel"] = train_recon / voxels if voxels else float("nan")


def _result(run_dir: Path, state: dict) -> TrainResult:
    history = pd.DataFrame(state["history"], columns=list(HISTORY_COLUMNS))
    return TrainResult(run_dir=run_dir, history=history, best_epoch=int(state["best_epoch"]),
                       best_val=float(state["best_val"]), finished=bool(state["finished"]))


def _get_rng_states() -> dict:
    """Python, NumPy (global) and torch RNG states as tensors/lists (loadable with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"python": [version, list(internal), gauss],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_states(states: dict) -> None:
    """Inverse of :func:`_get_rng_states`."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def _atomic_save(path: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then move it onto ``path``."""
    with atomic_write(path, overwrite=True) as tmp:
        write(tmp)


# ---------------------------------------------------------------------------------------------------
# Small helpers


def _resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA when available else CPU; a string is parsed by ``torch.device``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"`device` must be a torch device such as 'cpu' or 'cuda:0', got {device!r}") from None


def _available_device(device: str | torch.device | None) -> torch.device:
    """:func:`_resolve_device`, and a ValueError unless this machine has that device (a config may
    name ``cuda``: it stays valid on a CPU-only machine until something is run there).
    """
    resolved = _resolve_device(device)
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (resolved.index or 0) >= count:
            have = "no CUDA device" if count == 0 else f"{count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            raise ValueError(f"`device` must be a device of this machine, got {str(device)!r} (it has {have})")
    return resolved


def _progress_bar(progress: bool, **kwargs: Any) -> Any:
    """A manually updated tqdm bar when ``progress``, else a silent stand-in."""
    if progress:
        from tqdm.auto import tqdm

        return tqdm(**kwargs)
    return _Quiet()


class _Quiet:
    """Silent stand-in for a tqdm bar when progress is off."""

    def update(self, n: int = 1) -> None:
        """Ignore the step."""

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """Ignore the postfix."""

    def close(self) -> None:
        """Nothing to close."""
