"""Data: NIfTI I/O, manifests, the phantom, preprocessing (Bengs et al. 2021, Sec. 2.1) and built data sets.

Modules, lowest first: :mod:`~uadlab.data.io` (NIfTI read/write, atomic writes),
:mod:`~uadlab.data.manifests` (data-set manifests), :mod:`~uadlab.data.resampling`,
:mod:`~uadlab.data.phantom` (the default simulated data set), :mod:`~uadlab.data.preprocessing`
(Sec. 2.1 and its cache), :mod:`~uadlab.data.dataset` (``uadlab data build`` and its folder).
"""

from uadlab.data.dataset import (
    COLUMNS,
    BuiltDataset,
    Subject,
    build_dataset,
    load_dataset,
)

__all__ = ["COLUMNS", "BuiltDataset", "Subject", "build_dataset", "load_dataset"]
