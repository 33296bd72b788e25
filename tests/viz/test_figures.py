"""Tests of uadlab.viz.figures: orientation, panel counts, validation, and atomic saving."""

from __future__ import annotations

import re
from types import SimpleNamespace

import matplotlib
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score

from uadlab.viz import figures as viz

matplotlib.use("Agg")


@pytest.fixture
def volume(rng) -> np.ndarray:
    return rng.random((12, 14, 10)).astype(np.float32)


@pytest.fixture
def lesion() -> np.ndarray:
    mask = np.zeros((12, 14, 10), bool)
    mask[3:6, 4:8, 7] = True  # most lesion on slice 7
    mask[3:4, 4:5, 2] = True
    return mask


def _visible_axes(fig) -> int:
    return sum(ax.get_visible() for ax in fig.axes)


# ----------------------------------------------------------------------------------------------
# Orientation and slices
# ----------------------------------------------------------------------------------------------

def test_display_slice_puts_anterior_up_and_left_on_the_left():
    volume = np.zeros((3, 4, 5))
    volume[0, 3, 2] = 1.0  # leftmost (X=0), most anterior (Y=3) voxel of the middle axial slice
    shown = viz.display_slice(volume)
    assert shown.shape == (4, 3)  # rows = Y, columns = X
    assert shown[0, 0] == 1.0  # top-left corner


def test_display_slice_sagittal_and_coronal_put_superior_up():
    volume = np.zeros((3, 4, 5))
    volume[1, 2, 4] = 1.0  # most superior voxel
    assert viz.display_slice(volume, axis=0, index=1)[0].any()
    assert viz.display_slice(volume, axis=1, index=2)[0].any()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"axis": 3}, "`axis` must be 0, 1 or 2"),
    ({"index": 5}, r"`index` must be an int in \[0, 5\)"),
    ({"index": -1}, r"`index` must be an int"),
])
def test_display_slice_rejects_bad_axis_and_index(kwargs, message):
    with pytest.raises(ValueError, match=message):
        viz.display_slice(np.zeros((3, 4, 5)), **kwargs)


def test_display_slice_rejects_4d():
    with pytest.raises(ValueError, match=r"`volume` must be an \(X, Y, Z\) volume"):
        viz.display_slice(np.zeros((2, 2, 2, 2)))


def test_show_slices_one_panel_per_volume_with_titles(volume, lesion):
    fig = viz.show_slices({"image": volume, "lesion": lesion}, slice_index=[7, 7])
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["image", "lesion"]
    shown = fig.axes[1].images[0].get_array()
    np.testing.assert_array_equal(shown, viz.display_slice(lesion, index=7).astype(np.float32))


def test_show_slices_draws_into_given_axes(volume):
    from matplotlib.figure import Figure

    fig = Figure()
    axes = fig.subplots(1, 2)
    assert viz.show_slices({"a": volume, "b": volume}, ax=axes) is fig


def test_show_slices_validation(volume):
    with pytest.raises(TypeError, match="`volumes` must be a non-empty mapping"):
        viz.show_slices([volume])
    with pytest.raises(ValueError, match="`slice_index` must be an int, None or 2 indices"):
        viz.show_slices({"a": volume, "b": volume}, slice_index=[1])
    from matplotlib.figure import Figure

    with pytest.raises(ValueError, match="`ax` must be None or hold 2 axes, got 1"):
        viz.show_slices({"a": volume, "b": volume}, ax=Figure().subplots())


def test_cohort_montage_panels_and_lesion_outline(volume, lesion):
    fig = viz.cohort_montage(np.ones((20, 20, 20)), [volume] * 3, [(volume, lesion)] * 3)
    assert len(fig.axes) == 7
    assert fig.axes[0].get_title() == "template"
    # lesion panels: shown at the slice with most lesion, with a contour drawn
    lesion_panel = fig.axes[4]
    np.testing.assert_array_equal(lesion_panel.images[0].get_array(), viz.display_slice(volume, index=7))
    assert lesion_panel.collections, "expected a lesion outline"
    assert not fig.axes[1].collections


def test_cohort_montage_validation(volume, lesion):
    with pytest.raises(ValueError, match="must match the numbers of cases"):
        viz.cohort_montage(volume, [volume], [], healthy_titles=["a", "b"])
    with pytest.raises(ValueError, match=r"`lesion\[0\]` must be an \(image, lesion_mask\) pair"):
        viz.cohort_montage(volume, [], [(volume, lesion[:5])])


