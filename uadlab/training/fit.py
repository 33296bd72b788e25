"""The fit core: one epoch loop for every trained network (the VAEs, the DDPM, the segmenter).

:func:`fit` runs epochs until early stopping, keeps the best epoch's weights and hands a checkpoint
of every epoch to the run folder (:mod:`uadlab.training.runs`); a run resumed from that checkpoint
ends with the same weights as an uninterrupted one. What differs between networks (their data,
their loss, their validation score) comes from a :class:`Trainee`; the optimiser step is
:func:`train_pass`, shared too. Bengs et al. 2021, Sec. 2.3: Adam, and the number of epochs chosen
on the validation score with ``patience``.

One epoch:

1. ``trainee.train_epoch``: usually a :func:`train_pass` over the samples in a seeded order;
2. ``trainee.validate``: the validation terms (eval mode);
3. the row (training and validation terms, ``seconds`` of wall time for 1-2) joins the history;
   if ``trainee.score(row)`` beats the best score so far (higher is better; tuples compare
   element by element; before the first best epoch, ``-inf`` in every place), this epoch's
   weights become the best, else the epochs since the best grow by one once
   ``trainee.patience_started(best_score)``;
4. the run is ``finished`` at ``max_epochs`` or after ``patience`` epochs without a better score;
5. the checkpoint is copied to the CPU (from a GPU without waiting for it) and written in the
   background while the next epoch trains (:func:`uadlab.training.runs.host_copy`); the next
   checkpoint, and the end of :func:`fit`, wait for the write. The best weights are kept on the CPU.

While it trains, the process is in the registry of trainings (:mod:`uadlab._process_registry`), so
other uadlab processes leave it its share of the cores, and a
:class:`~uadlab.speed.thread_tuner.ThreadTuner` sets the thread count before each step of
:func:`train_pass`, from step times on a CPU (one process), from the share alone elsewhere.

Shape:
    - :func:`train_pass`: ``order`` ``(n,)`` sample indices; ``batch_loss(index)`` gets a sorted
      ``(b,)`` slice of it (this rank's share under ``torchrun``) and returns 0-d tensors.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from uadlab._checks import check_int
from uadlab._process_registry import registered
from uadlab._progress import progress_bar
from uadlab.models.precision import autocast
from uadlab.speed import distributed
from uadlab.speed.thread_tuner import ThreadTuner
from uadlab.training.runs import CheckpointWriter, get_rng_states, host_copy, set_rng_states, write_checkpoint

__all__ = ["seed_everything", "Session", "Trainee", "train_pass", "fit"]


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA).

    Also makes cuDNN deterministic (``deterministic=True``, ``benchmark=False``), which is cheap;
    ``torch.use_deterministic_algorithms`` is left alone because it is global and needs
    ``CUBLAS_WORKSPACE_CONFIG`` on GPUs.

    Args:
        seed: non-negative int below 2**32.

    Raises:
        TypeError: ``seed`` is not an int.
        ValueError: ``seed`` is negative or >= 2**32.
    """
    check_int("seed", seed, "an int")
    if not 0 <= seed < 2**32:
        raise ValueError(f"`seed` must be in [0, 2**32), got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


@dataclass
class Session:
    """What one training process steps with.

    Attributes:
        model: the network, on ``device``.
        optimizer: its optimiser; ``None`` for a model without parameters (fitted in closed form).
        precision: ``"32"``, ``"bf16-mixed"`` or ``"16-mixed"`` (:func:`uadlab.models.precision.autocast`).
        device: where it trains (this rank's device under ``torchrun``).
        context: rank and world size (:mod:`uadlab.speed.distributed`); one process by default.
        scaler: float16 loss scaling, enabled for ``"16-mixed"`` only.
        threads: the thread tuner :func:`fit` sets while it trains (:func:`train_pass` times its steps
            with it); ``None`` outside.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    precision: str
    device: torch.device
    context: distributed.Context = field(default_factory=distributed.Context)
    scaler: torch.amp.GradScaler = field(init=False)
    threads: ThreadTuner | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "16-mixed")


class Trainee(Protocol):
    """What :func:`fit` needs from a network's training, besides its :class:`Session`."""

    def train_epoch(self, epoch: int, session: Session, *, progress: bool) -> dict[str, float]:
        """Train one epoch (1-based) and return its training terms (``train_loss`` first)."""

    def validate(self, session: Session) -> dict[str, float]:
        """The validation terms of the current weights."""

    def score(self, row: dict[str, float]) -> tuple[float, ...]:
        """How good an epoch's history row is; higher is better."""

    def patience_started(self, best: tuple[float, ...] | None) -> bool:
        """Whether epochs without a better score count toward patience, given the best score so far
        (``None`` before any).
        """

    def extras(self) -> dict[str, Any]:
        """What the checkpoint carries besides weights, optimiser, RNG and loop state (copied by fit)."""

    def load_extras(self, checkpoint: dict[str, Any]) -> None:
        """Restore what :meth:`extras` saved, on resume."""


def train_pass(session: Session, order: np.ndarray, batch_loss: Callable[[np.ndarray], Sequence[torch.Tensor]],
               names: Sequence[str], *, batch_size: int, progress: bool = False) -> dict[str, float]:
    """One optimiser pass over the samples in ``order``; returns the sample-weighted mean of each term.

    ``order`` is split evenly into ``ceil(n / batch_size)`` batches of at most ``batch_size`` samples
    (so no batch of one sample, which would upset batch statistics, unless there is one sample);
    each batch's indices are sorted. ``batch_loss(index)`` runs under
    :func:`uadlab.models.precision.autocast` at the session's precision and returns the terms named
    ``names``, the first of which is minimised (the loss scaler, enabled for float16, scales it
    before the backward pass). Under ``torchrun`` each rank computes the loss of its shard of every
    batch and the gradients are averaged over the ranks, each weighted by its share
    (:mod:`uadlab.speed.distributed`).

    Args:
        session: model, optimiser, precision, device, ranks.
        order: sample indices ``(n,)`` in this epoch's order.
        batch_loss: sample indices -> the terms' 0-d tensors, ``len(names)`` of them.
        names: the terms' names, keys of the result.
        batch_size: samples per batch (over all ranks).
        progress: a transient bar over the batches.
    """
    model, optimizer, scaler, context = session.model, session.optimizer, session.scaler, session.context
    model.train()
    totals = dict.fromkeys(names, 0.0)
    n = len(order)
    batches = np.array_split(order, math.ceil(n / batch_size))
    timed = session.threads.step if session.threads is not None else contextlib.nullcontext
    with progress_bar(progress, total=len(batches), desc="batches", unit="batch", leave=False) as bar:
        for batch in batches:
            index = distributed.shard(np.sort(batch), context)
            if len(index) == 0:  # a batch smaller than the ranks: this rank only joins the gradient average
                optimizer.zero_grad(set_to_none=True)
                distributed.average_gradients(model, 0.0, context)
                scaler.step(optimizer)
                scaler.update()
                bar.update(1)
                continue
            with timed():  # the tuner sets the next step's thread count from this one's time
                with autocast(session.precision, session.device):
                    terms = tuple(batch_loss(index))
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(terms[0]).backward()
                distributed.average_gradients(model, len(index) / len(batch), context)
                scaler.step(optimizer)
                scaler.update()
                for key, value in zip(totals, terms):
                    totals[key] += float(value.detach()) * len(index)
            bar.set_postfix(loss=f"{float(terms[0].detach()):.4g}")
            bar.update(1)
    return {key: value / n for key, value in zip(totals, distributed.all_sum(list(totals.values()), context))}


def fit(trainee: Trainee, session: Session, run_dir: Path, *, max_epochs: int, patience: int,
        columns: Sequence[str], checkpoint: dict | None = None, progress: bool = False, desc: str = "epochs",
        _stop_after_epoch: int | None = None) -> dict[str, Any]:
    """Train until ``max_epochs`` or ``patience`` epochs without a better score; see the module docstring.

    Args:
        trainee: the network's data, loss and score.
        session: model, optimiser, precision, device, ranks; the model holds its initial weights.
        run_dir: where rank 0 writes ``checkpoint.pt`` and ``history.csv`` after every epoch.
        max_epochs: epoch limit.
        patience: epochs without a better score (once counting) before stopping.
        columns: the history's columns (``history.csv``), ``epoch`` first and ``seconds`` last.
        checkpoint: a loaded checkpoint to continue from, or ``None`` to start afresh.
        progress: a bar over the epochs (:func:`uadlab._progress.progress_bar`) and one over each epoch's
            batches; a run that finishes before ``max_epochs`` (early stopping) ends its bar complete.
        desc: the epoch bar's label, short (it leads a line of at most 100 characters): the experiment.
        _stop_after_epoch: test hook: return (unfinished) after handing this epoch's checkpoint to
            the writer, as if the process had been killed.

    Returns:
        The loop state: ``epoch`` (epochs trained), ``best_model`` (state dict, on the CPU), ``best_epoch``
        (1-based, 0 before the first), ``epochs_since_best``, ``history`` (list of row dicts) and
        ``finished``. Every checkpoint is on disk when it returns.
    """
    model = session.model
    state = {"epoch": 0, "best_model": _weights_on_host(model), "best_epoch": 0,
             "epochs_since_best": 0, "history": [], "finished": False}
    if checkpoint is not None:
        _restore(session, trainee, checkpoint, state)
    # The best score is recomputed from the best epoch's row: a checkpoint stores no score.
    best = trainee.score(state["history"][state["best_epoch"] - 1]) if state["best_epoch"] else None
    writer = CheckpointWriter()
    epoch_bar = progress_bar(progress, total=max_epochs, initial=state["epoch"], desc=desc, unit="epoch")
    with _training_threads(session):  # registered, threads tuned, until the loop ends
        try:
            for epoch in range(state["epoch"] + 1, max_epochs + 1):
                start = time.perf_counter()
                row = {"epoch": epoch, **trainee.train_epoch(epoch, session, progress=progress)}
                row.update(trainee.validate(session))
                row["seconds"] = time.perf_counter() - start
                state["history"].append(row)
                score = trainee.score(row)
                if score > (best if best is not None else (-math.inf,) * len(score)):
                    best = score
                    state.update(best_epoch=epoch, epochs_since_best=0, best_model=_weights_on_host(model))
                elif trainee.patience_started(best):
                    state["epochs_since_best"] += 1
                state["epoch"] = epoch
                state["finished"] = epoch >= max_epochs or state["epochs_since_best"] >= patience
                if session.context.is_main:
                    _checkpoint(run_dir, state, session, trainee, columns, writer)
                postfix = {k: f"{v:.4g}" for k, v in row.items() if k not in ("epoch", "seconds")}
                epoch_bar.set_postfix(postfix | {"threads": session.threads.threads})
                epoch_bar.update(1)
                if state["finished"] or epoch == _stop_after_epoch:
                    break
        except BaseException:
            writer.wait(raise_error=False)  # the last epoch's checkpoint is complete, whatever stopped the run
            raise
        finally:  # a finished run's bar ends complete, also when patience stopped it before max_epochs; a run
            if state["finished"]:  # stopped otherwise (an error, an interrupt, the test hook) keeps its count
                epoch_bar.finish()
            epoch_bar.close()
    writer.wait()
    return state


@contextlib.contextmanager
def _training_threads(session: Session) -> Iterator[ThreadTuner]:
    """While inside: this process in the registry of trainings, and ``session.threads`` a tuner
    (probing step times on a CPU with one process, else holding the budget).
    """
    tuner = ThreadTuner(adaptive=session.device.type == "cpu" and not session.context.active)
    with registered(), tuner:
        session.threads = tuner
        try:
            yield tuner
        finally:
            session.threads = None


def _weights_on_host(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the model's state dict, complete when returned."""
    weights, wait = host_copy(model.state_dict())
    wait()
    return weights


def _checkpoint(run_dir: Path, state: dict, session: Session, trainee: Trainee, columns: Sequence[str],
                writer: CheckpointWriter) -> None:
    """Hand a CPU copy of this moment's checkpoint to ``writer`` (the weights and optimiser moments change
    in place in the next epoch and the history list grows; the best weights are already a copy).
    """
    scaler = session.scaler
    live = {"model": session.model.state_dict(),
            "optimizer": None if session.optimizer is None else session.optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "history": state["history"], **trainee.extras()}
    copied, ready = host_copy(live)
    write_checkpoint(run_dir, {**state, **copied, "rng": get_rng_states()}, columns, writer, ready=ready)


def _restore(session: Session, trainee: Trainee, checkpoint: dict, state: dict) -> None:
    """Load a checkpoint's weights, optimiser, loss scaler, RNG states, extras and loop state."""
    session.model.load_state_dict(checkpoint["model"])
    if session.optimizer is not None:
        session.optimizer.load_state_dict(checkpoint["optimizer"])
    if checkpoint.get("scaler"):
        session.scaler.load_state_dict(checkpoint["scaler"])
    trainee.load_extras(checkpoint)
    set_rng_states(checkpoint["rng"])
    state.update({k: checkpoint[k] for k in state})
