"""Anomaly maps of a supervised segmenter on (input, reconstruction) (Behrendt et al. 2024).

The segmenter's sigmoid output replaces the residual as the anomaly map and goes through the same
post-processing (eroded brain mask, median filter; :func:`uadlab.evaluation.postprocessing.anomaly_map`)
and the same threshold search and metrics (:mod:`uadlab.evaluation.protocol`) as a residual, so the
rows of reconstruction-only and segmenter models compare one to one. The residual of the
reconstruction stays in :attr:`~uadlab.evaluation.inference.SubjectMaps.residual` (figures show both).

Shape:
    - every map: ``(X, Y, Z)`` float32, the data set's volumes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from uadlab.evaluation.inference import SubjectMaps, make_maps
from uadlab.evaluation.postprocessing import anomaly_map
from uadlab.models.base import reconstruct
from uadlab.models.segmenter import segment

__all__ = ["predict_segmented"]


def predict_segmented(recon_model: Any, segmenter: Any, dataset: Any, ids: Iterable[str], *,
                      postprocess_kwargs: Mapping[str, Any] | None = None, batch_size: int = 16,
                      device: str | None = None) -> dict[str, SubjectMaps]:
    """Reconstruct subjects, segment ``(image, recon)``, post-process the probability as the anomaly map.

    Args:
        recon_model: the trained reconstruction model the segmenter was trained with.
        segmenter: a trained :class:`~uadlab.models.segmenter.Segmenter`.
        dataset: a :class:`~uadlab.data.dataset.BuiltDataset`.
        ids: subject ids; duplicates are rejected.
        postprocess_kwargs: options of :func:`~uadlab.evaluation.postprocessing.anomaly_map`.
        batch_size: slices (2D) or volumes (3D) per pass.
        device: where both models run; ``None``: where their parameters are.

    Returns:
        ``{subject_id: SubjectMaps}`` with ``anomaly_map`` the post-processed segmenter probability.

    Raises:
        ValueError: duplicate ids; as :func:`~uadlab.evaluation.inference.make_maps`.
    """
    ids = list(ids)
    if len(set(ids)) != len(ids):
        raise ValueError(f"`ids` must be unique, got duplicates {sorted({i for i in ids if ids.count(i) > 1})!r}")
    out = {}
    for subject_id in ids:
        subject = dataset.subject(subject_id)
        recon = reconstruct(recon_model, subject.image, batch_size=batch_size, device=device)
        maps = make_maps(subject.subject_id, subject.image, recon, subject.brain_mask, subject.lesion_mask,
                         subject.affine, cohort=subject.cohort, split=subject.split,
                         postprocess_kwargs=postprocess_kwargs)
        probability = segment(segmenter, subject.image, recon, batch_size=batch_size, device=device)
        out[subject_id] = dataclasses.replace(
            maps, anomaly_map=anomaly_map(probability, maps.brain_mask, **dict(postprocess_kwargs or {})))
    return out
