"""Tests of uadlab.models.anoddpm: AnoDDPM's simplex noise against its reference implementation, then the model.

The expected numbers come from the reference itself: ``simplex.py`` of Julian-Wyatt/AnoDDPM (commit
3052f04), run as pure Python (numba's ``njit`` replaced by the identity, ``prange`` by ``range``):
``s = Simplex_CLASS(); s.newSeed(seed)``, then ``s.rand_3d_octaves(shape, octaves, persistence,
wavelength)`` (3D) or ``s.rand_3d_fixed_T_octaves(shape, np.array([depth]), octaves, persistence,
wavelength)[0]`` (2D), and the statistics of that array by :func:`_radial_spectrum` below, printed
to 6 significant digits. The reference skips a few vertices at its seams (module docstring): a field
differs from it by at most 1.2e-4, so the tolerances are well above that and far below what another
seed, octave count or axis order gives.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from uadlab.models import anoddpm
from uadlab.models.anoddpm import (
    SIMPLEX_FREQUENCY,
    SIMPLEX_OCTAVES,
    SIMPLEX_PERSISTENCE,
    AnoDDPM,
    simplex_noise,
    simplex_octaves,
    simplex_permutation,
    simplex_settings,
)
from uadlab.models.ddpm import DDPM


def _radial_spectrum(field: np.ndarray) -> np.ndarray:
    """Power of ``field - mean`` per integer radius ``k = 1 .. S/2`` of the frequency (cycles per edge),
    averaged over the frequencies that round to it; power ``|FFT|^2 / voxels``."""
    power = np.abs(np.fft.fftn(field - field.mean())) ** 2 / field.size
    radius = np.sqrt(sum(np.meshgrid(*[np.fft.fftfreq(n, 1 / n) ** 2 for n in field.shape], indexing="ij")))
    bins = np.rint(radius).astype(int)
    return np.array([power[bins == k].mean() for k in range(1, min(field.shape) // 2 + 1)])


def test_the_defaults_are_the_references():
    # GaussianDiffusion.generate_simplex_noise(..., octave=6, persistence=0.8, frequency=64); its
    # frequency is a wavelength in voxels (coordinates are divided by it), ours its inverse
    assert (SIMPLEX_OCTAVES, SIMPLEX_PERSISTENCE, SIMPLEX_FREQUENCY) == (6, 0.8, 1 / 64)


@pytest.mark.parametrize(("seed", "head", "tail"), [
    # the reference's _init(seed)[0][:8] and [-4:]
    (0, [254, 50, 92, 24, 36], None),
    (20260517, [138, 39, 209, 85, 68, 7, 161, 86], [219, 92, 112, 200]),
    (-10**10, [40, 228, 190, 94, 118, 28, 102, 117], [216, 245, 10, 211]),
    (10**10 - 1, [131, 245, 3, 252, 164, 67, 17, 168], [13, 22, 236, 194]),
])
def test_the_permutation_is_the_references_seeding(seed, head, tail):
    permutation = simplex_permutation(seed)
    assert sorted(permutation.tolist()) == list(range(256))
    assert permutation[:len(head)].tolist() == head
    if tail is not None:
        assert permutation[-4:].tolist() == tail


# (seed, spatial shape, octaves, persistence, wavelength = 1 / frequency, depth, reference mean,
#  variance and radial spectrum of the seeded field). The first two use the defaults; the others
# change octaves, persistence and frequency, so each parameter's meaning is checked too.
REFERENCE_FIELDS = [
    (20260517, (16, 16, 16), 6, 0.8, 64, 0.0, 0.743195, 0.124668,
     [16.185, 1.32995, 0.503993, 0.136624, 0.0680474, 0.0361827, 0.0193583, 0.00843674]),
    (20260518, (32, 32), 6, 0.8, 64, 250.0, -0.515283, 0.0945552,
     [4.42654, 2.05812, 0.73372, 0.179537, 0.12988, 0.136269, 0.0559356, 0.0336823, 0.0230681, 0.0201178,
      0.0145323, 0.0101929, 0.00872317, 0.00549963, 0.00386879, 0.00241605]),
    (20260519, (32, 32), 3, 0.5, 8, 3.0, -0.0439864, 0.148613,
     [4.04295, 6.27023, 1.26828, 0.24598, 0.154489, 0.0969485, 0.0426398, 0.0324181, 0.0190996, 0.0170809,
      0.0113644, 0.00836822, 0.00537655, 0.00415478, 0.00306543, 0.0018756]),
    (20260520, (16, 16, 16), 2, 0.6, 4, 0.0, -0.0177005, 0.135968,
     [3.99766, 2.80693, 1.17615, 0.348994, 0.158852, 0.0730962, 0.0352692, 0.0133895]),
]


@pytest.mark.parametrize(("seed", "shape", "octaves", "persistence", "wavelength", "depth", "mean", "variance",
                          "spectrum"), REFERENCE_FIELDS)
def test_a_seeded_field_has_the_references_mean_variance_and_spectrum(seed, shape, octaves, persistence, wavelength,
                                                                      depth, mean, variance, spectrum):
    field = simplex_octaves(shape, [seed], octaves=octaves, persistence=persistence, frequency=1 / wavelength,
                            depth=depth)[0].double().numpy()
    assert field.shape == shape
    assert field.mean() == pytest.approx(mean, abs=2e-4)
    assert field.var() == pytest.approx(variance, rel=1e-3)
    np.testing.assert_allclose(_radial_spectrum(field), spectrum, rtol=0, atol=1e-4 * sum(spectrum))


def test_a_seeded_2d_field_holds_the_references_values():
    # reference: Simplex_CLASS after newSeed(20260518), rand_3d_fixed_T_octaves((32, 32), [250], 6, 0.8, 64)[0]
    field = simplex_octaves((32, 32), [20260518], depth=250.0)[0]
    expected = {(0, 0): -0.7478706, (0, 1): -1.0326060, (5, 17): -0.3806022, (31, 31): 0.0133029,
                (20, 3): -0.4538521}
    for (h, w), value in expected.items():
        assert float(field[h, w]) == pytest.approx(value, abs=1e-4), (h, w)


def _brute_force(point: np.ndarray, permutation: np.ndarray) -> float:
    """One octave at one point, the slow obvious way: every lattice vertex of a wide window, kept if
    within sqrt(2) (positions ``v + sum(v) / 3``, skewing ``p - sum(p) / 6``)."""
    cell = np.floor(point - point.sum() / 6)
    vertices = cell + np.array(list(itertools.product(range(-3, 5), repeat=3)))
    delta = point - (vertices + vertices.sum(1, keepdims=True) / 3)
    attenuation = 2 - (delta**2).sum(1)
    total = 0.0
    for vertex, d, a in zip(vertices.astype(int), delta, attenuation):
        if a > 0:
            index = permutation[(permutation[(permutation[vertex[0] & 255] + vertex[1]) & 255] + vertex[2]) & 255]
            total += a**4 * float(anoddpm._GRADIENTS[index % 24].double().numpy() @ d)
    return total / 103


@pytest.mark.parametrize(("shape", "frequency", "depth"), [((16, 16, 16), 0.4142, 0.0), ((32, 32), 1 / 3, 0.5)])
def test_the_vectorised_field_is_the_sum_over_every_vertex_within_reach(shape, frequency, depth):
    seed = 4321
    field = simplex_octaves(shape, [seed], octaves=1, frequency=frequency, depth=depth)[0].double().numpy()
    permutation = simplex_permutation(seed).numpy()
    rng = np.random.default_rng(0)
    for index in rng.choice(field.size, 150, replace=False):
        voxel = np.unravel_index(index, shape)
        xyz = np.array(voxel[::-1] if len(shape) == 3 else (voxel[1], voxel[0], depth), dtype=float) * frequency
        assert field[voxel] == pytest.approx(_brute_force(xyz, permutation), abs=1e-6), voxel


def test_the_canonical_offsets_are_every_vertex_that_reaches_the_canonical_part_of_a_cell():
    # points of the part u >= v >= w >= 0, u <= 1, u + v + w <= 3/2 (skewed coordinates in the cell)
    u = np.random.default_rng(1).random((20_000, 3))
    u = -np.sort(-np.where(u.sum(1, keepdims=True) > 1.5, 1 - u, u), 1)
    corners = np.array([[0, 0, 0], [1, 0, 0], [1, 0.5, 0], [0.75, 0.75, 0], [0.5, 0.5, 0.5], [1, 0.25, 0.25]])
    u = np.concatenate([u, corners])

    def position(a):
        return a + a.sum(-1, keepdims=True) / 3

    window = np.array(list(itertools.product(range(-2, 4), repeat=3)))
    nearest = ((position(u)[:, None] - position(window)[None]) ** 2).sum(-1).min(0)
    # the nearest offset left out touches the part (distance^2 exactly 2); the farthest kept is at 1.83
    reaching = {tuple(o) for o, d in zip(window, nearest) if d < 2 - 1e-9}
    assert reaching == {tuple(o) for o in anoddpm._CANONICAL_OFFSETS.tolist()}


def test_simplex_noise_is_seeded_by_its_generator():
    shape = (3, 2, 16, 16)
    first = simplex_noise(shape, generator=torch.Generator().manual_seed(0))
    again = simplex_noise(shape, generator=torch.Generator().manual_seed(0))
    other = simplex_noise(shape, generator=torch.Generator().manual_seed(1))
    assert first.shape == shape and first.dtype == torch.float32
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)
    fields = first.reshape(6, -1)  # every (sample, channel) its own field
    assert all(not torch.allclose(fields[i], fields[j]) for i in range(6) for j in range(i))
    torch.manual_seed(5)
    a = simplex_noise((1, 1, 8, 8, 8))
    torch.manual_seed(5)
    torch.testing.assert_close(simplex_noise((1, 1, 8, 8, 8)), a)  # None: torch's global generator


def test_the_noise_is_centred_and_not_unit_variance():
    # as the reference: each octave's OpenSimplex value / 103 (sd 0.31), summed with amplitudes 0.8^k
    # and not rescaled: sd 0.31 * sqrt(sum 0.64^k) = 0.50
    noise = simplex_noise((64, 1, 32, 32), generator=torch.Generator().manual_seed(2), frequency=1 / 8)
    assert abs(float(noise.mean())) < 0.03
    assert 0.45 < float(noise.std()) < 0.55


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: simplex_noise((1, 16, 16)), ValueError, r"`shape` must be \(B, C, H, W\) or \(B, C, D, H, W\)"),
    (lambda: simplex_noise((1, 1, 1, 1, 16, 16)), ValueError, "`shape` must be"),
    (lambda: simplex_noise((1, 1, 0, 16)), ValueError, "`shape` must be positive ints"),
    (lambda: simplex_noise((1, 1, 16.0, 16)), TypeError, "`shape` must be positive ints"),
    (lambda: simplex_octaves((16,), [0]), ValueError, "`spatial_shape` must be"),
    (lambda: simplex_octaves((16, 16), []), ValueError, "`seeds` must hold at least one seed"),
    (lambda: simplex_octaves((16, 16), [0.5]), TypeError, "`seeds` must be a sequence of integers"),
    (lambda: simplex_octaves((16, 16), [0], octaves=0), ValueError, "`octaves` must be a positive int"),
    (lambda: simplex_octaves((16, 16), [0], persistence=0), ValueError, "`persistence` must be a positive number"),
    (lambda: simplex_octaves((16, 16), [0], frequency=-1.0), ValueError, "`frequency` must be a positive number"),
    (lambda: simplex_octaves((16, 16), [0], frequency="1"), TypeError, "`frequency` must be a positive number"),
    (lambda: simplex_octaves((4, 4, 4), [0], depth=2.0), ValueError, "`depth` must be 0 for a 3D field"),
    (lambda: simplex_permutation(1.5), TypeError, "`seed` must be an integer"),
])
def test_bad_arguments_are_refused(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------------------------------
# The model


def _tiny(spatial_dims: int, **options) -> AnoDDPM:
    torch.manual_seed(0)
    return AnoDDPM(spatial_dims, image_size=16, channels=(8, 16), **options)


def _neighbour_correlation(noise: torch.Tensor) -> float:
    """Correlation of each voxel with its neighbour along the last axis, over the batch."""
    a, b = noise[..., :-1].flatten().double(), noise[..., 1:].flatten().double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def test_the_noise_scale_follows_the_image_size():
    assert simplex_settings(256) == (SIMPLEX_FREQUENCY, SIMPLEX_OCTAVES)  # the reference's slices
    model = _tiny(2)
    assert (model.frequency, model.octaves) == (0.25, 2) and model.noise_levels == (250,)
    assert model.config.octaves == 2 and model.config.frequency == 0.25
    assert isinstance(model, DDPM)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_training_noise_is_smooth_unit_variance_simplex_noise(spatial_dims, monkeypatch):
    model = _tiny(spatial_dims)
    seen = []
    add_noise = model.scheduler.add_noise

    def recording(original_samples, noise, timesteps):
        seen.append(noise.clone())
        return add_noise(original_samples, noise, timesteps)

    monkeypatch.setattr(model.scheduler, "add_noise", recording)
    x = torch.rand((8, 1) + (16,) * spatial_dims, generator=torch.Generator().manual_seed(1))
    model.training_loss(x, x).total.backward()
    noise = seen[0]  # what the inferer added, which the loss asks the network to predict
    assert noise.shape == x.shape
    assert _neighbour_correlation(noise) > 0.6  # white noise: 0
    assert _neighbour_correlation(torch.randn_like(noise)) < 0.1
    assert float(noise.std()) == pytest.approx(1.0, abs=0.25)
    torch.manual_seed(5)
    first = model.draw_noise(x.shape)
    torch.manual_seed(5)
    assert torch.equal(first, model.draw_noise(x.shape))  # training noise follows torch's global generator


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_reconstruct_is_deterministic_and_depends_on_the_samples_only(spatial_dims):
    model = _tiny(spatial_dims).eval()
    x = torch.rand((3, 1) + (16,) * spatial_dims, generator=torch.Generator().manual_seed(2))
    recon = model.reconstruct(x)
    assert recon.shape == x.shape and recon.dtype == torch.float32
    assert 0 <= float(recon.min()) <= float(recon.max()) <= 1
    torch.manual_seed(123)  # the global generator (training's) plays no part
    torch.rand(10)
    assert torch.equal(model.reconstruct(x), recon)
    other = _tiny(spatial_dims, seed=1).eval()
    other.load_state_dict(model.state_dict())
    assert not torch.equal(other.reconstruct(x), recon)  # the config's seed draws the noise


def test_bad_model_arguments_are_refused():
    with pytest.raises(ValueError, match="`octaves` must be a positive int"):
        AnoDDPM(2, image_size=16, channels=(8, 16), octaves=0)
    with pytest.raises(ValueError, match="`frequency` must be a positive number"):
        AnoDDPM(2, image_size=16, channels=(8, 16), frequency=-1.0)
