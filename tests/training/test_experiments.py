"""Tests of uadlab.training.experiments: Table 1 names with a model axis."""

from __future__ import annotations

import pytest

from uadlab.models import MODELS
from uadlab.training.erasing import METHODS
from uadlab.training.experiments import EXPERIMENTS, FAMILIES, Experiment, experiment_name, parse_experiment

COMBOS = [(dims, method, fill)
          for dims, methods in METHODS.items() for method in methods for fill in ("0", "n")]


# ---------------------------------------------------------------------------------------------------
# Table 1 names (the dense VAE)


def test_experiments_are_table1_in_order():
    assert len(EXPERIMENTS) == len(set(EXPERIMENTS)) == 14
    assert EXPERIMENTS[:4] == ("2D-None", "3D-None", "2D-Patch-0", "2D-Patch-n")
    assert EXPERIMENTS[-2:] == ("3D-Half-Volume-0", "3D-Half-Volume-n")
    expected = {"2D-None", "3D-None"} | {f"{d}D-{m}-{f}" for d, m, f in COMBOS}
    assert set(EXPERIMENTS) == expected


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_names_round_trip(name):
    experiment = parse_experiment(name)
    assert experiment.name == name
    assert Experiment(experiment.spatial_dims, experiment.method, experiment.fill) == experiment
    assert experiment.spatial_dims == int(name[0])


def test_parse_fields_and_case():
    assert parse_experiment("3D-Multi-Cube-n") == Experiment(3, "Multi-Cube", "n")
    assert parse_experiment("2D-None") == Experiment(2, "None", None)
    assert parse_experiment("3d-cube-n").name == "3D-Cube-n"  # the paper's text writes 3D-cube-n


@pytest.mark.parametrize("name", ["3D-Patch-n", "2D-Cube-0", "2D-None-n", "2D-Patch", "4D-None",
                                  "3D-Half-Slice-0", "2D-Patch-x", ""])
def test_invalid_names_list_the_valid_ones(name):
    with pytest.raises(ValueError, match=r"`name` must be one of 2D-None, 3D-None, .*3D-Half-Volume-n"):
        parse_experiment(name)


def test_parse_rejects_non_strings():
    with pytest.raises(TypeError, match="`name` must be a str"):
        parse_experiment(3)


@pytest.mark.parametrize(("args", "match"), [
    ((4, "None", None), "`spatial_dims` must be 2 or 3"),
    ((True, "None", None), "`spatial_dims` must be 2 or 3"),
    ((3, "Patch", "n"), r"`method` must be one of \('None', 'Cube'"),
    ((2, "None", "0"), r"`fill` must be one of \(None,\)"),
    ((2, "Patch", None), r"`fill` must be one of \('0', 'n'\)"),
])
def test_experiment_validation(args, match):
    with pytest.raises(ValueError, match=match):
        Experiment(*args)


def test_experiment_erasing():
    assert parse_experiment("3D-None").erasing() is None
    erasing = parse_experiment("2D-Half-Slice-n").erasing(p=0.25)
    assert (erasing.spatial_dims, erasing.method, erasing.fill, erasing.p) == (2, "Half-Slice", "n", 0.25)
    assert "Half-Slice" in repr(erasing)



# ---------------------------------------------------------------------------------------------------
# The model axis


def test_a_bare_name_means_the_dense_vae_and_keeps_its_spelling():
    experiment = parse_experiment("3D-Cube-n")
    assert experiment.model == "dense-vae"
    assert experiment.name == experiment.table1_name == "3D-Cube-n"
    assert parse_experiment("dense-vae:3D-Cube-n") == experiment  # the prefix is optional for it


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_table1_name_exists_for_the_spatial_vae(name):
    experiment = parse_experiment(f"spatial-vae:{name}")
    assert experiment.name == f"spatial-vae:{name}" and experiment.table1_name == name
    assert parse_experiment(name, model="spatial-vae") == experiment  # `train --model` spelling
    assert parse_experiment(experiment.name) == experiment


def test_model_prefix_is_case_insensitive_and_canonical():
    assert parse_experiment(" Spatial-VAE:2d-none ").name == "spatial-vae:2D-None"


@pytest.mark.parametrize(("name", "kwargs", "match"), [
    ("unet:3D-None", {}, r"`model` must be one of \['ae-dense', 'ae-spatial', 'anoddpm', 'cddpm', 'cevae', 'dae', "
                         r"'ddpm', 'dense-vae'"),
    ("spatial-vae:3D-None", {"model": "dense-vae"}, "names model 'spatial-vae', but `model` is 'dense-vae'"),
    ("mean-image:2D-None", {}, "model 'mean-image' supports 3D only"),
    ("mean-image:3D-Cube-n", {}, "model 'mean-image' takes no spatial erasing"),
    ("spatial-vae:3D-Box", {}, "`name` must be one of 2D-None"),
])
def test_model_axis_validation(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        parse_experiment(name, **kwargs)


def test_family_and_baseline():
    families = {parse_experiment(name).family for name in EXPERIMENTS}
    assert families == set(FAMILIES)
    assert parse_experiment("2D-Patch-0").family == parse_experiment("3D-Cube-n").family == "Box"
    assert parse_experiment("3D-Half-Volume-n").family == "Half"
    assert parse_experiment("spatial-vae:2D-Multi-Patch-n").baseline.name == "spatial-vae:2D-None"
    assert parse_experiment("3D-None").baseline.name == "3D-None"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_name_rebuilds_every_name_from_its_family(name):
    e = parse_experiment(name)
    assert experiment_name(e.spatial_dims, e.family, e.fill) == name
    assert experiment_name(e.spatial_dims, e.family, e.fill, model="spatial-vae") == f"spatial-vae:{name}"


def test_experiment_name_rejects_unknown_family():
    with pytest.raises(ValueError, match="`family` must be one of"):
        experiment_name(2, "Ring", "0")


def test_registry_lists_the_models():
    assert {"dense-vae", "spatial-vae", "mean-image"} <= set(MODELS)
    assert Experiment(3, "None", None, "MEAN-IMAGE").model == "mean-image"
