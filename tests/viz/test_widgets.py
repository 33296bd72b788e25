"""Tests of uadlab.viz.widgets: the boxes build, react to their controls, and fall back to figures."""

from __future__ import annotations

from types import SimpleNamespace

import ipywidgets
import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from uadlab.evaluation import metrics
from uadlab.evaluation.inference import make_maps
from uadlab.training.synthetic_anomalies import KINDS, SyntheticAnomaly
from uadlab.viz import figures as viz
from uadlab.viz import widgets

matplotlib.use("Agg")

SHAPE = (16, 16, 12)


@pytest.fixture
def subject(rng):
    """A brain box with a lesion that the anomaly map scores higher than the rest."""
    brain = np.zeros(SHAPE, bool)
    brain[2:14, 2:14, 1:11] = True
    lesion = np.zeros(SHAPE, bool)
    lesion[5:9, 5:9, 7:10] = True
    lesion[9, 5:9, 8] = True  # slice 8 holds the most lesion
    image = (rng.random(SHAPE).astype(np.float32) * 0.5 + 0.25) * brain
    recon = np.where(lesion, 0.0, image + rng.normal(0, 0.05, SHAPE)).astype(np.float32)
    return image, brain, lesion, recon


@pytest.fixture
def maps(subject):
    image, brain, lesion, recon = subject
    return [make_maps("s1", image, recon, brain, lesion, postprocess_kwargs={"median_size": 1}),
            make_maps("s2", image, image * 0.9, brain, lesion, postprocess_kwargs={"median_size": 1})]


def _parts(box):
    """(controls in reading order, extra widgets, image) of an explorer box."""
    rows, *extra, image = box.children
    return [control for row in rows.children for control in row.children], extra, image


# ----------------------------------------------------------------------------------------------
# Threshold explorer
# ----------------------------------------------------------------------------------------------

def test_threshold_explorer_builds_widgets(maps):
    box = widgets.threshold_explorer(maps, threshold=0.1)
    assert isinstance(box, ipywidgets.VBox)
    (slider, chooser), (summary,), image = _parts(box)
    assert isinstance(slider, ipywidgets.FloatSlider) and slider.value == pytest.approx(0.1)
    assert chooser.options == (("s1", 0), ("s2", 1))
    assert image.value[:8] == b"\x89PNG\r\n\x1a\n"


def test_threshold_explorer_dice_follows_the_slider(maps):
    box = widgets.threshold_explorer(maps, threshold=0.01)
    (slider, chooser), (summary,), image = _parts(box)
    before_text, before_png = summary.value, image.value
    slider.value = 0.2  # fires the observers, as the frontend would
    expected = metrics.dice_dataset([metrics.binarize(m.anomaly_map, 0.2) for m in maps],
                                    [m.lesion_mask for m in maps])
    assert f"<b>DICE_D</b> = {expected:.4f}" in summary.value
    assert summary.value != before_text
    assert image.value != before_png
    picture = image.value
    chooser.value = 1
    assert image.value != picture


def test_threshold_explorer_static_figure(maps):
    fig = widgets.threshold_explorer(maps, threshold=0.2, subject=1, static=True)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    assert fig.axes[0].get_title().startswith("s2, slice 8")  # the slice with most lesion
    # the operating point pools brain voxels of all subjects: s1's lesion is found, s2's is not
    point = fig.axes[2].lines[-1]
    precision, recall = viz.operating_point([m.anomaly_map for m in maps], [m.lesion_mask for m in maps], 0.2,
                                            mask=[m.brain_mask for m in maps])
    assert (point.get_xdata()[0], point.get_ydata()[0]) == (recall, precision)
    assert recall == pytest.approx(0.5, abs=0.1)


def test_threshold_explorer_default_threshold_is_half_the_maximum(maps):
    slider = _parts(widgets.threshold_explorer(maps))[0][0]
    top = max(float(m.anomaly_map[m.brain_mask].max()) for m in maps)
    assert slider.value == pytest.approx(top / 2)


