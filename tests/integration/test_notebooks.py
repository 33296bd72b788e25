"""Tests of uadlab.notebooks and of the lab notebooks.

The static checks (stripped outputs, a ``parameters`` cell) are fast and always run. Executing the
notebooks is marked ``notebooks``: a session-scoped run of them with the smoke profile in two chains
that share only lab 00's data set (:data:`CHAINS`; each its own xdist group, so ``make test`` runs
them on its two workers at once), then one test per notebook checking the results it saved, not
only that it ran.
"""

from __future__ import annotations

import json
import re
import shutil
import warnings

import nbformat
import numpy as np
import pandas as pd
import pytest
from conftest import set_writable, tree_snapshot
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from uadlab.course import PACK_VARIABLE, prepare_pack
from uadlab.course.release import make_course
from uadlab.data import load_dataset
from uadlab.errors import RunError, UadlabWarning
from uadlab.evaluation.metrics import UndefinedMetricWarning
from uadlab.evaluation.protocol import SUBJECT_COLUMNS
from uadlab.layout import RUN_CHECKPOINT, ResultsLayout
from uadlab.notebooks import (
    NOTEBOOK_DIR,
    NOTEBOOKS,
    Lab,
    NotebookError,
    figure_calls,
    notebook_problems,
    run_notebooks,
    strip_outputs,
    zoo_maps,
    zoo_results,
)
from uadlab.notebooks import _show_warnings_as_lines as show_warnings_as_lines
from uadlab.profiles import get_profile
from uadlab.studies import DataSource, StudyContext, run_study


def _write(path, cells):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = cells
    nbformat.write(nb, str(path))
    return path


def _parameters_cell(source="PROFILE: str = 'smoke'\nOUT_DIR: str = 'x'\nSEED: int = 0\nINTERACTIVE: bool = True\n"
                           "PACK: str = ''"):
    cell = new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    return cell


# ----------------------------------------------------------------------------------------------
# Static checks of the committed notebooks
# ----------------------------------------------------------------------------------------------

def test_the_notebooks_exist_in_order():
    assert NOTEBOOKS == tuple(sorted(NOTEBOOKS))
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == list(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_is_stripped_and_parameterised(name):
    assert notebook_problems(NOTEBOOK_DIR / name) == []


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_lab_says_at_its_top_how_long_it_takes_with_smoke_with_lab_and_with_a_pack(name):
    top = next(cell.source for cell in nbformat.read(NOTEBOOK_DIR / name, as_version=4).cells[:4]
               if cell.cell_type == "markdown" and "**How long" in cell.source)
    line = next(line for line in top.splitlines() if "**How long" in line)
    # A figure in seconds or minutes after each setting: `smoke` 16 s, `lab` 6.7 min, a pack's 12 s.
    for setting in ("`smoke` ", "`lab` ", "course pack"):
        time = re.escape(setting) + r"[^;.]*?\d+(\.\d+)? (s|min)\b"
        assert re.search(time, line), f"{name}: no time after {setting!r}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebook_saves_results_in_its_last_cell(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    last = nb.cells[-1]
    assert last.cell_type == "code" and "results /" in last.source and "write_text" in last.source


def test_notebook_problems_reports_each_problem(tmp_path):
    executed = new_code_cell("class Helper:\n    pass", execution_count=3)
    executed.outputs = [nbformat.v4.new_output("stream", text="hi")]
    path = _write(tmp_path / "bad.ipynb", [new_markdown_cell("# title"), executed])
    assert notebook_problems(path) == [
        "the first cell is not a code cell tagged 'parameters'",
        "cell 1 holds outputs (strip them before committing)",
        "cell 1 defines a class (logic belongs in uadlab)",
    ]
    path = _write(tmp_path / "helper.ipynb", [_parameters_cell(), new_code_cell("def helper(x):\n    return x")])
    assert notebook_problems(path) == ["cell 1 defines a function (logic belongs in uadlab)"]
    path = _write(tmp_path / "untyped.ipynb", [_parameters_cell("PROFILE = 'smoke'")])
    assert "the parameters cell lacks a typed `PROFILE: ...` parameter" in notebook_problems(path)


def test_strip_outputs_removes_outputs_once(tmp_path):
    cell = new_code_cell("1 + 1", execution_count=1)
    cell.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "2"}, execution_count=1)]
    path = _write(tmp_path / "a.ipynb", [_parameters_cell(), cell])
    nb = nbformat.read(path, as_version=4)
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}  # JupyterLab's save
    nbformat.write(nb, str(path))
    assert notebook_problems(path) == ["the notebook holds saved widget state (strip it before committing)",
                                       "cell 1 holds outputs (strip them before committing)"]
    assert strip_outputs(path) is True
    assert notebook_problems(path) == []
    assert strip_outputs(path) is False


