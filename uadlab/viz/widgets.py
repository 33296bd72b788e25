"""Interactive explorers for the labs: threshold, spatial erasing, slices (ipywidgets).

Each ``*_explorer`` function returns an :class:`ipywidgets.VBox` of controls above a rendered
picture; moving a control redraws the picture at once (the observers run in the kernel, so the
boxes also work in tests without a browser). The picture is a matplotlib figure rendered to PNG
into an :class:`ipywidgets.Image`, which needs no GUI backend.

Headless runs (papermill, CI) pass ``static=True`` (the notebooks pass ``static=not INTERACTIVE``):
the function then returns the same picture as a :class:`matplotlib.figure.Figure` for the
initial control values, so nothing waits for a frontend. :func:`render_static` does the same by
name and produces the documentation images (``docs/widget_*.png``).

- :func:`threshold_explorer`: the anomaly-map threshold (Bengs et al. 2021, Sec. 2.3) -- the
  binarised map on a slice, DICE_D over all subjects and the operating point on the voxel-wise
  precision-recall curve.
- :func:`erasing_explorer`: the spatial erasing of Sec. 2.2 / Fig. 3 -- method, fill, probability
  and seed; the erased input beside the unerased target.
- :func:`slice_explorer`: input, reconstruction, residual and ground truth, slice by slice.
- :func:`anomaly_explorer`: the synthetic anomalies of Behrendt et al. 2024's segmenter training
  (:mod:`uadlab.training.synthetic_anomalies`) -- a slider over the kinds and one over seeds.
- :func:`family_explorer`: two model families (or any two runs) on the same subjects, one row
  each -- input, reconstruction, voxel score and anomaly map, a subject chooser and a slice slider.

Shape:
    image, recon, residual, anomaly_map: ``(X, Y, Z)`` float; brain_mask, lesion_mask: ``(X, Y, Z)``
    bool. Slices are axial (``volume[:, :, k]``), shown as in :func:`uadlab.viz.figures.display_slice`.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from uadlab._checks import check_int, check_real
from uadlab.evaluation import metrics
from uadlab.evaluation.inference import lesion_slice
from uadlab.training.experiments import FAMILIES, experiment_name, parse_experiment
from uadlab.training.synthetic_anomalies import KINDS, SyntheticAnomaly
from uadlab.viz import figures as viz

__all__ = ["WIDGETS", "threshold_explorer", "erasing_explorer", "slice_explorer", "anomaly_explorer",
           "family_explorer", "render_static"]

#: Names accepted by :func:`render_static`.
WIDGETS: tuple[str, ...] = ("threshold", "erasing", "slices", "anomalies", "families")

_SLIDER_STEPS = 200  # resolution of the threshold slider over [0, max score]
_PNG_DPI = 90


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------

def _figure(ncols: int, *, nrows: int = 1, panel: float = 2.8):
    """A displayable pyplot-free figure (:func:`uadlab.viz.figures.new_figure`): ``nrows`` x ``ncols`` axes, by row."""
    fig = viz.new_figure((panel * ncols, panel * nrows + 0.5))
    return fig, list(np.ravel(fig.subplots(nrows, ncols, squeeze=False)))


def _png(fig: Any) -> bytes:
    """The figure as PNG bytes (for an :class:`ipywidgets.Image`)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_PNG_DPI)
    return buffer.getvalue()