def test_threshold_explorer_validation(maps, subject):
    image, brain, _, recon = subject
    with pytest.raises(TypeError, match="`static` must be a bool"):
        widgets.threshold_explorer(maps, static="yes")
    with pytest.raises(ValueError, match="`maps` must hold at least one subject"):
        widgets.threshold_explorer([])
    with pytest.raises(ValueError, match=r"`subject` must be an int in \[0, 2\)"):
        widgets.threshold_explorer(maps, subject=2)
    healthy = make_maps("h", image, recon, brain, np.zeros(SHAPE, bool))
    with pytest.raises(ValueError, match="at least one lesion voxel"):
        widgets.threshold_explorer([healthy])
    with pytest.raises(ValueError, match=r"`maps\[0\]` must have a lesion_mask"):
        widgets.threshold_explorer([make_maps("u", image, recon, brain)])
    bad_brain = SimpleNamespace(subject_id="b", image=image, anomaly_map=maps[0].anomaly_map,
                                lesion_mask=maps[0].lesion_mask, brain_mask=brain[:, :, :4])
    with pytest.raises(ValueError, match=r"`maps\[1\].brain_mask` must have shape \(16, 16, 12\)"):
        widgets.threshold_explorer([maps[0], bad_brain])


# ----------------------------------------------------------------------------------------------
# Erasing explorer
# ----------------------------------------------------------------------------------------------

def test_erasing_explorer_builds_and_redraws(subject):
    image, brain, _, _ = subject
    box = widgets.erasing_explorer(image, brain, experiment="3D-Multi-Cube-0")
    controls, _, picture = _parts(box)
    dims, fill, method, seed, prob = controls
    assert (dims.value, method.value, fill.value, prob.value) == (3, "Multi", "0", 1.0)
    first = picture.value
    seed.value = 1
    assert picture.value != first
    dims.value, method.value = 2, "Half"
    assert picture.value[:8] == b"\x89PNG\r\n\x1a\n"


def test_erasing_explorer_static_is_deterministic_and_erases(subject):
    image, brain, _, _ = subject
    a = widgets.erasing_explorer(image, brain, experiment="3D-Cube-0", seed=3, static=True)
    b = widgets.erasing_explorer(image, brain, experiment="3D-Cube-0", seed=3, static=True)
    assert len(a.axes) == 3
    assert a.axes[1].get_title() == "input: 3D-Cube-0\np=1, seed 3 (erased)"
    np.testing.assert_array_equal(a.axes[1].images[0].get_array(), b.axes[1].images[0].get_array())
    assert a.axes[2].images[0].get_array().any()  # some erased voxels on the shown slice


def test_erasing_explorer_none_and_p_zero_erase_nothing(subject):
    image, brain, _, _ = subject
    for kwargs in ({"experiment": "2D-None"}, {"experiment": "2D-Patch-n", "p": 0.0}):
        fig = widgets.erasing_explorer(image, brain, static=True, **kwargs)
        assert fig.axes[1].get_title().endswith("(not erased this draw)")
        assert not fig.axes[2].images[0].get_array().any()


def test_erasing_explorer_validation(subject):
    image, brain, _, _ = subject
    with pytest.raises(ValueError, match="`name` must be one of"):
        widgets.erasing_explorer(image, brain, experiment="3D-Patch-n")
    with pytest.raises(ValueError, match=r"`p` must be a number in \[0, 1\]"):
        widgets.erasing_explorer(image, brain, p=1.5)
    with pytest.raises(ValueError, match="`brain_mask` must have shape"):
        widgets.erasing_explorer(image, brain[:4])
    with pytest.raises(ValueError, match=r"`slice_index` must be an int in \[0, 12\)"):
        widgets.erasing_explorer(image, brain, slice_index=12)


# ----------------------------------------------------------------------------------------------
# Synthetic anomaly explorer
# ----------------------------------------------------------------------------------------------

def test_anomaly_explorer_sliders_over_kinds_and_seeds_redraw(subject):
    image, brain, _, _ = subject
    box = widgets.anomaly_explorer(image, brain, kind="uniform-blob", seed=2)
    controls, _, picture = _parts(box)
    kinds, seeds = controls
    assert list(kinds.options) == list(KINDS) and (kinds.value, seeds.value) == ("uniform-blob", 2)
    first = picture.value
    seeds.value = 3
    second = picture.value
    kinds.value = "sink"
    assert len({first, second, picture.value}) == 3


