"""Training: experiments (Table 1 names with a model axis), spatial erasing (Sec. 2.2) and the loop (Sec. 2.3).

Modules, lowest first: :mod:`~uadlab.training.erasing` (the input transform),
:mod:`~uadlab.training.synthetic_anomalies` (DRAEM/MOOD-style anomalies pasted into healthy brains,
the segmenter's training data of Behrendt et al. 2024),
:mod:`~uadlab.training.experiments` (names such as ``3D-Cube-n`` or ``spatial-vae:2D-None``),
:mod:`~uadlab.training.loop` (``uadlab train``: batches, early stopping, checkpoints, resume), and beside it
:mod:`~uadlab.training.segmenter` (Behrendt et al. 2024: a supervised U-Net on ``(image, recon)`` trained on
synthetic anomalies, optionally plus a few labelled validation cases).
"""

from uadlab.training.loop import (
    HISTORY_COLUMNS,
    TrainConfig,
    TrainResult,
    load_run,
    run_status,
    seed_everything,
    train,
    training_subset,
)
from uadlab.training.segmenter import SegmenterConfig, split_labelled, train_segmenter

__all__ = ["TrainConfig", "TrainResult", "train", "load_run", "run_status", "seed_everything", "training_subset",
           "HISTORY_COLUMNS", "SegmenterConfig", "split_labelled", "train_segmenter"]
