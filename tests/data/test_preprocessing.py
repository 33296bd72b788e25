"""Tests of uadlab.data.preprocessing: Bengs et al. 2021 Sec. 2.1 on synthetic volumes, and the cache."""

from __future__ import annotations

import numpy as np
import pytest

from uadlab.data.preprocessing import (
    STEPS,
    PreprocessCache,
    Preprocessed,
    PreprocessingParams,
    bias_correct,
    bias_correction_version,
    default_cache_dir,
    preprocess,
    skull_strip,
    skull_strip_version,
)
from uadlab.errors import VolumeError

# A 16³ output of an 80 mm box: 5 mm output voxels, fast to compute.
SMALL = PreprocessingParams(spacing_mm=2.0, pad_shape_mm=(80.0, 80.0, 80.0), out_size=16)

BRAIN_CENTRE_MM = np.array([4.0, -6.0, 10.0])
BRAIN_RADII_MM = np.array([24.0, 30.0, 20.0])
LESION_CENTRE_MM = BRAIN_CENTRE_MM + np.array([10.0, 8.0, 0.0])
LESION_HALF_MM = 6.0


def _phantom(affine: np.ndarray, shape: tuple[int, int, int]):
    """An ellipsoid brain with smooth intensities and a cube lesion, sampled on ``(affine, shape)``.

    Defined in world millimetres, so any grid covering it samples the same object.
    """
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    world = index @ affine[:3, :3].T + affine[:3, 3]
    rel = (world - BRAIN_CENTRE_MM) / BRAIN_RADII_MM
    brain = (rel**2).sum(axis=-1) <= 1.0
    image = (100.0 + 40.0 * np.sin(world[..., 0] / 9.0) + 30.0 * np.cos(world[..., 1] / 7.0)) * brain
    lesion = (np.abs(world - LESION_CENTRE_MM) <= LESION_HALF_MM).all(axis=-1) & brain
    image[lesion] = 20.0
    return image.astype(np.float32), brain, lesion


def _grid(voxel_mm=(1.0, 1.0, 1.0), rotation_deg: float = 0.0, extent_mm: float = 90.0):
    """A grid of ``voxel_mm`` voxels, rotated about Z, whose field of view covers the phantom."""
    voxel_mm = np.asarray(voxel_mm, float)
    shape = tuple(int(np.ceil(extent_mm / v)) for v in voxel_mm)
    angle = np.deg2rad(rotation_deg)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(voxel_mm)
    centre_index = (np.array(shape) - 1) / 2
    affine[:3, 3] = BRAIN_CENTRE_MM - affine[:3, :3] @ centre_index
    return affine, shape


