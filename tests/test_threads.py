"""Tests of uadlab._threads: the thread budget shared among concurrent uadlab processes."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import RegisteredProcess
from threadpoolctl import threadpool_limits

from uadlab import _process_registry, _threads


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean environment of the variables the budget reads, an empty registry, and 8 usable cores."""
    for name in ("OMP_NUM_THREADS", "UADLAB_THREADS_SET", *_threads.PROCESS_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(_process_registry.RUNTIME_VARIABLE, str(tmp_path / "registry"))
    monkeypatch.setattr(_threads.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    before = torch.get_num_threads()
    with threadpool_limits(limits=None):  # restores the native pools' sizes on exit
        yield monkeypatch
    torch.set_num_threads(before)


def test_usable_cores_follow_the_affinity_mask(env):
    assert _threads.usable_cores() == 8
    env.setattr(_threads.os, "sched_getaffinity", lambda pid: {3})
    assert _threads.usable_cores() == 1


@pytest.mark.parametrize(("variables", "expected"), [
    ({}, 1),
    ({"PYTEST_XDIST_WORKER_COUNT": "2"}, 2),
    ({"UADLAB_PROCESSES": "3", "PYTEST_XDIST_WORKER_COUNT": "2"}, 3),
    ({"LOCAL_WORLD_SIZE": "4"}, 4),
    ({"UADLAB_PROCESSES": "zero", "LOCAL_WORLD_SIZE": "0"}, 1),  # nonsense is ignored
])
def test_concurrent_processes_is_the_largest_count_announced(env, variables, expected):
    for name, value in variables.items():
        env.setenv(name, value)
    assert _threads.concurrent_processes() == expected


def test_the_registered_trainings_share_the_cores(env, tmp_path):
    with RegisteredProcess(tmp_path / "registry") as first:
        assert _threads.concurrent_processes() == 2  # the other training and this process
        assert _threads.thread_budget() == 4
        with RegisteredProcess(tmp_path / "registry"), _process_registry.registered():
            assert _threads.concurrent_processes() == 3  # this process is counted once
            assert _threads.thread_budget() == 2
            assert _threads.thread_budget(2) == 1
            env.setenv("UADLAB_PROCESSES", "4")  # an announced count larger than the registry's
            assert _threads.thread_budget() == 2
            env.setenv("OMP_NUM_THREADS", "5")  # the user's choice wins over the registry
            assert _threads.thread_budget() == 5
            env.delenv("OMP_NUM_THREADS")
            env.delenv("UADLAB_PROCESSES")
        first.release()
        assert _threads.concurrent_processes() == 1 and _threads.thread_budget() == 8


@pytest.mark.parametrize(("variables", "expected"), [
    ({}, None),
    ({"OMP_NUM_THREADS": "3"}, 3),
    ({"OMP_NUM_THREADS": "3", "UADLAB_THREADS_SET": "2"}, 3),  # changed by the user after uadlab set it
    ({"OMP_NUM_THREADS": "3", "UADLAB_THREADS_SET": "3"}, None),  # set by a uadlab parent process
    ({"OMP_NUM_THREADS": "0"}, None),
    ({"OMP_NUM_THREADS": "two"}, None),
])
def test_explicit_threads_is_the_users_choice_only(env, variables, expected):
    for name, value in variables.items():
        env.setenv(name, value)
    assert _threads.explicit_threads() == expected


def test_thread_budget_divides_the_cores_and_respects_omp_num_threads(env):
    assert _threads.thread_budget() == 8
    assert _threads.thread_budget(3) == 2
    assert _threads.thread_budget(100) == 1  # never below one thread
    env.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
    assert _threads.thread_budget() == 2
    assert _threads.thread_budget(2) == 1  # two data-build workers in each of four xdist workers
    env.setenv("OMP_NUM_THREADS", "5")
    assert _threads.thread_budget() == 5
    assert _threads.thread_budget(8) == 5


@pytest.mark.parametrize(("processes", "error", "match"), [
    (1.5, TypeError, "`processes` must be a positive int"),
    (True, TypeError, "`processes` must be a positive int"),
    (0, ValueError, "`processes` must be a positive int, got 0"),
])
def test_thread_budget_rejects_bad_process_counts(env, processes, error, match):
    with pytest.raises(error, match=match):
        _threads.thread_budget(processes)


def test_limit_threads_sets_torch_and_the_environment(env):
    env.setenv("UADLAB_PROCESSES", "4")
    assert _threads.limit_threads() == 2
    assert torch.get_num_threads() == 2
    assert os.environ["OMP_NUM_THREADS"] == "2"


def test_an_inherited_budget_is_recomputed_for_the_trainings_running_now(env, tmp_path):
    assert _threads.limit_threads() == 8  # alone: the value child processes inherit, marked as uadlab's
    with RegisteredProcess(tmp_path / "registry"):
        assert _threads.limit_threads() == 4
        assert os.environ["OMP_NUM_THREADS"] == os.environ["UADLAB_THREADS_SET"] == "4"


def test_a_worker_recomputes_an_inherited_budget_but_not_an_explicit_one(env):
    assert _threads.limit_threads() == 8  # the parent process, alone
    assert _threads.limit_threads(4, torch_threads=False) == 2  # its workers: 8 cores / 4 workers
    env.setenv("OMP_NUM_THREADS", "3")
    env.delenv("UADLAB_THREADS_SET")  # the user's own choice
    assert _threads.limit_threads(4) == 3
