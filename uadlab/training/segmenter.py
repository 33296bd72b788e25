"""A segmenter on (input, pseudo-healthy reconstruction) trained on synthetic anomalies (Behrendt et al. 2024).

Behrendt et al. 2024 keep a reconstruction model trained on healthy brains and add a supervised
segmentation network that reads the pair ``(image, recon)``. Labels come from synthetic anomalies
(:mod:`uadlab.training.synthetic_anomalies`) pasted into the *healthy* training split, optionally
plus ``K`` labelled validation cases of a lesion cohort ("weakly supervised"). Its sigmoid output is
the anomaly map that then goes through the same post-processing and threshold search as a residual
(:mod:`uadlab.evaluation.supervised`).

Decisions, fixed here once:

- **Two input channels, not a Siamese encoder.** Behrendt et al.'s code runs one encoder on each of
  input and reconstruction and concatenates the features. Stacking the two as channels of one MONAI
  :class:`~monai.networks.nets.UNet` lets the first convolution compare them voxel by voxel, needs half
  the encoder compute, and is the network MONAI ships for 2D and 3D alike; their Siamese encoder
  mainly serves reuse of a pretrained encoder, which this lab does not have.
- **A fixed pool of anomalies.** Reconstructing every anomalous sample anew at every step (as their
  code does on a GPU) costs one reconstruction-model pass per sample per epoch, three for the DDPM.
  Here each healthy training volume gets ``copies`` anomalies once, drawn with a seeded generator
  (one kind per copy, cycling through ``kinds``), and their reconstructions are computed once; the
  segmenter then trains on this pool for its epochs. Validation uses a pool made the same way from
  the healthy *validation* split.
- **Anomalies are pasted in 3D** volumes (a region spans neighbouring slices as a lesion does), then
  the reconstruction model reconstructs the whole volume; a 2D segmenter sees its axial slices,
  also those without an anomaly (negatives).
- **Test subjects never reach the segmenter.** :func:`train_segmenter` checks the split of every
  subject it reads and raises ``ValueError`` on a test subject; labelled cases must come from a
  lesion cohort's validation split.
- Loss: MONAI :class:`~monai.losses.DiceCELoss` (Dice + binary cross-entropy on the logits) with
  the Dice pooled over the batch (``batch=True``): most 2D samples hold no anomaly, and a per-sample
  Dice rewards predicting nothing on each of them. Adam.
- **The kept epoch has the best validation Dice** (pooled, probability > 0.5) on the synthetic
  validation pool, ties (e.g. no voxel above 0.5 yet) broken by the lower validation loss; training
  stops after ``patience`` epochs without a better one, counted from the first epoch with a Dice of
  at least 0.01 (before that, up to ``max_epochs``: on the smoke phantom the segmenter finds the
  anomalies only after about 10 epochs, and a stroke-labelled run whose first epoch had a Dice of
  0.004 stopped at epoch 6 otherwise; a Dice below 0.01 counts as 0). The validation loss alone
  is a poor guide:
  on the smoke phantom (mean-image reconstructions, 2 copies) it was lower at epoch 6 (1.06, Dice 0)
  than at epochs 29-40 (1.12-1.16, Dice 0.12-0.14); with 4 copies the Dice reached 0.37-0.39 from
  epoch 12 on at a flat loss (1.03-1.04). Hence also ``copies=4``.

Shape:
    - Segmenter input: ``(B, 2, X, Y)`` (2D, axial slices) or ``(B, 2, X, Y, Z)`` (3D): channel 0
      the image, channel 1 its reconstruction, float32 in [0, 1].
    - Output: logits of the anomaly probability, ``(B, 1, ...)``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.losses import DiceCELoss
from monai.networks.nets import UNet
from torch import nn

from uadlab._checks import check_int, check_real
from uadlab.data.io import atomic_write
from uadlab.errors import RunError
from uadlab.models.base import reconstruct, samples_to_volumes, volumes_to_samples
from uadlab.training.synthetic_anomalies import KINDS, SyntheticAnomaly

__all__ = ["SegmenterConfig", "Segmenter", "SegmenterResult", "SyntheticPool", "synthetic_pool", "labelled_pool",
           "train_segmenter", "segment", "split_labelled", "save_segmenter", "load_segmenter"]

_HEALTHY = "healthy"
_MIN_DICE = 0.01  # a validation Dice below this counts as "finds nothing yet" (see the module docstring)
_FILE = "segmenter.pt"


@dataclass(frozen=True)
class SegmenterConfig:
    """Everything that defines a segmenter and its training; saved with it.

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

    @classmethod
    def from_profile(cls, profile: Any, spatial_dims: int, image_size: int, **options: Any) -> SegmenterConfig:
        """The profile's feature maps, batch size, epochs and patience; ``options`` override any field."""
        values = {"channels": tuple(profile.channels), "batch_size": profile.batch_size_for(spatial_dims),
                  "max_epochs": profile.max_epochs, "patience": profile.patience, **options}
        return cls(spatial_dims, image_size, **values)