def _world_centroid(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return affine[:3, :3] @ np.argwhere(mask).mean(axis=0) + affine[:3, 3]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * (a & b).sum() / (a.sum() + b.sum())


@pytest.fixture(scope="module")
def reference():
    """The phantom on a 1 mm RAS grid and its preprocessed result."""
    affine, shape = _grid()
    image, brain, lesion = _phantom(affine, shape)
    return affine, image, brain, lesion, preprocess(image, affine, brain, lesion, params=SMALL)


def test_output_shapes_types_and_range(reference):
    *_, out = reference
    assert isinstance(out, Preprocessed)
    assert out.image.shape == out.brain_mask.shape == out.lesion_mask.shape == (16, 16, 16)
    assert out.image.dtype == np.float32
    assert out.brain_mask.dtype == bool and out.lesion_mask.dtype == bool
    assert out.affine.shape == (4, 4)
    assert out.image.min() >= 0.0 and out.image.max() <= 1.0
    assert out.image[out.brain_mask].max() > 0.9  # the bright end of the brain reaches ~1
    assert np.all(out.image[~out.brain_mask] == 0.0)


def test_affine_is_the_padded_box_and_keeps_world_positions(reference):
    affine, _, brain, lesion, out = reference
    np.testing.assert_allclose(np.diag(out.affine)[:3], [5.0, 5.0, 5.0])  # 80 mm / 16 voxels
    np.testing.assert_allclose(out.affine[:3, :3], np.diag([5.0, 5.0, 5.0]))
    # The brain and the lesion stay where they were in world space (within one output voxel).
    np.testing.assert_allclose(_world_centroid(out.brain_mask, out.affine), _world_centroid(brain, affine), atol=2.5)
    np.testing.assert_allclose(_world_centroid(out.lesion_mask, out.affine), _world_centroid(lesion, affine), atol=2.5)
    # The box is centred on the brain's bounding box: the padded field of view is 80 mm wide.
    where = np.argwhere(out.brain_mask)
    extent = (where.max(axis=0) - where.min(axis=0) + 1) * 5.0
    np.testing.assert_allclose(extent, 2 * BRAIN_RADII_MM, atol=6.0)
    low_margin, high_margin = where.min(axis=0), 15 - where.max(axis=0)
    assert np.all(np.abs(low_margin - high_margin) <= 1)


def test_lesion_stays_inside_the_brain_and_dark(reference):
    *_, out = reference
    assert out.lesion_mask.sum() > 0
    assert np.all(out.brain_mask[out.lesion_mask])
    healthy = out.brain_mask & ~out.lesion_mask
    assert out.image[out.lesion_mask].mean() < 0.5 * out.image[healthy].mean()


def test_a_tiny_lesion_does_not_vanish(reference):
    affine, image, brain, _, _ = reference
    tiny = np.zeros_like(brain)
    tiny[47, 50, 44] = True  # one 1 mm voxel; the output voxels are 5 mm
    out = preprocess(image, affine, brain, tiny, params=SMALL)
    assert 1 <= out.lesion_mask.sum() <= 8
    np.testing.assert_allclose(_world_centroid(out.lesion_mask, out.affine), _world_centroid(tiny, affine), atol=5.0)
    assert not preprocess(image, affine, brain, np.zeros_like(brain), params=SMALL).lesion_mask.any()


def test_lps_permuted_input_gives_the_identical_result(reference):
    affine, image, brain, lesion, out = reference
    # Store the same voxels as L-P-S with the axes permuted (Z, X, Y): world positions unchanged.
    flipped = [np.flip(a, axis=(0, 1)).transpose(2, 0, 1) for a in (image, brain, lesion)]
    flip = np.eye(4)
    flip[0, 0] = flip[1, 1] = -1
    flip[0, 3], flip[1, 3] = image.shape[0] - 1, image.shape[1] - 1
    permute = np.eye(4)[[1, 2, 0, 3]]  # new index (k, i, j) -> old index (i, j, k)
    lps_affine = affine @ flip @ permute
    other = preprocess(*flipped[:1], lps_affine, flipped[1], flipped[2], params=SMALL)
    np.testing.assert_allclose(other.affine, out.affine, atol=1e-6)
    np.testing.assert_allclose(other.image, out.image, atol=1e-5)
    np.testing.assert_array_equal(other.brain_mask, out.brain_mask)
    np.testing.assert_array_equal(other.lesion_mask, out.lesion_mask)


@pytest.mark.parametrize(("voxel_mm", "rotation_deg"), [((1.0, 1.0, 2.5), 0.0), ((1.0, 1.0, 1.0), 20.0)])
def test_anisotropic_or_oblique_input_gives_nearly_the_same_result(reference, voxel_mm, rotation_deg):
    *_, out = reference
    affine, shape = _grid(voxel_mm, rotation_deg, extent_mm=110.0)
    image, brain, lesion = _phantom(affine, shape)
    other = preprocess(image, affine, brain, lesion, params=SMALL)
    assert _dice(other.brain_mask, out.brain_mask) > 0.9
    assert _dice(other.lesion_mask, out.lesion_mask) > 0.5
    np.testing.assert_allclose(
        _world_centroid(other.brain_mask, other.affine), _world_centroid(out.brain_mask, out.affine), atol=2.5
    )
    both = other.brain_mask & out.brain_mask
    assert np.abs(other.image[both] - out.image[both]).mean() < 0.08


def test_brain_larger_than_the_pad_box_is_centre_cropped(reference):
    affine, image, brain, lesion, _ = reference
    params = PreprocessingParams(spacing_mm=2.0, pad_shape_mm=(30.0, 80.0, 80.0), out_size=8)
    out = preprocess(image, affine, brain, lesion, params=params)
    # 30 mm box along X, narrower than the 48 mm brain: the brain fills X from end to end ...
    assert out.brain_mask[0].any() and out.brain_mask[-1].any()
    # ... and the field of view is exactly the box (voxel 30/8 mm along X, 80/8 mm along Y, Z).
    np.testing.assert_allclose(np.diag(out.affine)[:3], [3.75, 10.0, 10.0])
    centre_x = out.affine[0, :] @ np.array([3.5, 0, 0, 1])
    assert abs(centre_x - BRAIN_CENTRE_MM[0]) <= 2.0  # the crop is centred on the brain


def test_percentile_clipping_ignores_a_single_hot_voxel(reference):
    affine, image, brain, _, out = reference
    hot = image.copy()
    hot[tuple(np.argwhere(brain)[len(np.argwhere(brain)) // 2])] = 1e6
    clipped = preprocess(hot, affine, brain, params=SMALL)
    median, reference_median = np.median(clipped.image[clipped.brain_mask]), np.median(out.image[out.brain_mask])
    np.testing.assert_allclose(median, reference_median, atol=0.05)  # unclipped, it would be ~1e-4
    assert clipped.lesion_mask is None


def test_constant_brain_becomes_zero(reference):
    affine, _, brain, _, _ = reference
    params = PreprocessingParams(spacing_mm=1.0, pad_shape_mm=(80.0, 80.0, 80.0), out_size=16)  # no resampling
    out = preprocess(brain.astype(np.float32) * 7.0, affine, brain, params=params)
    assert out.brain_mask.any() and np.all(out.image == 0.0)


def test_paper_defaults_give_64_cubed(reference):
    affine, image, brain, lesion, _ = reference
    out = preprocess(image, affine, brain, lesion)
    assert out.image.shape == (64, 64, 64)
    np.testing.assert_allclose(np.diag(out.affine)[:3], np.array([158.0, 191.0, 163.0]) / 64)


def test_paper_box_holds_a_whole_adult_brain():
    """The default box fits an MNI152-sized brain (145 x 181 x 155 mm, RAS): nothing is cropped."""
    params = PreprocessingParams(spacing_mm=2.0, out_size=32)  # the paper's box, coarser for speed
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    shape = (90, 110, 96)
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    centre = (np.array(shape) - 1) / 2
    brain = ((((index - centre) * 2.0) / (np.array([145.0, 181.0, 155.0]) / 2)) ** 2).sum(axis=-1) <= 1.0
    out = preprocess(brain * 100.0, affine, brain, params=params)
    for axis in range(3):  # no brain on the box's faces: the brain's front and back are kept
        assert not np.take(out.brain_mask, [0, -1], axis=axis).any(), axis
    extent = np.ptp(np.argwhere(out.brain_mask), axis=0) + 1
    np.testing.assert_allclose(extent * np.diag(out.affine)[:3], [145.0, 181.0, 155.0], rtol=0.06)


def test_on_step_shows_each_step_on_its_own_grid(reference):
    affine, image, brain, lesion, out = reference
    flip = np.eye(4)  # the same voxels stored L-P-S (world positions unchanged): step 1 flips them back
    flip[0, 0] = flip[1, 1] = -1
    flip[0, 3], flip[1, 3] = image.shape[0] - 1, image.shape[1] - 1
    lps = affine @ flip
    flipped = [np.flip(a, axis=(0, 1)) for a in (image, brain, lesion)]
    states = {}
    result = preprocess(flipped[0], lps, flipped[1], flipped[2], params=SMALL,
                        on_step=lambda name, state: states.setdefault(name, state))
    assert tuple(states) == STEPS
    reoriented = states["reorient"]
    np.testing.assert_array_equal(reoriented.image, image)  # RAS+ again, untouched
    np.testing.assert_allclose(reoriented.affine, affine)
    assert states["resample"].image.shape == (45, 45, 45)  # 90 mm field of view at 2 mm
    np.testing.assert_allclose(np.diag(states["resample"].affine)[:3], 2.0)
    standardised = states["standardise"]
    assert standardised.image[~standardised.brain_mask].max() == 0.0  # skull stripped
    assert standardised.image.min() == 0.0 and standardised.image.max() == 1.0
    crop = states["crop"]
    for axis in range(3):  # the brain touches every face of its bounding box
        assert np.take(crop.brain_mask, [0], axis=axis).any() and np.take(crop.brain_mask, [-1], axis=axis).any()
    assert states["pad"].image.shape == SMALL.pad_shape == (40, 40, 40)
    assert states["pad"].lesion_mask.sum() == crop.lesion_mask.sum() == standardised.lesion_mask.sum()
    assert states["downsample"] is result
    np.testing.assert_array_equal(result.image, out.image)  # the hook changes nothing
    for state in states.values():  # every step's arrays share its grid, and the lesion stays in the brain
        assert state.image.shape == state.brain_mask.shape == state.lesion_mask.shape
        assert (state.lesion_mask & state.brain_mask).sum() >= 0.9 * state.lesion_mask.sum()
    with pytest.raises(TypeError, match="on_step"):
        preprocess(image, affine, brain, params=SMALL, on_step="print")


def test_deterministic(reference):
    affine, image, brain, lesion, out = reference
    again = preprocess(image, affine, brain, lesion, params=SMALL)
    np.testing.assert_array_equal(again.image, out.image)


# --------------------------------------------------------------------------------------------------
# Validation


def test_mismatched_mask_shapes_raise_volume_error(reference):
    affine, image, brain, lesion, _ = reference
    with pytest.raises(VolumeError, match="`brain_mask` shape"):
        preprocess(image, affine, brain[:-1], params=SMALL)
    with pytest.raises(VolumeError, match="`lesion_mask` shape"):
        preprocess(image, affine, brain, lesion[:, :-1], params=SMALL)


def test_empty_brain_mask_raises_volume_error(reference):
    affine, image, brain, _, _ = reference
    with pytest.raises(VolumeError, match="brain mask is empty"):
        preprocess(image, affine, np.zeros_like(brain), params=SMALL)
    tiny = np.zeros_like(brain)
    tiny[45, 45, 45] = True  # one 1 mm voxel between the 8 mm grid points
    with pytest.raises(VolumeError, match="empty after resampling"):
        preprocess(image, affine, tiny, params=PreprocessingParams(spacing_mm=8.0, out_size=4))


def test_bad_images_raise(reference):
    affine, image, brain, _, _ = reference
    with pytest.raises(VolumeError, match="must be 3D"):
        preprocess(image[0], affine, brain[0], params=SMALL)
    nan = image.copy()
    nan[0, 0, 0] = np.nan
    with pytest.raises(VolumeError, match="NaN or infinite"):
        preprocess(nan, affine, brain, params=SMALL)
    with pytest.raises(TypeError, match="`image` must be a numpy array"):
        preprocess(image.tolist(), affine, brain, params=SMALL)
    with pytest.raises(TypeError, match="`lesion_mask` must be a numpy array or None"):
        preprocess(image, affine, brain, "lesion.nii.gz", params=SMALL)
    with pytest.raises(TypeError, match="`image` must hold numbers"):
        preprocess(image.astype(str), affine, brain, params=SMALL)
    with pytest.raises(ValueError, match="`affine` must be a finite, invertible"):
        preprocess(image, np.zeros((4, 4)), brain, params=SMALL)
    with pytest.raises(ValueError, match="`affine` must be a finite, invertible"):
        preprocess(image, np.eye(3), brain, params=SMALL)
    with pytest.raises(TypeError, match="`params` must be a PreprocessingParams"):
        preprocess(image, affine, brain, params={"out_size": 16})


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"spacing_mm": 0.0}, ValueError, "`spacing_mm` must be a positive finite number"),
        ({"spacing_mm": "1"}, TypeError, "`spacing_mm` must be a number"),
        ({"pad_shape_mm": (191.0, 158.0)}, TypeError, "`pad_shape_mm` must be a tuple of 3 numbers"),
        ({"pad_shape_mm": (191.0, -1.0, 163.0)}, ValueError, "`pad_shape_mm` must be a positive"),
        ({"out_size": 64.0}, TypeError, "`out_size` must be an int"),
        ({"out_size": 1}, ValueError, "`out_size` must be >= 2"),
        ({"clip_percentile": 100.5}, ValueError, r"`clip_percentile` must lie in \(0, 100\]"),
        ({"clip_percentile": float("nan")}, ValueError, "`clip_percentile` must be a positive finite"),
    ],
)
def test_params_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        PreprocessingParams(**kwargs)


