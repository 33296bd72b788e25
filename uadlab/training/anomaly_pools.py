"""The segmenter's training data (Behrendt et al. 2024): anomalies pasted into healthy brains, and
the few labelled cases of weak supervision.

Reconstructing every anomalous sample anew at every step (as Behrendt et al.'s code does on a GPU)
costs one reconstruction-model pass per sample per epoch, three for the DDPM. Here each healthy
volume gets ``copies`` anomalies once (:func:`synthetic_pool`), drawn with a seeded generator (one
kind per copy, cycling through the kinds of :mod:`uadlab.training.synthetic_anomalies`), and their
reconstructions are computed once; the segmenter then trains on this pool for all its epochs.
Anomalies are pasted in 3D volumes (a region spans neighbouring slices as a lesion does), then the
reconstruction model reconstructs the whole volume; a 2D segmenter sees its axial slices, also those
without an anomaly (negatives). Labelled cases (:func:`labelled_pool`) are validation cases of a
lesion cohort (:func:`split_labelled`); a test subject never reaches the segmenter
(:func:`check_not_test`).

Shape:
    - Pool arrays: ``(N, X, Y, Z)`` volumes; :func:`segmenter_pairs`: inputs ``(M, 2, ...)`` (image,
      recon) and labels ``(M, 1, ...)`` float32, ``...`` one slice (2D) or volume (3D).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uadlab._checks import check_int
from uadlab.models.base import volumes_to_samples
from uadlab.training.synthetic_anomalies import KINDS, SyntheticAnomaly

__all__ = ["SyntheticPool", "synthetic_pool", "labelled_pool", "split_labelled", "check_not_test", "segmenter_pairs"]


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


def check_not_test(dataset: Any, ids: Sequence[str], role: str) -> None:
    """The segmenter's guard: no test subject among ``ids`` (its ``role``: "training", "validation").

    Raises:
        ValueError: any of ``ids`` is a test subject of ``dataset``.
    """
    leaked = sorted(set(ids) & set(dataset.ids(split="test")))
    if leaked:
        raise ValueError(f"the segmenter's {role} must never contain test subjects, got {leaked!r}")


def segmenter_pairs(pool: SyntheticPool, spatial_dims: int, *,
                    keep_brain_slices: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(image, recon)`` samples ``(M, 2, ...)`` and labels ``(M, 1, ...)`` float32, C-contiguous.

    Args:
        pool: the volumes.
        spatial_dims: 2 (axial slices) or 3 (volumes).
        keep_brain_slices: in 2D, keep only slices with a brain voxel (training); validation keeps all.
    """
    x = np.concatenate([volumes_to_samples(pool.images, spatial_dims),
                        volumes_to_samples(pool.recons, spatial_dims)], axis=1)
    y = volumes_to_samples(pool.masks.astype(np.float32), spatial_dims)
    if spatial_dims == 2 and keep_brain_slices:
        keep = volumes_to_samples(pool.brain_masks, 2).reshape(len(x), -1).any(axis=1)
        x, y = x[keep], y[keep]
    return np.ascontiguousarray(x), np.ascontiguousarray(y)