def test_unreadable_notebook_raises_notebook_error(tmp_path):
    bad = tmp_path / "bad.ipynb"
    bad.write_text("not json")
    with pytest.raises(NotebookError, match="not a readable notebook"):
        notebook_problems(bad)


def test_run_notebooks_validation(tmp_path):
    with pytest.raises(ValueError, match="`notebooks` must be names from"):
        run_notebooks(out=tmp_path, notebooks=["06_extra.ipynb"])
    with pytest.raises(ValueError, match="`profile` must be one of"):
        run_notebooks(profile="huge", out=tmp_path)
    with pytest.raises(NotebookError, match="00_data_prep.ipynb: notebook not found"):
        run_notebooks(out=tmp_path, notebooks=["00_data_prep.ipynb"], source_dir=tmp_path / "none")


def test_a_uadlab_warning_shows_as_one_line_in_a_notebook(capsys, monkeypatch):
    """What start_lab installs in a kernel: the command line's one line, not Python's source path and line."""
    passed = []
    monkeypatch.setattr(warnings, "showwarning", lambda *args: passed.append(str(args[0])))
    show_warnings_as_lines()
    show_warnings_as_lines()  # installed once, however often a lab's setup cell runs
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        for _ in range(3):  # a study warns once per run: one line per cell
            warnings.warn("tumour: 1 labelled case,\n    not 2", UadlabWarning)
        warnings.warn("no positives", UndefinedMetricWarning)
        warnings.warn("from elsewhere", UserWarning)
    assert capsys.readouterr().err == ("uadlab: warning: tumour: 1 labelled case, not 2\n"
                                       "uadlab: warning: UndefinedMetricWarning: no positives\n")
    assert passed == ["from elsewhere"]  # other warnings as before


@pytest.mark.notebooks
def test_failing_cell_is_named_in_the_error(tmp_path):
    _write(tmp_path / "00_data_prep.ipynb",
           [_parameters_cell(), new_code_cell("x = 1"), new_code_cell("raise RuntimeError('boom ' + PROFILE)")])
    with pytest.raises(NotebookError, match=r"00_data_prep.ipynb: cell 3 of the executed copy "
                                         r".*`raise RuntimeError.* RuntimeError: boom lab"):
        run_notebooks(profile="lab", out=tmp_path / "out", notebooks=["00_data_prep.ipynb"], source_dir=tmp_path)
    # cell 3: the source's cell 2 after papermill's injected-parameters cell; the copy is kept
    assert (tmp_path / "out" / "executed" / "00_data_prep.ipynb").exists()