def test_params_from_profile_and_helpers():
    smoke = PreprocessingParams.from_profile("smoke")
    assert (smoke.spacing_mm, smoke.out_size) == (4.0, 32)
    assert smoke.pad_shape == (40, 48, 41)  # round(158/4), round(191/4), round(163/4)
    assert PreprocessingParams().pad_shape == (158, 191, 163)
    assert PreprocessingParams.from_profile("paper") == PreprocessingParams()
    assert PreprocessingParams.from_profile("lab", clip_percentile=99.0).clip_percentile == 99.0
    assert smoke.to_dict() == {"spacing_mm": 4.0, "pad_shape_mm": [158.0, 191.0, 163.0], "out_size": 32,
                               "clip_percentile": 99.5}
    assert PreprocessingParams(pad_shape_mm=[100, 100, 100]).pad_shape_mm == (100.0, 100.0, 100.0)
    with pytest.raises(ValueError, match="`profile` must be one of"):
        PreprocessingParams.from_profile("huge")


# --------------------------------------------------------------------------------------------------
# Cache


class _Counter:
    """A ``compute`` callable that counts its calls and returns a fixed result."""

    def __init__(self, result: Preprocessed) -> None:
        self.result, self.calls = result, 0

    def __call__(self) -> Preprocessed:
        self.calls += 1
        return self.result