def test_erasing_gallery_shows_the_slice_where_most_was_erased(volume):
    erased = volume.copy()
    erased[2:6, 2:6, 3] = 0.0
    fig = viz.erasing_gallery({"3D-Cube-0": erased}, target=volume)
    assert [ax.get_title() for ax in fig.axes] == ["target", "3D-Cube-0"]
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), viz.display_slice(erased, index=3))


def test_erasing_gallery_grid_and_validation(volume):
    examples = {f"e{i}": volume for i in range(5)}
    fig = viz.erasing_gallery(examples, target=volume, ncols=4)
    assert _visible_axes(fig) == 6 and len(fig.axes) == 8  # 2 rows of 4, two hidden
    with pytest.raises(ValueError, match="must have the target's shape"):
        viz.erasing_gallery({"x": volume[:, :, 0]}, target=volume)
    with pytest.raises(TypeError, match="`examples` must be a non-empty mapping"):
        viz.erasing_gallery({})


# ----------------------------------------------------------------------------------------------
# Fig. 7
# ----------------------------------------------------------------------------------------------

def test_example_cases_plot_volumes_one_row_per_case(volume, lesion):
    case = {"image": volume, "recon": volume * 0.5, "residual": volume * 0.5, "anomaly_map": volume * 0.5,
            "lesion_mask": lesion, "subject_id": "tumour_001"}
    fig = viz.example_cases_plot([case, case], threshold=0.2)
    assert len(fig.axes) == 10
    assert [ax.get_title() for ax in fig.axes[:5]] == ["input", "reconstruction", "difference", "heat map",
                                                       "ground truth"]
    assert fig.axes[5].get_ylabel() == "tumour_001"
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), viz.display_slice(volume, index=7))
    assert fig.axes[3].collections, "expected the thresholded outline on the heat map"


def _notebook_px(fig, size_pt, dpi=viz.DISPLAY_DPI):
    """Height (em, px) of text of ``size_pt`` points on screen: the PNG is shrunk to a 900 px output area."""
    return size_pt * dpi / 72 * min(1.0, 900 / (fig.get_figwidth() * dpi))


@pytest.mark.parametrize("make", [
    lambda v: viz.show_slices({f"panel {i}": v for i in range(6)}),
    lambda v: viz.erasing_gallery({f"3D-Multi-Cube-{i}": v for i in range(7)}, target=v, ncols=4),  # as lab 03
    lambda v: viz.example_cases_plot([{"image": v, "recon": v, "residual": v, "anomaly_map": v,
                                       "lesion_mask": v > 0.5, "label": "best"}]),
])
def test_panel_titles_are_readable_in_a_1280_px_notebook(volume, make):
    """About 14 px high on screen however many panels (9 pt on a 16.8 inch gallery showed 6.7 px)."""
    fig = make(volume)
    titled = [ax.title for ax in fig.axes if ax.get_title()]
    assert titled and all(_notebook_px(fig, t.get_fontsize()) >= 13.9 for t in titled)
    assert fig.get_figwidth() <= 12.0 + 1e-9  # a grid is capped: its titles need not grow past its panels
    fig.draw_without_rendering()
    for ax in fig.axes:  # and every title stays above its own panel
        if ax.get_title():
            title, panel = ax.title.get_window_extent(), ax.get_window_extent()
            assert panel.x0 - 2 <= title.x0 and title.x1 <= panel.x1 + 2, ax.get_title()


def test_example_cases_plot_accepts_analysis_example_cases(volume, lesion):
    case = SimpleNamespace(subject_id="s", label="best", dice=0.25, image=volume[:, :, 7], recon=volume[:, :, 7],
                           residual=volume[:, :, 7], anomaly_map=volume[:, :, 7],
                           prediction=lesion[:, :, 7], lesion_mask=lesion[:, :, 7])
    fig = viz.example_cases_plot([case])
    assert len(fig.axes) == 5
    assert fig.axes[0].get_ylabel() == "best\ns\nDICE 0.25"


def test_example_cases_plot_validation(volume):
    with pytest.raises(ValueError, match="`cases` must hold at least one case"):
        viz.example_cases_plot([])
    with pytest.raises(ValueError, match=r"`cases\[0\]` must have `recon`"):
        viz.example_cases_plot([{"image": volume}])


# ----------------------------------------------------------------------------------------------
# Figs. 4-6 and learning curves
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def sizes() -> pd.DataFrame:
    return pd.DataFrame({"lesion_voxels": [10, 50, 100, 500, 1000, 20],
                         "dice": [0.1, 0.2, 0.3, 0.5, 0.6, 0.1],
                         "experiment": ["2D-None"] * 3 + ["3D-None"] * 3})


