"""Training the segmenter of Behrendt et al. 2024 on synthetic anomalies: a run like a reconstruction run.

Behrendt et al. 2024 keep a reconstruction model trained on healthy brains and add a supervised
segmentation network (:class:`uadlab.models.segmenter.Segmenter`) that reads the pair
``(image, recon)``. Labels come from synthetic anomalies pasted into the *healthy* training split
(:mod:`uadlab.training.anomaly_pools`), optionally plus ``K`` labelled validation cases of a lesion
cohort ("weakly supervised"). Its sigmoid output is the anomaly map that then goes through the same
post-processing and threshold search as a residual (:mod:`uadlab.evaluation.supervised`).

The epochs run in the fit core (:func:`uadlab.training.fit.fit`) as a reconstruction model's do, so
a segmenter run resumes, trains at a chosen precision, shows progress and writes a run folder
(:mod:`uadlab.training.runs`)::

    config.yaml      the SegmenterConfig (checked on resume)
    checkpoint.pt    after every epoch: weights, optimiser, best weights, best epoch, RNG states,
                     history, ``finished``, the config, and the training and validation subject ids
    history.csv      epoch, train_loss, val_loss, val_dice, seconds

Decisions, fixed here once:

- **A fixed pool of anomalies** per run (:func:`~uadlab.training.anomaly_pools.synthetic_pool`):
  the training pool from the healthy ``train`` split with the generator ``(seed, 0)``, the
  validation pool from the healthy ``val`` split with ``(seed, 1)``; a resumed run rebuilds the same
  pools. **Test subjects never reach the segmenter**: every subject read is checked first.
- Loss: MONAI :class:`~monai.losses.DiceCELoss` (Dice + binary cross-entropy on the logits) with
  the Dice pooled over the batch (``batch=True``): most 2D samples hold no anomaly, and a per-sample
  Dice rewards predicting nothing on each of them. Adam (PyTorch's default implementation, not the
  fused one the reconstruction models use, so that the weights are those of the segmenter before it
  joined the fit core, bit for bit). Each epoch's order comes from the generator ``(seed, 2, epoch)``.
- **The kept epoch has the best validation Dice** (pooled, probability > 0.5) on the synthetic
  validation pool, ties (e.g. no voxel above 0.5 yet) broken by the lower validation loss; training
  stops after ``patience`` epochs without a better one, counted from the first epoch with a Dice of
  at least 0.01 (before that, up to ``max_epochs``: on the smoke phantom the segmenter finds the
  anomalies only after about 10 epochs, and a stroke-labelled run whose first epoch had a Dice of
  0.004 stopped at epoch 6 otherwise; a Dice below 0.01 counts as 0). The validation loss alone
  is a poor guide:
  on the smoke phantom (mean-image reconstructions, 2 copies) it was lower at epoch 6 (1.06, Dice 0)
  than at epochs 29-40 (1.12-1.16, Dice 0.12-0.14); with 4 copies the Dice reached 0.37-0.39 from
  epoch 12 on at a flat loss (1.03-1.04). Hence ``copies=4`` (``Profile.synthetic_copies``) on the
  smoke phantom's handful of training volumes; the lab profile's 180 take 2, for its 10-minute budget.
- **float32 by default**, unlike a reconstruction run (:func:`uadlab.training.default_precision`):
  bf16 was not measured for this U-Net, and float32 keeps Behrendt et al.'s tables as they were.

Shape:
    - Segmenter input: ``(B, 2, X, Y)`` (2D, axial slices) or ``(B, 2, X, Y, Z)`` (3D): channel 0
      the image, channel 1 its reconstruction, float32 in [0, 1].
    - Output: logits of the anomaly probability, ``(B, 1, ...)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from monai.losses import DiceCELoss
from torch import nn

from uadlab._checks import check_int, check_real
from uadlab.data.io import atomic_write, folder_lock
from uadlab.errors import RunError
from uadlab.layout import RUN_CHECKPOINT, RUN_CONFIG
from uadlab.models.base import reconstruct
from uadlab.models.precision import PRECISIONS, autocast
from uadlab.models.segmenter import Segmenter
from uadlab.training.anomaly_pools import (
    SyntheticPool,
    check_not_test,
    labelled_pool,
    segmenter_pairs,
    split_labelled,
    synthetic_pool,
)
from uadlab.training.devices import available_device, resolve_device
from uadlab.training.fit import Session, fit, seed_everything, train_pass
from uadlab.training.runs import clear_run, load_checkpoint, prepare_run_dir, read_run, refuse_differences
from uadlab.training.synthetic_anomalies import KINDS

__all__ = ["SegmenterConfig", "SegmenterResult", "SEGMENTER_HISTORY_COLUMNS", "train_segmenter",
           "load_segmenter", "split_labelled"]

#: Columns of a segmenter run's ``history.csv`` and :attr:`SegmenterResult.history`.
SEGMENTER_HISTORY_COLUMNS: tuple[str, ...] = ("epoch", "train_loss", "val_loss", "val_dice", "seconds")

_HEALTHY = "healthy"
_MIN_DICE = 0.01  # a validation Dice below this counts as "finds nothing yet" (see the module docstring)
_RESUME_FREE_FIELDS = ("device",)  # where the same computation runs


@dataclass(frozen=True)
class SegmenterConfig:
    """Everything that defines a segmenter and its training; saved as ``config.yaml`` in its run folder.

    Attributes:
        spatial_dims: 2 (axial slices) or 3 (volumes).
        image_size: edge of the cubic volumes, voxels.
        channels: U-Net feature maps per level (strides 2 between levels).
        num_res_units: residual units per U-Net block.
        kinds: synthetic anomaly kinds (:data:`~uadlab.training.synthetic_anomalies.KINDS`), cycled.
        copies: anomalous copies of every healthy volume in the training and validation pools.
        batch_size: samples (slices or volumes) per step.
        max_epochs: epoch limit.
        patience: epochs without a better validation Dice (or, at equal Dice, loss) before stopping.
        lr: Adam learning rate.
        seed: seed of the pools, the initial weights and the shuffling.
        precision: ``"32"``, ``"bf16-mixed"`` or ``"16-mixed"`` (:data:`uadlab.models.precision.PRECISIONS`)
            of the segmenter's training and validation (the pools' reconstructions run at the
            reconstruction model's own precision).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; ``None``: CUDA when available, else CPU. May
            change on resume.

    Raises:
        TypeError: a size, ``seed`` or ``lr`` of the wrong type.
        ValueError: a field with an invalid value (``spatial_dims`` not 2 or 3, ``image_size`` not a
            multiple of ``2 ** (len(channels) - 1)``, an unknown kind or precision, a non-positive
            count or ``lr``, a seed outside [0, 2**32), a device name torch does not know).
    """

    spatial_dims: int
    image_size: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 128)
    num_res_units: int = 1
    kinds: tuple[str, ...] = KINDS
    copies: int = 4
    batch_size: int = 32
    max_epochs: int = 20
    patience: int = 5
    lr: float = 1e-3
    seed: int = 0
    precision: str = "32"
    device: str | None = None

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3) or isinstance(self.spatial_dims, bool):
            raise ValueError(f"`spatial_dims` must be 2 or 3, got {self.spatial_dims!r}")
        if not self.channels or not all(isinstance(c, int) and c > 0 for c in self.channels):
            raise ValueError(f"`channels` must be positive ints, got {self.channels!r}")
        levels = 2 ** (len(self.channels) - 1)
        check_int("image_size", self.image_size, f"a positive multiple of {levels}",
                  lambda v: v > 0 and v % levels == 0)
        check_int("num_res_units", self.num_res_units, "an int >= 0", lambda v: v >= 0)
        if not self.kinds or any(k not in KINDS for k in self.kinds):
            raise ValueError(f"`kinds` must be a non-empty tuple of {KINDS}, got {self.kinds!r}")
        for name in ("copies", "batch_size", "max_epochs", "patience"):
            check_int(name, getattr(self, name), "a positive int", lambda v: v > 0)
        check_real("lr", self.lr, "a positive number", lambda v: 0 < v < math.inf)
        check_int("seed", self.seed, "an int in [0, 2**32)", lambda v: 0 <= v < 2**32)
        if self.precision not in PRECISIONS:
            raise ValueError(f"`precision` must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.device is not None:
            resolve_device(self.device)

    @classmethod
    def from_profile(cls, profile: Any, spatial_dims: int, image_size: int, **options: Any) -> SegmenterConfig:
        """The profile's feature maps, batch size, segmenter epochs (``Profile.max_epochs_for("segmenter")``),
        patience and synthetic copies; ``options`` override any field.
        """
        values = {"channels": tuple(profile.channels), "batch_size": profile.batch_size_for(spatial_dims),
                  "max_epochs": profile.max_epochs_for("segmenter"), "patience": profile.patience,
                  "copies": profile.synthetic_copies, **options}
        return cls(spatial_dims, image_size, **values)

    def to_yaml(self, path: Path) -> None:
        """Write the config to ``path`` atomically (tuples as lists)."""
        text = yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()},
                              sort_keys=False)
        with atomic_write(path, overwrite=True) as tmp:
            Path(tmp).write_text(text)

    @classmethod
    def from_yaml(cls, path: Path) -> SegmenterConfig:
        """Read a config written by :meth:`to_yaml`.

        Raises:
            RunError: the file is missing, not YAML, or not a valid segmenter config.
        """
        try:
            raw = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as error:
            raise RunError(f"{path}: cannot read the segmenter config ({error})") from None
        return cls._from_dict(raw, path)

    @classmethod
    def _from_dict(cls, raw: Any, path: str | Path) -> SegmenterConfig:
        """A config from :meth:`to_yaml`'s mapping; RunError naming ``path`` when it is not one."""
        if not isinstance(raw, dict):
            raise RunError(f"{path}: the segmenter config must be a mapping, got {type(raw).__name__}")
        try:
            return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
        except (TypeError, ValueError) as error:
            raise RunError(f"{path}: invalid segmenter config ({error})") from None