def _assert_same(a: Preprocessed, b: Preprocessed) -> None:
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.brain_mask, b.brain_mask)
    np.testing.assert_array_equal(a.affine, b.affine)
    if a.lesion_mask is None:
        assert b.lesion_mask is None
    else:
        np.testing.assert_array_equal(a.lesion_mask, b.lesion_mask)


def test_cache_hit_does_no_work(tmp_path, reference):
    *_, out = reference
    cache = PreprocessCache(tmp_path / "cache")
    compute = _Counter(out)
    first = cache.get_or_compute("subject-1", compute, params=SMALL)
    second = cache.get_or_compute("subject-1", compute, params=SMALL)
    assert compute.calls == 1
    _assert_same(first, out)
    _assert_same(second, out)
    assert second.image.dtype == np.float32 and second.brain_mask.dtype == bool
    assert len(list((tmp_path / "cache").iterdir())) == 1  # no temporary files left behind
    # Another key or other parameters are other entries.
    cache.get_or_compute("subject-2", compute, params=SMALL)
    cache.get_or_compute("subject-1", compute, params=PreprocessingParams(spacing_mm=2.0, pad_shape_mm=(80, 80, 80),
                                                                          out_size=16, clip_percentile=99.0))
    assert compute.calls == 3


def test_cache_without_lesion_mask_roundtrips(tmp_path, reference):
    *_, out = reference
    healthy = out._replace(lesion_mask=None)
    cache = PreprocessCache(tmp_path)
    compute = _Counter(healthy)
    cache.get_or_compute("h", compute)
    _assert_same(cache.get_or_compute("h", compute), healthy)
    assert compute.calls == 1


