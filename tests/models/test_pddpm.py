"""Tests of uadlab.models.pddpm: the patched DDPM's patch schedule (Behrendt et al. 2023).

Known answers: the test-time grid covers every voxel exactly once in 2D and 3D, whether or not the
patch size divides the edge; the paper's 96 x 96 slices with 48-voxel patches give its 2 x 2 grid;
the training sampler draws grid boxes (or clipped free boxes) reproducibly from its generator.
"""

from __future__ import annotations

import math

import pytest
import torch

from uadlab.models.pddpm import PDDPM, box_mask, patch_grid, sample_patches


@pytest.mark.parametrize(("image_size", "patch_size", "spatial_dims"), [
    (32, 8, 2), (32, 7, 2), (32, 32, 2), (32, 1, 2), (16, 4, 3), (16, 5, 3), (16, 16, 3), (16, 9, 3),
])
def test_the_grid_covers_every_voxel_exactly_once(image_size, patch_size, spatial_dims):
    grid = patch_grid(image_size, patch_size, spatial_dims=spatial_dims)
    per_axis = math.ceil(image_size / patch_size)
    assert grid.shape == (per_axis**spatial_dims, spatial_dims, 2) and grid.dtype == torch.long
    coverage = box_mask(grid, image_size).sum(0)
    assert coverage.shape == (1,) + (image_size,) * spatial_dims
    assert bool((coverage == 1).all())
    # starts at multiples of P (stride = patch size); full patches but the clipped last one of an axis
    start, stop = grid[..., 0], grid[..., 1]
    assert bool((start % patch_size == 0).all())
    assert bool((stop == torch.clamp(start + patch_size, max=image_size)).all())


def test_the_papers_grid_and_a_clipped_edge():
    # Behrendt et al.: 96 x 96 slices, patch_size 48, stride 48: a 2 x 2 grid, rows outer
    assert patch_grid(96, 48, spatial_dims=2).tolist() == [
        [[0, 48], [0, 48]], [[0, 48], [48, 96]], [[48, 96], [0, 48]], [[48, 96], [48, 96]]]
    # 10 voxels, patches of 4: starts 0, 4, 8; the reference's box [8, 12) is sliced to [8, 10)
    spans = [box[0].tolist() for box in patch_grid(10, 4, spatial_dims=3)[::9]]
    assert spans == [[0, 4], [4, 8], [8, 10]]


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_training_boxes_come_from_the_grid_uniformly_and_from_the_generator(spatial_dims):
    grid = patch_grid(16, 8, spatial_dims=spatial_dims)
    boxes = sample_patches(800, 16, 8, spatial_dims=spatial_dims, generator=torch.Generator().manual_seed(0))
    assert boxes.shape == (800, spatial_dims, 2)
    index = (boxes[:, None] == grid[None]).flatten(2).all(2).int().argmax(1)
    assert bool((grid[index] == boxes).all())  # every box is a grid box
    counts = torch.bincount(index, minlength=len(grid))
    expected = 800 / len(grid)
    assert bool((counts > 0.6 * expected).all()) and bool((counts < 1.4 * expected).all())
    again = sample_patches(800, 16, 8, spatial_dims=spatial_dims, generator=torch.Generator().manual_seed(0))
    other = sample_patches(800, 16, 8, spatial_dims=spatial_dims, generator=torch.Generator().manual_seed(1))
    assert torch.equal(boxes, again) and not torch.equal(boxes, other)