@pytest.mark.notebooks
def test_a_uadlab_error_in_a_cell_shows_one_line_and_still_fails_the_run(tmp_path):
    _write(tmp_path / "00_data_prep.ipynb",
           [_parameters_cell(), new_code_cell("from uadlab.errors import RunError\n"
                                               "raise RunError(OUT_DIR + ': holds a training run')")])
    out = tmp_path / "out"
    with pytest.raises(NotebookError, match=r"failed with RunError: .*out: holds a training run; executed copy"):
        run_notebooks(out=out, notebooks=["00_data_prep.ipynb"], source_dir=tmp_path)
    executed = nbformat.read(out / "executed" / "00_data_prep.ipynb", as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert [e.traceback for e in errors] == [[f"RunError: {out}: holds a training run  (%tb shows the traceback)"]]


# ----------------------------------------------------------------------------------------------
# A lab's steps (start_lab's Lab)
# ----------------------------------------------------------------------------------------------

def test_a_lab_reads_the_subjects_of_a_run_no_lab_trained_yet(blob_dataset, tmp_path):
    """Lab 04 run before lab 03: the runs it reads are trained and evaluated, no FileNotFoundError."""
    layout = ResultsLayout(tmp_path / "out")
    study = StudyContext(layout, layout, "smoke", {"data": DataSource("data", built=blob_dataset)})
    lab = Lab("04_lesion_size", get_profile("smoke"), layout, layout.root / "04_lesion_size",
              load_dataset(blob_dataset), 0, study)
    table = lab.subjects("mean-image:3d-none")
    subjects = layout.subjects("mean-image:3D-None")
    assert list(table.columns) == list(SUBJECT_COLUMNS) and set(table["cohort"]) == {"tumour", "stroke"}
    pd.testing.assert_frame_equal(table, pd.read_csv(subjects))
    written = subjects.stat().st_mtime_ns
    pd.testing.assert_frame_equal(lab.subjects("mean-image:3D-None"), table)
    assert subjects.stat().st_mtime_ns == written  # evaluated once, then reused


# ----------------------------------------------------------------------------------------------
# Reading a zoo study (lab 08)
# ----------------------------------------------------------------------------------------------

@pytest.mark.slow  # a few seconds: a one-epoch autoencoder and the z-score floor
def test_zoo_maps_predicts_a_family_run_of_a_zoo_folder_and_writes_nothing(blob_dataset, tmp_path):
    out = tmp_path / "out"
    run_study("zoo", out, profile="smoke", data=blob_dataset, experiments=["ae-dense:2D-None", "zscore:3D-None"],
              max_epochs=1)
    before = {path: path.stat().st_mtime_ns for path in out.rglob("*")}
    assert zoo_results(out).root == zoo_results(out / "zoo").root == out / "zoo"  # OUT or its zoo/ folder

    floor = zoo_maps(out, "zscore", 3, cohort="tumour")
    metrics = json.loads(ResultsLayout(out / "zoo").metrics("zscore:3D-None").read_text())
    assert floor.experiment == "zscore:3D-None" and floor.threshold == metrics["cohorts"]["tumour"]["threshold"]
    assert list(floor.maps) == load_dataset(blob_dataset).ids(cohort="tumour", split="test")
    m = floor.maps[list(floor.maps)[0]]
    assert m.lesion_voxels > 0 and not np.allclose(m.residual, np.abs(m.image - m.recon))  # the floor's own score
    ae = zoo_maps(out / "zoo", "ae-dense", 2, cohort="stroke", split="val")
    assert list(ae.maps) == load_dataset(blob_dataset).ids(cohort="stroke", split="val")
    assert all(np.allclose(m.residual, np.abs(m.image - m.recon), atol=1e-6) for m in ae.maps.values())
    assert {path: path.stat().st_mtime_ns for path in out.rglob("*")} == before  # read-only

    with pytest.raises(ValueError, match=r"`spatial_dims` must be one of \[3\] for family 'zscore', got 2"):
        zoo_maps(out, "zscore", 2, cohort="tumour")
    with pytest.raises(ValueError, match=r"`cohort` must be one of \['stroke', 'tumour'\] \(scored by zscore"):
        zoo_maps(out, "zscore", 3, cohort="brats")
    with pytest.raises(ValueError, match="`split` must be 'test' or 'val'"):
        zoo_maps(out, "zscore", 3, cohort="tumour", split="train")
    with pytest.raises(ValueError, match="unknown-family"):
        zoo_maps(out, "unknown-family", 3, cohort="tumour")
    with pytest.raises(TypeError, match="`spatial_dims` must be 2 or 3"):
        zoo_maps(out, "zscore", "3", cohort="tumour")
    with pytest.raises(RunError, match="the zoo's evaluation of dae:3D-None \\(seed 0\\) is missing"):
        zoo_maps(out, "dae", 3, cohort="tumour")
    with pytest.raises(RunError, match="no zoo.csv here or in"):
        zoo_results(tmp_path)


# ----------------------------------------------------------------------------------------------
# Executing all of them (smoke profile)
# ----------------------------------------------------------------------------------------------

#: Labs 01-05 build on each other's runs; 06, 07 and 08 run their own studies on lab 00's data set.
CHAINS: dict[str, tuple[str, ...]] = {"models": NOTEBOOKS[:6], "studies": (NOTEBOOKS[0], *NOTEBOOKS[6:])}


def _chain(name):
    """A parameter of ``executed``: the chain, in its own xdist group (one worker runs it, once)."""
    return pytest.param(name, marks=pytest.mark.xdist_group(f"notebooks-{name}"), id=name)


def _in_chain(name):
    """Run a test on one chain's executed notebooks only."""
    return pytest.mark.parametrize("executed", [_chain(name)], indirect=True)


@pytest.fixture(scope="session", params=[_chain(name) for name in CHAINS])
def executed(request, tmp_path_factory):
    """Run one chain of notebooks once, in order, into one shared output folder."""
    out = tmp_path_factory.mktemp(f"notebooks-{request.param}")
    paths = run_notebooks(profile="smoke", out=out, notebooks=list(CHAINS[request.param]))
    return out, paths


def test_the_chains_hold_every_notebook_once_after_the_data_lab():
    assert sorted(set(CHAINS["models"]) | set(CHAINS["studies"])) == sorted(NOTEBOOKS)
    assert all(chain[0] == "00_data_prep.ipynb" for chain in CHAINS.values())
    assert set(CHAINS["models"]) & set(CHAINS["studies"]) == {"00_data_prep.ipynb"}


@pytest.mark.xdist_group("notebooks-models")
def test_a_notebook_group_stays_on_one_worker(request):
    """Under ``pytest -n 2 --dist loadgroup`` (``make test``) xdist puts a test's group in its node id and
    sends the group to one worker. pytest 9.2 with pytest-xdist 3.8 lost the suffix: each worker then
    ran the notebooks fixture itself (constraints.txt pins pytest 9.1.1)."""
    if not getattr(request.config.option, "loadgroup", False):
        pytest.skip("not a worker of `pytest -n N --dist loadgroup`")
    assert request.node.nodeid.endswith("@notebooks-models")


pytestmark_run = [pytest.mark.notebooks, pytest.mark.slow]


def _mark(test):
    for mark in pytestmark_run:
        test = mark(test)
    return test


@_mark
def test_all_ran_in_order(executed):
    out, paths = executed
    assert [p.name for p in paths] in [list(chain) for chain in CHAINS.values()]
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        assert nb.metadata["papermill"]["parameters"]["OUT_DIR"] == str(out)
        assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))