def _damaged(arrays: dict, damage: str) -> dict:
    """The arrays of a good cache entry with one thing wrong."""
    arrays = dict(arrays)
    if damage == "wrong_shape":
        arrays.update(image=arrays["image"][:8], brain_mask=arrays["brain_mask"][:8],
                      lesion_mask=arrays["lesion_mask"][:8])
    elif damage == "wrong_dtype":
        arrays["image"] = arrays["image"].astype(np.float64)
    elif damage == "nan":
        arrays["image"] = arrays["image"].copy()
        arrays["image"][0, 0, 0] = np.nan
    elif damage == "missing_array":
        del arrays["brain_mask"]
    elif damage == "missing_lesion":  # would otherwise read back as a healthy subject
        del arrays["lesion_mask"]
    elif damage == "other_key":
        arrays["key"] = np.array("subject-2")
    return arrays


@pytest.mark.parametrize(
    "damage",
    ["truncate", "garbage", "wrong_shape", "wrong_dtype", "nan", "missing_array", "missing_lesion", "other_key"],
)
def test_corrupt_cache_entry_is_rebuilt(tmp_path, reference, damage):
    *_, out = reference
    cache = PreprocessCache(tmp_path)
    compute = _Counter(out)
    cache.get_or_compute("subject-1", compute, params=SMALL)
    path = cache.path("subject-1", SMALL)
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a zip file")
    else:
        with np.load(path) as entry:
            arrays = {name: entry[name] for name in entry.files}
        with open(path, "wb") as handle:
            np.savez(handle, **_damaged(arrays, damage))
    rebuilt = cache.get_or_compute("subject-1", compute, params=SMALL)
    assert compute.calls == 2
    _assert_same(rebuilt, out)
    cache.get_or_compute("subject-1", compute, params=SMALL)  # the rebuilt entry is trusted again
    assert compute.calls == 2


