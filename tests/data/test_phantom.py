"""Tests of uadlab.data.phantom: sources, parameters, seeds, healthy subjects and lesion cases (4 mm grid)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from uadlab.data.phantom import (
    KINDS,
    PhantomParams,
    PhantomSubject,
    SourceBrain,
    load_sources,
    simulate_subject,
    subject_seed,
)
from uadlab.errors import VolumeError

VOXEL_MM = 4.0


@pytest.fixture(scope="module")
def source() -> SourceBrain:
    """The MNI152 template on the smoke profile's 4 mm grid (cached by load_sources)."""
    return load_sources(voxel_mm=VOXEL_MM)[0]


def _corr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.corrcoef(a[mask], b[mask])[0, 1])


def _best_threshold_dice(subject: PhantomSubject) -> float:
    """Best DICE of 'brain voxel darker than t' against the lesion mask, over all global thresholds t."""
    values = subject.image[subject.brain_mask]
    lesion = subject.lesion_mask[subject.brain_mask]
    order = np.argsort(values)
    true_positives = np.cumsum(lesion[order])  # predicting the k darkest voxels, k = 1..N
    predicted = np.arange(1, values.size + 1)
    return float((2 * true_positives / (predicted + lesion.sum())).max())


# -- sources -----------------------------------------------------------------------------------------


def test_default_source_is_the_normalised_mni_template_on_the_requested_grid(source):
    assert source.name == "mni152_2009"
    assert source.voxel_mm == VOXEL_MM
    np.testing.assert_allclose(np.diag(source.affine)[:3], VOXEL_MM)
    assert source.shape == (50, 59, 48)  # 197 x 233 x 189 mm at 1 mm -> 4 mm voxels
    assert source.image.dtype == np.float32 and source.brain_mask.dtype == bool
    assert np.all(source.image[~source.brain_mask] == 0)
    assert np.percentile(source.image[source.brain_mask], 99.5) == pytest.approx(1.0, abs=1e-5)
    total = source.gm + source.wm + source.csf
    np.testing.assert_allclose(total[source.brain_mask], 1.0, atol=1e-5)
    assert np.all(total[~source.brain_mask] == 0)
    brain_cm3 = source.brain_mask.sum() * VOXEL_MM**3 / 1000
    assert 1500 < brain_cm3 < 2200  # the MNI152 brain mask is ~1.9 l
    means = [source.image[getattr(source, t) > 0.6].mean() for t in ("csf", "gm", "wm")]
    assert means == sorted(means)  # T1: CSF < GM < WM
    # nilearn ships the *symmetric* ICBM 2009a template: mirrored about x = 0 (the grid's middle
    # plane, since it runs from -98 to +98 mm) it is the same brain, as load_sources documents.
    assert source.affine[0, 3] == -(source.shape[0] - 1) * VOXEL_MM / 2
    np.testing.assert_allclose(source.image[::-1], source.image, atol=1e-5)
    np.testing.assert_array_equal(source.brain_mask[::-1], source.brain_mask)


def test_sources_are_cached_and_read_only(source):
    assert load_sources(voxel_mm=VOXEL_MM)[0] is source
    with pytest.raises(ValueError, match="read-only"):
        source.image[0, 0, 0] = 1.0


@pytest.mark.parametrize(
    ("paths", "voxel_mm", "error", "match"),
    [
        (None, 0.0, ValueError, "`voxel_mm` must be a positive"),
        (None, "4", TypeError, "`voxel_mm` must be a number"),
        ("brain.nii.gz", 1.0, TypeError, "`paths` must be a collection"),
        ([], 1.0, ValueError, "`paths` must name at least one file"),
        ([3], 1.0, TypeError, "`paths` must hold str or Path"),
    ],
)
def test_load_sources_rejects_bad_arguments(paths, voxel_mm, error, match):
    with pytest.raises(error, match=match):
        load_sources(paths, voxel_mm=voxel_mm)