def test_figure_calls_finds_figures_and_nothing_else():
    assert figure_calls("fig = viz.show_slices(x)\nviz.save_figure(fig, p)\nfig") == ["viz.show_slices"]
    assert figure_calls("widgets.threshold_explorer(maps, static=True)") == ["widgets.threshold_explorer"]
    assert figure_calls("viz.display_slice(v)\nprint(1)") == []
    assert figure_calls("not python (") == []


def test_notebook_problems_reports_a_figure_that_is_never_shown(tmp_path):
    hidden = new_code_cell("fig = viz.training_curves(h)\nviz.save_figure(fig, 'a.png')\nh.describe()")
    shown = [new_code_cell("fig = viz.training_curves(h)\nfig"),
             new_code_cell("fig = viz.show_slices(v)\ndisplay(fig)\n1"),
             new_code_cell("widgets.slice_explorer(a, b, c,\n    static=True)")]
    path = _write(tmp_path / "figs.ipynb", [_parameters_cell(), hidden, *shown])
    assert notebook_problems(path) == [
        "cell 1 makes a figure but does not show it (end the cell with it or call display(fig))"]


@_mark
def test_every_figure_cell_holds_a_picture(executed):
    """Every cell that makes a figure shows it as an image (or a plotly figure), never as its repr."""
    _, paths = executed
    checked = 0
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code" or not figure_calls(cell.source):
                continue
            shown = ("display_data", "execute_result")
            data = [o.get("data", {}) for o in cell.outputs if o.get("output_type") in shown]
            pictures = ("image/png", "application/vnd.plotly.v1+json")
            assert any(any(kind in d for kind in pictures) for d in data), f"{path.name} cell {index}: no picture"
            assert not any(d.get("text/plain", "").startswith("<Figure size") and "image/png" not in d for d in data), \
                f"{path.name} cell {index}: a figure shown as text"
            checked += 1
    chain = next(name for name, labs in CHAINS.items() if [p.name for p in paths] == list(labs))
    # 00: 3, 01: 4, 02: 5, 03: 3, 04: 3, 05: 2; 06: 1, 07: 3, 08: 2
    assert checked >= {"models": 20, "studies": 9}[chain]


@_mark
@_in_chain("models")
def test_00_data_prep_outputs(executed):
    out, _ = executed
    summary = json.loads((out / "00_data_prep" / "data_summary.json").read_text())
    assert summary["cohorts"] == {"healthy": 20, "tumour": 6, "stroke": 6}  # smoke phantom counts
    assert summary["image_shape"] == [32, 32, 32]
    for name in ("cohort_montage.png", "preprocessing.png", "lesion_sizes.png"):
        assert (out / "00_data_prep" / name).stat().st_size > 1000


