"""Training a reconstruction model on healthy brains (Bengs et al. 2021, Sec. 2.3): ``uadlab train``.

A registered model (:mod:`uadlab.models`; the dense VAE of Table 1 by default) is trained on the
healthy training split of a built data set with Adam (lr 1e-3) and its training loss (for the VAEs
the ELBO, or Lambert et al.'s loss), reached only through the
:class:`~uadlab.models.base.ReconstructionModel` protocol. A model fitted in closed form
(``mean-image``) is fitted once and finishes after one epoch. Spatial erasing (Sec. 2.2) is applied to
the *input* only; the reconstruction target is always the unerased image. The number of epochs is
chosen on the healthy validation reconstruction error: the best epoch's weights are kept and
training stops after ``patience`` epochs without improvement (or at ``max_epochs``). The epochs run
in the fit core (:func:`uadlab.training.fit.fit`), the run folder's rules are
:mod:`uadlab.training.runs`, the config is :class:`~uadlab.training.config.TrainConfig`.

The training volumes of :meth:`uadlab.data.dataset.BuiltDataset.stack` and their brain masks are moved
to the training device once (:class:`_TrainingSamples`); every batch is gathered, and erased
(:meth:`uadlab.training.erasing.SpatialErasing.apply_batch` on tensors), there:

- 3D: whole volumes (on a CPU, the arrays themselves: not copied).
- 2D: axial slices ``volume[:, :, k]`` of all training volumes, cut from the volumes on the device.
  Slices without a single brain voxel are skipped for training (they are all-zero images and would
  only teach the model to output zeros); validation reconstructs every slice, like
  :func:`uadlab.models.base.reconstruct` at test time.

Each epoch shuffles the samples with a generator seeded from ``(seed, epoch)``; erasing and the VAE's
latent sampling (the DDPM's steps and noise) draw from generators seeded the same way, so a resumed
run ends with bit-identical weights (on CPU) to an uninterrupted one.

Run folder (:mod:`uadlab.training.runs`)::

    config.yaml      the TrainConfig (checked on resume) and, under ``model``, the model record
    checkpoint.pt    after every epoch: weights, optimiser, loss state, best weights, best epoch,
                     epochs since best, RNG states, history, ``finished``, the model record (registry
                     name and config), and the run's config (so a resume is checked even without
                     config.yaml)
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
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from uadlab._checks import check_int, check_real
from uadlab.data.dataset import load_dataset
from uadlab.data.io import folder_lock
from uadlab.errors import DatasetError, RunError
from uadlab.layout import RUN_CHECKPOINT, RUN_CONFIG
from uadlab.models.base import ReconstructionModel, volumes_to_samples
from uadlab.models.precision import autocast
from uadlab.models.registry import build_from_record, build_model, model_config, model_record
from uadlab.speed import distributed
from uadlab.speed.channels_last import to_device
from uadlab.training.config import HISTORY_COLUMNS, TrainConfig, resume_differences
from uadlab.training.devices import available_device, resolve_device
from uadlab.training.experiments import parse_experiment
from uadlab.training.fit import Session, fit, seed_everything, train_pass
from uadlab.training.runs import clear_run, load_checkpoint, prepare_run_dir, read_run, refuse_differences

__all__ = ["TrainResult", "train", "load_run", "run_status", "training_subset"]

_HEALTHY = "healthy"  # the cohort of healthy subjects in a built data set (uadlab.data.dataset)
_ERASING_P = 0.5  # Sec. 2.2: erasing is applied with probability 0.5
_TERMS = ("train_loss", "train_recon", "train_kl")  # uadlab.models.base.LossTerms: total, recon, kl


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
    available_device(config.device)
    run_dir = _prepare_run_dir(config, out_dir, resume=resume, overwrite=overwrite)
    main_rank = distributed.launched_rank() == 0  # under torchrun, rank 0 alone locks, clears and writes
    with folder_lock(run_dir) if main_rank else contextlib.nullcontext():
        run_dir = _prepare_run_dir(config, out_dir, resume=resume, overwrite=overwrite)  # again, now locked
        checkpoint = _resume_checkpoint(run_dir, config) if resume else None
        if checkpoint is not None and checkpoint["finished"]:
            return _result(run_dir, checkpoint)
        images, brain_masks, val_images = _load_training_data(config)
        if overwrite and main_rank:  # only now: a typo in --data or a bad data set must not cost the old run
            clear_run(run_dir)
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
    target = available_device(device)
    config, checkpoint = read_run(run_dir, TrainConfig.from_yaml, "training run", "run")
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
    checkpoint = load_checkpoint(run_dir)
    if checkpoint is None or not (run_dir / RUN_CONFIG).is_file():
        raise RunError(f"{run_dir}: not a training run (no {RUN_CHECKPOINT} or {RUN_CONFIG})")
    config = TrainConfig.from_yaml(run_dir / RUN_CONFIG)
    return {"epochs": int(checkpoint["epoch"]), "best_epoch": int(checkpoint["best_epoch"]),
            "max_epochs": config.resolved("max_epochs"), "finished": bool(checkpoint["finished"])}


# ---------------------------------------------------------------------------------------------------
# The run: folder checks, setup, and the model's part of the fit core


def _prepare_run_dir(config: TrainConfig, out_dir: str | Path, *, resume: bool, overwrite: bool) -> Path:
    """:func:`uadlab.training.runs.prepare_run_dir` for ``config``; see :func:`train` for the rules.

    ``config.yaml`` is written later, by :func:`_train_arrays`, once the data has loaded, and an
    ``overwrite`` clears the old run only then, so that a failed start leaves the folder as it was.
    """
    return prepare_run_dir(out_dir, resume=resume, overwrite=overwrite,
                           differences=lambda path: resume_differences(TrainConfig.from_yaml(path), config))


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
        RunError: the checkpoint holds another model than the config builds.
    """
    experiment = parse_experiment(config.experiment)
    images, brain_masks, val_images = _check_arrays(images, brain_masks, val_images, config.data)
    context, device = distributed.setup(resolve_device(config.device))  # one rank of torchrun, or alone
    if config.precision is None and checkpoint is not None and (run_dir / RUN_CONFIG).exists():
        config = replace(config, precision=TrainConfig.from_yaml(run_dir / RUN_CONFIG).precision)
    # The values the run uses, not None: a later change to a named profile cannot alter a run silently.
    config = replace(config, **{n: config.resolved(n) for n in ("batch_size", "max_epochs", "patience")},
                     precision=config.resolved_precision(device))
    samples = _TrainingSamples(images, brain_masks, experiment.spatial_dims, device)
    if len(samples) == 0:
        raise DatasetError(f"{config.data}: no training sample holds a brain voxel")
    options = {"loss": config.loss} if config.loss != "elbo" else {}
    model_cfg = model_config(experiment.model, config.resolved_profile, experiment.spatial_dims,
                             int(images.shape[1]), **options)
    record = model_record(experiment.model, model_cfg)
    if checkpoint is not None:
        _check_same_model(_checkpoint_record(checkpoint, config), record, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    context.barrier()  # every rank has checked the folder before rank 0 writes into it
    if context.is_main:
        config.to_yaml(run_dir / RUN_CONFIG, model=record)
    seed_everything(config.seed)
    model = to_device(build_model(experiment.model, model_cfg), device)
    if config.compile:
        model.compile()  # in place: its __call__ (so training_loss, validation) runs compiled; same weights
    parameters = list(model.parameters())
    # Fused Adam (one kernel over all parameters, CPU and CUDA): a tenth of a 2D lab epoch saved on 2 cores.
    optimizer = torch.optim.Adam(parameters, lr=config.lr, fused=device.type in ("cpu", "cuda")) if parameters else None
    trainee = _Reconstruction(model, samples, val_images, experiment.erasing(p=_ERASING_P),
                              config=config, spatial_dims=experiment.spatial_dims, record=record)
    state = fit(trainee, Session(model, optimizer, config.precision, device, context), run_dir,
                max_epochs=1 if model.fitted_in_closed_form else config.max_epochs, patience=config.patience,
                columns=HISTORY_COLUMNS, checkpoint=checkpoint, progress=progress,
                desc=config.experiment, _stop_after_epoch=_stop_after_epoch)
    return _result(run_dir, state)


class _Reconstruction:
    """A reconstruction model's part of the fit core (:class:`uadlab.training.fit.Trainee`): erased
    inputs and unerased targets, the model's own training loss, the healthy validation l1 error.

    Args:
        model: the model, on its device.
        samples: the training samples, on the model's device.
        val_images: validation volumes ``(M, X, Y, Z)`` float32.
        erasing: the experiment's input transform, or ``None``.
        config: the run's config, with its values resolved.
        spatial_dims: 2 or 3.
        record: the model record the checkpoint carries.
    """

    def __init__(self, model: ReconstructionModel, samples: _TrainingSamples, val_images: np.ndarray, erasing: Any, *,
                 config: TrainConfig, spatial_dims: int, record: dict) -> None:
        self.model, self.samples, self.val_images = model, samples, val_images
        self.erasing, self.config, self.spatial_dims, self.record = erasing, config, spatial_dims, record

    def train_epoch(self, epoch: int, session: Session, *, progress: bool) -> dict[str, float]:
        """One epoch: sample-weighted means of the loss, its l1 term per voxel and its KL term.

        The generator of ``(seed, epoch)`` seeds torch (the VAE's latent sampling, the DDPM's steps
        and noise), then shuffles, then erases; under ``torchrun`` each rank erases from its own
        generator ``(seed, epoch, rank)``.
        """
        context, seed = session.context, self.config.seed
        rng = _epoch_rng(seed, epoch)
        torch.manual_seed(int(rng.integers(2**63)) + context.rank)
        if self.model.fitted_in_closed_form:
            return _fit_epoch(self.model, self.samples, batch_size=self.config.batch_size)
        erase_rng = _epoch_rng(seed, epoch, context.rank) if context.active else rng
        order = rng.permutation(len(self.samples))
        terms = train_pass(session, order, lambda index: self._loss(index, erase_rng), _TERMS,
                           batch_size=self.config.batch_size, progress=progress)
        distributed.average_buffers(self.model, context)
        terms["train_l1_per_voxel"] = terms.pop("train_recon") / self.samples.voxels  # as val_l1_per_voxel
        return terms

    def _loss(self, index: np.ndarray, erase_rng: np.random.Generator) -> Sequence[torch.Tensor]:
        """The model's loss terms on the samples ``index``, erased (Sec. 2.2) as inputs, unerased as targets."""
        target = self.samples.images(index)
        inputs = target if self.erasing is None else self.erasing.apply_batch(target, self.samples.brain_masks(index),
                                                                              erase_rng)
        return self.model.training_loss(inputs, target)

    def validate(self, session: Session) -> dict[str, float]:
        """Healthy validation l1 error per voxel and KL per sample (:func:`_validate`)."""
        val_recon, val_kl = _validate(self.model, self.val_images, self.spatial_dims, batch_size=self.config.batch_size,
                                      device=session.device, precision=session.precision)
        return {"val_l1_per_voxel": val_recon, "val_kl": val_kl}

    def score(self, row: dict[str, float]) -> tuple[float]:
        """Lower validation l1 error is better."""
        return (-row["val_l1_per_voxel"],)

    def patience_started(self, best: tuple[float, ...] | None) -> bool:
        """Patience counts from the first epoch, or from the model's scored stage
        (:meth:`~uadlab.models.base.ModelBase.patience_started`).
        """
        return self.model.patience_started()

    def extras(self) -> dict[str, Any]:
        """The loss state (Lambert et al.'s moving mean), the model record and the run's config."""
        return {"loss_state": self.model.loss_state(), "model_record": self.record, "config": self.config.to_dict()}

    def load_extras(self, checkpoint: dict[str, Any]) -> None:
        """Restore the loss state."""
        self.model.load_loss_state(checkpoint.get("loss_state"))


# ---------------------------------------------------------------------------------------------------
# Epoch helpers


@torch.no_grad()
def _fit_epoch(model: ReconstructionModel, samples: _TrainingSamples, *, batch_size: int) -> dict[str, float]:
    """A model fitted in closed form (``mean-image``): fit on all samples, then report its loss terms."""
    everything = samples.images()
    model.fit(everything)
    model.eval()
    totals = {"train_loss": 0.0, "train_recon": 0.0, "train_kl": 0.0}
    for start in range(0, len(samples), batch_size):
        x = everything[start:start + batch_size]
        for key, value in zip(totals, model.training_loss(x, x)):
            totals[key] += float(value) * len(x)
    terms = {key: value / len(samples) for key, value in totals.items()}
    terms["train_l1_per_voxel"] = terms.pop("train_recon") / samples.voxels  # as val_l1_per_voxel
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


class _TrainingSamples:
    """The training samples, resident on the training device, and the batches gathered there.

    3D samples are the volumes: moved to ``device`` once (on a CPU they are the arrays given, not
    copied). 2D samples are the axial slices ``volume[:, :, k]`` holding a brain voxel, numbered volume
    after volume, ``k`` rising (the order of :func:`uadlab.models.base.volumes_to_samples`): cut from the
    volumes on ``device`` once, slice after slice in memory, so that a batch reads whole slices (gathering
    slices from the volumes, where they are strided, made a 2D lab batch 17x slower to gather on a CPU:
    1.2 ms against 0.07 ms, 5 % of an epoch). The brain masks alike.

    Args:
        images: healthy training volumes ``(N, X, Y, Z)`` float32, C-contiguous.
        brain_masks: their brain masks ``(N, X, Y, Z)`` bool, C-contiguous.
        spatial_dims: 2 or 3.
        device: the training device.

    Attributes:
        voxels: voxels of one sample (a slice in 2D, a volume in 3D).

    Shape:
        - :meth:`images`, :meth:`brain_masks`: sorted sample indices ``(B,)`` -> ``(B, 1, X, Y)`` (2D)
          or ``(B, 1, X, Y, Z)`` (3D), on ``device``.
    """

    def __init__(self, images: np.ndarray, brain_masks: np.ndarray, spatial_dims: int, device: torch.device) -> None:
        self._images, self._brain_masks = torch.from_numpy(images).to(device), torch.from_numpy(brain_masks).to(device)
        if spatial_dims == 2:
            keep = self._brain_masks.any(dim=(1, 2))  # (N, Z): the slices with a brain voxel
            self._images = self._images.permute(0, 3, 1, 2)[keep]
            self._brain_masks = self._brain_masks.permute(0, 3, 1, 2)[keep]
        self.voxels = math.prod(self._images.shape[1:])

    def __len__(self) -> int:
        return len(self._images)

    def images(self, index: np.ndarray | None = None) -> torch.Tensor:
        """The samples ``index``, ``(B, 1, ...)`` float32; ``None``: all of them (a view, not a copy)."""
        if index is None:
            return self._images.unsqueeze(1)
        return self._images.index_select(0, torch.from_numpy(index).to(self._images.device)).unsqueeze(1)

    def brain_masks(self, index: np.ndarray) -> torch.Tensor:
        """The brain masks of the samples ``index``, ``(B, 1, ...)`` bool."""
        return self._brain_masks.index_select(0, torch.from_numpy(index).to(self._images.device)).unsqueeze(1)


def _check_arrays(images: np.ndarray, brain_masks: np.ndarray, val_images: np.ndarray,
                  source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The arrays as float32/bool, C-contiguous (copied only where they are not); DatasetError unless they
    are (N, S, S, S) alike.
    """
    images = np.ascontiguousarray(images, dtype=np.float32)
    brain_masks = np.ascontiguousarray(brain_masks, dtype=bool)
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
# Checkpoint checks


def _resume_checkpoint(run_dir: Path, config: TrainConfig) -> dict | None:
    """The checkpoint to resume from (``None``: none yet), checked against ``config``.

    The checkpoint carries the config it was trained with, so a resume is checked even when
    ``config.yaml`` was deleted or edited; a checkpoint from before that (no ``config``) is resumed
    only while ``config.yaml`` is there to vouch for it.
    """
    checkpoint = load_checkpoint(run_dir)
    if checkpoint is None:
        return None
    stored = checkpoint.get("config")
    if stored is not None:
        stored_config = TrainConfig._from_dict(stored, run_dir / RUN_CHECKPOINT)
        refuse_differences(run_dir, resume_differences(stored_config, config))
    elif not (run_dir / RUN_CONFIG).exists():
        raise RunError(f"{run_dir}: {RUN_CHECKPOINT} records no config and {RUN_CONFIG} is missing, so "
                       "what it was trained with is unknown; pass overwrite=True (--overwrite) to start afresh")
    return checkpoint


def _check_same_model(stored: dict, given: dict, run_dir: Path) -> None:
    """RunError when the checkpoint's model differs from the one the config builds now (another model,
    a named profile's channels or latent size changed since the run began, or the data's image size).
    """
    if stored["name"] != given["name"]:
        raise RunError(f"{run_dir}: cannot resume, the checkpoint holds model {stored['name']!r}, the config "
                       f"builds {given['name']!r}; pass overwrite=True (--overwrite) to start afresh")
    old, new = stored["config"], given["config"]
    diffs = [f"{k} (stored {old.get(k)!r}, given {new[k]!r})" for k in new if old.get(k) != new[k]]
    refuse_differences(run_dir, diffs, what=f"the checkpoint's {given['name']}")


def _checkpoint_record(checkpoint: dict, config: TrainConfig) -> dict:
    """The checkpoint's model record; a checkpoint from before the registry (``model_args``) is a dense VAE."""
    if "model_record" in checkpoint:
        return checkpoint["model_record"]
    old = checkpoint["model_args"]
    return {"name": "dense-vae", "config": {**old, "channels": list(old["channels"]), "in_channels": 1,
                                            "loss": config.loss}}


def _result(run_dir: Path, state: dict) -> TrainResult:
    """The :class:`TrainResult` of a loop state or checkpoint (its best value read from the history)."""
    history = pd.DataFrame(state["history"], columns=list(HISTORY_COLUMNS))
    best_epoch = int(state["best_epoch"])
    best_val = float(history["val_l1_per_voxel"].iloc[best_epoch - 1]) if best_epoch else math.inf
    return TrainResult(run_dir=run_dir, history=history, best_epoch=best_epoch, best_val=best_val,
                       finished=bool(state["finished"]))