@pytest.mark.real_data
def test_real_healthy_scans_load_as_sources_with_kmeans_tissues(real_data_dir):
    paths = [real_data_dir / "healthy" / "mass_template01_t1_brain.nii.gz"]  # LPS, 1.2 x 0.9 x 0.9 mm
    sources = load_sources(paths, voxel_mm=VOXEL_MM)
    assert [s.name for s in sources] == [p.name.removesuffix(".nii.gz") for p in paths]
    for real in sources:
        assert real.voxel_mm == VOXEL_MM and real.brain_mask.sum() * VOXEL_MM**3 > 800_000  # > 0.8 l
        assert np.percentile(real.image[real.brain_mask], 99.5) == pytest.approx(1.0, abs=1e-5)
        means = [real.image[getattr(real, t) > 0.6].mean() for t in ("csf", "gm", "wm")]
        assert means == sorted(means)
        subject = simulate_subject(real, "stroke", 0)
        assert subject.source == real.name and subject.lesion_mask.any()


def test_missing_or_empty_real_files_raise_volume_errors(tmp_path, write_nifti):
    with pytest.raises(VolumeError, match="missing.nii.gz"):
        load_sources([tmp_path / "missing.nii.gz"], voxel_mm=VOXEL_MM)
    empty = write_nifti("empty.nii.gz", np.zeros((8, 8, 8), np.float32))
    with pytest.raises(VolumeError, match="fewer than 100 non-zero voxels"):
        load_sources([empty], voxel_mm=VOXEL_MM)


# -- parameters and seeds ----------------------------------------------------------------------------


def test_params_accept_manifest_overrides_and_round_trip():
    params = PhantomParams(noise_range=[0.0, 0.0], rotation_deg=0, stroke_satellites=0)
    assert params.noise_range == (0.0, 0.0) and params.rotation_deg == 0.0
    assert PhantomParams(**params.to_dict()) == params
    assert PhantomParams() == PhantomParams(**PhantomParams().to_dict())


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"noise": 0.1}, r"unknown \['noise'\]"),
        ({"gamma_range": (1.2, 0.8)}, "`gamma_range` must satisfy"),
        ({"gamma_range": (0.0, 1.0)}, "`gamma_range` must satisfy"),
        ({"tumour_volume_cm3": 5.0}, "`tumour_volume_cm3` must be a pair"),
        ({"bias_range": ("a", 1)}, "`bias_range` must be a pair"),
        ({"tumour_core_fraction": (0.2, 1.0)}, r"`tumour_core_fraction` must lie in \[0, 1\)"),
        ({"stroke_level": (0.2, 1.5)}, r"`stroke_level` must lie in \[0, 1\]"),
        ({"tumour_oedema_darkening": (-0.1, 0.2)}, "`tumour_oedema_darkening` must satisfy 0.0 <= lo"),
        ({"rotation_deg": -1.0}, "`rotation_deg` must be a finite number >= 0"),
        ({"elastic_sigma_mm": 0.0}, "`elastic_sigma_mm` must be > 0"),
        ({"tumour_mass_effect": 0.6}, "`tumour_mass_effect` must be <= 0.4"),
        ({"stroke_satellites": -1}, "`stroke_satellites` must be an integer >= 0"),
        ({"atrophy_range": (0.5, 1.5)}, r"`atrophy_range` must lie in \[0, 1\]"),
        ({"fold_max_mm": (-1.0, 2.0)}, "`fold_max_mm` must satisfy 0.0 <= lo"),
        ({"fold_sigma_mm": 0.0}, "`fold_sigma_mm` must be > 0"),
    ],
)
def test_params_reject_unknown_keys_and_bad_values(overrides, match):
    with pytest.raises(ValueError, match=match):
        PhantomParams(**overrides)


@pytest.mark.parametrize(("overrides", "match"), [
    ({"translation_mm": True}, "`translation_mm` must be a finite number"),
    ({"rotation_deg": "5"}, "`rotation_deg` must be a finite number"),
    ({"stroke_satellites": 1.5}, "`stroke_satellites` must be an integer"),
])
def test_params_reject_wrong_types(overrides, match):
    with pytest.raises(TypeError, match=match):
        PhantomParams(**overrides)