@_mark
@_in_chain("models")
@pytest.mark.parametrize(("name", "experiment"), [("01_vae_2d", "2D-None"), ("02_vae_3d", "3D-None")])
def test_model_labs_outputs(executed, name, experiment):
    out, _ = executed
    summary = json.loads((out / name / "metrics.json").read_text())
    assert summary["experiment"] == experiment
    assert set(summary["cohorts"]) == {"tumour", "stroke"}
    for metrics in summary["cohorts"].values():
        assert 0.0 <= metrics["auprc"] <= 1.0 and 0.0 <= metrics["slice_auprc"] <= 1.0
        assert metrics["dice_d"] <= metrics["oracle_dice_d"] + 1e-9  # the oracle bounds the honest DICE_D
    assert (ResultsLayout(out).run(experiment) / RUN_CHECKPOINT).exists()
    assert (out / name / "reconstructions.png").stat().st_size > 1000


@_mark
@_in_chain("models")
def test_02_compares_2d_and_3d(executed):
    out, _ = executed
    comparison = pd.read_csv(out / "02_vae_3d" / "comparison.csv")
    assert set(comparison["experiment"]) == {"2D-None", "3D-None", "mean-image:3D-None"}  # the floor beside both
    assert (out / "02_vae_3d" / "comparison.png").exists()


@_mark
@_in_chain("models")
def test_03_erasing_ablation_outputs(executed):
    out, _ = executed
    table = pd.read_csv(out / "03_erasing_ablation" / "table1.csv")
    assert sorted(table["experiment"].unique()) == ["2D-None", "2D-Patch-n", "3D-Cube-n", "3D-None"]
    assert (out / "table1.md").exists()
    assert (out / "03_erasing_ablation" / "erasing_3d.png").exists()
    assert (out / "03_erasing_ablation" / "erasing_2d.png").exists()
    paired = pd.read_csv(out / "03_erasing_ablation" / "paired_vs_none.csv")
    assert paired[["experiment", "baseline"]].drop_duplicates().values.tolist() == [
        ["2D-Patch-n", "2D-None"], ["3D-Cube-n", "3D-None"]]
    assert set(paired["cohort"]) == {"tumour", "stroke"} and (paired["ci_low"] <= paired["ci_high"]).all()


@_mark
@_in_chain("models")
def test_04_lesion_size_outputs(executed):
    out, _ = executed
    sizes = pd.read_csv(out / "04_lesion_size" / "lesion_size.csv")
    assert (sizes["lesion_voxels"] > 0).all() and sizes["dice"].between(0, 1).all()
    assert set(sizes["cohort"]) == {"tumour", "stroke"}  # Fig. 4 per test set, as the paper
    summary = json.loads((out / "04_lesion_size" / "lesion_size.json").read_text())
    assert summary["experiments"] == ["2D-None", "2D-Patch-n", "3D-None", "3D-Cube-n"]
    assert summary["best_experiment"] in summary["experiments"]
    assert set(summary["cases"]) == {"tumour", "stroke"}
    for cohort, cases in summary["cases"].items():
        assert [c["label"] for c in cases] == ["best", "median", "worst"]
        assert [c["dice"] for c in cases] == sorted((c["dice"] for c in cases), reverse=True)
        assert (out / "04_lesion_size" / f"fig4_lesion_size_{cohort}.png").stat().st_size > 1000
        assert (out / "04_lesion_size" / f"fig7_example_cases_{cohort}.png").stat().st_size > 1000


@_mark
@_in_chain("models")
def test_05_data_size_outputs(executed):
    out, _ = executed
    table = pd.read_csv(out / "05_data_size" / "data_size.csv")
    assert sorted(table["percent"].unique()) == [50, 100]  # smoke fractions
    assert set(table["experiment"]) == {"2D-None", "2D-Patch-n", "3D-None", "3D-Cube-n"}
    summary = json.loads((out / "05_data_size" / "data_size.json").read_text())
    assert set(summary["slice_auprc"]) == {"2D-None", "2D-Patch-n", "3D-None", "3D-Cube-n"}
    assert all(0.0 <= v <= 1.0 for v in summary["slice_auprc"].values())
    assert summary["cohorts"] == ["tumour", "stroke"]  # Fig. 6 pools the test sets, as the paper
    assert (out / "05_data_size" / "fig6_slice_detection.png").exists()