def test_cache_keeps_metadata(tmp_path, reference):
    *_, out = reference
    cache = PreprocessCache(tmp_path)
    calls = []

    def compute():
        calls.append(1)
        return out, {"lesion_volume_mm3": 123.5}

    assert cache.get_or_compute_with_meta("k", compute, params=SMALL)[1] == {"lesion_volume_mm3": 123.5}
    result, meta = cache.get_or_compute_with_meta("k", compute, params=SMALL)
    assert meta == {"lesion_volume_mm3": 123.5} and len(calls) == 1
    _assert_same(result, out)
    with pytest.raises(TypeError, match="`compute` must return a Preprocessed"):
        cache.get_or_compute_with_meta("other", lambda: out)


def test_cache_validation(tmp_path, reference):
    *_, out = reference
    cache = PreprocessCache(tmp_path)
    with pytest.raises(TypeError, match="`key` must be a str"):
        cache.get_or_compute(1, lambda: out)
    with pytest.raises(TypeError, match="`compute` must be callable"):
        cache.get_or_compute("k", out)
    with pytest.raises(TypeError, match="`params` must be a PreprocessingParams"):
        cache.get_or_compute("k", lambda: out, params={"out_size": 16})
    with pytest.raises(TypeError, match="`compute` must return a Preprocessed"):
        cache.get_or_compute("k", lambda: out.image)
    with pytest.raises(TypeError, match="`directory` must be a path"):
        PreprocessCache(3)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("UADLAB_CACHE", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    assert PreprocessCache().directory == tmp_path / "here"
    monkeypatch.setenv("UADLAB_CACHE", "")
    assert default_cache_dir().parts[-3:] == (".cache", "uadlab", "preprocessed")
    monkeypatch.delenv("UADLAB_CACHE")
    assert default_cache_dir().parts[-3:] == (".cache", "uadlab", "preprocessed")


# --- skull stripping (deepbet) ------------------------------------------------------------------------

def test_skull_strip_validates_before_loading_networks():
    image, affine = np.ones((8, 8, 8), np.float32), np.eye(4)
    with pytest.raises(ValueError, match="`method` must be one of \\['deepbet'\\], got 'bet'"):
        skull_strip(image, affine, method="bet")
    with pytest.raises(ValueError, match="`threshold` must be a number in \\(0, 1\\), got 1.0"):
        skull_strip(image, affine, threshold=1.0)
    with pytest.raises(ValueError, match="`image` must be a 3D"):
        skull_strip(image[0], affine)
    with pytest.raises(ValueError, match="`affine` must be a \\(4, 4\\) matrix"):
        skull_strip(image, np.eye(3))
    with pytest.raises(VolumeError, match="NaN or inf"):
        skull_strip(np.full((8, 8, 8), np.nan, np.float32), affine)
    assert skull_strip_version() == "deepbet==1.0.2"


def test_mask_cache_reuses_and_rebuilds(tmp_path):
    cache, calls = PreprocessCache(tmp_path), []
    mask = np.zeros((4, 5, 6), bool)
    mask[1:3, 1:4, 2:5] = True

    def compute():
        calls.append(1)
        return mask.copy()

    np.testing.assert_array_equal(cache.get_or_compute_mask("img-sha deepbet==1.0.2", compute), mask)
    np.testing.assert_array_equal(cache.get_or_compute_mask("img-sha deepbet==1.0.2", compute), mask)
    assert len(calls) == 1
    cache.get_or_compute_mask("img-sha deepbet==9", compute)  # another version: another entry
    assert len(calls) == 2
    for entry in tmp_path.glob("*.mask.npz"):
        entry.write_bytes(b"corrupt")
    np.testing.assert_array_equal(cache.get_or_compute_mask("img-sha deepbet==1.0.2", compute), mask)
    assert len(calls) == 3
    with pytest.raises(TypeError, match="`compute` must return a 3D bool array"):
        cache.get_or_compute_mask("other", lambda: mask.astype(np.uint8))


@pytest.mark.slow  # about 15 s per volume on a loaded 2-core CPU (two 1 mm volumes)
def test_deepbet_finds_the_mni152_brain(capsys):
    """deepbet on nilearn's MNI152 2009 T1 against nilearn's own brain mask, as shipped and inside a head.

    nilearn 0.14 ships the template already skull-stripped, so the second volume wraps it in a
    simulated head (CSF 0-3 mm, dark bone 3-8 mm, bright scalp fat 8-14 mm around the brain): a
    mask that kept the scalp would score a Dice near 0.6.
    """
    import time

    from nilearn import datasets
    from scipy import ndimage

    template = datasets.load_mni152_template(resolution=1)
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=1).dataobj) > 0
    image = template.get_fdata().astype(np.float32)
    distance = ndimage.distance_transform_edt(~brain)  # mm: 1 mm voxels
    reference = float(np.median(image[brain]))
    head = image.copy()
    for (near, far), level in {(0, 3): 0.15, (3, 8): 0.05, (8, 14): 1.1}.items():
        head[(distance > near) & (distance <= far)] = level * reference
    for name, volume in (("as shipped", image), ("in a simulated head", head)):
        start = time.perf_counter()
        mask = skull_strip(volume, template.affine, device="cpu")
        seconds = time.perf_counter() - start
        dice = 2 * (mask & brain).sum() / (mask.sum() + brain.sum())
        with capsys.disabled():
            print(f"\ndeepbet on MNI152 {name}: Dice {dice:.3f} vs nilearn's brain mask, {seconds:.1f} s")
        assert mask.shape == brain.shape and dice > 0.9