def test_subject_seed_is_stable_and_distinct_per_cohort_and_index():
    seed = subject_seed(7, "healthy", 3)
    assert seed == subject_seed(7, "healthy", 3) and 0 <= seed < 2**63
    others = {subject_seed(7, "stroke", 3), subject_seed(7, "healthy", 4), subject_seed(8, "healthy", 3)}
    assert seed not in others and len(others) == 3


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((0, 1, 0), TypeError, "`cohort` must be a str"),
        ((0.5, "healthy", 0), TypeError, "`base_seed` must be an int"),
        ((0, "healthy", True), TypeError, "`index` must be an int"),
        ((-1, "healthy", 0), ValueError, "`base_seed` must be an int >= 0"),
    ],
)
def test_subject_seed_validates(args, error, match):
    with pytest.raises(error, match=match):
        subject_seed(*args)


# -- subjects ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_subject_shapes_dtypes_and_masks(source, kind):
    subject = simulate_subject(source, kind, 3)
    assert subject.kind == kind and subject.source == "mni152_2009"
    assert subject.image.shape == subject.brain_mask.shape == source.shape
    assert subject.image.dtype == np.float32 and subject.brain_mask.dtype == bool
    np.testing.assert_array_equal(subject.affine, source.affine)
    assert np.all(subject.image >= 0) and np.all(subject.image[~subject.brain_mask] == 0)
    assert np.all(subject.image[subject.brain_mask] > 0)
    if kind == "healthy":
        assert subject.lesion_mask is None and subject.lesion_volume_mm3 == 0.0
    else:
        assert subject.lesion_mask.dtype == bool and subject.lesion_mask.any()
        assert not np.any(subject.lesion_mask & ~subject.brain_mask)
        assert subject.lesion_volume_mm3 == subject.lesion_mask.sum() * VOXEL_MM**3


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_is_byte_identical_and_other_seeds_differ(source, kind):
    first, again = simulate_subject(source, kind, 11), simulate_subject(source, kind, 11)
    assert first.image.tobytes() == again.image.tobytes()
    assert first.brain_mask.tobytes() == again.brain_mask.tobytes()
    if kind != "healthy":
        assert first.lesion_mask.tobytes() == again.lesion_mask.tobytes()
    from_generator = simulate_subject(source, kind, np.random.default_rng(11))
    assert from_generator.image.tobytes() == simulate_subject(source, kind, np.random.default_rng(11)).image.tobytes()
    sequence = np.random.SeedSequence(11)
    from_sequence = simulate_subject(source, kind, sequence)
    assert from_sequence.image.tobytes() == first.image.tobytes()  # an int seed is its SeedSequence
    assert simulate_subject(source, kind, sequence).image.tobytes() == first.image.tobytes()  # not consumed
    other = simulate_subject(source, kind, 12)
    assert not np.array_equal(first.image, other.image)


def test_healthy_subjects_vary_but_stay_brain_like(source):
    """Voxel-wise correlation < 1 (pose, size, shape and contrast vary by default as much as between
    real subjects: up to 10 deg, 12 % per axis, 5 mm and a 6-12 mm elastic warp); after smoothing away
    most of that misalignment (sigma two 4 mm voxels) subjects still correlate > 0.6 with the
    template and with each other, and the brain volume stays within 30 % of the template's."""
    smooth = lambda image: ndi.gaussian_filter(image, 2.0)  # noqa: E731
    subjects = [simulate_subject(source, "healthy", seed) for seed in range(3)]
    for i, subject in enumerate(subjects):
        union = subject.brain_mask | source.brain_mask
        assert _corr(subject.image, source.image, union) < 0.95
        assert _corr(smooth(subject.image), smooth(source.image), union) > 0.6
        for other in subjects[i + 1:]:
            union_other = subject.brain_mask | other.brain_mask
            assert _corr(subject.image, other.image, union_other) < 0.95
            assert _corr(smooth(subject.image), smooth(other.image), union_other) > 0.6
        assert subject.brain_mask.sum() == pytest.approx(source.brain_mask.sum(), rel=0.3)