def _volume(array: Any, name: str, shape: tuple[int, ...] | None = None, *, dtype: Any = np.float32) -> np.ndarray:
    """``array`` as an ``(X, Y, Z)`` array of ``dtype``; ValueError naming it otherwise."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"`{name}` must be an (X, Y, Z) volume, got shape {array.shape!r}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"`{name}` must have shape {shape!r}, got {array.shape!r}")
    return array.astype(dtype)


def _show(ax: Any, slice2d: np.ndarray, title: str, **kwargs: Any) -> None:
    ax.imshow(viz.display_slice(slice2d), interpolation="nearest", **({"cmap": "gray"} | kwargs))
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=viz.panel_title_size(ax.figure, dpi=_PNG_DPI))  # about 14 px in the notebook


def _contour(ax: Any, mask2d: np.ndarray, colour: str) -> None:
    shown = viz.display_slice(np.asarray(mask2d, dtype=np.float32))
    if shown.any() and not shown.all():
        ax.contour(shown, levels=[0.5], colors=[colour], linewidths=1.0)


def _check_static(static: Any) -> None:
    if not isinstance(static, bool):
        raise TypeError(f"`static` must be a bool, got {static!r}")


def _layout(width: str, **kwargs: Any):
    """An :class:`ipywidgets.Layout` of fixed ``width`` that a narrow row does not squeeze."""
    import ipywidgets as widgets

    return widgets.Layout(width=width, flex="0 0 auto", **kwargs)


def _box(rows: list[list], draw: Callable[[], Any], extra: list | None = None):
    """Controls in ``rows`` (+ ``extra`` widgets) above an Image that ``draw()`` refreshes on any change.

    ``draw`` depends on the controls' values only: a change that leaves them as drawn (an observer
    registered before this one moved a second control, which redrew already) draws nothing.

    Returns:
        ``VBox([VBox(HBox(row) per row), *extra, Image])``: each row is laid out to fit a notebook
        in a 1280 px wide window without squeezing a control (sliders keep a track of several
        hundred pixels, toggle buttons stay on one line).
    """
    import ipywidgets as widgets

    image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
    controls = [control for row in rows for control in row]
    drawn: list[tuple] = []  # the control values of the picture shown

    def redraw(_change: Any = None) -> None:
        state = tuple(control.value for control in controls)
        if drawn and drawn[-1] == state:  # one observer already moved another control and redrew
            return
        image.value = _png(draw())
        drawn[:] = [state]

    for control in controls:
        control.observe(redraw, names="value")
    redraw()
    panel = widgets.VBox([widgets.HBox(row, layout=widgets.Layout(flex_flow="row wrap", align_items="center"))
                          for row in rows])
    return widgets.VBox([panel, *(extra or []), image])


# ----------------------------------------------------------------------------------------------
# Threshold explorer
# ----------------------------------------------------------------------------------------------

class _ThresholdData:
    """Pooled brain-voxel scores of all subjects and their PR curve, computed once per explorer."""

    def __init__(self, maps: Any) -> None:
        from sklearn.metrics import precision_recall_curve

        items = list(maps.values()) if isinstance(maps, Mapping) else list(maps)
        if not items:
            raise ValueError("`maps` must hold at least one subject, got none")
        self.items = items
        self.anomaly_maps, self.lesion_masks, self.images, self.ids = [], [], [], []
        for i, m in enumerate(items):
            lesion = getattr(m, "lesion_mask", None)
            if lesion is None:
                raise ValueError(f"`maps[{i}]` must have a lesion_mask (ground truth), got None")
            anomaly = _volume(m.anomaly_map, f"maps[{i}].anomaly_map")
            self.anomaly_maps.append(anomaly)
            self.lesion_masks.append(_volume(lesion, f"maps[{i}].lesion_mask", anomaly.shape, dtype=bool))
            self.images.append(_volume(m.image, f"maps[{i}].image", anomaly.shape))
            self.ids.append(str(getattr(m, "subject_id", f"subject {i}")))
        brains = [_volume(m.brain_mask, f"maps[{i}].brain_mask", a.shape, dtype=bool)
                  for i, (m, a) in enumerate(zip(items, self.anomaly_maps))]
        self.scores = np.concatenate([a[b] for a, b in zip(self.anomaly_maps, brains)]).astype(np.float64)
        self.labels = np.concatenate([lesion[b] for lesion, b in zip(self.lesion_masks, brains)])
        if not self.labels.any():
            raise ValueError("`maps` must hold at least one lesion voxel inside the brain, got none")
        self.precision, self.recall, _ = precision_recall_curve(self.labels, self.scores)
        self.auprc = metrics.auprc(self.scores, self.labels)
        self.max_score = float(self.scores.max())  # not empty: a lesion voxel lies inside the brain

    def dice_d(self, threshold: float) -> float:
        """Pooled DICE_D of ``anomaly_map > threshold`` over all subjects (NaN when undefined)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", metrics.UndefinedMetricWarning)
            return metrics.dice_dataset([metrics.binarize(a, threshold) for a in self.anomaly_maps],
                                        self.lesion_masks)

    def summary(self, threshold: float) -> str:
        """One HTML line: threshold, DICE_D, precision and recall."""
        precision, recall = viz.operating_point(self.scores, self.labels, threshold)
        return (f"<b>threshold</b> {threshold:.4f} &nbsp; <b>DICE_D</b> = {self.dice_d(threshold):.4f} &nbsp; "
                f"precision {precision:.3f} &nbsp; recall {recall:.3f} &nbsp; (AUPRC {self.auprc:.3f})")

    def figure(self, threshold: float, subject: int):
        """Slice with prediction and ground truth, the binarised map, and the PR curve with the point."""
        anomaly, lesion, image = self.anomaly_maps[subject], self.lesion_masks[subject], self.images[subject]
        k = lesion_slice(lesion)
        pred = anomaly[:, :, k] > threshold
        fig, axes = _figure(3)
        _show(axes[0], image[:, :, k], f"{self.ids[subject]}, slice {k}", vmin=0, vmax=1)
        _contour(axes[0], lesion[:, :, k], viz.LESION_COLOUR)
        _contour(axes[0], pred, viz.PREDICTION_COLOUR)
        _show(axes[1], pred, f"anomaly map > {threshold:.3f}", vmin=0, vmax=1)
        _contour(axes[1], lesion[:, :, k], viz.LESION_COLOUR)
        precision, recall = viz.operating_point(self.scores, self.labels, threshold)
        axes[2].step(self.recall, self.precision, where="post", color="0.3", lw=1)
        axes[2].plot([recall], [precision], "o", color=viz.PREDICTION_COLOUR, ms=8)
        axes[2].set(xlim=(0, 1.01), ylim=(0, 1.01), xlabel="recall", ylabel="precision")
        axes[2].set_title(f"DICE_D {self.dice_d(threshold):.3f}, AUPRC {self.auprc:.3f}",
                          fontsize=viz.panel_title_size(fig, dpi=_PNG_DPI))
        return fig