# --- N4 bias-field correction -----------------------------------------------------------------------------

def _biased(rng):
    """Uniform tissue (100) in an ellipsoid, times a smooth multiplicative field (x 0.67 to 1.5), plus noise."""
    grid = np.stack(np.meshgrid(*[np.arange(28)] * 3, indexing="ij"), axis=-1).astype(float)
    brain = (((grid - 13.5) / np.array([11.0, 12.0, 10.0])) ** 2).sum(axis=-1) <= 1.0
    field = np.exp(0.4 * (grid[..., 0] - 13.5) / 13.5 + 0.2 * (grid[..., 2] - 13.5) / 13.5)
    image = (100.0 * field * brain + rng.normal(0, 1.0, brain.shape)).astype(np.float32)
    return image, brain, field


def test_n4_removes_a_smooth_multiplicative_field(rng):
    image, brain, field = _biased(rng)
    corrected = bias_correct(image, np.diag([2.0, 2.0, 2.0, 1.0]), brain, shrink=2)
    assert corrected.shape == image.shape and corrected.dtype == np.float32

    def variation(volume):
        return float(volume[brain].std() / volume[brain].mean())

    assert variation(image) > 0.15
    assert variation(corrected) < variation(image) / 3
    assert bias_correction_version() == "n4 SimpleITK==2.5.7"


def test_n4_validates(rng):
    image, brain, _ = _biased(rng)
    with pytest.raises(ValueError, match="`brain_mask` must have the 3D shape of `image`"):
        bias_correct(image, np.eye(4), brain[1:])
    with pytest.raises(ValueError, match="`brain_mask` must hold at least one voxel"):
        bias_correct(image, np.eye(4), np.zeros_like(brain))
    with pytest.raises(ValueError, match="`shrink` must be an int >= 1, got 0"):
        bias_correct(image, np.eye(4), brain, shrink=0)
    with pytest.raises(ValueError, match="`iterations` must be positive counts"):
        bias_correct(image, np.eye(4), brain, iterations=())
    with pytest.raises(ValueError, match="`method` must be 'n4'"):
        bias_correction_version("n3")