def test_atrophy_widens_the_csf_spaces_and_only_darkens(source):
    """At atrophy level 1 the ventricles and sulci widen: more CSF-dark voxels than at level ~0 (the
    same draws, so the same subject otherwise), no voxel brighter, the brain outline unchanged.
    Without noise, so that darker tissue stays darker after the intensity jitter. (On this 4 mm grid
    a 3-6 mm widening is one voxel of partial volume: 1.14x the darkest 5 %; 2.8x at the lab's 2 mm.)"""
    quiet = {"noise_range": (0.0, 0.0)}
    young = simulate_subject(source, "healthy", 3, params={**quiet, "atrophy_range": (1e-9, 1e-9)})
    old = simulate_subject(source, "healthy", 3, params={**quiet, "atrophy_range": (1.0, 1.0)})
    assert np.array_equal(young.brain_mask, old.brain_mask)
    brain = young.brain_mask
    assert np.all(old.image[brain] <= young.image[brain] + 1e-5)
    dark = np.percentile(young.image[brain], 5)
    assert (old.image[brain] < dark).sum() > 1.1 * (young.image[brain] < dark).sum()
    assert 0.01 < np.mean(old.image[brain] < young.image[brain] - 0.05) < 0.4  # near the CSF, not everywhere


def test_folds_move_the_anatomy_without_changing_the_brain_size(source):
    """The fine fold field (``fold_max_mm``) deforms the anatomy locally: voxel-wise the subject
    changes, the brain volume stays within 3 %."""
    flat = simulate_subject(source, "healthy", 5, params={"fold_max_mm": (1e-9, 1e-9)})
    folded = simulate_subject(source, "healthy", 5, params={"fold_max_mm": (4.0, 4.0)})
    both = flat.brain_mask & folded.brain_mask
    assert _corr(flat.image, folded.image, both) < 0.99  # the same draws otherwise: 1.0 without folds
    assert folded.brain_mask.sum() == pytest.approx(flat.brain_mask.sum(), rel=0.03)


def test_a_subject_does_not_depend_on_earlier_subjects(source):
    alone = simulate_subject(source, "stroke", subject_seed(0, "stroke", 5))
    for index in range(2):
        simulate_subject(source, "stroke", subject_seed(0, "stroke", index))
    assert simulate_subject(source, "stroke", subject_seed(0, "stroke", 5)).image.tobytes() == alone.image.tobytes()


def test_tumour_volumes_lie_in_the_brats_range(source):
    volumes_cm3 = [simulate_subject(source, "tumour", seed).lesion_volume_mm3 / 1000 for seed in range(5)]
    assert min(volumes_cm3) >= 15 * 0.8 and max(volumes_cm3) <= 120 * 1.05
    assert max(volumes_cm3) / min(volumes_cm3) > 2


def test_stroke_volumes_span_more_than_two_orders_of_magnitude(source):
    volumes = np.array([simulate_subject(source, "stroke", seed).lesion_volume_mm3 for seed in range(12)])
    assert volumes.max() / volumes.min() > 100
    assert volumes.min() >= VOXEL_MM**3 and volumes.max() < 200_000  # one voxel .. ~150 cm³ plus satellites


def test_target_volume_sets_the_lesion_volume(source):
    subject = simulate_subject(source, "stroke", 0, target_volume_mm3=20_000.0, params={"stroke_satellites": 0})
    assert subject.lesion_volume_mm3 == pytest.approx(20_000, rel=0.15)


def test_tumour_pushes_tissue_away_while_stroke_leaves_it_in_place(source):
    def outside_change(kind: str, params: PhantomParams | None = None) -> float:
        lesion = simulate_subject(source, kind, 4, params=params)
        healthy = simulate_subject(source, "healthy", 4, params=params)  # the paired counterpart
        far = healthy.brain_mask & ~ndi.binary_dilation(lesion.lesion_mask, iterations=2)
        return float(np.abs(lesion.image - healthy.image)[far].mean())

    assert outside_change("stroke") == 0.0
    assert outside_change("tumour", PhantomParams(tumour_mass_effect=0.0)) == 0.0
    assert outside_change("tumour") > 0.01  # > 1 % of the brain's bright end, on average


