"""Tests of uadlab.evaluation.lambert: Lambert et al.'s protocol with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from uadlab.errors import UadlabWarning
from uadlab.evaluation.inference import make_maps
from uadlab.evaluation.lambert import (
    LAMBERT_COLUMNS,
    THRESHOLDS,
    central_slices,
    lambert_markdown,
    lambert_scores,
    split_halves,
)
from uadlab.evaluation.metrics import UndefinedMetricWarning

SHAPE = (12, 12, 20)


def _subject(subject_id: str, rng: np.random.Generator, *, lesion_value: float = 0.12, error: float = 0.01):
    """A subject whose recon misses a lesion cube by ``lesion_value`` and everything else by ``error``."""
    image = np.full(SHAPE, 0.5, np.float32)
    brain = np.zeros(SHAPE, bool)
    brain[1:-1, 1:-1, :] = True
    lesion = np.zeros(SHAPE, bool)
    x, y = rng.integers(3, 6, size=2)
    lesion[x:x + 4, y:y + 4, 8:12] = True  # inside the central slices
    recon = image - error * brain - (lesion_value - error) * lesion
    return make_maps(subject_id, image, recon, brain, lesion, postprocess_kwargs={"median_size": 1,
                                                                                   "erosion_iterations": 0})


def test_central_slices_are_lamberts_75_of_170():
    assert central_slices(170) == slice(47, 122)
    assert central_slices(64) == slice(18, 46)
    assert central_slices(5, 0.01) == slice(2, 3)  # at least one slice
    with pytest.raises(ValueError, match="`fraction` must be a number in \\(0, 1\\]"):
        central_slices(64, 0.0)
    with pytest.raises(TypeError, match="`depth` must be a positive int"):
        central_slices(64.0)


def test_split_halves_is_seeded_disjoint_and_order_free():
    ids = [f"s{i}" for i in range(7)]
    fit, scored = split_halves(ids, seed=3)
    assert len(fit) == 3 and len(scored) == 4 and not set(fit) & set(scored) and set(fit) | set(scored) == set(ids)
    assert split_halves(ids[::-1], seed=3) == (fit, scored)
    assert split_halves(ids, seed=4) != (fit, scored)
    with pytest.raises(ValueError, match="at least two distinct"):
        split_halves(["a"])
    with pytest.raises(ValueError, match="at least two distinct"):
        split_halves(["a", "a", "b"])


def test_a_separable_test_set_scores_perfectly(rng):
    maps = [_subject(f"s{i}", rng) for i in range(6)]
    scores = lambert_scores(maps, seed=0)
    assert set(scores) == set(LAMBERT_COLUMNS)
    assert 0.01 < scores["threshold"] < 0.12 and scores["threshold"] in THRESHOLDS  # separates lesion from error
    assert scores["dice_mean"] == 1.0 and scores["dice_std"] == 0.0
    assert scores["sensitivity"] == 1.0 and scores["specificity"] == 1.0
    assert (scores["n_threshold"], scores["n_scored"]) == (3, 3)
    # MAE over the central brain voxels of the scored half: 0.01 everywhere but 0.12 in the 64-voxel lesions.
    brain_voxels = 10 * 10 * central_slices(SHAPE[2]).stop - 10 * 10 * central_slices(SHAPE[2]).start
    assert scores["mae"] == pytest.approx((0.01 * (brain_voxels - 64) + 0.12 * 64) / brain_voxels, rel=1e-5)


def test_lesions_outside_the_central_slices_are_not_scored(rng):
    maps = [_subject(f"s{i}", rng) for i in range(4)]
    moved = []
    for m in maps:
        lesion = np.roll(m.lesion_mask, -8, axis=2)  # now in slices 0-3, outside the central 9 of 20
        moved.append(make_maps(m.subject_id, m.image, m.image - 0.12 * lesion, m.brain_mask, lesion,
                               postprocess_kwargs={"median_size": 1, "erosion_iterations": 0}))
    with pytest.warns(UndefinedMetricWarning, match="no lesion voxel"):
        scores = lambert_scores(moved, seed=0)
    assert np.isnan(scores["threshold"]) and np.isnan(scores["dice_mean"])
    assert scores["mae"] == 0.0


def test_lambert_scores_validation(rng):
    m = _subject("a", rng)
    with pytest.raises(TypeError, match="must hold SubjectMaps"):
        lambert_scores([m, "b"])
    unlabelled = make_maps("b", m.image, m.recon, m.brain_mask)
    with pytest.raises(ValueError, match="without a lesion mask"):
        lambert_scores([m, unlabelled])


def test_markdown_has_one_row_per_model_and_both_protocols(rng):
    row = {**lambert_scores([_subject(f"s{i}", rng) for i in range(4)]), "bengs_dice_d": 0.5, "bengs_auprc": 0.25}
    table = pd.DataFrame([{"model": "Dense 3D", "dataset": "tumour", **row},
                          {"model": "Spatial 2D", "dataset": "tumour", **row}])
    text = lambert_markdown(table)
    assert text.count("| Dense 3D |") == 1 and "| Spatial 2D | 1.000 ± 0.000 | 1.000 | 1.000 |" in text
    assert "tumour DICE_D*" in text and "0.250" in text


def test_a_threshold_at_the_top_of_the_grid_is_reported(rng):
    maps = [_subject(f"s{i}", rng, lesion_value=0.4, error=0.145) for i in range(4)]  # only 0.15 separates them
    with pytest.warns(UadlabWarning, match="the best threshold is the grid's largest, 0.15"):
        scores = lambert_scores(maps, seed=0)
    assert scores["threshold"] == 0.15
