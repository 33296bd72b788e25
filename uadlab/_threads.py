"""Thread budget: the usable CPU cores shared fairly among the uadlab processes running at once.

torch, OpenMP and the BLAS libraries each start one thread per core by default. Several uadlab
processes on one machine (data-build workers, pytest-xdist workers, two trainings, ``torchrun``
ranks) then run many more threads than cores, and oversubscribed OpenMP threads make torch many
times slower (two smoke epochs: 93 s with default threads on a loaded 2-core machine, 5.7 s with one
thread each). :func:`limit_threads` is the one place that sets torch's and the native libraries'
thread counts on start; the command line calls it on start, so does a lab's setup and every
data-build worker. While a network trains, :class:`uadlab.speed.thread_tuner.ThreadTuner` re-reads
the budget and chooses within it from measured step times.

The budget, in this order:

1. ``OMP_NUM_THREADS`` when the user set it (:func:`explicit_threads`: an explicit choice is
   respected; a value uadlab set for its own child processes is not one);
2. else the usable cores (``os.sched_getaffinity``, which honours ``taskset`` and container CPU
   sets) divided by the processes running at once, at least 1. Those are the uadlab processes on the
   machine (:func:`concurrent_processes`): the trainings in the registry
   (:mod:`uadlab._process_registry`, this process counted once), or more if announced by
   ``UADLAB_PROCESSES`` (set it when you run several uadlab jobs on one machine yourself),
   ``PYTEST_XDIST_WORKER_COUNT`` (pytest-xdist) or ``LOCAL_WORLD_SIZE`` (``torchrun``); times the
   ``processes`` argument, the processes one job runs at once (a data build passes its worker count).
"""

from __future__ import annotations

import os
import sys

from uadlab._checks import check_int
from uadlab._process_registry import live_processes

__all__ = ["ADAPTIVE_VARIABLE", "usable_cores", "concurrent_processes", "explicit_threads", "thread_budget",
           "limit_threads"]

#: Environment variables that say how many uadlab processes share this machine, largest wins.
PROCESS_VARIABLES: tuple[str, ...] = ("UADLAB_PROCESSES", "PYTEST_XDIST_WORKER_COUNT", "LOCAL_WORLD_SIZE")
#: Environment variable that switches off the choice from step times (:mod:`uadlab.speed.thread_tuner`) when
#: ``0``: a training then uses its budget.
ADAPTIVE_VARIABLE = "UADLAB_ADAPTIVE_THREADS"


def usable_cores() -> int:
    """CPU cores this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` where absent)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def concurrent_processes() -> int:
    """uadlab processes running at once on this machine: the largest of the registered live trainings
    with this process (:func:`uadlab._process_registry.live_processes`) and :data:`PROCESS_VARIABLES`.

    A variable that is unset, empty or not a positive integer is ignored.
    """
    counts = [len(live_processes() | {os.getpid()})]
    for name in PROCESS_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) >= 1:
            counts.append(int(value))
    return max(counts)


def explicit_threads() -> int | None:
    """The thread count the user chose with ``OMP_NUM_THREADS``, or ``None``.

    ``None`` also when the variable is not a positive integer, or when uadlab set it itself (for the
    libraries and child processes of one of its processes: :func:`limit_threads` marks its value
    with ``UADLAB_THREADS_SET``).
    """
    value = os.environ.get("OMP_NUM_THREADS", "")
    if not (value.strip().isdigit() and int(value) >= 1):
        return None
    return None if os.environ.get("UADLAB_THREADS_SET") == value else int(value)


def thread_budget(processes: int | None = None) -> int:
    """Threads one process should use: :func:`explicit_threads` if set, else cores // processes (>= 1).

    Args:
        processes: processes this job runs at once (its data-build workers); ``None``: 1. Multiplied
            by :func:`concurrent_processes`, the jobs on the machine.

    Returns:
        The thread count, at least 1.

    Raises:
        TypeError: ``processes`` is not an int.
        ValueError: ``processes`` is below 1.

    >>> thread_budget(10**6) if "OMP_NUM_THREADS" not in os.environ else 1
    1
    """
    if processes is not None:
        processes = check_int("processes", processes, "a positive int", lambda v: v >= 1)
    explicit = explicit_threads()
    if explicit is not None:
        return explicit
    return max(1, usable_cores() // ((processes or 1) * concurrent_processes()))


def limit_threads(processes: int | None = None, *, torch_threads: bool = True) -> int:
    """Set torch's intra-op threads and every loaded OpenMP/BLAS pool to :func:`thread_budget`.

    Also sets ``OMP_NUM_THREADS`` (unless the user set it) so that libraries loaded later, and child
    processes, start with the same budget; a child recomputes its own, since the value is marked as
    uadlab's by ``UADLAB_THREADS_SET`` (:func:`explicit_threads`).

    Args:
        processes: processes this job runs at once (see :func:`thread_budget`); ``None``: 1.
        torch_threads: also call ``torch.set_num_threads`` (importing torch). ``False`` leaves torch
            alone unless it is already imported (data-build workers never need it).

    Returns:
        The thread count now in force.

    Raises:
        TypeError: ``processes`` is not an int.
        ValueError: ``processes`` is below 1.
    """
    threads = thread_budget(processes)
    if explicit_threads() is None:
        os.environ["OMP_NUM_THREADS"] = os.environ["UADLAB_THREADS_SET"] = str(threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    if torch_threads or "torch" in sys.modules:
        import torch

        torch.set_num_threads(threads)
    return threads