@pytest.mark.parametrize("kind", ["tumour", "stroke"])
def test_lesions_are_darker_but_not_separable_by_one_global_threshold(source, kind):
    """Hypointense on T1: darker than the tissue the lesion replaced (the same seed's healthy
    counterpart at those voxels; a tumour in bright white matter can still be brighter than the
    brain's median); but CSF and GM are just as dark, so no global threshold separates it."""
    for seed in range(4):
        subject = simulate_subject(source, kind, seed)
        counterpart = simulate_subject(source, "healthy", seed)
        lesion = subject.image[subject.lesion_mask]
        assert np.median(lesion) < 0.9 * np.median(counterpart.image[subject.lesion_mask])
        assert _best_threshold_dice(subject) < 0.6


@pytest.mark.parametrize(("kind", "dark", "bright"), [
    ("stroke", {"stroke_level": (0.0, 0.0), "stroke_tissue_mix": (0.0, 0.0)},
     {"stroke_level": (0.8, 0.8), "stroke_tissue_mix": (0.5, 0.5)}),
    ("tumour", {"tumour_core_level": (0.0, 0.0), "tumour_oedema_darkening": (0.4, 0.4)},
     {"tumour_core_level": (0.8, 0.8), "tumour_oedema_darkening": (0.0, 0.0)}),
])
def test_lesion_level_params_set_the_lesion_contrast(source, kind, dark, bright):
    """The lesion-intensity ranges move the lesion towards the tissue it replaced, nothing else."""
    counterpart = simulate_subject(source, "healthy", 3)

    def contrast(params: dict) -> float:
        subject = simulate_subject(source, kind, 3, params=params)
        outside = ~ndi.binary_dilation(subject.lesion_mask, iterations=3) & subject.brain_mask
        if kind == "stroke":  # no mass effect: the rest of the brain is the counterpart's
            assert np.array_equal(subject.image[outside], counterpart.image[outside])
        lesion = subject.lesion_mask
        return float(np.mean(counterpart.image[lesion] - subject.image[lesion]))

    assert contrast(dark) > 2 * contrast(bright) > 0


def test_lesion_intensities_follow_the_subjects_contrast(source):
    """Lesions get the subject's intensity jitter: a brighter acquisition has brighter lesions."""
    dim = simulate_subject(source, "stroke", 2, params={"scale_range": (0.8, 0.8), "noise_range": (0, 0)})
    bright = simulate_subject(source, "stroke", 2, params={"scale_range": (1.2, 1.2), "noise_range": (0, 0)})
    ratio = bright.image[bright.lesion_mask].mean() / dim.image[dim.lesion_mask].mean()
    assert ratio == pytest.approx(1.5, rel=0.1)


def test_voxel_mm_resamples_the_source(source):
    subject = simulate_subject(source, "healthy", 0, voxel_mm=8.0)
    np.testing.assert_allclose(np.diag(subject.affine)[:3], 8.0)
    assert subject.image.shape == (25, 30, 24)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"kind": "glioma"}, ValueError, "`kind` must be one of"),
        ({"source": np.zeros((4, 4, 4))}, TypeError, "`source` must be a SourceBrain"),
        ({"seed_or_rng": -1}, ValueError, "`seed_or_rng` must be >= 0"),
        ({"seed_or_rng": 1.5}, TypeError, "`seed_or_rng` must be an int"),
        ({"params": [1, 2]}, TypeError, "`params` must be a PhantomParams"),
        ({"params": {"bogus": 1}}, ValueError, "unknown"),
        ({"voxel_mm": -2.0}, ValueError, "`voxel_mm` must be a positive"),
        ({"kind": "healthy", "target_volume_mm3": 1000.0}, ValueError, "must be None for a healthy"),
        ({"target_volume_mm3": 0.0}, ValueError, "`target_volume_mm3` must be a positive"),
    ],
)
def test_simulate_subject_validates_arguments(source, kwargs, error, match):
    arguments = {"source": source, "kind": "stroke", "seed_or_rng": 0, **kwargs}
    with pytest.raises(error, match=match):
        simulate_subject(
            arguments.pop("source"), arguments.pop("kind"), arguments.pop("seed_or_rng"), **arguments
        )