def threshold_explorer(maps: Sequence[Any] | Mapping[str, Any], *, threshold: float | None = None,
                       subject: int = 0, static: bool = False):
    """Explore the anomaly-map threshold (Bengs et al. 2021, Sec. 2.3).

    A slider sets the threshold ``t``; the picture shows, for the chosen subject, the axial slice
    with most lesion (ground truth outlined in cyan, ``anomaly_map > t`` in red), the binarised map,
    and the voxel-wise precision-recall curve of all subjects with the operating point of ``t``.
    The line above reports DICE_D pooled over all subjects, precision and recall at ``t``.

    Args:
        maps: labelled :class:`uadlab.evaluation.inference.SubjectMaps` (a sequence, or a mapping id -> maps),
            e.g. the validation subjects.
        threshold: initial threshold (e.g. the one fitted on validation); ``None``: half the
            largest brain-voxel score.
        subject: index of the subject shown first.
        static: return a :class:`matplotlib.figure.Figure` at ``threshold`` instead of widgets.

    Returns:
        An :class:`ipywidgets.VBox` (slider, subject selector, summary line, picture), or the static
        figure.

    Raises:
        TypeError: ``static`` is not a bool, or ``subject`` not an int.
        ValueError: no subject, a subject without lesion mask, no lesion voxel, mismatched shapes,
            or ``subject`` out of range.
    """
    _check_static(static)
    data = _ThresholdData(maps)
    check_int("subject", subject, f"an int in [0, {len(data.ids)})", lambda v: 0 <= v < len(data.ids))
    threshold = data.max_score / 2 if threshold is None else float(threshold)
    if static:
        return data.figure(threshold, int(subject))
    import ipywidgets as widgets

    top = max(data.max_score, threshold, 1e-6)
    slider = widgets.FloatSlider(value=threshold, min=0.0, max=top, step=top / _SLIDER_STEPS, readout_format=".4f",
                                 description="threshold", continuous_update=False, layout=_layout("720px"))
    chooser = widgets.Dropdown(options=[(name, i) for i, name in enumerate(data.ids)], value=int(subject),
                               description="subject", layout=_layout("320px"))
    summary = widgets.HTML(data.summary(threshold))
    slider.observe(lambda change: setattr(summary, "value", data.summary(change["new"])), names="value")
    return _box([[slider], [chooser]], lambda: data.figure(slider.value, chooser.value), extra=[summary])


# ----------------------------------------------------------------------------------------------
# Erasing explorer
# ----------------------------------------------------------------------------------------------

_FAMILY_LABELS = {"None": "None", "Box": "Patch / Cube", "Multi": "Multi-Patch / Multi-Cube",
                  "Half": "Half-Slice / Half-Volume"}


