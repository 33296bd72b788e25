"""Tests of uadlab.evaluation.inference: residuals and anomaly maps from reconstructions, predict, save_maps."""

from __future__ import annotations

from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch

from uadlab.errors import DatasetError, RunError, VolumeError
from uadlab.evaluation import inference
from uadlab.evaluation.inference import MAP_FOLDERS, SubjectMaps, make_maps, predict, save_maps
from uadlab.evaluation.postprocessing import anomaly_map

SIZE = 12
AFFINE = np.array([[2.0, 0, 0, -10], [0, 2, 0, 5], [0, 0, 2, 3], [0, 0, 0, 1]])  # 2 mm voxels, shifted


def _volumes(rng):
    """A box brain with tissue in [0.2, 0.3] and a 3³ lesion at 1.0."""
    brain = np.zeros((SIZE,) * 3, bool)
    brain[1:-1, 1:-1, 1:-1] = True
    lesion = np.zeros_like(brain)
    lesion[4:7, 5:8, 3:6] = True
    image = (rng.uniform(0.2, 0.3, brain.shape) * brain).astype(np.float32)
    image[lesion] = 1.0
    return image, brain, lesion


class _Dataset:
    """Stands in for uadlab.data.dataset.BuiltDataset."""

    def __init__(self, subjects):
        self.subjects = {s.subject_id: s for s in subjects}

    def subject(self, subject_id):
        if subject_id not in self.subjects:
            raise DatasetError(f"unknown subject {subject_id!r}")
        return self.subjects[subject_id]


@pytest.fixture
def dataset(rng):
    subjects = []
    for i in range(3):
        image, brain, lesion = _volumes(rng)
        subjects.append(SimpleNamespace(subject_id=f"s{i}", cohort="tumour", split="test", image=image,
                                        brain_mask=brain, lesion_mask=lesion, affine=AFFINE))
    return _Dataset(subjects)


class _Healer(torch.nn.Module):
    """A stand-in model whose reconstruction is its input with the lesion (intensity > 0.3) removed."""

    def __init__(self, spatial_dims):
        super().__init__()
        self.spatial_dims = spatial_dims
        self.config = None
        self.scale = torch.nn.Parameter(torch.ones(()))  # reconstruct() finds the device from a parameter
        self.batch_shapes = []

    def reconstruct(self, x):
        self.batch_shapes.append(tuple(x.shape))
        return torch.clamp(x, max=0.3) * self.scale

    def training_loss(self, inputs, target):  # the rest of the model protocol, unused here
        raise NotImplementedError

    def validation_terms(self, samples):
        raise NotImplementedError


@pytest.fixture(params=[2, 3], ids=["2D", "3D"])
def healer(request):
    return _Healer(request.param)


# --- make_maps -----------------------------------------------------------------------------------------

def test_make_maps_residual_is_the_missing_lesion(rng):
    image, brain, lesion = _volumes(rng)
    maps = make_maps("a", image, np.minimum(image, 0.3), brain, lesion, AFFINE, cohort="tumour", split="val")
    np.testing.assert_allclose(maps.residual, 0.7 * lesion, atol=1e-6)
    np.testing.assert_array_equal(maps.anomaly_map, anomaly_map(maps.residual, brain))
    assert maps.anomaly_map[5, 6, 4] == pytest.approx(0.7)  # the lesion centre survives the median
    assert maps.lesion_voxels == 27 and maps.cohort == "tumour" and maps.split == "val"
    assert maps.anomaly_map.dtype == np.float32 and maps.lesion_mask.dtype == bool
    np.testing.assert_array_equal(maps.affine, AFFINE)
    assert "lesion=27 voxels" in repr(maps)


def test_make_maps_passes_postprocessing_options(rng):
    image, brain, lesion = _volumes(rng)
    raw = make_maps("a", image, np.minimum(image, 0.3), brain, lesion,
                    postprocess_kwargs={"erosion_iterations": 0, "median_size": 1})
    np.testing.assert_allclose(raw.anomaly_map, 0.7 * lesion, atol=1e-6)
    np.testing.assert_array_equal(raw.affine, np.eye(4))


