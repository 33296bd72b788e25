"""Training: experiments (Table 1 names with a model axis), spatial erasing (Sec. 2.2) and the loop (Sec. 2.3).

Modules, lowest first:

- :mod:`~uadlab.training.erasing` (the input transform) and :mod:`~uadlab.training.synthetic_anomalies`
  (DRAEM/MOOD-style anomalies pasted into healthy brains, the segmenter's training data of
  Behrendt et al. 2024);
- :mod:`~uadlab.training.experiments` (names such as ``3D-Cube-n`` or ``spatial-vae:2D-None``);
- :mod:`~uadlab.training.devices` (the device a config names, :func:`default_precision`);
- :mod:`~uadlab.training.config` (:class:`TrainConfig`, saved beside every run) and
  :mod:`~uadlab.training.runs` (the run folder: checks, checkpoints, RNG states, resume);
- :mod:`~uadlab.training.fit` (the fit core: one epoch loop with early stopping and checkpoints, for
  every network) and :mod:`~uadlab.training.anomaly_pools` (the segmenter's pools of synthetic
  anomalies and labelled cases);
- :mod:`~uadlab.training.reconstruction` (``uadlab train``: a reconstruction model on healthy brains)
  and :mod:`~uadlab.training.segmenter` (Behrendt et al. 2024: a supervised U-Net on ``(image, recon)``
  trained on synthetic anomalies, optionally plus a few labelled validation cases).

Multi-process training under ``torchrun`` is :mod:`uadlab.speed.distributed`.
"""

from uadlab.training.config import HISTORY_COLUMNS, TrainConfig
from uadlab.training.devices import default_precision
from uadlab.training.fit import seed_everything
from uadlab.training.reconstruction import TrainResult, load_run, run_status, train, training_subset
from uadlab.training.segmenter import (
    SegmenterConfig,
    SegmenterResult,
    load_segmenter,
    split_labelled,
    train_segmenter,
)

__all__ = ["TrainConfig", "TrainResult", "train", "load_run", "run_status", "seed_everything", "training_subset",
           "HISTORY_COLUMNS", "default_precision", "SegmenterConfig", "SegmenterResult", "train_segmenter",
           "load_segmenter", "split_labelled"]