def test_free_training_boxes_start_anywhere_and_are_clipped_at_the_edge():
    boxes = sample_patches(2000, 16, 6, spatial_dims=3, from_grid=False, generator=torch.Generator().manual_seed(2))
    start, stop = boxes[..., 0], boxes[..., 1]
    assert int(start.min()) == 0 and int(start.max()) == 15  # the reference: randint(0, S)
    assert torch.equal(stop, torch.clamp(start + 6, max=16))
    assert bool((box_mask(boxes[:50], 16).flatten(1).sum(1) > 0).all())


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: patch_grid(16, 0, spatial_dims=2), ValueError, r"`patch_size` must be an int in \[1, image_size=16\]"),
    (lambda: patch_grid(16, 17, spatial_dims=2), ValueError, "`patch_size` must be an int in"),
    (lambda: patch_grid(16, 4.0, spatial_dims=2), TypeError, "`patch_size` must be"),
    (lambda: patch_grid(0, 4, spatial_dims=2), ValueError, "`image_size` must be a positive int"),
    (lambda: patch_grid(16, 4, spatial_dims=1), ValueError, "`spatial_dims` must be 2 or 3"),
    (lambda: sample_patches(0, 16, 4, spatial_dims=2), ValueError, "`batch_size` must be a positive int"),
    (lambda: box_mask(torch.zeros(1, 2, 2, dtype=torch.long), 4), ValueError, "`boxes` must be non-empty"),
    (lambda: box_mask(torch.tensor([[[0, 5], [0, 2]]]), 4), ValueError, r"within \[0, 4\]"),
    (lambda: box_mask(torch.zeros(1, 2, dtype=torch.long), 4), ValueError, r"`boxes` must be \(K, spatial_dims, 2\)"),
    (lambda: box_mask(torch.zeros(1, 2, 2), 4), TypeError, "`boxes` must be an integer"),
    (lambda: box_mask([[[0, 1], [0, 1]]], 4), TypeError, "`boxes` must be an integer tensor"),
])
def test_bad_arguments_are_refused(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------------------------------
# The model


def _tiny(spatial_dims: int, **options) -> PDDPM:
    torch.manual_seed(0)
    return PDDPM(spatial_dims, image_size=16, channels=(8, 16), **options)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_training_noises_one_box_per_sample_and_scores_it_there_only(spatial_dims):
    model = _tiny(spatial_dims)
    assert model.patch_size == 8 and model.noise_levels == (500,) and model.config.patch_size == 8
    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, x, timesteps):
            seen.append(x.clone())
            return torch.zeros_like(x)

    model.unet = Recorder()
    x = torch.full((4, 1) + (16,) * spatial_dims, 0.5)
    torch.manual_seed(3)
    terms = model.training_loss(x, x)
    changed = seen[0] != 0.0  # the clean input is 0.5 -> 0.0 in [-1, 1]; the box is noised
    voxels = 8 ** spatial_dims
    assert changed.flatten(1).sum(1).tolist() == [voxels] * 4  # exactly one P-box per sample
    for sample in changed:  # and it is a grid box
        assert any(torch.equal(sample, box) for box in box_mask(patch_grid(16, 8, spatial_dims=spatial_dims), 16))
    torch.manual_seed(3)
    boxes = box_mask(sample_patches(4, 16, 8, spatial_dims=spatial_dims), 16)
    assert torch.equal(changed, boxes)  # drawn from torch's global generator, boxes first
    # zero predicted noise: the loss is the mean squared noise inside the boxes only
    noise = model.draw_noise(x.shape)
    torch.testing.assert_close(terms.total, noise[boxes].pow(2).mean())


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_reconstruction_denoises_each_grid_box_once_with_the_rest_clean(spatial_dims):
    model = _tiny(spatial_dims).eval()
    seen = []
    hook = model.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((args[0].clone(), kwargs["timesteps"].clone())), with_kwargs=True)
    x = torch.rand((2, 1) + (16,) * spatial_dims, generator=torch.Generator().manual_seed(2))
    recon = model.reconstruct(x)
    grid = box_mask(patch_grid(16, 8, spatial_dims=spatial_dims), 16)
    assert len(seen) == len(grid) == 2 ** spatial_dims
    for (noisy, steps), box in zip(seen, grid):
        assert steps.tolist() == [500, 500]
        outside = ~box.expand_as(x)
        torch.testing.assert_close(noisy[outside], (x * 2 - 1)[outside])  # the context is the clean input
    assert recon.shape == x.shape and 0 <= float(recon.min()) <= float(recon.max()) <= 1
    hook.remove()
    torch.manual_seed(99)  # the global generator plays no part
    assert torch.equal(model.reconstruct(x), recon)