def test_lesion_size_plot_draws_one_curve_per_fit(sizes):
    fits = {"2D-None": np.poly1d([0.0, 0.0, 0.2, 0.0]), "3D-None": [0.0, 0.0, 0.1, 0.1]}
    fig = viz.lesion_size_plot(sizes, fits)
    ax = fig.axes[0]
    curves = [line for line in ax.lines if line.get_gid() == "size_fit"]
    assert len(curves) == 2
    assert ax.get_xscale() == "log"
    x, y = curves[0].get_data()
    np.testing.assert_allclose(y, np.clip(0.2 * np.log10(x), 0, 1))  # the fit is in log10(voxels)


def test_lesion_size_plot_names_its_fits_degrees_in_the_title(sizes):
    fig = viz.lesion_size_plot(sizes, {"2D-None": [0.1, 0.2, 0.0], "3D-None": [0.2, 0.0, 0.1, 0.1]},
                               title="Fig. 4: DICE vs lesion size, tumour")
    assert fig.axes[0].get_title() == "Fig. 4: DICE vs lesion size, tumour (cubic and quadratic fits)"
    assert viz.lesion_size_plot(sizes).axes[0].get_title() == "Fig. 4: DICE vs lesion size"  # no fit, no degree


@pytest.mark.parametrize("voxels", [[55, 70, 95], [30, 45, 60, 90], [18, 30, 57, 130], [20, 70, 300, 900],
                                    [10, 1000, 40000]])
def test_lesion_size_plot_labels_its_size_axis_on_any_range(sizes, voxels):
    """A range without a decade in it (30-90 voxels, the smoke profile's tumours) still gets numbers."""
    df = pd.DataFrame({"lesion_voxels": voxels, "dice": np.linspace(0.1, 0.6, len(voxels))})
    ax = viz.lesion_size_plot(df, hue=None).axes[0]
    ax.figure.draw_without_rendering()
    low, high = ax.get_xlim()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text() and low <= t.get_position()[0] <= high]
    assert 2 <= len(labels) <= 6, labels


def test_lesion_size_plot_without_fit_or_hue(sizes):
    fig = viz.lesion_size_plot(sizes.drop(columns="experiment"))
    assert not [line for line in fig.axes[0].lines if line.get_gid() == "size_fit"]


def test_lesion_size_plot_validation(sizes):
    with pytest.raises(TypeError, match="`df` must be a pandas DataFrame"):
        viz.lesion_size_plot(sizes.to_dict())
    with pytest.raises(ValueError, match=r"`df` must have columns \['lesion_voxels', 'dice'\]"):
        viz.lesion_size_plot(sizes.drop(columns="dice"))
    with pytest.raises(ValueError, match="must be positive"):
        viz.lesion_size_plot(sizes.assign(lesion_voxels=0))


def test_data_size_plot_in_percent():
    df = pd.DataFrame({"experiment": ["2D-None", "2D-None", "3D-None", "3D-None"], "fraction": [0.5, 1.0, 0.5, 1.0],
                       "auprc": [0.1, 0.2, 0.3, 0.4], "dataset": "tumour"})
    ax = viz.data_size_plot(df).axes[0]
    assert ax.get_xlabel() == "healthy training data used (%)"
    ys = sorted(float(v) for line in ax.lines for v in line.get_ydata())
    assert ys[-1] == pytest.approx(40.0)
    ax.figure.draw_without_rendering()
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1  # beside the lines, not on them
    with pytest.raises(ValueError, match="missing \\['auprc'\\]"):
        viz.data_size_plot(df.drop(columns="auprc"))


def test_slice_detection_plot_accepts_tuples_and_frames():
    curves = {"3D-None": (np.array([1.0, 0.5]), np.array([0.0, 1.0]), 0.71), "2D-None": (np.ones(2), np.zeros(2))}
    ax = viz.slice_detection_plot(curves).axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["3D-None (AUPRC 71.0 %)", "2D-None"]
    frame = pd.DataFrame({"experiment": ["a", "a"], "precision": [1.0, 0.5], "recall": [0.0, 1.0]})
    assert len(viz.slice_detection_plot(frame).axes[0].lines) == 1


def test_slice_detection_plot_validation():
    with pytest.raises(TypeError, match="`curves` must be a mapping or a DataFrame"):
        viz.slice_detection_plot([1, 2])
    with pytest.raises(ValueError, match=r"`curves\['a'\]` must hold equally long"):
        viz.slice_detection_plot({"a": (np.ones(2), np.ones(3))})


