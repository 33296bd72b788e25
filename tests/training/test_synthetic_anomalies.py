"""Tests of uadlab.training.synthetic_anomalies: masks in the brain and equal to the changed voxels,
known answers per kind, seeds, inputs untouched, 2D and 3D, argument validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from uadlab.errors import VolumeError
from uadlab.training.synthetic_anomalies import (
    KINDS,
    MOOD_KINDS,
    PERLIN_KINDS,
    AnomalyParams,
    SyntheticAnomaly,
    apply_anomaly,
    perlin_noise,
)

SHAPES = {2: (40, 36), 3: (24, 22, 20)}
INTENSITY_KINDS = ("perlin-tissue", "perlin-shift", "perlin-noise", "local-shift", "uniform-blob")


def _brain(shape: tuple[int, ...]) -> np.ndarray:
    """An ellipsoidal brain mask that leaves a background border."""
    grid = np.indices(shape)
    centre = np.array([(s - 1) / 2 for s in shape]).reshape(-1, *(1,) * len(shape))
    half = np.array(shape).reshape(centre.shape) / 2.5
    return (((grid - centre) / half) ** 2).sum(0) <= 1


def _subject(spatial_dims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A brain with random intensities in [0.2, 0.8] (zero outside) and its mask."""
    shape = SHAPES[spatial_dims]
    brain = _brain(shape)
    image = np.where(brain, 0.2 + 0.6 * np.random.default_rng(seed).random(shape), 0.0).astype(np.float32)
    return image, brain


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_mask_inside_brain_and_equal_to_changed_voxels(kind, spatial_dims):
    image, brain = _subject(spatial_dims, 0)
    texture, _ = _subject(spatial_dims, 1)
    before = image.copy()
    for seed in range(5):
        out, mask = SyntheticAnomaly(kind)(image, brain, np.random.default_rng(seed), texture=texture)
        assert out.shape == image.shape and out.dtype == image.dtype and mask.dtype == bool
        assert mask.any()
        assert not (mask & ~brain).any()
        np.testing.assert_array_equal(mask, out != image)
        np.testing.assert_array_equal(out[~mask], image[~mask])
        params = SyntheticAnomaly(kind).get_params(brain, np.random.default_rng(seed))
        assert not (params.region & ~brain).any()
        assert not (mask & ~params.region).any()
        share = mask.sum() / params.region.sum()
        if kind in INTENSITY_KINDS:  # brain intensities in [0.2, 0.8]: every region voxel changes
            np.testing.assert_array_equal(mask, params.region)
        else:  # sink/source: all but the centre (and flat neighbourhoods, none in random texture)
            assert share >= 0.8
    np.testing.assert_array_equal(image, before)  # the input is never modified


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_anomaly_and_other_seed_another(kind, spatial_dims):
    image, brain = _subject(spatial_dims, 0)
    texture, _ = _subject(spatial_dims, 1)
    anomaly = SyntheticAnomaly(kind)
    a = anomaly(image, brain, np.random.default_rng(7), texture=texture)
    b = anomaly(image, brain, np.random.default_rng(7), texture=texture)
    c = anomaly(image, brain, np.random.default_rng(8), texture=texture)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    params = anomaly.get_params(brain, np.random.default_rng(7))
    np.testing.assert_array_equal(apply_anomaly(image, params, texture=texture)[0], a[0])  # apply is deterministic


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("kind", PERLIN_KINDS)
def test_perlin_region_has_the_drawn_size(kind, spatial_dims):
    _, brain = _subject(spatial_dims, 0)
    params = SyntheticAnomaly(kind, size_range=(0.1, 0.1)).get_params(brain, np.random.default_rng(3))
    assert params.region.sum() == round(0.1 * brain.sum())
    tiny = SyntheticAnomaly(kind, size_range=(1e-6, 1e-6)).get_params(brain, np.random.default_rng(3))
    assert tiny.region.sum() == 1  # at least one voxel


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("kind", MOOD_KINDS)
def test_ball_region_is_the_ball_inside_the_brain(kind, spatial_dims):
    _, brain = _subject(spatial_dims, 0)
    params = SyntheticAnomaly(kind, radius_range=(3.0, 3.0)).get_params(brain, np.random.default_rng(4))
    assert params.radius == 3.0 and brain[params.center]
    grid = np.indices(brain.shape)
    dist2 = sum((g - c) ** 2 for g, c in zip(grid, params.center))
    np.testing.assert_array_equal(params.region, (dist2 <= 9) & brain)