@_mark
@_in_chain("studies")
def test_06_lambert_spatial_vs_dense_outputs(executed):
    out, _ = executed
    table = pd.read_csv(out / "06_lambert_spatial_vs_dense" / "lambert2021.csv")
    assert list(dict.fromkeys(table["model"])) == ["Spatial 2D", "Spatial 3D", "Dense 2D", "Dense 3D"]
    assert set(table["dataset"]) == {"tumour", "stroke"}
    assert table["mae"].between(0, 1).all() and table["specificity"].between(0, 1).all()
    assert (out / "lambert2021" / "lambert2021.md").exists()  # the study's own table, as `reproduce --study`
    assert (out / "06_lambert_spatial_vs_dense" / "spatial_vs_dense.png").stat().st_size > 1000


@_mark
@_in_chain("studies")
def test_07_recon_plus_supervised_outputs(executed):
    out, _ = executed
    results = out / "07_recon_plus_supervised"
    table = pd.read_csv(results / "behrendt2024.csv")
    assert set(table["method"]) == {"reconstruction", "segmenter"}
    assert set(table["model"]) == {"2D-None", "spatial-vae:2D-None", "ddpm:2D-None"}
    assert set(table["dataset"]) == {"tumour", "stroke"} and table["auprc"].between(0, 1).all()
    assert {"in-domain", "unseen pathology"} <= set(table["view"].dropna())
    summary = json.loads((results / "summary.json").read_text())
    assert summary["rows"] == len(table) and summary["noise_levels"] == [100, 250, 500, 750]
    for name in ("ddpm_noise_levels.png", "segmenter_vs_residual.png"):
        assert (results / name).stat().st_size > 1000


@_mark
@_in_chain("studies")
def test_08_model_zoo_outputs(executed):
    out, _ = executed
    results = out / "08_model_zoo"
    table = pd.read_csv(results / "zoo.csv")
    experiments = ["ae-dense:2D-None", "ae-dense:3D-None", "dae:2D-None", "dae:3D-None"]
    assert list(table["experiment"].unique()) == experiments  # the small zoo of the parameters cell
    assert set(table["dataset"]) == {"tumour", "stroke"} and set(table["spatial_dims"]) == {2, 3}
    scores = table[["dice_d", "dice_d_fpr1", "oracle_dice_d", "auprc"]]
    assert ((scores >= 0) & (scores <= 1)).all().all()
    np.testing.assert_allclose(table["optimism_gap"], table["oracle_dice_d"] - table["dice_d"])
    assert (table["optimism_gap"] >= -1e-9).all()  # the oracle bounds the honest DICE_D
    pd.testing.assert_frame_equal(table, pd.read_csv(out / "zoo" / "zoo.csv"))  # the study's table, as `reproduce`
    assert (out / "zoo" / "report.md").exists() and (out / "zoo" / "figures" / "zoo_3d_vs_2d.png").exists()
    assert (results / "zoo_3d_vs_2d.png").stat().st_size > 1000
    summary = json.loads((results / "zoo.json").read_text())
    assert summary["zoo_dir"] == str(out / "zoo") and summary["experiments"] == experiments
    assert summary["compared"] == ["ae-dense:3D-None", "dae:3D-None"] and summary["cohort"] == "tumour"
    assert summary["subjects"] == load_dataset(ResultsLayout(out).data).ids(cohort="tumour", split="test")
    assert all(np.isfinite(t) and t > 0 for t in summary["thresholds"])
    assert set(summary["best_by_dice_d"]) == {"tumour", "stroke"} and set(summary["best_by_dice_d"].values()) <= \
        set(experiments)


#: Labs run again from a course pack made of each chain's folder: lab 00 (the pack's data set), lab 03 (a study
#: over the pack's runs), lab 07 (a study in the lab's folder whose segmenters' evaluations it writes again).
PACK_LABS = {"models": ["00_data_prep.ipynb", "03_erasing_ablation.ipynb"],
             "studies": ["07_recon_plus_supervised.ipynb"]}
#: The results each of those labs saves, equal from the pack and from training.
PACK_RESULTS = {"models": ["03_erasing_ablation/ablation.json", "03_erasing_ablation/table1.csv"],
                "studies": ["07_recon_plus_supervised/summary.json", "07_recon_plus_supervised/behrendt2024.csv"]}