class Segmenter(nn.Module):
    """MONAI ``UNet(spatial_dims, 2 -> 1, channels, strides 2, num_res_units)`` on ``(image, recon)``.

    Args:
        config: the :class:`SegmenterConfig`.

    Shape:
        - :meth:`forward`: ``(B, 2, S, S[, S])`` -> logits ``(B, 1, S, S[, S])``.
    """

    def __init__(self, config: SegmenterConfig) -> None:
        super().__init__()
        if not isinstance(config, SegmenterConfig):
            raise TypeError(f"`config` must be a SegmenterConfig, got {type(config).__name__}")
        self.config = config
        self.spatial_dims = config.spatial_dims
        self.unet = UNet(config.spatial_dims, 2, 1, channels=config.channels,
                         strides=(2,) * (len(config.channels) - 1), num_res_units=config.num_res_units)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """Logits of the anomaly probability of every voxel."""
        return self.unet(pairs)


@dataclass
class SyntheticPool:
    """Anomalous volumes, their reconstructions and labels, ready for the segmenter.

    Attributes:
        images: ``(N, X, Y, Z)`` float32 inputs (healthy volumes with a pasted anomaly, or labelled cases).
        recons: ``(N, X, Y, Z)`` float32 reconstructions of ``images`` by the reconstruction model.
        masks: ``(N, X, Y, Z)`` bool labels (the changed voxels, or a lesion mask).
        brain_masks: ``(N, X, Y, Z)`` bool.
        subject_ids: the subject each volume came from (repeated for its copies).
        kinds: the anomaly kind of each volume (``"lesion"`` for a labelled case).
    """

    images: np.ndarray
    recons: np.ndarray
    masks: np.ndarray
    brain_masks: np.ndarray
    subject_ids: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def __add__(self, other: SyntheticPool) -> SyntheticPool:
        return SyntheticPool(*(np.concatenate([a, b]) for a, b in
                               ((self.images, other.images), (self.recons, other.recons),
                                (self.masks, other.masks), (self.brain_masks, other.brain_masks))),
                             self.subject_ids + other.subject_ids, self.kinds + other.kinds)


@dataclass
class SegmenterResult:
    """A trained segmenter and how its training went.

    Attributes:
        segmenter: the best epoch's weights, eval mode.
        history: one row per epoch: ``epoch, train_loss, val_loss, val_dice``.
        best_epoch: 1-based epoch with the highest ``val_dice`` (ties: the lowest ``val_loss``).
        training_ids: subjects whose volumes the segmenter trained on (healthy train, labelled cases).
        validation_ids: subjects of the validation pool (healthy val).
    """

    segmenter: Segmenter
    history: pd.DataFrame
    best_epoch: int
    training_ids: list[str]
    validation_ids: list[str]


def synthetic_pool(images: np.ndarray, brain_masks: np.ndarray, recon_fn: Callable[[np.ndarray], np.ndarray],
                   rng: np.random.Generator, *, kinds: Sequence[str] = KINDS, copies: int = 2,
                   subject_ids: Sequence[str] | None = None) -> SyntheticPool:
    """Paste ``copies`` synthetic anomalies into every healthy volume and reconstruct them.

    Copy ``j`` of volume ``i`` gets kind ``kinds[(i * copies + j) % len(kinds)]``; ``perlin-tissue``
    takes its texture from the next volume (``i + 1``, cyclically; itself when there is one volume).

    Args:
        images: healthy volumes ``(N, X, Y, Z)`` float32 in [0, 1].
        brain_masks: their brain masks, ``(N, X, Y, Z)`` bool.
        recon_fn: ``(M, X, Y, Z) -> (M, X, Y, Z)``, the reconstruction model on a stack of volumes.
        rng: generator of every anomaly.
        kinds: anomaly kinds to cycle through.
        copies: anomalous copies per volume.
        subject_ids: ids of the volumes, kept in the pool; ``None``: their indices.

    Raises:
        ValueError: ``images`` and ``brain_masks`` differ in shape or are not ``(N, X, Y, Z)``.
    """
    images = np.asarray(images, dtype=np.float32)
    brain_masks = np.asarray(brain_masks, dtype=bool)
    if images.ndim != 4 or images.shape != brain_masks.shape:
        raise ValueError(f"`images` and `brain_masks` must be (N, X, Y, Z) of one shape, got "
                         f"{images.shape} and {brain_masks.shape}")
    copies = check_int("copies", copies, "a positive int", lambda v: v > 0)
    ids = [str(i) for i in range(len(images))] if subject_ids is None else list(subject_ids)
    out_images, out_masks, out_brains, out_ids, out_kinds = [], [], [], [], []
    for i, (image, brain_mask) in enumerate(zip(images, brain_masks)):
        for j in range(copies):
            kind = kinds[(i * copies + j) % len(kinds)]
            texture = images[(i + 1) % len(images)] if kind == "perlin-tissue" else None
            anomalous, mask = SyntheticAnomaly(kind)(image, brain_mask, rng, texture=texture)
            out_images.append(anomalous)
            out_masks.append(mask)
            out_brains.append(brain_mask)
            out_ids.append(ids[i])
            out_kinds.append(kind)
    stack = np.stack(out_images).astype(np.float32)
    return SyntheticPool(stack, np.asarray(recon_fn(stack), dtype=np.float32), np.stack(out_masks),
                         np.stack(out_brains), out_ids, out_kinds)


