"""Figures: static (matplotlib/seaborn) and interactive (plotly) plots, and the ipywidgets explorers.

:mod:`~uadlab.viz.figures` returns figure objects for the tables of :mod:`uadlab.evaluation.analysis`;
:mod:`~uadlab.viz.widgets` builds the explorers of the labs on top of them.
"""

from uadlab.viz.figures import (
    DISPLAY_DPI,
    cohort_montage,
    data_size_plot,
    dimension_plot,
    display_slice,
    erasing_gallery,
    example_cases_plot,
    lesion_size_plot,
    lesion_volume_plot,
    new_figure,
    operating_point,
    orthogonal_slices,
    pr_curve_figure,
    reconstruction_comparison,
    save_figure,
    show_slices,
    slice_detection_plot,
    training_curves,
)

__all__ = ["display_slice", "show_slices", "cohort_montage", "erasing_gallery", "lesion_size_plot",
           "data_size_plot", "dimension_plot", "slice_detection_plot", "training_curves", "lesion_volume_plot",
           "example_cases_plot", "operating_point", "pr_curve_figure", "orthogonal_slices", "save_figure",
           "reconstruction_comparison", "new_figure", "DISPLAY_DPI"]