@_mark
def test_labs_given_a_read_only_course_pack_train_nothing_and_write_only_to_their_own_folder(executed, tmp_path,
                                                                                              monkeypatch):
    out, paths = executed
    chain = next(name for name, labs in CHAINS.items() if [p.name for p in paths] == list(labs))
    monkeypatch.delenv(PACK_VARIABLE, raising=False)
    prepare_pack(out, lambda folder, seed: None, profile="smoke", reuse=True)  # the chain's results, as they are
    before = tree_snapshot(out)
    monkeypatch.setenv(PACK_VARIABLE, str(out))  # set once on a JupyterHub; the kernels inherit it
    student = tmp_path / "student"
    set_writable(out, False)
    try:
        run_notebooks(profile="smoke", out=student, notebooks=PACK_LABS[chain])
    finally:
        set_writable(out, True)
    assert tree_snapshot(out) == before  # not a byte, file or lock written into the pack
    checkpoints = list(student.rglob(RUN_CHECKPOINT))
    assert checkpoints and all(p.is_symlink() for p in checkpoints)  # every run lent, none trained
    # Every evaluation lent, none made again (behrendt2024's rows.json once keyed its data set by the
    # student's path of the lent data set, so lab 07 scored every run again: minutes at the lab profile).
    records = [p for p in student.rglob("*.json") if "evaluation" in p.parts]
    assert records and all(p.is_symlink() for p in records), [str(p) for p in records if not p.is_symlink()]
    for rel in PACK_RESULTS[chain]:
        assert not (student / rel).is_symlink() and (student / rel).read_text() == (out / rel).read_text()


# ----------------------------------------------------------------------------------------------
# The student versions (nbgrader) on the chains' runs
# ----------------------------------------------------------------------------------------------

@_mark
def test_student_versions_run_up_to_their_first_exercise(executed, tmp_path):
    """Each generated student version runs without error until its first exercise asks for the student's work.

    A decision stops in its solution cell (``raise NotImplementedError()``); a function to write is defined with
    that body, so its check cell stops with "not done yet"."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    out, paths = executed
    chain = [p.name for p in paths]
    labs = chain if chain == list(CHAINS["models"]) else chain[1:]  # lab 00 once, in the models chain
    released = make_course(tmp_path / "course", NOTEBOOK_DIR, labs, parameters={"OUT_DIR": str(out)})
    for stem, student in released.items():
        cells = nbformat.read(student, as_version=4).cells
        first = next(i for i, c in enumerate(cells) if c.metadata.get("nbgrader", {}).get("solution"))
        assert "raise NotImplementedError()" in cells[first].source and "BEGIN SOLUTION" not in cells[first].source
        with pytest.raises(PapermillExecutionError) as error:
            papermill.execute_notebook(str(student), str(tmp_path / f"{stem}.ipynb"), kernel_name="python3",
                                       parameters={"INTERACTIVE": False}, cwd=str(student.parent), progress_bar=False)
        stopped = (error.value.ename, error.value.source)
        expected = {("NotImplementedError", cells[first].source), ("ExerciseFeedback", cells[first + 1].source)}
        assert stopped in expected, f"{stem} stopped at {stopped}"
        assert error.value.ename == "NotImplementedError" or error.value.evalue.startswith("not done yet")


@_mark
@_in_chain("models")
def test_autograding_gives_the_instructor_full_marks_and_an_unchanged_student_version_zero(executed, tmp_path):
    from nbgrader.api import Gradebook

    from uadlab.course.release import _nbgrader

    out, _ = executed
    course = tmp_path / "course"
    released = make_course(course, NOTEBOOK_DIR, ["01_vae_2d.ipynb"],
                           parameters={"OUT_DIR": str(out), "INTERACTIVE": False})
    for student, version in (("instructor", course / "source"), ("student", course / "release")):
        (course / "submitted" / student / "01_vae_2d").mkdir(parents=True)
        shutil.copy(version / "01_vae_2d" / "01_vae_2d.ipynb", course / "submitted" / student / "01_vae_2d")
    assert released["01_vae_2d"].is_file()
    _nbgrader(course, "autograde", "01_vae_2d", "--create")
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        instructor = gradebook.find_submission("01_vae_2d", "instructor")
        student = gradebook.find_submission("01_vae_2d", "student")
        assert instructor.max_score == student.max_score == 2
        assert (instructor.score, student.score) == (2, 0)