@dataclass
class SegmenterResult:
    """A trained segmenter and how its training went.

    Attributes:
        run_dir: the run folder.
        segmenter: the best epoch's weights, eval mode, on the config's device.
        history: one row per epoch, columns :data:`SEGMENTER_HISTORY_COLUMNS` (``seconds``: the
            epoch's wall time).
        best_epoch: 1-based epoch with the highest ``val_dice`` (ties: the lowest ``val_loss``).
        finished: ``True`` when training stopped by itself (patience or ``max_epochs``).
        training_ids: subjects whose volumes the segmenter trained on (healthy train, labelled cases).
        validation_ids: subjects of the validation pool (healthy val).
    """

    run_dir: Path
    segmenter: Segmenter = field(repr=False)
    history: pd.DataFrame = field(repr=False)
    best_epoch: int
    finished: bool
    training_ids: list[str]
    validation_ids: list[str]


def train_segmenter(recon_model: Any, dataset: Any, config: SegmenterConfig, out_dir: str | Path, *,
                    labelled_ids: Sequence[str] = (), resume: bool = True, overwrite: bool = False,
                    progress: bool = False) -> SegmenterResult:
    """Train a segmenter on synthetic anomalies in the healthy training split (Behrendt et al. 2024).

    Training pool: :func:`~uadlab.training.anomaly_pools.synthetic_pool` of the healthy ``train``
    split, plus the labelled validation cases ``labelled_ids`` (weak supervision). Validation pool: the
    same of the healthy ``val`` split, drawn from another stream of the same seed. Every subject read
    is checked: a test subject raises ``ValueError`` before any training. The run folder is locked
    while training (:func:`uadlab.data.io.folder_lock`).

    Args:
        recon_model: a trained reconstruction model (:class:`~uadlab.models.base.ReconstructionModel`).
        dataset: a :class:`~uadlab.data.dataset.BuiltDataset` with healthy train and val splits.
        config: the segmenter's :class:`SegmenterConfig`; ``image_size`` must match the data.
        out_dir: the run folder; created if needed. An existing folder must be empty or hold a run.
        labelled_ids: labelled validation cases of lesion cohorts to train on (see :func:`split_labelled`).
        resume: continue a run already in ``out_dir`` (a finished one is returned without training)
            when its config and subjects are the same.
        overwrite: discard a run already in ``out_dir`` and start afresh (``resume`` is then ignored);
            the old run is deleted only once the new one's pools are built.
        progress: tqdm bars over epochs and batches.

    Returns:
        :class:`SegmenterResult` with the best epoch's segmenter (eval mode).

    Raises:
        TypeError: ``config`` is not a :class:`SegmenterConfig`.
        ValueError: a test subject among the subjects used, a labelled case that is not a labelled
            validation subject, no healthy train or val subject, volumes of another size, a device
            this machine lacks.
        RunError: ``out_dir`` is a file or holds something other than a run; it holds a run with
            another config or other subjects (unless ``overwrite``), or one and neither flag is set;
            an unreadable checkpoint.
        uadlab.errors.UadlabError: another process is training into ``out_dir``.
    """
    if not isinstance(config, SegmenterConfig):
        raise TypeError(f"`config` must be a SegmenterConfig, got {type(config).__name__}")
    train_ids, val_ids = _healthy_ids(dataset)
    training_ids = train_ids + list(labelled_ids)
    for role, ids in (("training", training_ids), ("validation", val_ids)):
        check_not_test(dataset, ids, role)
    device = available_device(config.device)
    resume = resume and not overwrite
    _prepare_run_dir(config, out_dir, resume=resume, overwrite=overwrite)
    with folder_lock(out_dir) as run_dir:
        _prepare_run_dir(config, run_dir, resume=resume, overwrite=overwrite)  # again, now locked
        checkpoint = _resume_checkpoint(run_dir, config, training_ids, val_ids) if resume else None
        if checkpoint is not None and checkpoint["finished"]:
            return _result(run_dir, config, checkpoint, device)
        pool, val_pool = _pools(recon_model, dataset, config, train_ids, list(labelled_ids), val_ids, device)
        if overwrite:
            clear_run(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        config.to_yaml(run_dir / RUN_CONFIG)
        seed_everything(config.seed)
        segmenter = Segmenter(config.spatial_dims, config.channels, config.num_res_units).to(device)
        session = Session(segmenter, torch.optim.Adam(segmenter.parameters(), lr=config.lr), config.precision,
                          device)
        trainee = _Segmentation(segmenter, pool, val_pool, config, training_ids, val_ids)
        state = fit(trainee, session, run_dir, max_epochs=config.max_epochs, patience=config.patience,
                    columns=SEGMENTER_HISTORY_COLUMNS, checkpoint=checkpoint, progress=progress,
                    desc="segmenter")
        return _result(run_dir, config, state, device, training_ids, val_ids)


def load_segmenter(run_dir: str | Path, *, device: str | torch.device | None = None) -> Segmenter:
    """The best-epoch segmenter of a run written by :func:`train_segmenter`, in eval mode.

    Args:
        run_dir: the run folder.
        device: where to put it; ``None``: CUDA when available, else CPU.

    Raises:
        ValueError: ``device`` is not a device of this machine.
        RunError: no ``config.yaml``/``checkpoint.pt`` in ``run_dir``, or they are unreadable.
    """
    run_dir = Path(run_dir)
    target = available_device(device)
    config, checkpoint = read_run(run_dir, SegmenterConfig.from_yaml, "segmenter run", "segmenter")
    return _best_segmenter(config, checkpoint, target)


# ---------------------------------------------------------------------------------------------------
# The run: subjects, pools, folder checks


def _healthy_ids(dataset: Any) -> tuple[list[str], list[str]]:
    """The healthy train and val subject ids; ValueError when either is empty."""
    train_ids = list(dataset.ids(cohort=_HEALTHY, split="train"))
    val_ids = list(dataset.ids(cohort=_HEALTHY, split="val"))
    if not train_ids or not val_ids:
        raise ValueError(f"the data set must have healthy train and val subjects, got {len(train_ids)} and "
                         f"{len(val_ids)}")
    return train_ids, val_ids


def _pools(recon_model: Any, dataset: Any, config: SegmenterConfig, train_ids: list[str], labelled_ids: list[str],
           val_ids: list[str], device: torch.device) -> tuple[SyntheticPool, SyntheticPool]:
    """The training pool (healthy train, generator ``(seed, 0)``, plus the labelled cases) and the
    validation pool (healthy val, ``(seed, 1)``); ValueError when the volumes are not ``image_size``.
    """
    def recon_fn(volumes: np.ndarray) -> np.ndarray:
        return reconstruct(recon_model, volumes, device=device)

    train_images, train_brains = dataset.stack(train_ids)
    if train_images.shape[1:] != (config.image_size,) * 3:
        raise ValueError(f"`config.image_size` must match the data's volumes {train_images.shape[1:]}, got "
                         f"{config.image_size}")
    pool = synthetic_pool(train_images, train_brains, recon_fn, np.random.default_rng([config.seed, 0]),
                          kinds=config.kinds, copies=config.copies, subject_ids=train_ids)
    if labelled_ids:
        pool = pool + labelled_pool(dataset, labelled_ids, recon_fn)
    val_images, val_brains = dataset.stack(val_ids)
    val_pool = synthetic_pool(val_images, val_brains, recon_fn, np.random.default_rng([config.seed, 1]),
                              kinds=config.kinds, copies=config.copies, subject_ids=val_ids)
    return pool, val_pool


def _differences(stored: SegmenterConfig, given: SegmenterConfig) -> list[str]:
    """Every field but the device where ``stored`` and ``given`` differ, as ``"name (stored X, given Y)"``."""
    return [f"{f.name} (stored {getattr(stored, f.name)!r}, given {getattr(given, f.name)!r})"
            for f in fields(SegmenterConfig)
            if f.name not in _RESUME_FREE_FIELDS and getattr(stored, f.name) != getattr(given, f.name)]


def _prepare_run_dir(config: SegmenterConfig, out_dir: str | Path, *, resume: bool, overwrite: bool) -> Path:
    """:func:`uadlab.training.runs.prepare_run_dir` for ``config``; see :func:`train_segmenter`."""
    return prepare_run_dir(out_dir, resume=resume, overwrite=overwrite,
                           differences=lambda path: _differences(SegmenterConfig.from_yaml(path), config))


def _resume_checkpoint(run_dir: Path, config: SegmenterConfig, training_ids: list[str],
                       validation_ids: list[str]) -> dict | None:
    """The checkpoint to resume from (``None``: none yet); RunError when its config (the copy it
    carries) or its subjects differ from the ones given.
    """
    checkpoint = load_checkpoint(run_dir)
    if checkpoint is None:
        return None
    stored = SegmenterConfig._from_dict(checkpoint["config"], run_dir / RUN_CHECKPOINT)
    diffs = _differences(stored, config) + [
        f"{key} (stored {checkpoint[key]!r}, given {ids!r})"
        for key, ids in (("training_ids", training_ids), ("validation_ids", validation_ids))
        if list(checkpoint[key]) != ids]
    refuse_differences(run_dir, diffs)
    return checkpoint


def _best_segmenter(config: SegmenterConfig, checkpoint: dict, device: torch.device) -> Segmenter:
    """The checkpoint's best weights in a new segmenter on ``device``, eval mode."""
    segmenter = Segmenter(config.spatial_dims, config.channels, config.num_res_units)
    segmenter.load_state_dict(checkpoint["best_model"])
    return segmenter.to(device).eval()


def _result(run_dir: Path, config: SegmenterConfig, state: dict, device: torch.device,
            training_ids: list[str] | None = None, validation_ids: list[str] | None = None) -> SegmenterResult:
    """The :class:`SegmenterResult` of a loop state or a finished checkpoint (which names its subjects)."""
    return SegmenterResult(
        run_dir=run_dir, segmenter=_best_segmenter(config, state, device),
        history=pd.DataFrame(state["history"], columns=list(SEGMENTER_HISTORY_COLUMNS)),
        best_epoch=int(state["best_epoch"]), finished=bool(state["finished"]),
        training_ids=list(state["training_ids"] if training_ids is None else training_ids),
        validation_ids=list(state["validation_ids"] if validation_ids is None else validation_ids))


# ---------------------------------------------------------------------------------------------------
# The segmenter's part of the fit core


class _Segmentation:
    """The segmenter's part of the fit core (:class:`uadlab.training.fit.Trainee`): DiceCE on the pool's
    ``(image, recon)`` pairs, the validation Dice as the score.
    """

    def __init__(self, segmenter: Segmenter, pool: SyntheticPool, val_pool: SyntheticPool, config: SegmenterConfig,
                 training_ids: list[str], validation_ids: list[str]) -> None:
        self.segmenter, self.config = segmenter, config
        self.training_ids, self.validation_ids = training_ids, validation_ids
        self.x_train, self.y_train = segmenter_pairs(pool, config.spatial_dims, keep_brain_slices=True)
        self.x_val, self.y_val = segmenter_pairs(val_pool, config.spatial_dims, keep_brain_slices=False)
        self.loss_fn = DiceCELoss(sigmoid=True, batch=True)

    def train_epoch(self, epoch: int, session: Session, *, progress: bool) -> dict[str, float]:
        """One pass over the training pairs in the order of the generator ``(seed, 2, epoch)``."""
        order = np.random.default_rng([self.config.seed, 2, epoch]).permutation(len(self.x_train))
        return train_pass(session, order, lambda index: self._loss(index, session.device), ("train_loss",),
                          batch_size=self.config.batch_size, progress=progress)

    def _loss(self, index: np.ndarray, device: torch.device) -> tuple[torch.Tensor]:
        """DiceCE of the pairs ``index``."""
        logits = self.segmenter(torch.from_numpy(self.x_train[index]).to(device))
        return (self.loss_fn(logits, torch.from_numpy(self.y_train[index]).to(device)),)

    def validate(self, session: Session) -> dict[str, float]:
        """Mean DiceCE loss over the validation pairs and the pooled Dice at probability 0.5."""
        val_loss, val_dice = _validate(self.segmenter, self.x_val, self.y_val, self.loss_fn,
                                       self.config.batch_size, session.device, session.precision)
        return {"val_loss": val_loss, "val_dice": val_dice}

    def score(self, row: dict[str, float]) -> tuple[float, float]:
        """Best Dice (below 0.01, NaN included, counts as 0: nothing found yet), then lowest loss."""
        dice = row["val_dice"] if row["val_dice"] >= _MIN_DICE else 0.0
        return (dice, -row["val_loss"])

    def patience_started(self, best: tuple[float, ...] | None) -> bool:
        """Patience runs once the segmenter finds anomalies at all."""
        return best is not None and best[0] > 0

    def extras(self) -> dict[str, Any]:
        """The config and the subjects, checked on resume."""
        return {"config": asdict(self.config), "training_ids": self.training_ids,
                "validation_ids": self.validation_ids}

    def load_extras(self, checkpoint: dict[str, Any]) -> None:
        """Nothing to restore: the config and subjects were checked before training."""


@torch.no_grad()
def _validate(segmenter: Segmenter, x: np.ndarray, y: np.ndarray, loss_fn: nn.Module, batch_size: int,
              device: torch.device, precision: str = "32") -> tuple[float, float]:
    """Mean DiceCE loss over the validation samples and the pooled Dice at probability 0.5 (NaN when
    neither prediction nor labels hold a voxel). The forward pass runs at ``precision``.
    """
    segmenter.eval()
    loss, inter, total = 0.0, 0.0, 0.0
    for i in range(0, len(x), batch_size):
        with autocast(precision, device):
            logits = segmenter(torch.from_numpy(x[i:i + batch_size]).to(device)).float()
        target = torch.from_numpy(y[i:i + batch_size]).to(device)
        loss += float(loss_fn(logits, target)) * len(target)
        pred = (logits > 0).float()
        inter += float((pred * target).sum())
        total += float(pred.sum() + target.sum())
    return loss / len(x), (2 * inter / total if total else float("nan"))