def _erasing_figure(image: np.ndarray, brain_mask: np.ndarray, name: str, p: float, seed: int,
                    slice_index: int):
    """Target, erased input and erased region of one draw of experiment ``name``."""
    experiment = parse_experiment(name)
    erasing = experiment.erasing(p=p)
    rng = np.random.default_rng(seed)
    if experiment.spatial_dims == 2:
        target, mask = image[None, :, :, slice_index], brain_mask[None, :, :, slice_index]
    else:
        target, mask = image[None], brain_mask[None]
    erased = target if erasing is None else erasing(target, mask, rng)
    changed = erased[0] != target[0]
    if experiment.spatial_dims == 3:  # show the axial slice where most was erased
        k = int(np.argmax(changed.sum(axis=(0, 1)))) if changed.any() else slice_index
        target2d, erased2d, changed2d = target[0, :, :, k], erased[0, :, :, k], changed[:, :, k]
    else:
        k, target2d, erased2d, changed2d = slice_index, target[0], erased[0], changed
    fig, axes = _figure(3, panel=3.2)  # room for the longest middle title at 14 px
    _show(axes[0], target2d, f"target (unerased), slice {k}", vmin=0, vmax=1)
    drew = "erased" if changed.any() else "not erased this draw"
    _show(axes[1], erased2d, f"input: {name}\np={p:g}, seed {seed} ({drew})", vmin=0, vmax=1)
    _show(axes[2], changed2d, f"erased voxels: {100 * changed.mean():.1f} %", vmin=0, vmax=1)
    return fig


def erasing_explorer(image: np.ndarray, brain_mask: np.ndarray, *, experiment: str = "3D-Cube-n", p: float = 1.0,
                     seed: int = 0, slice_index: int | None = None, static: bool = False):
    """Explore spatial input erasing (Bengs et al. 2021, Sec. 2.2, Fig. 3).

    Controls: input dimension (2D erases one axial slice, 3D the volume), method family
    (Patch/Cube, Multi-Patch/Multi-Cube, Half-Slice/Half-Volume or None), fill (``0`` zeros,
    ``n`` noise from the image's brain voxels), probability ``p`` and the seed of the draw. The
    picture shows the unerased target, the erased input and the erased voxels (for 3D, on the axial
    slice where most was erased). Uses :mod:`uadlab.training.erasing` exactly as training does.

    Args:
        image: ``(X, Y, Z)`` preprocessed image in ``[0, 1]``.
        brain_mask: ``(X, Y, Z)`` bool brain mask (the noise fill samples its voxels).
        experiment: initial Table 1 name, e.g. ``"3D-Cube-n"`` or ``"2D-Half-Slice-0"``.
        p: initial erasing probability in ``[0, 1]`` (training uses 0.5; 1 always erases).
        seed: initial seed of the draw.
        slice_index: axial slice of 2D erasing (and of 3D draws that erase nothing); ``None``: middle.
        static: return a :class:`matplotlib.figure.Figure` of the initial settings instead of widgets.

    Returns:
        An :class:`ipywidgets.VBox`, or the static figure.

    Raises:
        TypeError: ``static`` is not a bool, ``p`` not a number or the slice index not an int.
        ValueError: an unknown experiment, ``p`` outside ``[0, 1]``, bad shapes or slice index.
    """
    _check_static(static)
    image = _volume(image, "image")
    brain_mask = _volume(brain_mask, "brain_mask", image.shape, dtype=bool)
    parsed = parse_experiment(experiment)
    check_real("p", p, "a number in [0, 1]", lambda v: 0.0 <= v <= 1.0)
    k = image.shape[2] // 2 if slice_index is None else slice_index
    check_int("slice_index", k, f"an int in [0, {image.shape[2]})", lambda v: 0 <= v < image.shape[2])
    if static:
        return _erasing_figure(image, brain_mask, parsed.name, float(p), int(seed), int(k))
    import ipywidgets as widgets

    family = parsed.family
    buttons = {"button_width": "56px", "description_width": "80px"}  # 80 px: the other controls' labels
    row = {"display": "flex", "flex_flow": "row", "align_items": "center"}  # else the label sits above the buttons
    dims = widgets.ToggleButtons(options=[("2D", 2), ("3D", 3)], value=parsed.spatial_dims, description="input",
                                 style=buttons, layout=_layout("260px", **row))
    method = widgets.Dropdown(options=[(_FAMILY_LABELS[f], f) for f in FAMILIES], value=family, description="method",
                              layout=_layout("360px"))
    fill = widgets.ToggleButtons(options=["0", "n"], value=parsed.fill or "n", description="fill", style=buttons,
                                 layout=_layout("260px", **row))
    prob = widgets.FloatSlider(value=float(p), min=0.0, max=1.0, step=0.05, description="p", layout=_layout("480px"))
    seed_box = widgets.IntText(value=int(seed), description="seed", layout=_layout("200px"))

    def draw():
        name = experiment_name(dims.value, method.value, None if method.value == "None" else fill.value)
        return _erasing_figure(image, brain_mask, name, prob.value, seed_box.value, int(k))

    return _box([[dims, fill], [method, seed_box], [prob]], draw)


