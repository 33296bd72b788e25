"""The wall-clock of each training epoch, everything included, for the old training loop and today's alike.

A run's ``history`` ``seconds`` stop after validation, before the best weights are kept and the
checkpoint is written, in both loops; issue 16 asks for the whole epoch. Both loops call their module's
``_train_epoch`` and ``_save_checkpoint`` once per epoch, so the time from the start of one to the end
of the other holds everything: the pass over the samples (erasing, batching, steps), validation,
keeping the best weights and writing the checkpoint (today: handing it to the background writer,
which first waits for the previous epoch's write). Imports nothing from ``uadlab``: the old commit's
subprocess imports it too.
"""

from __future__ import annotations

import time
from types import ModuleType


class EpochClock:
    """Context manager timing each epoch of the training runs started inside it.

    Args:
        module: the training loop's module (``uadlab.training.loop`` today, ``uadlab.training`` at
            the old commit); its ``_train_epoch`` and ``_save_checkpoint`` are wrapped while inside.

    Attributes:
        seconds: one wall-clock per finished epoch (s), in order.
    """

    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self._starts: list[float] = []
        self._ends: list[float] = []
        self._originals: dict[str, object] = {}

    @property
    def seconds(self) -> list[float]:
        return [end - start for start, end in zip(self._starts, self._ends)]

    def __enter__(self) -> EpochClock:
        train_epoch = self._originals["_train_epoch"] = self.module._train_epoch
        save_checkpoint = self._originals["_save_checkpoint"] = self.module._save_checkpoint

        def timed_epoch(*args, **kwargs):
            self._starts.append(time.perf_counter())
            return train_epoch(*args, **kwargs)

        def timed_checkpoint(*args, **kwargs):
            try:
                return save_checkpoint(*args, **kwargs)
            finally:
                self._ends.append(time.perf_counter())

        self.module._train_epoch, self.module._save_checkpoint = timed_epoch, timed_checkpoint
        return self

    def __exit__(self, *exc: object) -> None:
        for name, original in self._originals.items():
            setattr(self.module, name, original)