def test_training_curves_marks_best_epoch_and_shares_one_unit():
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_l1_per_voxel": [0.3, 0.2, 0.1],
                            "val_l1_per_voxel": [0.05, 0.01, 0.02]})
    ax = viz.training_curves(history).axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "healthy validation", "best epoch 2"]
    train_line, val_line = ax.lines[:2]
    np.testing.assert_array_equal(val_line.get_ydata(), history["val_l1_per_voxel"])
    low, high = ax.get_ylim()
    assert low <= 0.01 and high < 0.5  # per-voxel scale: the validation curve is not flattened at 0
    with pytest.raises(ValueError, match="`history` must have columns"):
        viz.training_curves(history.drop(columns="val_l1_per_voxel"))


def test_lesion_volume_plot_ignores_healthy_subjects():
    subjects = pd.DataFrame({"cohort": ["healthy", "tumour", "stroke"], "lesion_voxels": [0, 100, 10]})
    ax = viz.lesion_volume_plot(subjects).axes[0]
    assert sum(len(c.get_offsets()) for c in ax.collections) == 2


# ----------------------------------------------------------------------------------------------
# Precision-recall (plotly) and orthogonal slices
# ----------------------------------------------------------------------------------------------

def test_operating_point_known_answer():
    scores = np.array([0.1, 0.6, 0.8, 0.9])
    labels = np.array([0, 0, 1, 1])
    assert viz.operating_point(scores, labels, 0.5) == (2 / 3, 1.0)
    assert viz.operating_point(scores, labels, 0.85) == (1.0, 0.5)
    assert viz.operating_point(scores, labels, 1.0) == (1.0, 0.0)  # empty prediction
    mask = np.array([0, 1, 1, 1], bool)
    assert viz.operating_point([scores], [labels], 0.0, mask=[mask]) == (2 / 3, 1.0)


def test_pr_curve_figure_matches_sklearn_and_marks_the_threshold(rng):
    scores = rng.random(200)
    labels = rng.random(200) < scores * 0.5
    fig = viz.pr_curve_figure(scores, labels, operating_point=0.5)
    assert len(fig.data) == 2
    expected = 100 * average_precision_score(labels, scores)
    assert re.search(rf"AUPRC {expected:.1f} %", fig.layout.title.text)
    precision, recall = viz.operating_point(scores, labels, 0.5)
    assert (fig.data[1].x[0], fig.data[1].y[0]) == (recall, precision)


def test_pr_curve_figure_validation():
    with pytest.raises(ValueError, match="at least one positive voxel"):
        viz.pr_curve_figure(np.ones(4), np.zeros(4))
    with pytest.raises(ValueError, match="the same number of voxels"):
        viz.pr_curve_figure(np.ones(4), np.zeros(3))


def test_orthogonal_slices_three_planes_and_overlay(volume, lesion):
    assert len(viz.orthogonal_slices(volume).data) == 3
    fig = viz.orthogonal_slices(volume, lesion, index=(3, 4, 7))
    assert len(fig.data) == 6
    np.testing.assert_array_equal(np.asarray(fig.data[4].z), volume[:, :, 7].T)  # axial plane, Y up
    overlays = [trace for trace in fig.data if trace.name == "overlay"]
    assert all(t.hoverongaps is False and "NaN" not in t.hovertemplate for t in overlays)  # no "z: NaN" on hover
    assert "intensity" in fig.data[0].hovertemplate


def test_orthogonal_slices_validation(volume):
    with pytest.raises(ValueError, match=r"`volume` must be an \(X, Y, Z\) volume"):
        viz.orthogonal_slices(volume[0])
    with pytest.raises(ValueError, match="`overlay` must have the volume's shape"):
        viz.orthogonal_slices(volume, volume[:2])
    with pytest.raises(ValueError, match="`index` must be 3 voxel indices"):
        viz.orthogonal_slices(volume, index=(0, 0, 99))


# ----------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------

