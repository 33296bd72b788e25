"""Figures of volumes, erasing, anomaly maps and the paper's result plots (Bengs et al. 2021, Figs. 3-7).

Static figures use matplotlib (and seaborn for the statistical plots); interactive ones use plotly.
Both libraries are imported inside the function that needs them, so ``import uadlab.viz.figures`` stays
cheap and headless code never touches a GUI backend: static figures are built on
:class:`matplotlib.figure.Figure` directly, not through ``pyplot`` (:func:`new_figure`). Such a
figure still shows itself as a PNG when it ends a notebook cell, in JupyterLab and in notebooks
executed by papermill, without ``%matplotlib inline``. Every static function takes ``ax=None`` (an
axes, or a sequence of axes for multi-panel figures) and returns the figure; save any of them with
:func:`save_figure`.

Orientation:
    Volumes are ``(X, Y, Z)`` in RAS+ (X left->right, Y posterior->anterior, Z inferior->superior).
    A slice ``volume[:, :, k]`` (axial), ``volume[:, k, :]`` (coronal) or ``volume[k, :, :]``
    (sagittal) is shown as ``np.rot90(slice)``: its second voxel axis becomes the rows, running
    upwards, and its first voxel axis the columns, running to the right. Axial slices are thus shown
    with anterior up and the subject's left on the left of the screen (neurological convention);
    coronal and sagittal slices with superior up.

Shape:
    - volume, image, recon, residual, anomaly_map: ``(X, Y, Z)`` float; masks ``(X, Y, Z)`` bool.
    - A 2D array ``(X, Y)`` is accepted wherever a slice is shown (2D erasing works on slices).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uadlab.evaluation.inference import lesion_slice

__all__ = [
    "display_slice",
    "show_slices",
    "cohort_montage",
    "erasing_gallery",
    "lesion_size_plot",
    "data_size_plot",
    "seed_spread_plot",
    "dimension_plot",
    "slice_detection_plot",
    "training_curves",
    "lesion_volume_plot",
    "example_cases_plot",
    "reconstruction_comparison",
    "operating_point",
    "pr_curve_figure",
    "orthogonal_slices",
    "save_figure",
    "new_figure",
    "DISPLAY_DPI",
]

#: Colour of ground-truth lesion outlines in every figure.
LESION_COLOUR = "#00e5ff"
#: Colour of predicted (thresholded) anomaly outlines.
PREDICTION_COLOUR = "#ff3b30"
_AXIS_NAMES = {0: "sagittal", 1: "coronal", 2: "axial"}


# ----------------------------------------------------------------------------------------------
# Slices and orientation
# ----------------------------------------------------------------------------------------------

def display_slice(volume: np.ndarray, *, axis: int = 2, index: int | None = None) -> np.ndarray:
    """One slice of a volume, oriented for ``imshow`` (see the module's *Orientation*).

    Args:
        volume: ``(X, Y, Z)`` volume, or an ``(X, Y)`` slice (then ``axis``/``index`` are ignored).
        axis: ``2`` axial, ``1`` coronal, ``0`` sagittal.
        index: slice index along ``axis``; ``None``: the middle slice.

    Returns:
        ``(rows, cols)`` array ready for ``imshow(origin="upper")``.

    Raises:
        ValueError: ``volume`` is not 2D/3D, ``axis`` not 0-2, or ``index`` out of range.

    >>> display_slice(np.arange(6).reshape(3, 2)).tolist()  # X = 3 columns, Y = 2 rows, anterior up
    [[1, 3, 5], [0, 2, 4]]
    """
    volume = np.asarray(volume)
    if volume.ndim == 2:
        return np.rot90(volume)
    if volume.ndim != 3:
        raise ValueError(f"`volume` must be an (X, Y, Z) volume or an (X, Y) slice, got shape {volume.shape!r}")
    if axis not in (0, 1, 2):
        raise ValueError(f"`axis` must be 0, 1 or 2, got {axis!r}")
    size = volume.shape[axis]
    index = size // 2 if index is None else index
    if not isinstance(index, (int, np.integer)) or not 0 <= index < size:
        raise ValueError(f"`index` must be an int in [0, {size}), got {index!r}")
    return np.rot90(np.take(volume, int(index), axis=axis))


#: Resolution (dots per inch) of the PNG a figure shows in a notebook.
DISPLAY_DPI = 100
#: Width (px) of a notebook's output area in a 1280 px JupyterLab window with the file browser open: a
#: wider picture is shrunk to it, its text with it.
_NOTEBOOK_WIDTH_PX = 900
_TITLE_PX = 14  # the height (em) of a panel title on screen, in pixels
_MAX_WIDTH_IN = 12.0  # a grid of panels is no wider (inches), so that a notebook shrinks it little
_DISPLAY_FIGURE_CLASS: list = []  # the Figure subclass of new_figure, built on first use


def _display_figure_class() -> type:
    """The :class:`matplotlib.figure.Figure` subclass that renders itself as PNG for IPython.

    A figure made without ``pyplot`` has no display hook: IPython shows its ``repr``
    (``<Figure size 400x440 with 1 Axes>``) unless ``%matplotlib inline`` registered one. IPython
    and nbconvert/papermill call ``_repr_png_`` on any result that defines it, so the subclass shows
    in JupyterLab, classic Notebook and executed notebooks alike, whatever backend is active. Built
    on first use so that ``import uadlab.viz`` does not import matplotlib.
    """
    if not _DISPLAY_FIGURE_CLASS:
        import io

        from matplotlib.figure import Figure

        class DisplayFigure(Figure):
            """A matplotlib figure that shows itself as a PNG when it ends a notebook cell."""

            def _repr_png_(self) -> bytes:
                buffer = io.BytesIO()
                self.savefig(buffer, format="png", dpi=DISPLAY_DPI)
                return buffer.getvalue()

        DisplayFigure.__module__, DisplayFigure.__qualname__ = __name__, "DisplayFigure"
        _DISPLAY_FIGURE_CLASS.append(DisplayFigure)
    return _DISPLAY_FIGURE_CLASS[0]


def new_figure(figsize: tuple[float, float], **kwargs: Any):
    r"""A pyplot-free matplotlib figure that displays itself as a PNG in Jupyter.

    Every figure of :mod:`uadlab.viz` and :mod:`uadlab.widgets` is made here: no GUI backend is
    touched (safe in headless kernels, papermill and tests), nothing accumulates in pyplot's figure
    manager, and the figure still shows as a picture when it ends a notebook cell -- in JupyterLab
    and in the executed copies that ``uadlab notebooks run`` writes (an ``image/png`` output).

    Args:
        figsize: ``(width, height)`` in inches; shown at :data:`DISPLAY_DPI` dots per inch.
        **kwargs: passed to :class:`matplotlib.figure.Figure` (default ``layout="constrained"``).

    Returns:
        A :class:`matplotlib.figure.Figure` (a subclass with ``_repr_png_``).

    >>> fig = new_figure((2.0, 1.0))
    >>> fig._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"
    True
    """
    return _display_figure_class()(figsize=figsize, **{"layout": "constrained", **kwargs})


def panel_title_size(fig: Any, *, dpi: float = DISPLAY_DPI) -> float:
    """Font size (points) at which a panel title of ``fig`` is about 14 px high in a notebook.

    A notebook shows a PNG of ``fig`` at ``dpi`` dots per inch, shrunk to the output area's 900 px
    when wider (a 1280 px JupyterLab window), so a fixed size in points reads smaller the wider the
    figure; this size makes up for the shrinking. Shared with :mod:`uadlab.viz.widgets`.

    Args:
        fig: the figure (its width in inches counts).
        dpi: the resolution of the PNG shown.

    >>> round(panel_title_size(new_figure((4.0, 2.0))), 1), round(panel_title_size(new_figure((12.0, 2.0))), 1)
    (10.1, 13.4)
    """
    shrink = min(1.0, _NOTEBOOK_WIDTH_PX / (fig.get_figwidth() * dpi))
    return float(_TITLE_PX * 72 / dpi / shrink)


def _new_figure(nrows: int, ncols: int, *, panel: float = 2.4, squeeze: bool = False):
    """A displayable figure (:func:`new_figure`) with a grid of axes, at most 12 inches wide (panels shrink)."""
    panel = min(panel, _MAX_WIDTH_IN / ncols)
    fig = new_figure((panel * ncols, panel * nrows + 0.4))
    axes = fig.subplots(nrows, ncols, squeeze=squeeze)
    return fig, axes


def _axes_grid(n: int, ax: Any, *, ncols: int | None = None, panel: float = 2.4) -> tuple[Any, list]:
    """``n`` axes: new ones in a grid when ``ax`` is None, else ``ax`` (an axes or a sequence of them).

    Raises:
        ValueError: ``ax`` does not hold exactly ``n`` axes.
    """
    if ax is None:
        ncols = n if ncols is None else max(1, min(ncols, n))
        nrows = -(-n // ncols)
        fig, grid = _new_figure(nrows, ncols, panel=panel)
        axes = list(np.ravel(grid))
        for extra in axes[n:]:
            extra.set_visible(False)
        return fig, axes[:n]
    axes = list(np.ravel(np.asarray(ax, dtype=object))) if isinstance(ax, (Sequence, np.ndarray)) else [ax]
    if len(axes) != n:
        raise ValueError(f"`ax` must be None or hold {n} axes, got {len(axes)}")
    return axes[0].figure, axes


def _image_panel(ax: Any, data2d: np.ndarray, title: str | None = None, **imshow_kwargs: Any) -> Any:
    """``imshow`` a display-oriented slice without ticks; boolean masks in black and white."""
    data2d = np.asarray(data2d)
    kwargs = {"cmap": "gray", "interpolation": "nearest"}
    if data2d.dtype == bool:
        data2d = data2d.astype(np.float32)
        kwargs.update(vmin=0.0, vmax=1.0)
    kwargs.update(imshow_kwargs)
    image = ax.imshow(data2d, **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=panel_title_size(ax.figure))
    return image


def _outline(ax: Any, mask2d: np.ndarray, colour: str = LESION_COLOUR) -> None:
    """Draw the contour of a display-oriented binary slice."""
    mask2d = np.asarray(mask2d, dtype=np.float32)
    if mask2d.any() and not mask2d.all():
        ax.contour(mask2d, levels=[0.5], colors=[colour], linewidths=1.0)


def _check_mapping(value: Any, name: str) -> None:
    if not isinstance(value, Mapping) or not value:
        raise TypeError(f"`{name}` must be a non-empty mapping of name -> array, got {type(value).__name__}")


# ----------------------------------------------------------------------------------------------
# Volumes
# ----------------------------------------------------------------------------------------------

def show_slices(volumes: Mapping[str, np.ndarray], *, slice_index: int | Sequence[int] | None = None, axis: int = 2,
                ax: Any = None, **imshow_kwargs: Any):
    """Show the same slice of several volumes side by side (one panel each, titled by key).

    Args:
        volumes: title -> ``(X, Y, Z)`` volume (or ``(X, Y)`` slice); bool arrays are shown as masks.
        slice_index: index along ``axis`` for every panel, one index per panel (volumes on
            different grids), or ``None``: each volume's middle slice.
        axis: ``2`` axial (default), ``1`` coronal, ``0`` sagittal.
        ax: ``None`` (new figure) or ``len(volumes)`` axes.
        **imshow_kwargs: passed to ``imshow`` (e.g. ``cmap``, ``vmin``, ``vmax``).

    Returns:
        The :class:`matplotlib.figure.Figure` holding the panels.

    Raises:
        TypeError: ``volumes`` is not a non-empty mapping.
        ValueError: bad ``axis``/``slice_index`` or number of axes.
    """
    _check_mapping(volumes, "volumes")
    indices = list(slice_index) if isinstance(slice_index, (Sequence, np.ndarray)) else [slice_index] * len(volumes)
    if len(indices) != len(volumes):
        raise ValueError(f"`slice_index` must be an int, None or {len(volumes)} indices, got {slice_index!r}")
    fig, axes = _axes_grid(len(volumes), ax)
    for panel, (title, volume), index in zip(axes, volumes.items(), indices):
        _image_panel(panel, display_slice(volume, axis=axis, index=index), str(title), **imshow_kwargs)
    return fig


def cohort_montage(template: np.ndarray, healthy: Sequence[np.ndarray],
                   lesion: Sequence[tuple[np.ndarray, np.ndarray]], *, axis: int = 2,
                   healthy_titles: Sequence[str] | None = None, lesion_titles: Sequence[str] | None = None,
                   ax: Any = None):
    """The source template beside simulated healthy subjects and lesion cases (the phantom at a glance).

    Healthy subjects and the template are shown at their middle slice; each lesion case at the slice
    through most of its lesion (the middle slice often misses it), its lesion outlined in
    :data:`LESION_COLOUR`. Used for ``docs/phantom.png``.

    Args:
        template: ``(X, Y, Z)`` source image (e.g. the MNI152 template), any grid.
        healthy: ``(X, Y, Z)`` images of healthy subjects (typically 3).
        lesion: ``(image, lesion_mask)`` pairs of ``(X, Y, Z)`` arrays (typically 3).
        axis: slicing axis, ``2`` axial.
        healthy_titles: panel titles of the healthy subjects (default ``healthy 1``...).
        lesion_titles: panel titles of the lesion cases (default ``lesion 1``...).
        ax: ``None`` or ``1 + len(healthy) + len(lesion)`` axes.

    Returns:
        The figure (one row of panels when ``ax`` is None).

    Raises:
        ValueError: a lesion entry is not an ``(image, mask)`` pair of equal shapes, or titles do
            not match the numbers of cases.
    """
    healthy, lesion = list(healthy), list(lesion)
    if healthy_titles is None:
        healthy_titles = [f"healthy {i + 1}" for i in range(len(healthy))]
    if lesion_titles is None:
        lesion_titles = [f"lesion {i + 1}" for i in range(len(lesion))]
    healthy_titles, lesion_titles = list(healthy_titles), list(lesion_titles)
    if len(healthy_titles) != len(healthy) or len(lesion_titles) != len(lesion):
        raise ValueError(f"`healthy_titles`/`lesion_titles` must match the numbers of cases, got "
                         f"{len(healthy_titles)}/{len(lesion_titles)} for {len(healthy)}/{len(lesion)}")
    for i, pair in enumerate(lesion):
        if len(pair) != 2 or np.shape(pair[0]) != np.shape(pair[1]):
            raise ValueError(f"`lesion[{i}]` must be an (image, lesion_mask) pair of equal shapes, got {pair!r:.80}")
    fig, axes = _axes_grid(1 + len(healthy) + len(lesion), ax)
    _image_panel(axes[0], display_slice(template, axis=axis), "template")
    for panel, image, title in zip(axes[1:], healthy, healthy_titles):
        _image_panel(panel, display_slice(image, axis=axis), title)
    for panel, (image, mask), title in zip(axes[1 + len(healthy):], lesion, lesion_titles):
        k = lesion_slice(np.asarray(mask, dtype=bool), axis, np.shape(image)[axis])
        _image_panel(panel, display_slice(image, axis=axis, index=k), title)
        _outline(panel, display_slice(np.asarray(mask, dtype=bool), axis=axis, index=k))
    return fig


def erasing_gallery(examples: Mapping[str, np.ndarray], *, target: np.ndarray | None = None, axis: int = 2,
                    slice_index: int | None = None, ncols: int = 4, ax: Any = None):
    """Erased inputs side by side (Bengs et al. 2021, Fig. 3), the unerased target first.

    Without ``slice_index``, each 3D example is shown at the slice where it differs most from
    ``target`` (where the erased box or half lies), or at its middle slice without a target.

    Args:
        examples: title (e.g. the experiment name ``3D-Cube-n``) -> erased ``(X, Y, Z)`` volume or
            ``(X, Y)`` slice.
        target: the unerased image, same shape as the examples, shown first as ``target``.
        axis: slicing axis of 3D examples.
        slice_index: fixed slice index for every 3D panel.
        ncols: panels per row of a new figure.
        ax: ``None`` or one axes per panel.

    Returns:
        The figure.

    Raises:
        TypeError: ``examples`` is not a non-empty mapping.
        ValueError: an example's shape differs from ``target``.
    """
    _check_mapping(examples, "examples")
    panels = {} if target is None else {"target": np.asarray(target)}
    for title, volume in examples.items():
        if target is not None and np.shape(volume) != np.shape(target):
            raise ValueError(f"`examples[{title!r}]` must have the target's shape {np.shape(target)}, "
                             f"got {np.shape(volume)}")
        panels[str(title)] = np.asarray(volume)
    fig, axes = _axes_grid(len(panels), ax, ncols=ncols)
    for panel, (title, volume) in zip(axes, panels.items()):
        index = slice_index
        if volume.ndim == 3 and index is None and target is not None:
            index = lesion_slice(np.asarray(volume != target), axis, volume.shape[axis])
        _image_panel(panel, display_slice(volume, axis=axis, index=index), title, vmin=0.0, vmax=1.0)
    return fig


def reconstruction_comparison(maps: Mapping[str, Any], *, axis: int = 2, slice_index: int | None = None):
    """One subject reconstructed by several models: a row per model with reconstruction and residual.

    Lambert et al. (Fig. 1) show spatial and dense VAEs this way: the spatial VAE's reconstruction
    keeps the lesion (small residual), the dense VAE's replaces it with healthy tissue.

    Args:
        maps: model label -> that model's :class:`uadlab.evaluation.inference.SubjectMaps` of one
            subject (``image``, ``recon``, ``residual``, ``lesion_mask`` as ``(X, Y, Z)`` volumes).
        axis: slicing axis.
        slice_index: the slice; ``None``: the slice with most lesion (middle without).

    Returns:
        The :class:`matplotlib.figure.Figure`: columns input, reconstruction, residual (shared colour
        scale over all models), ground truth.

    Raises:
        TypeError: ``maps`` is not a non-empty mapping.
    """
    _check_mapping(maps, "maps")
    first = next(iter(maps.values()))
    k = lesion_slice(first.lesion_mask, axis, np.shape(first.image)[axis]) if slice_index is None else slice_index
    vmax = max(float(np.max(m.residual)) for m in maps.values()) or 1.0
    fig, axes = _new_figure(len(maps), 4, panel=2.2, squeeze=False)
    for row, (label, m) in zip(axes, maps.items()):
        lesion = np.zeros(np.shape(m.image), bool) if m.lesion_mask is None else m.lesion_mask
        _image_panel(row[0], display_slice(m.image, axis=axis, index=k), "input")
        _image_panel(row[1], display_slice(m.recon, axis=axis, index=k), f"{label}: reconstruction")
        _image_panel(row[2], display_slice(m.residual, axis=axis, index=k), "residual", cmap="inferno",
                     vmin=0.0, vmax=vmax)
        _image_panel(row[3], display_slice(lesion, axis=axis, index=k), "ground truth")
    return fig


def example_cases_plot(cases: Sequence[Any], *, threshold: float | None = None, axis: int = 2, ax: Any = None):
    """Example cases as in Fig. 7: input, reconstruction, difference, heat map, ground truth.

    Args:
        cases: :class:`uadlab.evaluation.analysis.ExampleCase` objects (``(X, Y)`` slices, already at the
            slice with most lesion) or objects/mappings with ``(X, Y, Z)`` volumes such as
            :class:`uadlab.evaluation.inference.SubjectMaps` (shown at the slice through most of the lesion).
            Each needs ``image``, ``recon``, ``residual``, ``anomaly_map`` and ``lesion_mask``;
            ``prediction`` (bool), ``label``, ``dice`` and ``subject_id`` are used when present.
        threshold: outline ``anomaly_map > threshold`` on the heat map in :data:`PREDICTION_COLOUR`
            (a case's own ``prediction`` is outlined when this is ``None``).
        axis: slicing axis of 3D cases.
        ax: ``None`` or ``5 * len(cases)`` axes (row-major: one row per case).

    Returns:
        The figure: one row per case, five columns.

    Raises:
        ValueError: ``cases`` is empty, or a case lacks one of the arrays.
    """
    cases = list(cases)
    if not cases:
        raise ValueError("`cases` must hold at least one case, got an empty sequence")
    columns = ("image", "recon", "residual", "anomaly_map", "lesion_mask")
    headers = ("input", "reconstruction", "difference", "heat map", "ground truth")
    if ax is None:
        fig, grid = _new_figure(len(cases), 5, panel=2.0)
        axes = list(np.ravel(grid))
    else:
        fig, axes = _axes_grid(5 * len(cases), ax)
    for row, case in enumerate(cases):
        arrays = {key: np.asarray(_field(case, key, row)) for key in columns}
        mask = arrays["lesion_mask"].astype(bool)
        k = lesion_slice(mask, axis, mask.shape[axis]) if mask.ndim == 3 else None
        prediction = _field(case, "prediction", row, default=None)
        if threshold is not None:
            prediction = arrays["anomaly_map"] > threshold
        for col, (key, header) in enumerate(zip(columns, headers)):
            panel = axes[5 * row + col]
            volume = mask if key == "lesion_mask" else arrays[key].astype(np.float32)
            style = {"cmap": "inferno", "vmin": 0.0} if key in ("residual", "anomaly_map") else {}
            _image_panel(panel, display_slice(volume, axis=axis, index=k), header if row == 0 else None, **style)
            if key == "anomaly_map" and prediction is not None:
                _outline(panel, display_slice(np.asarray(prediction, bool), axis=axis, index=k), PREDICTION_COLOUR)
        axes[5 * row].set_ylabel(_case_title(case, row), fontsize=panel_title_size(fig))
    return fig


def _case_title(case: Any, row: int) -> str:
    r"""``"best\nsub-007\nDICE 0.41"`` from whichever of label, subject_id, dice a case has."""
    parts = [_field(case, "label", row, default=None), _field(case, "subject_id", row, default=None)]
    dice_value = _field(case, "dice", row, default=None)
    if dice_value is not None:
        parts.append(f"DICE {float(dice_value):.2f}")
    return "\n".join(str(p) for p in parts if p is not None) or f"case {row + 1}"


def _field(case: Any, key: str, row: int, default: Any = ...) -> Any:
    """``case[key]`` or ``case.key``; ValueError naming the case when missing and no default."""
    value = case.get(key, default) if isinstance(case, Mapping) else getattr(case, key, default)
    if value is ...:
        raise ValueError(f"`cases[{row}]` must have `{key}`, got {type(case).__name__} without it")
    return value


# ----------------------------------------------------------------------------------------------
# Result plots (Figs. 4-6)
# ----------------------------------------------------------------------------------------------

def _require_columns(df: Any, columns: Sequence[str], name: str) -> None:
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"`{name}` must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"`{name}` must have columns {list(columns)}, got {list(df.columns)} (missing {missing})")


def _log_x(axes: Any) -> None:
    """Log x axis with plain-number labels that a narrow range still gets: decades over two decades and more,
    1-2-5 steps over one to two, 1-2-3-5-7 over half a decade to one, every integer step below (a range
    without a decade had no label at all). Call it once the data are drawn. Minor ticks carry no labels
    (they overlap).
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axes.set_xscale("log")
    low, high = axes.get_xlim()
    decades = np.log10(high / low) if low > 0 and high > low else 2.0
    subs = ((1.0,) if decades >= 2 else (1.0, 2.0, 5.0) if decades >= 1 else (1.0, 2.0, 3.0, 5.0, 7.0) if decades >= 0.5
            else tuple(np.arange(1.0, 10.0)))
    axes.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(NullFormatter())


_DEGREES = {0: "constant", 1: "linear", 2: "quadratic", 3: "cubic"}  # a fit's name in Fig. 4's title


def lesion_size_plot(df: Any, fit: Any = None, *, hue: str | None = "experiment",
                     title: str = "Fig. 4: DICE vs lesion size", ax: Any = None):
    """DICE_S against lesion size with a polynomial fit (cubic as the paper's), as Fig. 4 (Bengs et al. 2021, Sec. 3).

    Lesion size is drawn on a log axis, matching :func:`uadlab.evaluation.analysis.lesion_size_fit`, whose
    polynomial is in ``log10`` voxels; every panel labels its own axis.

    Args:
        df: :func:`uadlab.evaluation.analysis.lesion_size_table` output (several experiments concatenated with
            an ``experiment`` column are fine): columns ``lesion_voxels`` (size in voxels, > 0) and
            ``dice`` (the subject's DICE), optionally ``hue``.
        fit: the fit ``p(log10(voxels)) -> DICE``: a :class:`numpy.poly1d` or coefficient sequence
            (highest power first), or a mapping hue value -> such a fit (one curve per group, in the
            group's colour). ``None``: no curve.
        hue: grouping column (used when present in ``df``), or ``None``.
        title: the title, followed by the fits' degrees (``"(cubic fit)"``, ``"(cubic and quadratic fits)"``).
        ax: ``None`` or one axes.

    Returns:
        The figure.

    Raises:
        TypeError: ``df`` is not a DataFrame.
        ValueError: a column is missing or a lesion size is not positive.
    """
    import seaborn as sns

    _require_columns(df, ["lesion_voxels", "dice"], "df")
    if (df["lesion_voxels"] <= 0).any():
        raise ValueError("`df['lesion_voxels']` must be positive (drop subjects without lesion), got a value <= 0")
    hue = hue if hue is not None and hue in df.columns else None
    levels = [str(v) for v in dict.fromkeys(df[hue])] if hue else []
    palette = dict(zip(levels, sns.color_palette(n_colors=max(len(levels), 1))))
    data = df.assign(**{hue: df[hue].astype(str)}) if hue else df
    fig, (axes,) = _axes_grid(1, ax, panel=4.5)
    sns.scatterplot(data=data, x="lesion_voxels", y="dice", hue=hue, palette=palette if hue else None, ax=axes,
                    s=22, alpha=0.7)
    _log_x(axes)
    grid = np.geomspace(float(df["lesion_voxels"].min()), float(df["lesion_voxels"].max()), 200) if len(df) else []
    curves = list(fit.items() if isinstance(fit, Mapping) else [] if fit is None else [(None, fit)])
    for label, poly in curves:
        colour = palette.get(str(label), "k")
        axes.plot(grid, np.clip(np.polyval(np.asarray(poly, float), np.log10(grid)), 0, 1), color=colour, lw=1.5,
                  gid="size_fit")
    axes.set_xlabel("lesion size (voxels, log scale)")
    axes.set_ylabel("DICE (per subject)")
    axes.set_ylim(-0.02, 1.02)
    degrees = sorted({len(np.atleast_1d(np.asarray(poly, float))) - 1 for _, poly in curves}, reverse=True)
    names = [_DEGREES.get(d, f"degree-{d}") for d in degrees]
    fits = f" ({' and '.join(names)} fit{'s' if len(names) > 1 else ''})" if names else ""
    axes.set_title(title + fits, fontsize=10)
    return fig


def data_size_plot(df: Any, *, metric: str = "auprc", ax: Any = None):
    """Detection performance against training-set size, as Fig. 5 (Bengs et al. 2021, Sec. 3).

    Args:
        df: one row per (experiment, fraction[, dataset]) with columns ``experiment``, ``fraction``
            (share of the healthy training set in ``(0, 1]``) and ``metric``; an optional
            ``dataset`` column draws one line style per lesion cohort.
        metric: the y column (``auprc`` or ``dice_d``), shown in percent.
        ax: ``None`` or one axes.

    Returns:
        The figure.

    Raises:
        TypeError: ``df`` is not a DataFrame.
        ValueError: a column is missing.
    """
    import seaborn as sns

    _require_columns(df, ["experiment", "fraction", metric], "df")
    data = df.assign(percent=100 * df["fraction"].astype(float), value=100 * df[metric].astype(float))
    fig, (axes,) = _axes_grid(1, ax, panel=4.5)
    style = "dataset" if "dataset" in data.columns else None
    sns.lineplot(data=data, x="percent", y="value", hue="experiment", style=style, markers=True, ax=axes)
    sns.move_legend(axes, "upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, title_fontsize=8)  # off the lines
    axes.set_xlabel("healthy training data used (%)")
    axes.set_ylabel(f"{metric.upper()} (%)")
    axes.set_title(f"Fig. 5: {metric.upper()} vs training-set size", fontsize=10)
    return fig


def seed_spread_plot(df: Any, *, metric: str = "dice_d", ax: Any = None):
    """A Table 1 metric per experiment and training seed: is a difference larger than the seed spread?

    One panel per test set (``dataset``); per experiment, one dot per seed and a bar at their mean.
    When the dots of two experiments overlap, retraining alone could swap their order.

    Args:
        df: one row per experiment, test set and seed (``table1_seeds.csv`` of
            :func:`uadlab.studies.run_study`), columns ``experiment``, ``dataset``, ``seed`` and ``metric``
            (a fraction; NaN rows are skipped).
        metric: the column drawn, in percent (``dice_d``, ``dice_s_mean``, ``auprc``).
        ax: ``None`` or one axes per test set.

    Returns:
        The figure.

    Raises:
        TypeError: ``df`` is not a DataFrame.
        ValueError: a column is missing, or ``ax`` holds the wrong number of axes.
    """
    _require_columns(df, ["experiment", "dataset", "seed", metric], "df")
    data = df.assign(value=100 * df[metric].astype(float)).dropna(subset=["value"])
    datasets = list(dict.fromkeys(data["dataset"]))
    fig, axes = _axes_grid(max(1, len(datasets)), ax, ncols=3, panel=3.6)
    for axes_i, dataset in zip(axes, datasets):
        part = data[data["dataset"] == dataset]
        experiments = list(dict.fromkeys(part["experiment"]))
        for x, experiment in enumerate(experiments):
            values = part.loc[part["experiment"] == experiment, "value"].to_numpy()
            axes_i.bar(x, values.mean(), width=0.6, color="#c6dbef", edgecolor="#4a6fa5")
            offsets = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(1)
            axes_i.scatter(x + offsets, values, color="#08306b", s=14, zorder=3)
        axes_i.set_xticks(range(len(experiments)), experiments, rotation=30, ha="right", fontsize=8)
        axes_i.set_ylabel(f"{metric.upper()} (%)")
        n_seeds = part.groupby("experiment")["seed"].nunique().max()
        axes_i.set_title(f"{dataset}, {n_seeds} seed(s)", fontsize=9)
        axes_i.set_ylim(bottom=0)
    fig.suptitle(f"{metric.upper()} of every training seed (dots) and their mean (bars)", fontsize=10)
    return fig


def dimension_plot(summary: Any, *, metric: str = "dice_d", ax: Any = None):
    """Each family's 3D score against its 2D score: above the diagonal, 3D context helped.

    One panel per test set; one point per family with both dimensions, with the sd over training
    seeds as error bars where there are several seeds (``<metric>_seed_sd``). Families in one
    dimension only (the 3D floors) are drawn as a dashed horizontal line at their 3D score.

    Args:
        summary: ``zoo.csv`` of the zoo study (:mod:`uadlab.studies.zoo`): columns ``family``,
            ``spatial_dims``, ``dataset`` and ``metric`` (fractions).
        metric: the column drawn, in percent.
        ax: ``None`` or one axes per test set.

    Returns:
        The figure.

    Raises:
        TypeError: ``summary`` is not a DataFrame.
        ValueError: a column is missing, or ``ax`` holds the wrong number of axes.
    """
    _require_columns(summary, ["family", "spatial_dims", "dataset", metric], "summary")
    datasets = list(dict.fromkeys(summary["dataset"]))
    fig, axes = _axes_grid(max(1, len(datasets)), ax, ncols=3, panel=3.6)
    sd_column = f"{metric}_seed_sd"
    for axes_i, dataset in zip(axes, datasets):
        part = summary[summary["dataset"] == dataset]
        top = 0.0
        for family, rows in part.groupby("family", sort=False):
            by_dims = {int(r.spatial_dims): r for r in rows.itertuples(index=False)}
            value = {d: 100 * float(getattr(r, metric)) for d, r in by_dims.items()}
            error = {d: 100 * float(getattr(r, sd_column, np.nan)) for d, r in by_dims.items()}
            top = max(top, *value.values())
            if 2 in value and 3 in value:
                axes_i.errorbar(value[2], value[3], xerr=None if np.isnan(error[2]) else error[2],
                                yerr=None if np.isnan(error[3]) else error[3], fmt="o", capsize=2, label=family)
            elif 3 in value:
                axes_i.axhline(value[3], linestyle="--", linewidth=0.8, color="grey")
                axes_i.annotate(f"{family} (3D)", (0, value[3]), fontsize=7, color="grey", va="bottom")
        limit = max(5.0, 1.1 * top)
        axes_i.plot([0, limit], [0, limit], color="black", linewidth=0.6)
        axes_i.set(xlim=(0, limit), ylim=(0, limit), xlabel=f"2D {metric.upper()} (%)",
                   ylabel=f"3D {metric.upper()} (%)")
        axes_i.set_title(dataset, fontsize=9)
        if axes_i.get_legend_handles_labels()[0]:  # no family in both dimensions: nothing to label
            axes_i.legend(fontsize=6, loc="lower right")
    fig.suptitle(f"{metric.upper()} of each family in 3D against 2D (above the line: 3D helped)", fontsize=10)
    return fig


def slice_detection_plot(curves: Any, *, ax: Any = None):
    """Slice-wise detection precision-recall curves, as Fig. 6 (Bengs et al. 2021, Sec. 3).

    Args:
        curves: mapping label -> curve, a curve being a mapping or object with ``precision`` and
            ``recall`` arrays (and optionally ``auprc``, added to the legend), or a
            ``(precision, recall[, auprc])`` tuple as :func:`uadlab.evaluation.analysis.slice_detection_curve`
            returns; or a DataFrame with columns ``experiment``,
            ``precision``, ``recall`` (optionally ``auprc``).
        ax: ``None`` or one axes.

    Returns:
        The figure.

    Raises:
        TypeError: ``curves`` is neither a mapping nor a DataFrame.
        ValueError: a curve lacks precision/recall or their lengths differ.
    """
    import pandas as pd

    if isinstance(curves, pd.DataFrame):
        _require_columns(curves, ["experiment", "precision", "recall"], "curves")
        curves = {name: part for name, part in curves.groupby("experiment", sort=False)}
    if not isinstance(curves, Mapping):
        raise TypeError(f"`curves` must be a mapping or a DataFrame, got {type(curves).__name__}")
    fig, (axes,) = _axes_grid(1, ax, panel=4.5)
    for label, curve in curves.items():
        precision, recall, area = _curve_arrays(curve, label)
        text = str(label) if area is None else f"{label} (AUPRC {100 * area:.1f} %)"
        axes.step(recall, precision, where="post", label=text)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0, 1.01)
    axes.set_ylim(0, 1.01)
    axes.legend(fontsize=8, loc="lower left")
    axes.set_title("Fig. 6: slice-wise detection", fontsize=10)
    return fig


def _curve_arrays(curve: Any, label: Any) -> tuple[np.ndarray, np.ndarray, float | None]:
    """``(precision, recall, auprc or None)`` of one curve in any accepted form."""
    import pandas as pd

    if isinstance(curve, pd.DataFrame):
        area = float(curve["auprc"].iloc[0]) if "auprc" in curve.columns else None
        return curve["precision"].to_numpy(float), curve["recall"].to_numpy(float), area
    if isinstance(curve, Mapping):
        precision, recall, area = curve.get("precision"), curve.get("recall"), curve.get("auprc")
    elif isinstance(curve, (tuple, list)) and len(curve) in (2, 3):  # analysis.slice_detection_curve
        precision, recall, area = (*curve, None)[:3]
    else:
        precision, recall, area = (getattr(curve, k, None) for k in ("precision", "recall", "auprc"))
    if precision is None or recall is None or np.shape(precision) != np.shape(recall):
        raise ValueError(f"`curves[{label!r}]` must hold equally long `precision` and `recall`, got {curve!r:.80}")
    return np.asarray(precision, float), np.asarray(recall, float), None if area is None else float(area)


def training_curves(history: Any, *, ax: Any = None):
    """Learning curves of one run: training and healthy validation l1 error per voxel, per epoch.

    Args:
        history: ``history.csv`` of a run (:attr:`uadlab.training.TrainResult.history`): columns
            ``epoch``, ``train_l1_per_voxel`` and ``val_l1_per_voxel`` (mean l1 error per voxel,
            intensity units, images in [0, 1]; both on one axis).
        ax: ``None`` or one axes.

    Returns:
        The figure; the epoch with the lowest ``val_l1_per_voxel`` (the kept checkpoint, Sec. 2.3)
        is marked.

    Raises:
        TypeError: ``history`` is not a DataFrame.
        ValueError: a column is missing.
    """
    _require_columns(history, ["epoch", "train_l1_per_voxel", "val_l1_per_voxel"], "history")
    fig, (axes,) = _axes_grid(1, ax, panel=4.0)
    axes.plot(history["epoch"], history["train_l1_per_voxel"], "o-", label="train")
    axes.plot(history["epoch"], history["val_l1_per_voxel"], "s-", label="healthy validation")
    if len(history):
        best = history.loc[history["val_l1_per_voxel"].idxmin()]
        axes.axvline(best["epoch"], color="0.5", ls=":", label=f"best epoch {int(best['epoch'])}")
    axes.set_xlabel("epoch")
    axes.set_ylabel("reconstruction error (l1 per voxel)")
    axes.legend(fontsize=8)
    return fig


def lesion_volume_plot(subjects: Any, *, ax: Any = None):
    """Distribution of lesion sizes per cohort (a built data set's ``subjects.csv``).

    Args:
        subjects: columns ``cohort`` and ``lesion_voxels`` (voxels in the built grid); subjects
            without lesion are left out.
        ax: ``None`` or one axes.

    Returns:
        The figure (strip plot on a log axis).

    Raises:
        TypeError: ``subjects`` is not a DataFrame.
        ValueError: a column is missing.
    """
    import seaborn as sns

    _require_columns(subjects, ["cohort", "lesion_voxels"], "subjects")
    lesions = subjects[subjects["lesion_voxels"] > 0]
    fig, (axes,) = _axes_grid(1, ax, panel=4.0)
    sns.stripplot(data=lesions, x="lesion_voxels", y="cohort", hue="cohort", ax=axes, size=5, legend=False)
    if len(lesions):
        _log_x(axes)
    axes.set_xlabel("lesion size (voxels, log scale)")
    axes.set_title("lesion sizes per cohort", fontsize=10)
    return fig


# ----------------------------------------------------------------------------------------------
# Precision-recall at an operating point (shared with uadlab.viz.widgets)
# ----------------------------------------------------------------------------------------------

def _flat_scores(scores: Any, labels: Any, mask: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Pool ``scores``/``labels`` (arrays or lists of volumes) over ``mask`` voxels into 1D arrays."""
    def pool(x: Any) -> np.ndarray:
        if isinstance(x, (list, tuple)):
            return np.concatenate([np.ravel(v) for v in x]) if x else np.zeros(0)
        return np.ravel(np.asarray(x))

    s, y = pool(scores).astype(np.float64), pool(labels).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"`scores` and `labels` must hold the same number of voxels, got {s.size} and {y.size}")
    if mask is not None:
        m = pool(mask).astype(bool)
        if m.shape != s.shape:
            raise ValueError(f"`mask` must hold as many voxels as `scores`, got {m.size} and {s.size}")
        s, y = s[m], y[m]
    return s, y


def operating_point(scores: Any, labels: Any, threshold: float, *, mask: Any = None) -> tuple[float, float]:
    """Precision and recall of the segmentation ``scores > threshold``: a point on the PR curve.

    Args:
        scores: anomaly map(s): an array or a list of volumes.
        labels: lesion mask(s) of the same structure.
        threshold: threshold in score units.
        mask: voxels that count (e.g. brain masks), or ``None``.

    Returns:
        ``(precision, recall)``; precision is 1 for an empty prediction (the PR curve's left end),
        recall NaN without positive voxels.

    Raises:
        ValueError: shapes differ.

    >>> operating_point(np.array([0.1, 0.6, 0.8]), np.array([0, 0, 1]), 0.5)
    (0.5, 1.0)
    """
    s, y = _flat_scores(scores, labels, mask)
    return _precision_recall_at(s, y, float(threshold))


def _precision_recall_at(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    """Precision and recall of ``scores > threshold`` on pooled 1D arrays."""
    pred = scores > threshold
    tp = np.count_nonzero(pred & labels)
    n_pred, n_pos = np.count_nonzero(pred), np.count_nonzero(labels)
    return (float(tp / n_pred) if n_pred else 1.0), (float(tp / n_pos) if n_pos else float("nan"))


def pr_curve_figure(scores: Any, labels: Any, *, operating_point: float | None = None, mask: Any = None,
                    title: str = "voxel-wise precision-recall"):
    """Interactive voxel-wise precision-recall curve (plotly), with an optional operating point.

    Args:
        scores: anomaly map(s): an array or a list of ``(X, Y, Z)`` volumes.
        labels: lesion mask(s) of the same structure.
        operating_point: a threshold; the precision/recall of ``scores > threshold`` is marked.
        mask: voxels that count (e.g. brain masks), same structure; ``None``: all voxels.
        title: figure title; the AUPRC (average precision) is appended.

    Returns:
        A :class:`plotly.graph_objects.Figure`.

    Raises:
        ValueError: shapes differ or there is no positive voxel.
    """
    import plotly.graph_objects as go
    from sklearn.metrics import average_precision_score, precision_recall_curve

    s, y = _flat_scores(scores, labels, mask)
    if not y.any():
        raise ValueError("`labels` must hold at least one positive voxel, got none")
    precision, recall, thresholds = precision_recall_curve(y, s)
    area = average_precision_score(y, s)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=recall, y=precision, mode="lines", line_shape="hv", name="PR curve",
                             customdata=np.append(thresholds, np.nan),
                             hovertemplate="recall %{x:.3f}<br>precision %{y:.3f}<br>threshold %{customdata:.4f}"))
    if operating_point is not None:
        p, r = _precision_recall_at(s, y, float(operating_point))
        fig.add_trace(go.Scatter(x=[r], y=[p], mode="markers", marker={"size": 12, "color": PREDICTION_COLOUR},
                                 name=f"threshold {float(operating_point):.4g}"))
    fig.update_layout(title=f"{title} (AUPRC {100 * area:.1f} %)", xaxis_title="recall", yaxis_title="precision",
                      xaxis_range=[0, 1.01], yaxis_range=[0, 1.01], width=520, height=440)
    return fig


def orthogonal_slices(volume: np.ndarray, overlay: np.ndarray | None = None, *, index: Sequence[int] | None = None,
                      title: str = ""):
    """Interactive sagittal, coronal and axial slices through one voxel (plotly), with an overlay.

    Args:
        volume: ``(X, Y, Z)`` image.
        overlay: ``(X, Y, Z)`` mask or map drawn semi-transparently in red on top, or ``None``.
        index: ``(i, j, k)`` voxel the three planes pass through; ``None``: the centre.
        title: figure title.

    Returns:
        A :class:`plotly.graph_objects.Figure` with three heat-map panels.

    Raises:
        ValueError: ``volume`` is not 3D, ``overlay`` has another shape, or ``index`` is out of range.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3:
        raise ValueError(f"`volume` must be an (X, Y, Z) volume, got shape {volume.shape!r}")
    if overlay is not None and np.shape(overlay) != volume.shape:
        raise ValueError(f"`overlay` must have the volume's shape {volume.shape}, got {np.shape(overlay)}")
    index = tuple(s // 2 for s in volume.shape) if index is None else tuple(index)
    if len(index) != 3 or not all(0 <= int(i) < s for i, s in zip(index, volume.shape)):
        raise ValueError(f"`index` must be 3 voxel indices inside {volume.shape}, got {index!r}")
    fig = make_subplots(rows=1, cols=3, subplot_titles=[_AXIS_NAMES[a] for a in (0, 1, 2)])
    for col, axis in enumerate((0, 1, 2), start=1):
        # plotly draws row 0 at the bottom, so the un-rotated slice's transpose puts the second voxel
        # axis upwards -- the same orientation as display_slice.
        plane = np.take(volume, int(index[axis]), axis=axis).T
        fig.add_trace(go.Heatmap(z=plane, colorscale="gray", showscale=False, name=_AXIS_NAMES[axis],
                                 hovertemplate="voxel (%{x}, %{y})<br>intensity %{z:.3f}<extra></extra>"),
                      row=1, col=col)
        if overlay is not None:
            layer = np.take(np.asarray(overlay, dtype=np.float32), int(index[axis]), axis=axis).T
            # hoverongaps=False: no "z: NaN" label where the overlay is empty (NaN, transparent)
            fig.add_trace(go.Heatmap(z=np.where(layer > 0, layer, np.nan), colorscale="Reds", opacity=0.5,
                                     showscale=False, name="overlay", hoverongaps=False,
                                     hovertemplate="overlay %{z:.3f}<extra></extra>"), row=1, col=col)
        fig.update_yaxes(scaleanchor=f"x{'' if col == 1 else col}", row=1, col=col, showticklabels=False)
        fig.update_xaxes(showticklabels=False, row=1, col=col)
    fig.update_layout(title=title, width=900, height=340)
    return fig


# ----------------------------------------------------------------------------------------------
# Saving
# ----------------------------------------------------------------------------------------------

_MATPLOTLIB_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}


def save_figure(fig: Any, path: str | Path, *, dpi: int = 120) -> Path:
    """Write a figure atomically: matplotlib as PNG (or PDF/SVG), plotly as self-contained HTML (works offline).

    Args:
        fig: a :class:`matplotlib.figure.Figure` or a :class:`plotly.graph_objects.Figure`.
        path: output file; ``.png``/``.pdf``/``.svg`` for matplotlib, ``.html`` for plotly. Its
            folder is created. An existing file is replaced (figures are derived outputs).
        dpi: resolution of matplotlib raster output.

    Returns:
        ``path`` as a :class:`pathlib.Path`.

    Raises:
        TypeError: ``fig`` is neither kind of figure.
        ValueError: the suffix does not suit the figure kind.
    """
    from uadlab.data.io import atomic_write

    path = Path(path)
    suffix = path.suffix.lower()
    if hasattr(fig, "savefig"):
        if suffix not in _MATPLOTLIB_FORMATS:
            raise ValueError(f"`path` must end in {sorted(_MATPLOTLIB_FORMATS)} for a matplotlib figure, "
                             f"got {str(path)!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, overwrite=True) as tmp:
            fig.savefig(tmp, format=_MATPLOTLIB_FORMATS[suffix], dpi=dpi)
        return path
    if hasattr(fig, "write_html"):
        if suffix != ".html":
            raise ValueError(f"`path` must end in '.html' for a plotly figure, got {str(path)!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path, overwrite=True) as tmp:
            fig.write_html(tmp, include_plotlyjs=True, full_html=True)
        return path
    raise TypeError(f"`fig` must be a matplotlib or plotly figure, got {type(fig).__name__}")