# ----------------------------------------------------------------------------------------------
# Slice explorer
# ----------------------------------------------------------------------------------------------

def _slices_figure(volumes: dict[str, np.ndarray], lesion_mask: np.ndarray, k: int):
    """Input, reconstruction, residual (and anomaly map) and ground truth at axial slice ``k``."""
    fig, axes = _figure(len(volumes) + 1, panel=2.6)
    residual_max = max(float(volumes["residual"].max()), 1e-6)
    for ax, (title, volume) in zip(axes, volumes.items()):
        style = {"cmap": "inferno", "vmin": 0, "vmax": residual_max} if title in ("residual", "anomaly map") \
            else {"vmin": 0, "vmax": 1}
        _show(ax, volume[:, :, k], f"{title} (slice {k})" if title == "input" else title, **style)
    _show(axes[-1], lesion_mask[:, :, k], "ground truth", vmin=0, vmax=1)
    _contour(axes[0], lesion_mask[:, :, k], viz.LESION_COLOUR)
    return fig


def slice_explorer(image: np.ndarray, recon: np.ndarray, residual: np.ndarray, lesion_mask: np.ndarray | None = None,
                   *, anomaly_map: np.ndarray | None = None, slice_index: int | None = None, static: bool = False):
    """Step through axial slices of input, reconstruction, residual and ground truth (Sec. 2.3).

    Args:
        image: ``(X, Y, Z)`` input in ``[0, 1]``.
        recon: ``(X, Y, Z)`` reconstruction.
        residual: ``(X, Y, Z)`` ``|image - recon|``.
        lesion_mask: ``(X, Y, Z)`` bool ground truth, or ``None`` (an empty panel).
        anomaly_map: optional ``(X, Y, Z)`` post-processed map, shown after the residual.
        slice_index: first slice shown; ``None``: the slice with most lesion (middle without).
        static: return a :class:`matplotlib.figure.Figure` of that slice instead of widgets.

    Returns:
        An :class:`ipywidgets.VBox` (slice slider above the picture), or the static figure.

    Raises:
        TypeError: ``static`` is not a bool or ``slice_index`` not an int.
        ValueError: shapes differ or ``slice_index`` is out of range.
    """
    _check_static(static)
    image = _volume(image, "image")
    volumes = {"input": image, "reconstruction": _volume(recon, "recon", image.shape),
               "residual": _volume(residual, "residual", image.shape)}
    if anomaly_map is not None:
        volumes["anomaly map"] = _volume(anomaly_map, "anomaly_map", image.shape)
    lesion = np.zeros(image.shape, bool) if lesion_mask is None else _volume(lesion_mask, "lesion_mask", image.shape,
                                                                             dtype=bool)
    depth = image.shape[2]
    if slice_index is None:
        slice_index = lesion_slice(lesion)
    check_int("slice_index", slice_index, f"an int in [0, {depth})", lambda v: 0 <= v < depth)
    if static:
        return _slices_figure(volumes, lesion, int(slice_index))
    import ipywidgets as widgets

    slider = widgets.IntSlider(value=int(slice_index), min=0, max=depth - 1, description="axial slice",
                               layout=_layout("560px"))
    return _box([[slider]], lambda: _slices_figure(volumes, lesion, slider.value))


# ----------------------------------------------------------------------------------------------
# Synthetic anomaly gallery
# ----------------------------------------------------------------------------------------------

def _anomaly_figure(image: np.ndarray, brain_mask: np.ndarray, texture: np.ndarray | None, kind: str,
                    seed: int):
    """Healthy slice, the same slice with one drawn anomaly (outlined), and its mask."""
    anomalous, mask = SyntheticAnomaly(kind)(image, brain_mask, np.random.default_rng(seed),
                                             texture=texture if kind == "perlin-tissue" else None)
    k = int(np.argmax(mask.sum(axis=(0, 1)))) if mask.any() else image.shape[2] // 2
    fig, axes = _figure(3)
    _show(axes[0], image[:, :, k], f"healthy, slice {k}", vmin=0, vmax=1)
    _show(axes[1], anomalous[:, :, k], f"{kind}, seed {seed}", vmin=0, vmax=1)
    _contour(axes[1], mask[:, :, k], "tab:red")
    _show(axes[2], mask[:, :, k], f"label: {int(mask.sum())} voxels", vmin=0, vmax=1)
    return fig


