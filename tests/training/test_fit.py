"""The fit core's progress bars (an epoch bar that ends complete when the run stops early, transient batch bars)
and its threads (the process registered while it trains, every step timed by the thread tuner)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch
from torch import nn

from uadlab._process_registry import RUNTIME_VARIABLE, live_processes
from uadlab._threads import ADAPTIVE_VARIABLE
from uadlab.speed.thread_tuner import ThreadTuner
from uadlab.training import fit as fit_module
from uadlab.training import runs
from uadlab.training.fit import Session, fit, train_pass


class _Flat:
    """A trainee whose validation never improves after its first epoch: patience stops it early."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    def train_epoch(self, epoch, session, *, progress):
        x = torch.ones(4, 1)
        return train_pass(session, np.arange(4), lambda index: (self.model(x[index]).pow(2).mean(),), ["train_loss"],
                          batch_size=2, progress=progress)

    def validate(self, session):
        return {"val_loss": 1.0}

    def score(self, row):
        return (-row["val_loss"],)

    def patience_started(self, best):
        return True

    def extras(self):
        return {}

    def load_extras(self, checkpoint):
        pass


@pytest.fixture
def bars(monkeypatch):
    """Every bar the fit core makes, in order."""
    made, original = [], fit_module.progress_bar

    def recording(*args, **kwargs):
        made.append(original(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(fit_module, "progress_bar", recording)
    return made


def _fit(tmp_path, **options):
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    session = Session(model, torch.optim.SGD(model.parameters(), lr=0.1), "32", torch.device("cpu"))
    columns = ["epoch", "train_loss", "val_loss", "seconds"]
    return fit(_Flat(model), session, tmp_path, max_epochs=10, patience=2, columns=columns, progress=True,
               desc="2D-None", **options)


def test_a_run_stopped_by_patience_ends_its_bar_complete(tmp_path, bars, capsys):
    state = _fit(tmp_path)
    assert state["finished"] and state["epoch"] == 3  # epoch 1 best, then 2 without a better score
    epoch_bar, *batch_bars = bars
    assert epoch_bar.n == epoch_bar.total == 3 and epoch_bar.leave
    assert len(batch_bars) == 3 and all(not bar.leave for bar in batch_bars)
    assert "2D-None: 100%" in capsys.readouterr().err.split("\r")[-1]


def test_a_stopped_run_keeps_its_bar_short(tmp_path, bars):
    state = _fit(tmp_path, _stop_after_epoch=1)  # as if the process had been killed
    assert not state["finished"]
    assert bars[0].n == 1 and bars[0].total == 10


def test_each_checkpoint_holds_its_epochs_weights_though_written_while_the_next_epoch_trains(tmp_path, monkeypatch):
    """The writer thread saves a CPU copy taken at the end of the epoch; the next checkpoint, and the end of
    fit, wait for the write in flight."""
    torch.manual_seed(0)
    model = nn.Linear(1, 1)
    session = Session(model, torch.optim.SGD(model.parameters(), lr=0.1), "32", torch.device("cpu"))
    trained, saved = [], []
    next_epoch_trained = {1: threading.Event(), 2: threading.Event()}

    class Lagging(_Flat):
        def train_epoch(self, epoch, session, *, progress):
            terms = super().train_epoch(epoch, session, progress=progress)
            trained.append(model.weight.detach().clone())
            if epoch - 1 in next_epoch_trained:
                next_epoch_trained[epoch - 1].set()
            return terms

    def slow_save(checkpoint, tmp, path):  # epoch e's write goes on once epoch e + 1 has changed the weights
        if checkpoint["epoch"] in next_epoch_trained:
            assert next_epoch_trained[checkpoint["epoch"]].wait(timeout=30)
        saved.append(checkpoint["model"]["weight"].clone())
        torch.save(checkpoint, tmp)

    monkeypatch.setattr(runs, "_save", slow_save)
    state = fit(Lagging(model), session, tmp_path, max_epochs=3, patience=5,
                columns=["epoch", "train_loss", "val_loss", "seconds"])
    assert state["epoch"] == 3 and len(saved) == 3  # every write done when fit returns
    assert all(torch.equal(a, b) for a, b in zip(saved, trained))
    assert not torch.equal(trained[0], trained[1])
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 3


def test_fit_registers_the_process_and_times_every_step_with_a_tuner(tmp_path, monkeypatch, bars):
    monkeypatch.setenv(RUNTIME_VARIABLE, str(tmp_path / "registry"))
    monkeypatch.delenv(ADAPTIVE_VARIABLE)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    applied, seen, steps = [], [], []

    class Counting(ThreadTuner):
        def step(self):
            steps.append(self.threads)
            return super().step()

    monkeypatch.setattr(fit_module, "ThreadTuner", lambda adaptive: Counting(
        adaptive=adaptive, budget=lambda: 2, others=lambda: 0.0, set_threads=applied.append))
    original = _Flat.train_epoch

    def train_epoch(self, epoch, session, *, progress):
        seen.append((live_processes(), session.threads))
        return original(self, epoch, session, progress=progress)

    monkeypatch.setattr(_Flat, "train_epoch", train_epoch)
    state = _fit(tmp_path / "run")
    assert state["epoch"] == 3  # 2 steps an epoch: 6 steps
    assert all(pids == {os.getpid()} and tuner is not None and tuner.adaptive for pids, tuner in seen)
    assert len(steps) == 6 and steps[0] == 2  # every step timed, from the budget on
    assert applied[-1] == 2  # left at the budget
    assert live_processes() == set()
    assert "threads=" in str(bars[0].postfix)