def test_make_maps_takes_a_models_own_score_in_place_of_the_residual(rng):
    image, brain, lesion = _volumes(rng)
    score = 5.0 * lesion.astype(np.float32)  # e.g. a z-score: not bounded by 1
    maps = make_maps("a", image, image, brain, lesion, score=score, postprocess_kwargs={"median_size": 1,
                                                                                       "erosion_iterations": 0})
    np.testing.assert_array_equal(maps.residual, score)
    np.testing.assert_array_equal(maps.anomaly_map, score)  # post-processed as a residual would be
    with pytest.raises(ValueError, match="`score` must have the shape of `image`"):
        make_maps("a", image, image, brain, score=score[1:])
    with pytest.raises(ValueError, match="`score` must be finite and non-negative"):
        make_maps("a", image, image, brain, score=-score)


def test_make_maps_accepts_01_masks_and_no_lesion(rng):
    image, brain, _ = _volumes(rng)
    maps = make_maps("h", image, image, brain.astype(np.uint8))
    assert maps.lesion_mask is None and maps.lesion_voxels == 0
    assert maps.brain_mask.dtype == bool and not maps.anomaly_map.any()


def test_make_maps_validates(rng):
    image, brain, lesion = _volumes(rng)
    with pytest.raises(TypeError, match="`subject_id` must be a non-empty str"):
        make_maps("", image, image, brain)
    with pytest.raises(TypeError, match="`postprocess_kwargs` must be a mapping"):
        make_maps("a", image, image, brain, postprocess_kwargs=[("median_size", 1)])
    with pytest.raises(ValueError, match="unknown \\['sigma'\\]"):
        make_maps("a", image, image, brain, postprocess_kwargs={"sigma": 1})
    with pytest.raises(ValueError, match="`image` must be an \\(X, Y, Z\\) volume"):
        make_maps("a", image[0], image[0], brain[0])
    with pytest.raises(ValueError, match="`brain_mask` must have the shape of `image`"):
        make_maps("a", image, image, brain[1:])
    with pytest.raises(ValueError, match="`lesion_mask` must be binary"):
        make_maps("a", image, image, brain, lesion * 2)
    with pytest.raises(ValueError, match="`affine` must be a \\(4, 4\\) matrix"):
        make_maps("a", image, image, brain, lesion, np.eye(3))
    with pytest.raises(ValueError, match="`recon` must have the shape of `image`"):
        make_maps("a", image, image[1:], brain)
    with pytest.raises(VolumeError, match="empty"):
        make_maps("a", image, image, np.zeros_like(brain))


# --- predict -------------------------------------------------------------------------------------------

def test_predict_reconstructs_each_subject_in_order(dataset, healer):
    maps = predict(healer, dataset, ["s2", "s0"], batch_size=5, device="cpu")
    assert list(maps) == ["s2", "s0"]
    if healer.spatial_dims == 3:  # one volume per pass
        assert healer.batch_shapes == [(1, 1, SIZE, SIZE, SIZE)] * 2
    else:  # all axial slices, 5 per pass
        assert healer.batch_shapes == [(5, 1, SIZE, SIZE), (5, 1, SIZE, SIZE), (2, 1, SIZE, SIZE)] * 2
    for subject_id, m in maps.items():
        truth = dataset.subject(subject_id)
        np.testing.assert_allclose(m.residual, 0.7 * truth.lesion_mask, atol=1e-6)
        np.testing.assert_array_equal(m.lesion_mask, truth.lesion_mask)
        assert m.cohort == "tumour" and m.split == "test"


def test_predict_streams_with_iter_predict(dataset, healer):
    stream = inference.iter_predict(healer, dataset, ["s0", "s1"], batch_size=SIZE)
    assert next(stream).subject_id == "s0" and len(healer.batch_shapes) == 1  # lazy: one subject at a time