@pytest.mark.parametrize("kind", KINDS)
def test_anomaly_explorer_static_shows_the_label_of_the_draw(subject, kind):
    image, brain, _, _ = subject
    fig = widgets.anomaly_explorer(image, brain, texture=image[::-1].copy(), kind=kind, seed=5, static=True)
    _, expected = SyntheticAnomaly(kind)(image, brain, np.random.default_rng(5),
                                         texture=image[::-1].copy() if kind == "perlin-tissue" else None)
    assert fig.axes[1].get_title() == f"{kind}, seed 5" and fig.axes[2].get_title() == f"label: {expected.sum()} voxels"
    k = int(fig.axes[0].get_title().split()[-1])
    assert expected[:, :, k].sum() == expected.sum(axis=(0, 1)).max()  # the slice with most anomaly
    np.testing.assert_array_equal(fig.axes[2].images[0].get_array(), viz.display_slice(expected[:, :, k].astype(float)))


def test_anomaly_explorer_validation(subject):
    image, brain, _, _ = subject
    with pytest.raises(ValueError, match="`kind` must be one of"):
        widgets.anomaly_explorer(image, brain, kind="tumour")
    with pytest.raises(ValueError, match=r"`seed` must be an int in \[0, 100\)"):
        widgets.anomaly_explorer(image, brain, seed=100)
    with pytest.raises(ValueError, match="`texture` must have shape"):
        widgets.anomaly_explorer(image, brain, texture=image[:4])
    assert len(widgets.render_static("anomalies", image, brain).axes) == 3


# ----------------------------------------------------------------------------------------------
# Slice explorer and render_static
# ----------------------------------------------------------------------------------------------

def test_slice_explorer_slider_redraws(maps):
    m = maps[0]
    box = widgets.slice_explorer(m.image, m.recon, m.residual, m.lesion_mask, anomaly_map=m.anomaly_map)
    (slider,), _, picture = _parts(box)
    assert (slider.value, slider.max) == (8, SHAPE[2] - 1)  # starts at the slice with most lesion
    first = picture.value
    slider.value = 2
    assert picture.value != first


def test_slice_explorer_static(maps):
    m = maps[0]
    fig = widgets.slice_explorer(m.image, m.recon, m.residual, None, slice_index=4, static=True)
    assert [ax.get_title() for ax in fig.axes] == ["input (slice 4)", "reconstruction", "residual", "ground truth"]
    with pytest.raises(ValueError, match="`recon` must have shape"):
        widgets.slice_explorer(m.image, m.recon[:2], m.residual)
    with pytest.raises(ValueError, match=r"`slice_index` must be an int in \[0, 12\)"):
        widgets.slice_explorer(m.image, m.recon, m.residual, slice_index=-1)


def test_slice_explorer_titles_are_readable_in_a_1280_px_notebook(maps):
    """The picture (90 dpi PNG in an Image widget) is shrunk to the 900 px output area; titles stay about 14 px."""
    m = maps[0]
    fig = widgets.slice_explorer(m.image, m.recon, m.residual, m.lesion_mask, anomaly_map=m.anomaly_map, static=True)
    shrink = min(1.0, 900 / (fig.get_figwidth() * widgets._PNG_DPI))
    assert all(ax.title.get_fontsize() * widgets._PNG_DPI / 72 * shrink >= 13.9 for ax in fig.axes)


def test_render_static_by_name(maps, subject):
    image, brain, _, _ = subject
    m = maps[0]
    assert len(widgets.render_static("threshold", maps, threshold=0.1).axes) == 3
    assert len(widgets.render_static("erasing", image, brain).axes) == 3
    assert len(widgets.render_static("slices", m.image, m.recon, m.residual, m.lesion_mask).axes) == 4
    with pytest.raises(ValueError, match="`widget_name` must be one of"):
        widgets.render_static("histogram")