def anomaly_explorer(image: np.ndarray, brain_mask: np.ndarray, *, texture: np.ndarray | None = None,
                     kind: str = "perlin-tissue", seed: int = 0, static: bool = False):
    """Explore the synthetic anomalies a segmenter trains on (Behrendt et al. 2024).

    Controls: a slider over the kinds of :data:`~uadlab.training.synthetic_anomalies.KINDS` and a
    slider over seeds. The picture shows the axial slice with the most anomalous voxels: the healthy
    image, the image with the anomaly (its label outlined) and the label, drawn exactly as
    :func:`uadlab.training.segmenter.synthetic_pool` draws them.

    Args:
        image: ``(X, Y, Z)`` healthy image in ``[0, 1]``.
        brain_mask: ``(X, Y, Z)`` bool brain mask (anomalies lie inside it).
        texture: ``(X, Y, Z)`` another subject's image, the tissue of ``perlin-tissue``; ``None``:
            ``image`` itself.
        kind: initial kind.
        seed: initial seed, 0 to 99 on the slider.
        static: return a :class:`matplotlib.figure.Figure` of the initial settings instead of widgets.

    Returns:
        An :class:`ipywidgets.VBox`, or the static figure.

    Raises:
        TypeError: ``static`` is not a bool or ``seed`` not an int.
        ValueError: an unknown ``kind``, a seed outside [0, 100), or bad shapes.
    """
    _check_static(static)
    image = _volume(image, "image")
    brain_mask = _volume(brain_mask, "brain_mask", image.shape, dtype=bool)
    texture = image if texture is None else _volume(texture, "texture", image.shape)
    if kind not in KINDS:
        raise ValueError(f"`kind` must be one of {KINDS}, got {kind!r}")
    check_int("seed", seed, "an int in [0, 100)", lambda v: 0 <= v < 100)
    if static:
        return _anomaly_figure(image, brain_mask, texture, kind, int(seed))
    import ipywidgets as widgets

    # 540 px: the readout names the kind ("perlin-tissue"), and the track stays 300 px long
    kinds = widgets.SelectionSlider(options=list(KINDS), value=kind, description="kind", layout=_layout("540px"))
    seeds = widgets.IntSlider(value=int(seed), min=0, max=99, description="seed", layout=_layout("480px"))
    return _box([[kinds], [seeds]], lambda: _anomaly_figure(image, brain_mask, texture, kinds.value, seeds.value))


# ----------------------------------------------------------------------------------------------
# Family comparison
# ----------------------------------------------------------------------------------------------