def test_shift_known_answer_and_clipped_voxels_leave_the_mask():
    image = np.full((6, 6), 0.5, dtype=np.float32)
    image[2, 2] = 1.0  # already at the top: a positive shift cannot change it
    region = np.zeros((6, 6), dtype=bool)
    region[1:4, 1:4] = True
    out, mask = apply_anomaly(image, AnomalyParams("local-shift", region, shift=0.3))
    expected = region.copy()
    expected[2, 2] = False
    np.testing.assert_array_equal(mask, expected)
    np.testing.assert_allclose(out[expected], 0.8)
    out, _ = apply_anomaly(image, AnomalyParams("perlin-shift", region, shift=-0.7))
    np.testing.assert_allclose(out[region], np.clip(image[region] - 0.7, 0, 1))
    assert out.min() == 0.0  # clipped at 0


def test_blob_tissue_and_noise_known_answers():
    image, brain = _subject(3, 0)
    texture, _ = _subject(3, 1)
    region = np.zeros(brain.shape, dtype=bool)
    region[10:14, 10:14, 8:12] = True
    out, _ = apply_anomaly(image, AnomalyParams("uniform-blob", region, value=0.9))
    np.testing.assert_allclose(out[region], 0.9)
    out, _ = apply_anomaly(image, AnomalyParams("perlin-tissue", region, opacity=1.0, offset=(0, 0, 0)),
                           texture=texture)
    np.testing.assert_array_equal(out[region], texture[region])
    out, _ = apply_anomaly(image, AnomalyParams("perlin-tissue", region, opacity=0.5, offset=(2, 0, -1)),
                           texture=texture)
    rolled = np.roll(texture, (2, 0, -1), axis=(0, 1, 2))
    np.testing.assert_allclose(out[region], 0.5 * image[region] + 0.5 * rolled[region], rtol=1e-6)
    noisy = AnomalyParams("perlin-noise", region, opacity=1.0, noise_seed=5)
    out, _ = apply_anomaly(image, noisy)
    np.testing.assert_allclose(out[region], np.random.default_rng(5).random(int(region.sum())), rtol=1e-6)


@pytest.mark.parametrize("kind", ["sink", "source"])
def test_sink_source_known_answer_on_a_linear_ramp(kind):
    """On ``image = 0.02 * x + 0.1`` linear interpolation is exact, so the new value at ``p`` is the ramp at
    ``c + (p - c) * (d / r) ** (e - 1)``: a source pulls in values from nearer the centre, a sink from further."""
    shape = (30, 30, 30)
    image = np.broadcast_to(0.02 * np.arange(30.0)[:, None, None] + 0.1, shape).astype(np.float64)
    brain = np.ones(shape, dtype=bool)
    params = SyntheticAnomaly(kind, radius_range=(5.0, 5.0)).get_params(brain, np.random.default_rng(0))
    params = AnomalyParams(kind, _ball_at(shape, (15, 15, 15), 5.0), center=(15, 15, 15), radius=5.0,
                           exponent=params.exponent)
    assert (params.exponent > 1) == (kind == "source")
    out, mask = apply_anomaly(image, params)
    points = np.stack(np.nonzero(params.region)).astype(float)
    d = np.sqrt(((points - 15.0) ** 2).sum(0))
    scale = np.ones_like(d)
    scale[d > 0] = (d[d > 0] / 5.0) ** (params.exponent - 1)
    np.testing.assert_allclose(out[params.region], 0.02 * (15 + (points[0] - 15) * scale) + 0.1, atol=1e-12)
    moved = np.abs(points[0] - 15) > 0
    towards_centre = np.abs(out[params.region] - 0.4) < np.abs(image[params.region] - 0.4)
    on_surface = np.isclose(d, 5.0)
    assert (towards_centre[moved & ~on_surface] == (kind == "source")).all()
    assert not mask[15, 15, 15]  # the centre never moves


def _ball_at(shape, center, radius):
    grid = np.indices(shape)
    return sum((g - c) ** 2 for g, c in zip(grid, center)) <= radius ** 2


