"""Tests of uadlab.training.erasing: Table 1 names, the six erasing methods, fills, probability, determinism."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from uadlab.training.erasing import MAX_BOXES, MAX_SLAB, METHODS, ErasingParams, SpatialErasing, erase, noise_source
from uadlab.training.experiments import EXPERIMENTS, parse_experiment

COMBOS = [(dims, method, fill)
          for dims, methods in METHODS.items() for method in methods for fill in ("0", "n")]
SHAPES = {2: (64, 64), 3: (32, 32, 32)}


def _sample(spatial_dims: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A (1, ...) image with every voxel nonzero and a spherical brain mask."""
    shape = SHAPES[spatial_dims]
    grid = np.indices(shape)
    centre = np.array([(s - 1) / 2 for s in shape]).reshape(-1, *(1,) * len(shape))
    brain = (((grid - centre) / (np.array(shape).reshape(centre.shape) / 2.5)) ** 2).sum(0) <= 1
    image = (0.1 + 0.9 * rng.random(shape)).astype(np.float32)
    return image[None], brain[None]


@pytest.mark.parametrize(("args", "kwargs", "match"), [
    ((2, "None", "0"), {}, "`method` must be an erasing method"),
    ((2, "Cube", "0"), {}, "`method` must be one of"),
    ((3, "Cube", "x"), {}, "`fill` must be one of"),
    ((3, "Cube", "0"), {"p": 1.5}, r"`p` must be a probability in \[0, 1\]"),
    ((3, "Cube", "0"), {"p": -0.1}, "`p` must be a probability"),
])
def test_spatial_erasing_validation(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpatialErasing(*args, **kwargs)


@pytest.mark.parametrize("p", [True, "0.5", None])
def test_spatial_erasing_rejects_a_p_that_is_not_a_number(p):
    with pytest.raises(TypeError, match=f"`p` must be a probability in \\[0, 1\\], got {p!r}"):
        SpatialErasing(3, "Cube", "0", p=p)


# ---------------------------------------------------------------------------------------------------
# Sampling


@pytest.mark.parametrize(("shape", "match"), [((64,), "must be 2 edges"), ((64, 3), "at least 4"),
                                              ((4, 4), r"\(40 voxels in all\)"), (64, "tuple of 2 ints")])
def test_get_params_rejects_bad_shapes(shape, match, rng):
    with pytest.raises(ValueError, match=match):
        SpatialErasing(2, "Patch", "0").get_params(shape, rng)


def test_get_params_needs_a_generator():
    with pytest.raises(TypeError, match="`rng` must be a numpy.random.Generator"):
        SpatialErasing(2, "Patch", "0").get_params((8, 8), 0)


def test_erase_probability_is_p(rng):
    erasing = SpatialErasing(2, "Half-Slice", "0", p=0.5)
    erased = sum(erasing.get_params((8, 8), rng) is not None for _ in range(2000))
    # Binomial(2000, 0.5): sd 22.4; +-5 sd fails with probability < 1e-6 for a correct coin.
    assert 1000 - 112 <= erased <= 1000 + 112
    assert SpatialErasing(2, "Patch", "0", p=0.0).get_params((8, 8), rng) is None
    assert all(SpatialErasing(2, "Patch", "0", p=1.0).get_params((8, 8), rng) for _ in range(50))


@pytest.mark.parametrize(("spatial_dims", "method"), [(2, "Patch"), (3, "Cube")])
def test_single_box_size_is_1_to_25_percent(spatial_dims, method, rng):
    shape = SHAPES[spatial_dims]
    n = math.prod(shape)
    erasing = SpatialErasing(spatial_dims, method, "0", p=1.0)
    fractions = []
    for _ in range(400):
        params = erasing.get_params(shape, rng)
        assert len(params.boxes) == 1 and params.side is None and params.method == method
        assert all(0 <= s.start < s.stop <= edge for s, edge in zip(params.boxes[0], shape))  # fits
        fractions.append(params.mask().sum() / n)
    # Exact bounds, no tolerance: sizes are integers in [ceil(1 % N), floor(25 % N)] voxels.
    assert math.ceil(0.01 * n) / n <= min(fractions) and max(fractions) <= math.floor(0.25 * n) / n
    assert min(fractions) < 0.03 and max(fractions) > 0.22  # the whole range is used
    assert 0.10 < np.mean(fractions) < 0.16  # about uniform (mean 13 %)


@pytest.mark.parametrize(("spatial_dims", "method"), [(2, "Multi-Patch"), (3, "Multi-Cube")])
def test_multi_box_total_and_union(spatial_dims, method, rng):
    shape = SHAPES[spatial_dims]
    n = math.prod(shape)
    lo, hi = math.ceil(0.01 * n), math.floor(0.25 * n)
    erasing = SpatialErasing(spatial_dims, method, "0", p=1.0)
    counts, unions = set(), []
    for _ in range(400):
        params = erasing.get_params(shape, rng)
        counts.add(len(params.boxes))
        assert lo <= sum(params.box_voxels) <= hi  # the boxes' total size, before overlaps
        union = int(params.mask().sum())
        assert max(params.box_voxels) <= union <= sum(params.box_voxels)
        assert union >= lo / len(params.boxes)
        unions.append(union / n)
    assert counts == set(range(1, MAX_BOXES + 1))
    assert max(unions) <= 0.25 and min(unions) < 0.03


def test_half_slice_is_one_side_of_the_midline(rng):
    erasing = SpatialErasing(2, "Half-Slice", "0", p=1.0)
    sides = set()
    for _ in range(40):
        params = erasing.get_params((64, 48), rng)
        mask = params.mask()
        expected = np.zeros((64, 48), dtype=bool)
        expected[slice(0, 32) if params.side == "left" else slice(32, 64)] = True
        np.testing.assert_array_equal(mask, expected)
        sides.add(params.side)
    assert sides == {"left", "right"}


def test_half_slice_odd_width_spares_the_midline(rng):
    erasing = SpatialErasing(2, "Half-Slice", "0", p=1.0)
    masks = [erasing.get_params((9, 8), rng).mask() for _ in range(40)]
    assert all(m.sum() == 4 * 8 for m in masks)
    assert not any(m[4].any() for m in masks)
    assert any(m[0].all() for m in masks) and any(m[8].all() for m in masks)


@pytest.mark.parametrize("depth", [64, 20])
def test_half_volume_is_a_slab_on_one_side(depth, rng):
    erasing = SpatialErasing(3, "Half-Volume", "0", p=1.0)
    thicknesses, sides = set(), set()
    for _ in range(400):
        params = erasing.get_params((16, 8, depth), rng)
        mask = params.mask()
        slab = np.flatnonzero(mask.any(axis=(0, 1)))
        thickness = len(slab)
        assert 1 <= thickness <= min(MAX_SLAB, depth)
        assert np.array_equal(slab, np.arange(slab[0], slab[0] + thickness))  # consecutive slices
        half = slice(0, 8) if params.side == "left" else slice(8, 16)
        assert mask[half][:, :, slab].all() and mask.sum() == 8 * 8 * thickness  # one side only
        thicknesses.add(thickness)
        sides.add(params.side)
    assert {1, min(MAX_SLAB, depth)} <= thicknesses and sides == {"left", "right"}


def test_params_mask_is_the_union_of_boxes():
    params = ErasingParams("Multi-Patch", (6, 6), ((slice(0, 2), slice(0, 3)), (slice(1, 3), slice(2, 4))))
    assert params.box_voxels == (6, 4)
    assert params.mask().sum() == 9
    assert params.mask()[1, 2] and not params.mask()[5, 5]


# ---------------------------------------------------------------------------------------------------
# Applying


@pytest.mark.parametrize(("spatial_dims", "method", "fill"), COMBOS)
@pytest.mark.parametrize("as_torch", [False, True])
def test_target_is_never_touched(spatial_dims, method, fill, as_torch, rng):
    image, brain = _sample(spatial_dims, rng)
    if as_torch:
        image, brain = torch.from_numpy(image), torch.from_numpy(brain)
    original = image.clone() if as_torch else image.copy()
    erasing = SpatialErasing(spatial_dims, method, fill, p=1.0)

    erased = erasing(image, brain, rng)
    batch = image[None].repeat(2, 1, *(1,) * spatial_dims) if as_torch else np.repeat(image[None], 2, 0)
    batch_original = batch.clone() if as_torch else batch.copy()
    erased_batch = erasing.apply_batch(batch, brain[None].expand(batch.shape) if as_torch
                                       else np.broadcast_to(brain, batch.shape), rng)

    assert type(erased) is type(image) and erased.shape == image.shape and erased.dtype == image.dtype
    assert type(erased_batch) is type(batch) and erased_batch.shape == batch.shape
    assert (image == original).all() and (batch == batch_original).all()  # inputs unchanged
    assert not (erased == image).all() and not (erased_batch[0] == batch[0]).all()  # something erased


def test_zero_fill_sets_exactly_the_mask_to_zero(rng):
    image, _ = _sample(3, rng)
    params = SpatialErasing(3, "Multi-Cube", "0", p=1.0).get_params(image.shape[1:], rng)
    erased = erase(image, params, "0")
    mask = params.mask()[None]
    assert (erased[mask] == 0).all()
    np.testing.assert_array_equal(erased[~mask], image[~mask])
    np.testing.assert_array_equal(erase(image, params, "0"), erased)  # deterministic


def test_noise_fill_writes_only_inside_the_mask(rng):
    image, _ = _sample(3, rng)
    params = SpatialErasing(3, "Cube", "n", p=1.0).get_params(image.shape[1:], rng)
    source = np.array([2.0, 3.0], np.float32)  # outside [0.1, 1], the range of the image
    erased = erase(image, params, "n", noise_source=source, rng=rng)
    mask = params.mask()[None]
    assert set(np.unique(erased[mask]).tolist()) == {2.0, 3.0}  # every erased voxel drawn, both values
    np.testing.assert_array_equal(erased[~mask], image[~mask])


@pytest.mark.parametrize("method", ["Cube", "Multi-Cube"])
@pytest.mark.parametrize("as_torch", [False, True])
def test_noise_fill_writes_its_draws_in_c_order_of_the_mask(method, as_torch, rng):
    """One box is filled through its slices, several through a mask: the same draws land alike."""
    image, _ = _sample(3, rng)
    params = SpatialErasing(3, method, "n", p=1.0).get_params(image.shape[1:], rng)
    source = np.arange(1.0, 1001.0, dtype=np.float32)  # distinct values, so any reordering shows
    erased = erase(torch.from_numpy(image) if as_torch else image, params, "n", noise_source=source,
                   rng=np.random.default_rng(7))
    mask = params.mask()[None]
    expected = image.copy()
    expected[mask] = np.random.default_rng(7).choice(source, size=int(mask.sum()), replace=True)
    np.testing.assert_array_equal(np.asarray(erased), expected)


@pytest.mark.parametrize(("spatial_dims", "method"),
                         [(2, "Patch"), (2, "Half-Slice"), (3, "Cube"), (3, "Multi-Cube")])
def test_noise_fill_draws_from_brain_voxels(spatial_dims, method, rng):
    image, brain = _sample(spatial_dims, rng)
    image = np.where(brain, rng.choice([0.3, 0.6, 0.9], size=image.shape), 0.05).astype(np.float32)
    erasing = SpatialErasing(spatial_dims, method, "n", p=1.0)
    seen = set()
    for _ in range(5):
        erased = erasing(image, brain, rng)
        changed_or_erased = erased != image
        values = set(np.unique(erased[changed_or_erased]).tolist())
        assert values <= {np.float32(v).item() for v in (0.3, 0.6, 0.9)}  # never 0.05 (background)
        seen |= values
    assert len(seen) == 3


def test_noise_source_fallbacks():
    image = np.array([[0.0, 0.25], [0.5, 0.0]], dtype=np.float32)
    brain = np.array([[False, True], [False, False]])
    np.testing.assert_array_equal(noise_source(image, brain), [0.25])
    np.testing.assert_array_equal(noise_source(image, np.zeros((2, 2), bool)), [0.25, 0.5])  # empty mask
    np.testing.assert_array_equal(noise_source(image, None), [0.25, 0.5])
    assert noise_source(np.zeros((2, 2)), None).size == 0
    from_torch = noise_source(torch.from_numpy(image)[None], torch.from_numpy(brain))
    np.testing.assert_array_equal(from_torch, [0.25])
    with pytest.raises(ValueError, match="`brain_mask` must broadcast to the image shape"):
        noise_source(image, np.ones((3, 3), bool))


def test_noise_fill_of_an_empty_image_writes_zeros(rng):
    image = np.zeros((1, 16, 16), dtype=np.float32)
    erased = SpatialErasing(2, "Half-Slice", "n", p=1.0)(image, np.zeros_like(image, bool), rng)
    assert (erased == 0).all()
    params = ErasingParams("Patch", (16, 16), ((slice(0, 4), slice(0, 4)),))
    filled = erase(np.ones((1, 16, 16), np.float32), params, "n", noise_source=np.array([]), rng=rng)
    assert filled.sum() == 256 - 16


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if "None" not in n])
def test_seeded_determinism(name):
    rng = np.random.default_rng(0)
    images = np.stack([_sample(int(name[0]), rng)[0] for _ in range(4)])
    brains = images > 0.3
    erasing = parse_experiment(name).erasing(p=0.5)
    a = erasing.apply_batch(images, brains, np.random.default_rng(7))
    b = erasing.apply_batch(images, brains, np.random.default_rng(7))
    c = erasing.apply_batch(images, brains, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_batch_draws_are_independent_per_sample(rng):
    images = np.ones((6, 1, 32, 32), dtype=np.float32)
    erased = SpatialErasing(2, "Patch", "0", p=1.0).apply_batch(images, None, rng)
    masks = {(e == 0).tobytes() for e in erased}
    assert len(masks) == 6
    unchanged = SpatialErasing(2, "Patch", "0", p=0.0).apply_batch(images, None, rng)
    assert unchanged is not images and np.array_equal(unchanged, images)


def test_batch_noise_comes_from_each_samples_own_brain(rng):
    images = np.stack([np.full((1, 16, 16), 0.25, np.float32), np.full((1, 16, 16), 0.75, np.float32)])
    images[:, :, :, :8] = 0.05  # outside the brain
    brains = np.zeros(images.shape, bool)
    brains[:, :, :, 8:] = True
    erased = SpatialErasing(2, "Half-Slice", "n", p=1.0).apply_batch(images, brains, rng)
    assert set(np.unique(erased[0]).tolist()) <= {np.float32(0.05).item(), 0.25}
    assert set(np.unique(erased[1]).tolist()) <= {np.float32(0.05).item(), 0.75}
    assert np.any(erased[0, :, :, :8] == 0.25) and np.any(erased[1, :, :, :8] == 0.75)


def _batch(spatial_dims: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Eight samples with distinct intensities and background zeros; sample 2 without brain voxels (its noise
    comes from its nonzero voxels), sample 3 all zero (nothing to draw noise from)."""
    pairs = [_sample(spatial_dims, rng) for _ in range(8)]
    images = np.stack([np.where(brain, image, 0) * (rng.random(image.shape) > 0.2) for image, brain in pairs])
    brains = np.stack([brain for _, brain in pairs])
    brains[2] = False
    images[3] = 0
    return images.astype(np.float32), brains


def _on_device(erasing: SpatialErasing):
    """The batched tensor operations that erase a batch on a GPU, run here on the CPU (where
    :meth:`SpatialErasing.apply_batch` erases sample after sample instead)."""
    return erasing._apply_batch_on_device


@pytest.mark.parametrize(("spatial_dims", "method", "fill"), COMBOS)
@pytest.mark.parametrize("p", [0.5, 1.0])
@pytest.mark.parametrize("path", ["on device", "apply_batch"])
def test_a_tensor_batch_is_erased_as_numpy_erases_it(spatial_dims, method, fill, p, path, rng):
    """Both tensor paths draw the same parameters and noise, in the same order, and erase the same voxels."""
    images, brains = _batch(spatial_dims, rng)
    tensors, tensor_brains = torch.from_numpy(images.copy()), torch.from_numpy(brains)
    erasing = SpatialErasing(spatial_dims, method, fill, p=p)
    apply = _on_device(erasing) if path == "on device" else erasing.apply_batch
    for seed in range(3):
        numpy_rng, torch_rng = np.random.default_rng(seed), np.random.default_rng(seed)
        expected = erasing.apply_batch(images, brains, numpy_rng)
        erased = apply(tensors, tensor_brains, torch_rng)
        assert isinstance(erased, torch.Tensor) and erased.dtype == torch.float32
        np.testing.assert_array_equal(erased.numpy(), expected)  # the same voxels, the same values
        assert torch_rng.bit_generator.state == numpy_rng.bit_generator.state  # the same draws, no more
        assert torch.equal(tensors, torch.from_numpy(images))  # the target is never touched
        assert not np.array_equal(expected, images)


@pytest.mark.parametrize(("spatial_dims", "method"), [(2, "Multi-Patch"), (3, "Half-Volume")])
def test_a_tensor_batch_without_masks_draws_noise_from_nonzero_voxels_as_numpy(spatial_dims, method, rng):
    images, _ = _batch(spatial_dims, rng)
    erasing = SpatialErasing(spatial_dims, method, "n", p=1.0)
    expected = erasing.apply_batch(images, None, np.random.default_rng(1))
    erased = _on_device(erasing)(torch.from_numpy(images), None, np.random.default_rng(1))
    np.testing.assert_array_equal(erased.numpy(), expected)


@pytest.mark.parametrize(("spatial_dims", "method"), [(2, "Patch"), (3, "Multi-Cube")])
def test_a_tensor_batch_on_device_is_erased_alike_under_autocast(spatial_dims, method, rng):
    """The training loop erases inside the forward pass's autocast: the erased batch is the same."""
    images, brains = _batch(spatial_dims, rng)
    erasing = SpatialErasing(spatial_dims, method, "n", p=1.0)
    expected = erasing.apply_batch(images, brains, np.random.default_rng(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        erased = _on_device(erasing)(torch.from_numpy(images), torch.from_numpy(brains), np.random.default_rng(2))
    assert erased.dtype == torch.float32
    np.testing.assert_array_equal(erased.numpy(), expected)


def test_a_tensor_batch_on_device_keeps_its_dtype_and_an_unerased_batch_is_a_copy(rng):
    images = torch.rand(3, 1, 16, 16, dtype=torch.float64)
    erased = _on_device(SpatialErasing(2, "Patch", "n", p=1.0))(images, images > 0.5, rng)
    assert erased.dtype == torch.float64 and not torch.equal(erased, images)
    unchanged = _on_device(SpatialErasing(2, "Patch", "n", p=0.0))(images, images > 0.5, rng)
    assert unchanged is not images and torch.equal(unchanged, images)


@pytest.mark.parametrize(("images", "masks", "error", "match"), [
    (np.zeros((2, 1, 16)), None, ValueError, r"`images` must be \(B, 1, X, Y\)"),
    (np.zeros((2, 2, 16, 16)), None, ValueError, r"`images` must be \(B, 1, X, Y\)"),
    (np.zeros((2, 1, 16, 16)), np.zeros((2, 16, 16), bool), ValueError, "`brain_masks` must have the shape"),
    ([[0.0]], None, TypeError, "`image` must be a numpy array or torch tensor"),
])
def test_apply_batch_validation(images, masks, error, match, rng):
    with pytest.raises(error, match=match):
        SpatialErasing(2, "Patch", "n", p=1.0).apply_batch(images, masks, rng)
    if isinstance(images, np.ndarray):  # a tensor is refused alike
        with pytest.raises(error, match=match):
            SpatialErasing(2, "Patch", "n", p=1.0).apply_batch(
                torch.from_numpy(images), None if masks is None else torch.from_numpy(masks), rng)
    with pytest.raises(TypeError, match="`rng` must be a numpy.random.Generator"):
        SpatialErasing(2, "Patch", "n", p=1.0).apply_batch(torch.zeros(2, 1, 16, 16), None, 7)


def test_call_validation(rng):
    erasing = SpatialErasing(3, "Cube", "0", p=1.0)
    with pytest.raises(ValueError, match=r"`image` must be \(1, X, Y, Z\)"):
        erasing(np.zeros((16, 16, 16)), None, rng)
    with pytest.raises(TypeError, match="`rng` must be a numpy.random.Generator"):
        erasing(np.zeros((1, 16, 16, 16)), None, 3)


def test_erase_validation(rng):
    params = ErasingParams("Patch", (8, 8), ((slice(0, 2), slice(0, 2)),))
    image = np.ones((1, 8, 8), np.float32)
    with pytest.raises(TypeError, match="`params` must be an ErasingParams"):
        erase(image, {"boxes": []}, "0")
    with pytest.raises(ValueError, match="`fill` must be one of"):
        erase(image, params, "zeros")
    with pytest.raises(ValueError, match=r"`image` must end in the shape \(8, 8\)"):
        erase(np.ones((1, 8, 9)), params, "0")
    with pytest.raises(ValueError, match=r"`image` must end in the shape \(8, 8\)"):
        erase(np.ones(8), params, "0")
    with pytest.raises(ValueError, match="`noise_source` must be given"):
        erase(image, params, "n", rng=rng)
    with pytest.raises(TypeError, match="`rng` must be a numpy.random.Generator"):
        erase(image, params, "n", noise_source=np.ones(3))
    with pytest.raises(TypeError, match="`image` must be a numpy array"):
        erase([[1.0]], params, "0")


def test_erase_keeps_torch_dtype(rng):
    params = ErasingParams("Patch", (8, 8), ((slice(0, 2), slice(0, 2)),))
    image = torch.ones(1, 8, 8, dtype=torch.float64)
    out = erase(image, params, "n", noise_source=np.array([0.5]), rng=rng)
    assert out.dtype == torch.float64 and float(out.sum()) == 60 + 4 * 0.5 and float(image.sum()) == 64


def test_combos_cover_all_twelve():
    assert len(COMBOS) == 12 and len(set(itertools.chain(*METHODS.values()))) == 6