class _FamilyPair:
    """Two sets of maps of the same subjects, checked once per explorer, and their figure."""

    def __init__(self, maps_a: Any, maps_b: Any, labels: Any, thresholds: Any) -> None:
        if not (isinstance(labels, (tuple, list)) and len(labels) == 2 and all(isinstance(x, str) for x in labels)):
            raise TypeError(f"`labels` must be a pair of str, got {labels!r}")
        if not all(labels) or labels[0] == labels[1]:
            raise ValueError(f"`labels` must be two different non-empty names, got {labels!r}")
        self.labels = tuple(labels)
        thresholds = (None, None) if thresholds is None else thresholds
        if not (isinstance(thresholds, (tuple, list)) and len(thresholds) == 2):
            raise TypeError(f"`thresholds` must be None or a pair of numbers (or None), got {thresholds!r}")
        self.thresholds = tuple(None if t is None else check_real("thresholds", t, "a pair of finite numbers or None")
                                for t in thresholds)
        a, b = _by_subject(maps_a, "maps_a"), _by_subject(maps_b, "maps_b")
        only_a, only_b = [i for i in a if i not in b], [i for i in b if i not in a]
        if only_a or only_b:
            raise ValueError(f"`maps_a` and `maps_b` must hold the same subjects, got only in {labels[0]}: "
                             f"{only_a}, only in {labels[1]}: {only_b}")
        self.ids = list(a)
        b = {i: b[i] for i in self.ids}  # in maps_a's order
        self.shape = np.shape(next(iter(a.values())).image)
        self.rows = [[_family_volumes(m, f"{name}[{i!r}]", self.shape) for i, m in side.items()]
                     for name, side in (("maps_a", a), ("maps_b", b))]

    def lesion_slice(self, subject: int) -> int:
        """The axial slice with most lesion of subject ``subject`` (the middle one without)."""
        return lesion_slice(self.rows[0][subject]["lesion"])

    def figure(self, subject: int, k: int):
        """One row per family: input, reconstruction, voxel score, anomaly map; lesion outlined in cyan."""
        fig, axes = _figure(4, nrows=2, panel=2.5)
        for row, (label, volumes, threshold) in enumerate(zip(self.labels, self.rows, self.thresholds)):
            v = volumes[subject]
            ax = axes[4 * row: 4 * row + 4]
            # a scale per family and subject: families score in different units
            score_scale = {"cmap": "inferno", "vmin": 0, "vmax": v["score_top"]}
            map_scale = {"cmap": "inferno", "vmin": 0, "vmax": max(float(v["anomaly_map"].max()), 1e-6)}
            _show(ax[0], v["image"][:, :, k], f"{self.ids[subject]}, slice {k}", vmin=0, vmax=1)
            ax[0].set_ylabel(label, fontsize=viz.panel_title_size(fig, dpi=_PNG_DPI))
            _contour(ax[0], v["lesion"][:, :, k], viz.LESION_COLOUR)
            _show(ax[1], v["recon"][:, :, k], "reconstruction", vmin=0, vmax=1)
            _show(ax[2], v["residual"][:, :, k], v["score_name"], **score_scale)
            title = "anomaly map" if threshold is None else f"anomaly map > {threshold:.3g}"
            _show(ax[3], v["anomaly_map"][:, :, k], title, **map_scale)
            _contour(ax[3], v["lesion"][:, :, k], viz.LESION_COLOUR)
            if threshold is not None:
                _contour(ax[3], v["anomaly_map"][:, :, k] > threshold, viz.PREDICTION_COLOUR)
        return fig


def _by_subject(maps: Any, name: str) -> dict[str, Any]:
    """``maps`` (a mapping id -> maps, or a sequence of maps) as an ordered dict by subject id."""
    if isinstance(maps, Mapping):
        items = [(str(key), m) for key, m in maps.items()]
    elif isinstance(maps, Sequence) and not isinstance(maps, str):
        items = [(str(getattr(m, "subject_id", f"subject {i}")), m) for i, m in enumerate(maps)]
    else:
        raise TypeError(f"`{name}` must be a sequence of SubjectMaps or a mapping id -> SubjectMaps, got {maps!r}")
    if not items:
        raise ValueError(f"`{name}` must hold at least one subject, got none")
    by_id = dict(items)
    if len(by_id) < len(items):
        raise ValueError(f"`{name}` must hold each subject once, got {[i for i, _ in items]}")
    return by_id


def _family_volumes(m: Any, name: str, shape: tuple[int, ...]) -> dict[str, Any]:
    """The volumes of one subject's maps, checked against ``shape``, and the name of its voxel score."""
    image = _volume(m.image, f"{name}.image", shape)
    recon = _volume(m.recon, f"{name}.recon", shape)
    residual = _volume(m.residual, f"{name}.residual", shape)
    lesion, brain = getattr(m, "lesion_mask", None), getattr(m, "brain_mask", None)
    brain = np.ones(shape, bool) if brain is None else _volume(brain, f"{name}.brain_mask", shape, dtype=bool)
    # the residual field holds the family's own score where the family has one (the ceVAE, the z-score floor)
    plain = np.allclose(residual, np.abs(image - recon), atol=1e-5)
    # scaled to the brain's largest score: the background, which the map ignores, may score higher
    top = float(residual[brain].max()) if brain.any() else float(residual.max())
    return {"image": image, "recon": recon, "residual": residual, "score_top": max(top, 1e-6),
            "anomaly_map": _volume(m.anomaly_map, f"{name}.anomaly_map", shape),
            "lesion": np.zeros(shape, bool) if lesion is None else _volume(lesion, f"{name}.lesion_mask", shape,
                                                                           dtype=bool),
            "score_name": "residual |x - recon|" if plain else "the family's own score"}