def test_perlin_noise_is_seeded_smooth_and_bounded():
    rng = np.random.default_rng(0)
    noise = perlin_noise((48, 40), (8.0, 16.0), rng)
    assert noise.shape == (48, 40)
    np.testing.assert_array_equal(noise, perlin_noise((48, 40), (8.0, 16.0), np.random.default_rng(0)))
    assert np.abs(noise).max() <= math.sqrt(2) / 2 + 1e-9  # Perlin noise with unit gradients in 2D
    assert noise.std() > 0.05
    assert np.abs(np.diff(noise, axis=0)).max() < 0.5 * np.ptp(noise)  # smooth on the voxel scale
    volume = perlin_noise((16, 16, 16), (4.0, 4.0, 8.0), rng)
    assert volume.shape == (16, 16, 16) and np.abs(volume).max() <= math.sqrt(3) / 2 + 1e-9


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"kind": "blob"}, ValueError, "`kind` must be one of"),
    ({"size_range": (0.2, 0.1)}, ValueError, "`size_range` must be a \\(lo, hi\\) pair with lo <= hi"),
    ({"size_range": (0.0, 0.1)}, ValueError, r"`size_range` must be a \(lo, hi\) pair in \(0, 1\]"),
    ({"size_range": ("a", 0.1)}, TypeError, "`size_range` must be"),
    ({"size_range": 0.1}, ValueError, "`size_range` must be a \\(lo, hi\\) pair"),
    ({"radius_range": (0.5, 2.0)}, ValueError, "`radius_range` must be a \\(lo, hi\\) pair >= 1 voxel"),
    ({"shift_range": (0.1, 1.5)}, ValueError, "`shift_range` must be"),
    ({"value_range": (-0.1, 0.5)}, ValueError, "`value_range` must be"),
    ({"opacity_range": (0.0, 0.5)}, ValueError, "`opacity_range` must be"),
    ({"strength_range": (True, 2.0)}, TypeError, "`strength_range` must be"),
    ({"strength_range": (1.0, math.inf)}, ValueError, "`strength_range` must be"),
    ({"periods": ()}, ValueError, "`periods` must be a non-empty tuple"),
    ({"periods": (4.0, -1.0)}, ValueError, "`periods` must be positive numbers of voxels"),
    ({"periods": (4.0, "8")}, TypeError, "`periods` must be positive numbers of voxels"),
])
def test_constructor_validation(kwargs, error, match):
    kwargs = {"kind": "sink", **kwargs}
    with pytest.raises(error, match=match):
        SyntheticAnomaly(**kwargs)


def test_call_and_apply_validation():
    image, brain = _subject(2, 0)
    anomaly = SyntheticAnomaly("local-shift")
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="`rng` must be a numpy.random.Generator"):
        anomaly(image, brain, 0)
    with pytest.raises(TypeError, match="`image` must be a numpy array"):
        anomaly(image.tolist(), brain, rng)
    with pytest.raises(ValueError, match="`image` must be a float array"):
        anomaly((image * 100).astype(np.int16), brain, rng)
    with pytest.raises(ValueError, match=r"`image` must be \(X, Y\) or \(X, Y, Z\)"):
        anomaly(image[None, None], brain, rng)
    bad = image.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="`image` must be finite"):
        anomaly(bad, brain, rng)
    with pytest.raises(ValueError, match="`brain_mask` must be a \\(X, Y\\) or \\(X, Y, Z\\) bool array"):
        anomaly(image, brain.astype(np.uint8), rng)
    with pytest.raises(TypeError, match="`brain_mask` must be a numpy array"):
        anomaly.get_params(None, rng)
    with pytest.raises(ValueError, match="`brain_mask` must have the shape of `image`"):
        anomaly(image, brain[:-1], rng)
    with pytest.raises(VolumeError, match="`brain_mask` is empty"):
        anomaly(image, np.zeros_like(brain), rng)
    with pytest.raises(ValueError, match="`texture` must be another subject's image"):
        SyntheticAnomaly("perlin-tissue")(image, brain, rng)
    params = SyntheticAnomaly("perlin-tissue").get_params(brain, rng)
    with pytest.raises(ValueError, match="`texture` must be another subject's image"):
        apply_anomaly(image, params)
    with pytest.raises(ValueError, match="`texture` must have the shape of `image`"):
        apply_anomaly(image, params, texture=image[:-1])
    with pytest.raises(TypeError, match="`params` must be an AnomalyParams"):
        apply_anomaly(image, {"kind": "sink"})
    with pytest.raises(ValueError, match="`image` must have the shape of the anomaly's region"):
        apply_anomaly(image[:-1], params, texture=image)
    with pytest.raises(ValueError, match="`periods` must have one entry per axis"):
        perlin_noise((8, 8), (4.0,), rng)
    with pytest.raises(TypeError, match="`rng` must be a numpy.random.Generator"):
        perlin_noise((8, 8), (4.0, 4.0), None)

