"""Timing of the training loop's own functions, for the old loop and today's alike.

:class:`CallTimer` wraps functions of a module or class while inside it and records the wall-clock
span of every call. ``benchmarks/train_epoch.py`` times the phases of an epoch with it (erasing,
validation, checkpoint) and, with :func:`epoch_targets`, whole epochs: a run's ``history``
``seconds`` stop after validation, before the best weights are kept and the checkpoint is written,
in both loops, and issue 16 asks for the whole epoch. Both loops call one function for the pass over
the samples and one for the checkpoint once per epoch (the old commit's ``uadlab.training._train_epoch``
and ``_save_checkpoint``; today's ``uadlab.training.reconstruction.train_pass`` and
``uadlab.training.fit._checkpoint``), so the time from the start of one to the end of the other
holds everything: the pass over the samples (erasing, batching, steps), validation, keeping the best
weights and writing the checkpoint (today: handing it to the background writer, which first waits for
the previous epoch's write). Imports nothing from ``uadlab``: the old commit's subprocess imports it too.
"""

from __future__ import annotations

import time
from collections import defaultdict
from types import ModuleType


def epoch_targets(package: ModuleType) -> dict[str, tuple[object, str]]:
    """The two functions of a training loop that :meth:`CallTimer.epoch_seconds` needs, found from the
    ``uadlab.training`` package: today's fit core, or the old commit's single module."""
    if hasattr(package, "fit"):  # today: uadlab.training.fit and uadlab.training.reconstruction
        return {"pass": (package.reconstruction, "train_pass"), "checkpoint": (package.fit, "_checkpoint")}
    return {"pass": (package, "_train_epoch"), "checkpoint": (package, "_save_checkpoint")}


class CallTimer:
    """Context manager recording the span of every call of the functions it wraps while inside.

    Args:
        targets: ``{name: (owner, attribute)}``: each ``owner.attribute`` (a module function or a
            class's method) is wrapped on entering and restored on leaving.

    Attributes:
        spans: ``{name: [(start, end), ...]}`` in ``time.perf_counter`` seconds, one per call, in order.
    """

    def __init__(self, targets: dict[str, tuple[object, str]]) -> None:
        self.targets = targets
        self.spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self._originals: list[tuple[object, str, object]] = []

    def total(self, name: str) -> float:
        """Seconds spent in the calls of ``name``, all together."""
        return sum(end - start for start, end in self.spans[name])

    def epoch_seconds(self) -> list[float]:
        """One wall-clock per finished epoch, from the start of its pass to the end of its checkpoint
        (needs the :func:`epoch_targets`)."""
        return [end - start for (start, _), (_, end) in zip(self.spans["pass"], self.spans["checkpoint"])]

    def __enter__(self) -> CallTimer:
        for name, (owner, attribute) in self.targets.items():
            original = getattr(owner, attribute)
            self._originals.append((owner, attribute, original))
            setattr(owner, attribute, self._timed(name, original))
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, attribute, original in reversed(self._originals):
            setattr(owner, attribute, original)
        self._originals.clear()

    def _timed(self, name: str, original):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.spans[name].append((start, time.perf_counter()))

        return timed