def test_explorer_controls_are_laid_out_for_a_1280_px_window(maps, subject):
    """Fixed widths that a row cannot squeeze, at most three controls a row, rows no wider than ~1100 px."""
    image, brain, _, _ = subject
    m = maps[0]
    boxes = {"threshold": widgets.threshold_explorer(maps), "erasing": widgets.erasing_explorer(image, brain),
             "slices": widgets.slice_explorer(m.image, m.recon, m.residual, m.lesion_mask)}
    for name, box in boxes.items():
        for row in box.children[0].children:
            assert len(row.children) <= 2, name
            widths = [c.layout.width for c in row.children]
            assert all(w is not None for w in widths), name
            assert sum(int(w[:-2]) for w in widths if w.endswith("px")) <= 1100, name
            assert all(c.layout.flex == "0 0 auto" for c in row.children), name
        sliders = [c for row in box.children[0].children for c in row.children
                   if isinstance(c, (ipywidgets.FloatSlider, ipywidgets.IntSlider))]
        assert sliders and all(int(s.layout.width[:-2]) >= 480 for s in sliders), name


@pytest.mark.parametrize("experiment", ["3D-Multi-Cube-n", "2D-Half-Slice-0"])
def test_erasing_titles_do_not_run_into_each_other_at_p_zero(subject, experiment):
    """The longest middle title ("... (not erased this draw)") stays above its own panel."""
    image, brain, _, _ = subject
    fig = widgets.erasing_explorer(image, brain, experiment=experiment, p=0.0, static=True)
    fig.draw_without_rendering()  # lays the figure out as savefig does
    for ax in fig.axes:
        title, panel = ax.title.get_window_extent(), ax.get_window_extent()
        assert panel.x0 - 2 <= title.x0 and title.x1 <= panel.x1 + 2, ax.get_title()


# ----------------------------------------------------------------------------------------------
# Family explorer
# ----------------------------------------------------------------------------------------------

@pytest.fixture
def families(subject):
    """Two families' maps of the same three subjects; s3's lesion lies on slice 3, not 8."""
    image, brain, lesion, recon = subject
    other = np.zeros(SHAPE, bool)
    other[6:10, 6:10, 3] = True
    lesions = {"s1": lesion, "s2": lesion, "s3": other}
    options = {"postprocess_kwargs": {"median_size": 1}}
    a = {i: make_maps(i, image, recon, brain, m, **options) for i, m in lesions.items()}
    b = {i: make_maps(i, image, image * 0.8, brain, m, score=np.abs(image - recon) * 3, **options)
         for i, m in lesions.items()}
    return a, b


def test_family_explorer_builds_a_subject_dropdown_and_a_slice_slider(families):
    box = widgets.family_explorer(*families, labels=("ae-dense", "dae"))
    assert isinstance(box, ipywidgets.VBox)
    (chooser, slider), extra, image = _parts(box)
    assert isinstance(chooser, ipywidgets.Dropdown) and chooser.options == (("s1", 0), ("s2", 1), ("s3", 2))
    assert isinstance(slider, ipywidgets.IntSlider) and (slider.value, slider.max) == (8, SHAPE[2] - 1)
    assert extra == [] and image.value[:8] == b"\x89PNG\r\n\x1a\n"


def test_family_explorer_both_rows_follow_the_dropdown_and_the_slider(families):
    def static(subject, k):
        return widgets._png(widgets.family_explorer(*families, labels=("ae-dense", "dae"), subject=subject,
                                                    slice_index=k, static=True))

    box = widgets.family_explorer(*families, labels=("ae-dense", "dae"))
    (chooser, slider), _, image = _parts(box)
    assert image.value == static(0, 8)
    slider.value = 5
    assert image.value == static(0, 5)
    chooser.value = 1  # a new subject opens at its slice with most lesion
    assert slider.value == 8 and image.value == static(1, 8)
    slider.value = 5
    assert image.value == static(1, 5)
    chooser.value = 2
    assert slider.value == 3 and image.value == static(2, 3)


def test_family_explorer_draws_once_when_the_dropdown_moves_the_slider(families, monkeypatch):
    box = widgets.family_explorer(*families)
    (chooser, slider), _, _ = _parts(box)
    drawn = []
    render = widgets._png
    monkeypatch.setattr(widgets, "_png", lambda fig: drawn.append(fig) or render(fig))
    chooser.value = 1  # s2's lesion lies on slice 8 too: the slider stays
    assert slider.value == 8 and len(drawn) == 1
    chooser.value = 2  # moves the slider from 8 to 3
    assert slider.value == 3 and len(drawn) == 2