def labelled_pool(dataset: Any, ids: Sequence[str], recon_fn: Callable[[np.ndarray], np.ndarray]) -> SyntheticPool:
    """Real labelled cases (weak supervision): their images, reconstructions and lesion masks.

    Raises:
        ValueError: no id, or a subject that is not a validation subject of a lesion cohort.
    """
    subjects = [dataset.subject(i) for i in ids]
    for s in subjects:
        if s.split != "val" or s.lesion_mask is None or s.cohort not in dataset.lesion_cohorts:
            raise ValueError(f"labelled cases must be validation subjects of a lesion cohort, got "
                             f"{s.subject_id!r} (cohort {s.cohort!r}, split {s.split!r})")
    if not subjects:
        raise ValueError("`ids` must name at least one labelled case, got none")
    images = np.stack([s.image for s in subjects]).astype(np.float32)
    return SyntheticPool(images, np.asarray(recon_fn(images), dtype=np.float32),
                         np.stack([np.asarray(s.lesion_mask, bool) for s in subjects]),
                         np.stack([np.asarray(s.brain_mask, bool) for s in subjects]),
                         [s.subject_id for s in subjects], ["lesion"] * len(subjects))


def split_labelled(dataset: Any, cohort: str, k: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Split a lesion cohort's validation cases into ``k`` labelled training cases and the rest.

    The rest fits the threshold (Behrendt et al. 2024's weakly supervised setting); the test split
    is not touched.

    Args:
        dataset: a built data set.
        cohort: a lesion cohort with a validation split.
        k: labelled cases for the segmenter, ``0 <= k < n_val`` (at least one case must remain for the
            threshold).
        seed: seed of the draw.

    Returns:
        ``(labelled_ids, threshold_ids)``, disjoint, together the cohort's validation split.

    Raises:
        ValueError: ``k`` negative or not below the number of validation cases.
    """
    val_ids = list(dataset.ids(cohort=cohort, split="val"))
    k = check_int("labelled_cases", k, f"an int in [0, {len(val_ids)}) (validation cases of {cohort!r} "
                  "minus one for the threshold)", lambda v: 0 <= v < len(val_ids))
    chosen = set(np.random.default_rng([seed, k]).choice(len(val_ids), size=k, replace=False).tolist())
    return [i for n, i in enumerate(val_ids) if n in chosen], [i for n, i in enumerate(val_ids) if n not in chosen]


def _check_not_test(dataset: Any, ids: Sequence[str], role: str) -> None:
    """The segmenter's guard: ``ValueError`` when any of ``ids`` is a test subject."""
    leaked = sorted(set(ids) & set(dataset.ids(split="test")))
    if leaked:
        raise ValueError(f"the segmenter's {role} must never contain test subjects, got {leaked!r}")


def train_segmenter(recon_model: Any, dataset: Any, config: SegmenterConfig, *,
                    labelled_ids: Sequence[str] = (), device: str | torch.device | None = None,
                    progress: bool = False) -> SegmenterResult:
    """Train a segmenter on synthetic anomalies in the healthy training split (Behrendt et al. 2024).

    Training pool: :func:`synthetic_pool` of the healthy ``train`` split, plus the labelled
    validation cases ``labelled_ids`` (weak supervision). Validation pool: :func:`synthetic_pool` of the
    healthy ``val`` split, drawn from another stream of the same seed. Every subject read is checked:
    a test subject raises ``ValueError`` before any training.

    Args:
        recon_model: a trained reconstruction model (:class:`~uadlab.models.base.ReconstructionModel`).
        dataset: a :class:`~uadlab.data.dataset.BuiltDataset` with healthy train and val splits.
        config: the segmenter's :class:`SegmenterConfig`; ``image_size`` must match the data.
        labelled_ids: labelled validation cases of lesion cohorts to train on (see :func:`split_labelled`).
        device: where to train; ``None``: CUDA when available, else CPU.
        progress: show a tqdm bar over epochs.

    Returns:
        :class:`SegmenterResult` with the best epoch's segmenter (eval mode).

    Raises:
        ValueError: a test subject among the subjects used, a labelled case that is not a labelled
            validation subject, no healthy train or val subject, or volumes of another size.
    """
    if not isinstance(config, SegmenterConfig):
        raise TypeError(f"`config` must be a SegmenterConfig, got {type(config).__name__}")
    train_ids = list(dataset.ids(cohort=_HEALTHY, split="train"))
    val_ids = list(dataset.ids(cohort=_HEALTHY, split="val"))
    if not train_ids or not val_ids:
        raise ValueError(f"the data set must have healthy train and val subjects, got {len(train_ids)} and "
                         f"{len(val_ids)}")
    labelled_ids = list(labelled_ids)
    for role, ids in (("training", train_ids + labelled_ids), ("validation", val_ids)):
        _check_not_test(dataset, ids, role)
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))

    def recon_fn(volumes: np.ndarray) -> np.ndarray:
        return reconstruct(recon_model, volumes, device=device)

    rng = np.random.default_rng([config.seed, 0])
    train_images, train_brains = dataset.stack(train_ids)
    if train_images.shape[1:] != (config.image_size,) * 3:
        raise ValueError(f"`config.image_size` must match the data's volumes {train_images.shape[1:]}, got "
                         f"{config.image_size}")
    pool = synthetic_pool(train_images, train_brains, recon_fn, rng, kinds=config.kinds, copies=config.copies,
                          subject_ids=train_ids)
    if labelled_ids:
        pool = pool + labelled_pool(dataset, labelled_ids, recon_fn)
    val_images, val_brains = dataset.stack(val_ids)
    val_pool = synthetic_pool(val_images, val_brains, recon_fn, np.random.default_rng([config.seed, 1]),
                              kinds=config.kinds, copies=config.copies, subject_ids=val_ids)

    torch.manual_seed(config.seed)
    # Not models.precision.to_device: channels-last 3D weights made this U-Net's CPU step 0.92-0.93x as fast
    # (2-channel input, batch 8 at 64^3, issue 16), so it keeps the default layout.
    segmenter = Segmenter(config).to(device)
    x_train, y_train = _pairs(pool, config.spatial_dims, keep_brain_slices=True)
    x_val, y_val = _pairs(val_pool, config.spatial_dims, keep_brain_slices=False)
    optimizer = torch.optim.Adam(segmenter.parameters(), lr=config.lr)
    loss_fn = DiceCELoss(sigmoid=True, batch=True)
    best = {"key": (-math.inf, -math.inf), "epoch": 0, "state": copy.deepcopy(segmenter.state_dict()), "since": 0}
    rows = []
    epochs = range(1, config.max_epochs + 1)
    if progress:
        from tqdm.auto import tqdm

        epochs = tqdm(epochs, desc="segmenter", unit="epoch")
    for epoch in epochs:
        order = np.random.default_rng([config.seed, 2, epoch]).permutation(len(x_train))
        segmenter.train()
        total = 0.0
        for index in np.array_split(order, math.ceil(len(order) / config.batch_size)):
            index = np.sort(index)
            logits = segmenter(torch.from_numpy(x_train[index]).to(device))
            loss = loss_fn(logits, torch.from_numpy(y_train[index]).to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
        val_loss, val_dice = _validate(segmenter, x_val, y_val, loss_fn, config.batch_size, device)
        rows.append({"epoch": epoch, "train_loss": total / len(x_train), "val_loss": val_loss, "val_dice": val_dice})
        dice = val_dice if val_dice >= _MIN_DICE else 0.0  # NaN or a few stray voxels: nothing found yet
        key = (dice, -val_loss)  # best Dice, then lowest loss
        if key > best["key"]:
            best.update(key=key, epoch=epoch, state=copy.deepcopy(segmenter.state_dict()), since=0)
        elif best["key"][0] > 0:  # patience runs once the segmenter finds anomalies at all
            best["since"] += 1
            if best["since"] >= config.patience:
                break
    segmenter.load_state_dict(best["state"])
    segmenter.eval()
    return SegmenterResult(segmenter, pd.DataFrame(rows), best["epoch"], train_ids + labelled_ids, val_ids)


@torch.no_grad()
def segment(segmenter: Segmenter, images: np.ndarray, recons: np.ndarray, *, batch_size: int = 32,
            device: str | torch.device | None = None) -> np.ndarray:
    """The segmenter's anomaly probability (sigmoid) of whole volumes.

    Args:
        segmenter: a trained :class:`Segmenter`.
        images: ``(X, Y, Z)`` or ``(N, X, Y, Z)`` in [0, 1].
        recons: their reconstructions, same shape.
        batch_size: slices (2D) or volumes (3D) per pass.
        device: where to run; ``None``: where the segmenter's parameters are.

    Returns:
        float32 probabilities in [0, 1], ``images``' shape.

    Raises:
        ValueError: shapes differ or are not 3D/4D.
    """
    images, recons = np.asarray(images, np.float32), np.asarray(recons, np.float32)
    if images.shape != recons.shape or images.ndim not in (3, 4):
        raise ValueError(f"`images` and `recons` must be (X, Y, Z) or (N, X, Y, Z) of one shape, got "
                         f"{images.shape} and {recons.shape}")
    stack_i, stack_r = (a[None] if a.ndim == 3 else a for a in (images, recons))
    dims = segmenter.spatial_dims
    pairs = np.concatenate([volumes_to_samples(stack_i, dims), volumes_to_samples(stack_r, dims)], axis=1)
    device = next(segmenter.parameters()).device if device is None else torch.device(device)
    was_training = segmenter.training
    segmenter.to(device).eval()
    try:
        probs = np.concatenate([torch.sigmoid(segmenter(torch.from_numpy(pairs[i:i + batch_size]).to(device)))
                                .float().cpu().numpy() for i in range(0, len(pairs), batch_size)])
    finally:
        segmenter.train(was_training)
    out = samples_to_volumes(probs, len(stack_i), dims)
    return out[0] if images.ndim == 3 else out


def save_segmenter(result: SegmenterResult | Segmenter, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the segmenter's config and weights (and history, when given a result) atomically."""
    segmenter = result.segmenter if isinstance(result, SegmenterResult) else result
    payload = {"config": asdict(segmenter.config), "state": segmenter.state_dict()}
    if isinstance(result, SegmenterResult):
        payload.update(history=result.history.to_dict("list"), best_epoch=result.best_epoch,
                       training_ids=result.training_ids, validation_ids=result.validation_ids)
    with atomic_write(path, overwrite=overwrite) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_segmenter(path: str | Path, *, device: str | torch.device | None = None) -> Segmenter:
    """A segmenter written by :func:`save_segmenter`, in eval mode.

    Raises:
        RunError: the file is missing or unreadable.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as error:
        raise RunError(f"{path}: not a readable segmenter ({error})") from None
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in payload["config"].items()}
    segmenter = Segmenter(SegmenterConfig(**config))
    segmenter.load_state_dict(payload["state"])
    return segmenter.to(device or "cpu").eval()


def _pairs(pool: SyntheticPool, spatial_dims: int, *, keep_brain_slices: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(image, recon)`` samples ``(M, 2, ...)`` and labels ``(M, 1, ...)``; 2D training drops brainless slices."""
    x = np.concatenate([volumes_to_samples(pool.images, spatial_dims),
                        volumes_to_samples(pool.recons, spatial_dims)], axis=1)
    y = volumes_to_samples(pool.masks.astype(np.float32), spatial_dims)
    if spatial_dims == 2 and keep_brain_slices:
        keep = volumes_to_samples(pool.brain_masks, 2).reshape(len(x), -1).any(axis=1)
        x, y = x[keep], y[keep]
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


@torch.no_grad()
def _validate(segmenter: Segmenter, x: np.ndarray, y: np.ndarray, loss_fn: nn.Module, batch_size: int,
              device: torch.device) -> tuple[float, float]:
    """Mean DiceCE loss over the validation samples and the pooled Dice at probability 0.5."""
    segmenter.eval()
    loss, inter, total = 0.0, 0.0, 0.0
    for i in range(0, len(x), batch_size):
        logits = segmenter(torch.from_numpy(x[i:i + batch_size]).to(device))
        target = torch.from_numpy(y[i:i + batch_size]).to(device)
        loss += float(loss_fn(logits, target)) * len(target)
        pred = (logits > 0).float()
        inter += float((pred * target).sum())
        total += float(pred.sum() + target.sum())
    return loss / len(x), (2 * inter / total if total else float("nan"))