def test_predict_validates(dataset, healer):
    with pytest.raises(ValueError, match="`ids` must be unique.*'s0'"):
        predict(healer, dataset, ["s0", "s0"])
    with pytest.raises(ValueError, match="`batch_size` must be a positive int"):
        predict(healer, dataset, ["s0"], batch_size=0)
    with pytest.raises(DatasetError, match="unknown subject 'x'"):
        predict(healer, dataset, ["x"])


def test_predict_with_a_real_model(dataset):
    """Through uadlab.models.vae.reconstruct: a 3D VAE maps the volume to a volume of the same shape."""
    from uadlab import models

    torch.manual_seed(0)
    model = models.DenseVAE(3, image_size=SIZE + 4, channels=(2, 4), latent_dim=4).eval()
    big = _Dataset([SimpleNamespace(**{**vars(s), "image": np.pad(s.image, 2), "brain_mask": np.pad(s.brain_mask, 2),
                                        "lesion_mask": np.pad(s.lesion_mask, 2)})
                    for s in dataset.subjects.values()])
    maps = predict(model, big, ["s0"], batch_size=1, device="cpu")
    m = maps["s0"]
    assert m.recon.shape == (SIZE + 4,) * 3 and np.isfinite(m.recon).all()
    np.testing.assert_allclose(m.residual, np.abs(m.image - m.recon), atol=1e-6)


# --- save_maps -----------------------------------------------------------------------------------------

def test_save_maps_writes_nifti_in_subject_space(dataset, healer, tmp_path):
    maps = predict(healer, dataset, ["s0", "s1"])
    paths = save_maps(maps, tmp_path)
    assert paths == [tmp_path / MAP_FOLDERS[f] / f"{i}.nii.gz" for i in ("s0", "s1") for f in ("anomaly_map", "recon")]
    image = nib.load(tmp_path / "anomaly_maps" / "s1.nii.gz")
    np.testing.assert_allclose(image.affine, AFFINE)
    np.testing.assert_allclose(np.asarray(image.dataobj), maps["s1"].anomaly_map, atol=1e-6)
    recon = nib.load(tmp_path / "recons" / "s0.nii.gz")
    np.testing.assert_allclose(np.asarray(recon.dataobj), maps["s0"].recon, atol=1e-6)


def test_save_maps_refuses_to_overwrite_without_partial_writes(dataset, healer, tmp_path):
    maps = predict(healer, dataset, ["s0", "s1"])
    save_maps([maps["s1"]], tmp_path, fields=["anomaly_map"])
    with pytest.raises(RunError, match="1 map file\\(s\\) already exist.*s1.nii.gz"):
        save_maps(maps, tmp_path)
    assert not (tmp_path / "anomaly_maps" / "s0.nii.gz").exists()
    assert len(save_maps(maps, tmp_path, overwrite=True)) == 4


def test_save_maps_validates(dataset, healer, tmp_path):
    maps = predict(healer, dataset, ["s0"])
    with pytest.raises(ValueError, match="`fields` must be a non-empty subset"):
        save_maps(maps, tmp_path, fields=["residual"])
    with pytest.raises(ValueError, match="`fields` must be a non-empty subset"):
        save_maps(maps, tmp_path, fields=[])
    with pytest.raises(TypeError, match="`maps` must hold SubjectMaps, got str"):
        save_maps(["s0"], tmp_path)
    with pytest.raises(ValueError, match="one map per subject, got duplicates \\['s0'\\]"):
        save_maps([maps["s0"], maps["s0"]], tmp_path)
    assert not (tmp_path / "anomaly_maps").exists()  # refused before the first write


def test_subject_maps_is_immutable(rng):
    image, brain, lesion = _volumes(rng)
    maps = make_maps("a", image, image, brain, lesion)
    assert isinstance(maps, SubjectMaps)
    with pytest.raises(AttributeError):
        maps.subject_id = "b"