def test_save_figure_png_and_html(tmp_path, volume, lesion):
    png = viz.save_figure(viz.show_slices({"a": volume}), tmp_path / "sub" / "a.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = viz.save_figure(viz.orthogonal_slices(volume, lesion), tmp_path / "b.html")
    assert "plotly" in html.read_text()[:5000].lower()
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.png", "b.html", "sub"]  # no temporary left
    viz.save_figure(viz.show_slices({"a": volume}), png)  # replacing a derived figure is fine


def test_save_figure_validation(tmp_path, volume):
    with pytest.raises(ValueError, match=r"`path` must end in \['.pdf', '.png', '.svg'\]"):
        viz.save_figure(viz.show_slices({"a": volume}), tmp_path / "a.html")
    with pytest.raises(ValueError, match="`path` must end in '.html'"):
        viz.save_figure(viz.orthogonal_slices(volume), tmp_path / "a.png")
    with pytest.raises(TypeError, match="`fig` must be a matplotlib or plotly figure"):
        viz.save_figure(object(), tmp_path / "a.png")


def test_seed_spread_plot_one_panel_per_test_set_one_dot_per_seed():
    rows = pd.DataFrame({"experiment": ["2D-None"] * 4 + ["3D-None"] * 4,
                         "dataset": ["tumour", "tumour", "stroke", "stroke"] * 2, "seed": [0, 1] * 4,
                         "dice_d": [0.2, 0.3, 0.1, np.nan, 0.25, 0.27, 0.12, 0.14]})
    fig = viz.seed_spread_plot(rows)
    tumour, stroke = fig.axes
    assert tumour.get_title() == "tumour, 2 seed(s)" and "DICE_D of every training seed" in fig._suptitle.get_text()
    dots = np.concatenate([c.get_offsets()[:, 1] for c in tumour.collections])
    np.testing.assert_allclose(sorted(dots), [20, 25, 27, 30])
    assert [round(p.get_height(), 6) for p in tumour.patches] == [25.0, 26.0]  # bars at the means
    assert len(np.concatenate([c.get_offsets() for c in stroke.collections])) == 3  # the NaN seed is skipped
    assert [t.get_text() for t in stroke.get_xticklabels()] == ["2D-None", "3D-None"]
    with pytest.raises(ValueError, match="seed"):
        viz.seed_spread_plot(rows.drop(columns="seed"))


def test_dimension_plot_puts_each_family_3d_against_its_2d_with_seed_sd():
    summary = pd.DataFrame({"family": ["ae-dense", "ae-dense", "zscore"], "spatial_dims": [2, 3, 3],
                            "dataset": "tumour", "dice_d": [0.30, 0.40, 0.10], "dice_d_seed_sd": [0.02, 0.01, np.nan]})
    fig = viz.dimension_plot(summary)
    (ax,) = fig.axes
    points = [line.get_xydata() for line in ax.lines if line.get_marker() == "o"]
    np.testing.assert_allclose(points[0], [[30.0, 40.0]])  # x: 2D, y: 3D, percent
    assert any(np.allclose(line.get_ydata(), 10.0) for line in ax.lines if line.get_linestyle() == "--")  # 3D only
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ae-dense"]
    only_3d = viz.dimension_plot(summary[summary["family"] == "zscore"])  # no pair: no legend, no warning
    assert only_3d.axes[0].get_legend() is None
    with pytest.raises(ValueError, match="spatial_dims"):
        viz.dimension_plot(summary.drop(columns="spatial_dims"))


# ----------------------------------------------------------------------------------------------
# Display in notebooks
# ----------------------------------------------------------------------------------------------

def test_static_figures_display_as_png_without_pyplot(volume, lesion):
    """Every static figure shows as a picture when it ends a cell (IPython's formatter, as Jupyter)."""
    from IPython.core.formatters import DisplayFormatter

    formatter = DisplayFormatter()
    history = pd.DataFrame({"epoch": [1, 2], "train_l1_per_voxel": [0.2, 0.1], "val_l1_per_voxel": [0.1, 0.1]})
    figures = [viz.show_slices({"a": volume}), viz.erasing_gallery({"x": volume}, target=volume),
               viz.example_cases_plot([{"image": volume, "recon": volume, "residual": volume,
                                        "anomaly_map": volume, "lesion_mask": lesion}]),
               viz.training_curves(history)]
    for fig in figures:
        data, _ = formatter.format(fig)
        assert data["image/png"][:8] == b"\x89PNG\r\n\x1a\n"
    width, height = figures[0].get_size_inches() * viz.DISPLAY_DPI
    import struct
    png = formatter.format(figures[0])[0]["image/png"]
    assert struct.unpack(">II", png[16:24]) == (round(width), round(height))  # the IHDR size


def test_new_figure_defaults_to_constrained_layout_and_takes_options():
    fig = viz.new_figure((3.0, 2.0))
    assert fig.get_layout_engine().__class__.__name__ == "ConstrainedLayoutEngine"
    assert tuple(fig.get_size_inches()) == (3.0, 2.0)
    assert viz.new_figure((1.0, 1.0), layout=None).get_layout_engine() is None