def family_explorer(maps_a: Sequence[Any] | Mapping[str, Any], maps_b: Sequence[Any] | Mapping[str, Any], *,
                    labels: tuple[str, str] = ("A", "B"), thresholds: tuple[float | None, float | None] | None = None,
                    subject: int = 0, slice_index: int | None = None, static: bool = False):
    """Two model families side by side on the same subjects (the zoo, :mod:`uadlab.studies.zoo`).

    One row per family: the input with the lesion outlined (cyan), the reconstruction, the voxel
    score before post-processing (the residual ``|x - recon|``, or the family's own score where it
    has one: ``SubjectMaps.residual``, titled accordingly) and the post-processed anomaly map with the
    lesion outlined and, given a threshold, ``anomaly_map > threshold`` outlined in red. Families score
    in different units, so each family's score and map are scaled to their own largest value in the
    subject's brain (the colours compare places within a row, not values across rows). A dropdown picks the
    subject (the slice then jumps to its slice with most lesion) and a slider the axial slice.

    Args:
        maps_a, maps_b: :class:`uadlab.evaluation.inference.SubjectMaps` of the same subjects (a sequence,
            or a mapping id -> maps as :func:`~uadlab.evaluation.inference.predict` returns), e.g. two
            runs' maps of one test cohort; the dropdown lists them in ``maps_a``'s order.
        labels: the two families' names, shown beside their rows.
        thresholds: each family's threshold (e.g. fitted on validation), or ``None`` for none.
        subject: index of the subject shown first.
        slice_index: first axial slice; ``None``: the first subject's slice with most lesion.
        static: return a :class:`matplotlib.figure.Figure` of the initial settings instead of widgets.

    Returns:
        An :class:`ipywidgets.VBox` (subject dropdown, slice slider, picture), or the static figure.

    Raises:
        TypeError: ``static`` is not a bool, ``labels`` not a pair of str, ``thresholds`` not a pair,
            ``subject`` or ``slice_index`` not an int, a set of maps neither a sequence nor a mapping.
        ValueError: an empty set of maps, a subject twice, subjects that differ between the two sets
            (one error naming the subjects only in each), volumes of another shape than the first subject's,
            equal or empty labels, a non-finite threshold, ``subject`` or ``slice_index`` out of range.

    Shape:
        Every volume of both sets: one ``(X, Y, Z)`` shape, that of the first subject of ``maps_a``.
    """
    _check_static(static)
    data = _FamilyPair(maps_a, maps_b, labels, thresholds)
    check_int("subject", subject, f"an int in [0, {len(data.ids)})", lambda v: 0 <= v < len(data.ids))
    depth = data.shape[2]
    k = data.lesion_slice(int(subject)) if slice_index is None else slice_index
    check_int("slice_index", k, f"an int in [0, {depth})", lambda v: 0 <= v < depth)
    if static:
        return data.figure(int(subject), int(k))
    import ipywidgets as widgets

    chooser = widgets.Dropdown(options=[(name, i) for i, name in enumerate(data.ids)], value=int(subject),
                               description="subject", layout=_layout("320px"))
    slider = widgets.IntSlider(value=int(k), min=0, max=depth - 1, description="axial slice", layout=_layout("560px"))
    # registered before the redraw: a new subject opens at its slice with most lesion, drawn once
    chooser.observe(lambda change: setattr(slider, "value", data.lesion_slice(change["new"])), names="value")
    return _box([[chooser], [slider]], lambda: data.figure(chooser.value, slider.value))


# ----------------------------------------------------------------------------------------------
# Static rendering by name
# ----------------------------------------------------------------------------------------------

def render_static(widget_name: str, *args: Any, **kwargs: Any):
    """The static figure of an explorer, by name (for headless runs and ``docs/widget_*.png``).

    Args:
        widget_name: ``"threshold"``, ``"erasing"``, ``"slices"``, ``"anomalies"`` or ``"families"``
            (see :data:`WIDGETS`).
        *args: the explorer's positional arguments.
        **kwargs: its keyword arguments (``static`` is set to True).

    Returns:
        A :class:`matplotlib.figure.Figure`.

    Raises:
        ValueError: an unknown ``widget_name``; as the explorer.
    """
    explorers = {"threshold": threshold_explorer, "erasing": erasing_explorer, "slices": slice_explorer,
                 "anomalies": anomaly_explorer, "families": family_explorer}
    if widget_name not in explorers:
        raise ValueError(f"`widget_name` must be one of {WIDGETS}, got {widget_name!r}")
    return explorers[widget_name](*args, **{**kwargs, "static": True})