def test_family_explorer_static_shows_each_family_with_its_own_score_and_threshold(families):
    fig = widgets.family_explorer(*families, labels=("ae-dense", "dae"), thresholds=(0.1, None), subject=2,
                                  static=True)
    assert isinstance(fig, Figure) and len(fig.axes) == 8
    assert [ax.get_title() for ax in fig.axes] == [
        "s3, slice 3", "reconstruction", "residual |x - recon|", "anomaly map > 0.1",
        "s3, slice 3", "reconstruction", "the family's own score", "anomaly map"]
    assert [fig.axes[0].get_ylabel(), fig.axes[4].get_ylabel()] == ["ae-dense", "dae"]
    assert len(fig.axes[3].collections) == 2 and len(fig.axes[7].collections) == 1  # lesion (+ prediction) outlines


def test_family_explorer_takes_sequences_and_aligns_the_second_set_to_the_first(families):
    a, b = families
    box = widgets.family_explorer(list(a.values()), dict(reversed(list(b.items()))))
    (chooser, _), _, image = _parts(box)
    assert chooser.options == (("s1", 0), ("s2", 1), ("s3", 2))
    assert image.value == widgets._png(widgets.family_explorer(a, b, static=True))


def test_family_explorer_refuses_different_subjects_in_one_error(families):
    a, b = families
    b = {"s1": b["s1"], "s3": b["s3"], "s4": b["s1"]}
    with pytest.raises(ValueError, match=r"`maps_a` and `maps_b` must hold the same subjects, got only in ae: "
                                         r"\['s2'\], only in dae: \['s4'\]"):
        widgets.family_explorer(a, b, labels=("ae", "dae"))


def test_family_explorer_validation(families, subject):
    a, b = families
    with pytest.raises(TypeError, match="`static` must be a bool"):
        widgets.family_explorer(a, b, static=1)
    with pytest.raises(TypeError, match="`maps_a` must be a sequence of SubjectMaps or a mapping"):
        widgets.family_explorer(None, b)
    with pytest.raises(ValueError, match="`maps_b` must hold at least one subject"):
        widgets.family_explorer(a, {})
    with pytest.raises(ValueError, match="`maps_a` must hold each subject once"):
        widgets.family_explorer([a["s1"], a["s1"]], b)
    with pytest.raises(TypeError, match="`labels` must be a pair of str"):
        widgets.family_explorer(a, b, labels=("ae",))
    with pytest.raises(ValueError, match="`labels` must be two different non-empty names"):
        widgets.family_explorer(a, b, labels=("ae", "ae"))
    with pytest.raises(TypeError, match="`thresholds` must be None or a pair"):
        widgets.family_explorer(a, b, thresholds=0.1)
    with pytest.raises(ValueError, match="`thresholds` must be a pair of finite numbers or None"):
        widgets.family_explorer(a, b, thresholds=(np.nan, None))
    with pytest.raises(ValueError, match=r"`subject` must be an int in \[0, 3\)"):
        widgets.family_explorer(a, b, subject=3)
    with pytest.raises(ValueError, match=r"`slice_index` must be an int in \[0, 12\)"):
        widgets.family_explorer(a, b, slice_index=12)
    image, brain, lesion, recon = subject
    small = make_maps("s2", image[:, :, :6], recon[:, :, :6], brain[:, :, :6], lesion[:, :, :6])
    with pytest.raises(ValueError, match=r"`maps_b\['s2'\].image` must have shape \(16, 16, 12\)"):
        widgets.family_explorer(a, {**b, "s2": small})


def test_family_explorer_renders_static_by_name_and_fits_a_1280_px_window(families):
    assert "families" in widgets.WIDGETS
    assert len(widgets.render_static("families", *families).axes) == 8
    rows = widgets.family_explorer(*families).children[0].children
    for row in rows:
        widths = [c.layout.width for c in row.children]
        assert len(row.children) == 1 and all(c.layout.flex == "0 0 auto" for c in row.children)
        assert sum(int(w[:-2]) for w in widths) <= 1100
    assert int(rows[1].children[0].layout.width[:-2]) >= 480  # the slider keeps a long track
