"""The thread count of a training, chosen from measured step times and re-checked while it trains.

On two cores two threads are fastest when the machine is quiet and slowest when it is not: a 2D lab
step took 28 ms with two threads and 33 ms with one on a quiet machine, but 58 against 33 ms beside
one busy Python process, 104 against 54 ms beside two, and a lab batch 1.7-1.85 s against 0.03-0.05 s
under background load (issue 29): every parallel region waits for the thread that the scheduler has
put aside. Neither count is right everywhere, so :class:`ThreadTuner` measures:

1. **Budget.** The most threads it may use is :func:`uadlab._threads.thread_budget`: the user's
   ``OMP_NUM_THREADS`` (then fixed: nothing else below happens), else the usable cores divided among
   the uadlab trainings running at once (:mod:`uadlab._process_registry`). It is read again every
   ``recheck_s`` seconds, so the share follows when another training starts or ends.
2. **Free cores.** Before it trains at a budget, and before every probe, it counts the cores that
   other processes keep busy right now (:func:`busy_cores`: their runnable threads). When fewer cores
   than the budget are free it trains on the free ones (at least one) and probes only counts up to
   them: beside two spinning processes on 2 cores a 2-thread step took 2-3 s where a 1-thread step
   took 35 ms, so a probe that tries 2 threads there costs more than it can find (issue 29: 1.21-1.39x
   the best fixed count with two spinners while every probe tried both). Threads on cores taken
   without a probe are watched as at the budget (3.), and the free cores are counted again
   ``reprobe_s`` seconds later (5.).
3. **Watch.** It trains at its count and watches each step's CPU time (``time.process_time``, all
   threads) against its wall time. While every thread has a core, a step's CPU time is the threads
   times its wall time (a spinning OpenMP thread burns CPU while it waits for the others); threads
   that wait for a core do not. When the median ratio of the last ``window`` steps falls below
   ``busy`` times the threads in force, the machine is busy and a probe starts. On a quiet machine
   nothing else happens, so the default costs nothing there: 2D and 3D lab steps on 2 quiet cores
   ran at 1.96-2.0 CPU seconds per second with 2 threads, 1.2-1.25 beside one busy process. The
   first ``probe_steps - 1`` steps at a new budget, and the first at a probe's winner, are not
   watched: they compile kernels and fill caches, much of it on one thread.
4. **Probe.** The candidates are 1, 2, 4, ... up to the free cores, and those, tried in ascending
   order (one thread never stalls on a busy machine, so it sets the bar first), ``probe_steps``
   training steps each; the first step after a switch is a warm-up that is not averaged. A candidate
   is dropped at once when one of its steps takes ``reject`` times the best median so far. The fewest
   threads whose median step is within ``margin`` of the fastest win (fewer threads leave cores to
   the rest of the machine).
5. **Re-probe** when the median of the last ``window`` steps exceeds ``jump`` times the winner's probe
   median (the load has come), and ``reprobe_s`` seconds after a probe: when fewer threads than the
   budget won (the load may have gone), or when the budget won and its threads wait for a core again.
   The wait doubles, up to ``max_reprobe_s``, each time the same count wins again, since under load a
   probe's step at the wrong count can take a hundred times a good one. A probe skipped because only
   one core is free does not double it: counting the free cores again costs about 0.1 s, and the
   load may go. A new budget starts over at 2.

``UADLAB_ADAPTIVE_THREADS=0`` switches the probing off: the process then uses its budget, re-checked
as above. Only steps are timed (:meth:`ThreadTuner.step`); time between steps (validation,
checkpoints) counts toward the clocks of 1 and 5 but never as a step.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator

import torch

from uadlab._checks import check_int, check_real
from uadlab._threads import ADAPTIVE_VARIABLE, explicit_threads, thread_budget, usable_cores

__all__ = ["ThreadTuner", "candidate_threads", "busy_cores"]

#: Threads niced this much above this process are not counted by :func:`busy_cores`: the scheduler
#: weighs them about 1.25 ** 10, i.e. 9 times, less (CFS).
_NICE_IGNORED = 10


def candidate_threads(budget: int) -> list[int]:
    """The thread counts a probe tries: powers of two below ``budget``, and ``budget``, ascending.

    Raises:
        TypeError: ``budget`` is not an int.
        ValueError: ``budget`` is below 1.

    >>> candidate_threads(2), candidate_threads(6)
    ([1, 2], [1, 2, 4, 6])
    """
    budget = check_int("budget", budget, "a positive int", lambda v: v >= 1)
    return sorted({2**k for k in range(budget.bit_length()) if 2**k < budget} | {budget})


def busy_cores(samples: int = 5, interval_s: float = 0.02) -> float:
    """Cores that other processes keep busy now: their runnable threads on this process's cores.

    Counts, in ``/proc`` (Linux), the threads of other processes that are runnable (state ``R``) and
    last ran on one of this process's usable cores (``os.sched_getaffinity``), leaving out those niced
    10 or more above this process (the scheduler gives them a ninth of its weight or less), and takes
    the median of ``samples`` counts ``interval_s`` seconds apart: a spinning process is runnable in
    every sample, a process that wakes for a moment in few. One count reads every thread's ``stat``
    (about 3.5 ms for 130 threads on the 2-core machine of docs/speed.md).

    Args:
        samples: counts to take (>= 1).
        interval_s: seconds between two counts (>= 0).

    Returns:
        The median count, 0.0 where ``/proc`` cannot be read (other systems: every core looks free).

    Raises:
        TypeError, ValueError: ``samples`` or ``interval_s`` of the wrong type or out of range.
    """
    samples = check_int("samples", samples, "a positive int", lambda v: v >= 1)
    interval_s = check_real("interval_s", interval_s, "a number >= 0", lambda v: math.isfinite(v) and v >= 0)
    if not hasattr(os, "sched_getaffinity") or not os.path.isdir("/proc/self/task"):
        return 0.0
    own, cores, ignored_nice = os.getpid(), os.sched_getaffinity(0), os.nice(0) + _NICE_IGNORED
    counts = []
    for i in range(samples):
        if i:
            time.sleep(interval_s)
        counts.append(_runnable_elsewhere(own, cores, ignored_nice))
    return float(statistics.median(counts))


def _runnable_elsewhere(own: int, cores: set[int], ignored_nice: int, proc: str = "/proc") -> int:
    """Runnable threads of the processes in ``proc`` but ``own`` whose last core is in ``cores`` and
    whose nice value is below ``ignored_nice`` (one pass; processes that end meanwhile are skipped).
    """
    count = 0
    for process in os.scandir(proc):
        if not process.name.isdigit() or int(process.name) == own:
            continue
        try:
            for thread in os.scandir(os.path.join(process.path, "task")):
                with open(os.path.join(thread.path, "stat"), "rb") as file:
                    stat = file.read()
                fields = stat[stat.rindex(b")") + 2:].split()  # from field 3 (state); the name may hold spaces
                count += fields[0] == b"R" and int(fields[16]) < ignored_nice and int(fields[36]) in cores
        except (OSError, ValueError, IndexError):
            continue
    return count


class ThreadTuner:
    """Sets torch's intra-op thread count before each training step (module docstring).

    Use it as a context manager around the training, and :meth:`step` around each step::

        with ThreadTuner() as tuner:
            for batch in batches:
                with tuner.step():
                    ...

    Args:
        adaptive: probe step times; ``False`` (or ``UADLAB_ADAPTIVE_THREADS=0``, or an explicit
            ``OMP_NUM_THREADS``): use the budget, re-read every ``recheck_s``.
        budget: the most threads, read on entry and every ``recheck_s`` (default
            :func:`uadlab._threads.thread_budget`).
        others: the cores other processes keep busy, read before training at a budget and before
            each probe (default :func:`busy_cores`).
        cores: the usable cores (default :func:`uadlab._threads.usable_cores`).
        set_threads: applies a count (default ``torch.set_num_threads``).
        clock: seconds, monotonic (default ``time.perf_counter``).
        cpu_clock: CPU seconds of the whole process, all threads (default ``time.process_time``).
        probe_steps: steps per candidate, warm-up included (>= 2).
        window: recent steps whose median is compared with the winner's (>= 1).
        recheck_s: seconds between readings of the budget.
        reprobe_s: seconds from a probe to the next while the budget stays, when the last probe
            changed the count.
        max_reprobe_s: the longest such wait, reached by doubling while the count stays (>= ``reprobe_s``).
        jump: a re-probe when the recent median exceeds this times the winner's (> 1).
        reject: a candidate is dropped at a step this many times the best median so far (> 1).
        margin: fewer threads win when their median is within this fraction of the fastest (>= 0).
        busy: a probe starts when the steps' CPU time falls below this fraction of their wall time
            times the threads in force (in (0, 1]).

    Attributes:
        threads: the count in force (0 before entry).
        adaptive: whether it probes.

    Raises:
        TypeError, ValueError: an option of the wrong type or out of its range.
    """

    def __init__(self, *, adaptive: bool = True, budget: Callable[[], int] = thread_budget,
                 others: Callable[[], float] = busy_cores, cores: Callable[[], int] = usable_cores,
                 set_threads: Callable[[int], None] = torch.set_num_threads,
                 clock: Callable[[], float] = time.perf_counter, cpu_clock: Callable[[], float] = time.process_time,
                 probe_steps: int = 4, window: int = 3, recheck_s: float = 5.0, reprobe_s: float = 60.0,
                 max_reprobe_s: float = 480.0, jump: float = 1.5, reject: float = 3.0, margin: float = 0.05,
                 busy: float = 0.85) -> None:
        switched_off = os.environ.get(ADAPTIVE_VARIABLE, "").strip() == "0"
        self.adaptive = bool(adaptive) and explicit_threads() is None and not switched_off
        self._budget_of, self._set_threads, self._clock, self._cpu_clock = budget, set_threads, clock, cpu_clock
        self._others_of, self._cores_of = others, cores
        self._probe_steps = check_int("probe_steps", probe_steps, "an int >= 2", lambda v: v >= 2)
        self._recent: deque[float] = deque(maxlen=check_int("window", window, "a positive int", lambda v: v >= 1))
        self._loads: deque[float] = deque(maxlen=window)  # CPU seconds per wall second and thread
        self._recheck_s = check_real("recheck_s", recheck_s, "a positive number", lambda v: v > 0)
        self._reprobe_s = check_real("reprobe_s", reprobe_s, "a positive number", lambda v: v > 0)
        self._max_reprobe_s = check_real("max_reprobe_s", max_reprobe_s, "a number >= `reprobe_s`",
                                         lambda v: math.isfinite(v) and v >= self._reprobe_s)
        self._wait_s = self._reprobe_s  # from the last probe to the next
        self._jump = check_real("jump", jump, "a number > 1", lambda v: v > 1)
        self._reject = check_real("reject", reject, "a number > 1", lambda v: v > 1)
        self._margin = check_real("margin", margin, "a number >= 0", lambda v: math.isfinite(v) and v >= 0)
        self._busy = check_real("busy", busy, "a number in (0, 1]", lambda v: 0 < v <= 1)
        self.threads = 0
        self._budget = 0
        self._checked_at = self._probed_at = 0.0
        self._pending: list[int] = []  # candidates still to try; empty outside a probe
        self._trying: int | None = None  # the candidate being tried; None outside a probe
        self._times: list[float] = []  # its steps so far
        self._medians: dict[int, float] = {}  # the candidates measured in this probe
        self._winner: int | None = None  # the last probe's
        self._reference = math.inf  # its median step, seconds
        self._warm_up = 0  # steps still to skip after a switch before watching

    def __enter__(self) -> ThreadTuner:
        now = self._clock()
        self._budget, self._checked_at = self._budget_of(), now
        self._start(now)
        return self

    def __exit__(self, *exc: object) -> None:
        """Leave the process at its budget now (the count its other work, e.g. evaluation, runs at)."""
        self._use(self._budget_of())

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Time one training step with the clock and set the thread count for the next one."""
        start, cpu = self._clock(), self._cpu_clock()
        yield
        now = self._clock()
        seconds = now - start
        used = (self._cpu_clock() - cpu) / max(seconds, 1e-9) / max(self.threads, 1)
        if now - self._checked_at >= self._recheck_s:
            self._checked_at = now
            budget = self._budget_of()
            if budget != self._budget:
                self._budget = budget
                self._start(now)
                return
        if self._trying is not None:
            self._probe(seconds)
        elif self._warm_up > 0:  # steps right after a switch (kernels compiled, caches filled) tell nothing
            self._warm_up -= 1
        elif self.adaptive:
            self._recent.append(seconds)
            self._loads.append(used)
            full = len(self._recent) == self._recent.maxlen
            waiting = full and self.threads > 1 and statistics.median(self._loads) < self._busy
            jumped = full and statistics.median(self._recent) > self._jump * self._reference
            due = now - self._probed_at >= self._wait_s
            if self._winner is None:  # at the budget, not probed yet: a probe once threads wait for a core
                start = waiting
            elif self._winner == self._budget:  # the budget won: the same watch, after the wait
                start = jumped or (waiting and due)
            else:  # fewer threads won (the load may have gone), or the free cores were taken unprobed
                start = jumped or due or (waiting and self._reference == math.inf)
            if start:
                self._probe_now(now)

    def _start(self, now: float) -> None:
        """Use the budget and watch it (``adaptive``: the free cores when fewer), or just use it."""
        self._trying, self._pending, self._winner, self._reference = None, [], None, math.inf
        self._probed_at, self._wait_s, self._warm_up = now, self._reprobe_s, self._probe_steps - 1
        self._recent.clear()
        self._loads.clear()
        free = self._free() if self.adaptive else self._budget
        if free < self._budget:  # as if a probe had chosen them; the next is due after reprobe_s
            self._winner = free
        self._use(free)

    def _free(self) -> int:
        """The budget, or the cores that other processes leave free when fewer (at least 1)."""
        if self._budget == 1:
            return 1
        return max(1, min(self._budget, math.floor(self._cores_of() - self._others_of() + 0.5)))

    def _probe_now(self, now: float) -> None:
        """Begin a probe over the free cores' candidates; with one free core, use it without a probe."""
        self._probed_at, self._medians = now, {}
        self._recent.clear()
        self._loads.clear()
        self._pending = candidate_threads(self._free())
        if len(self._pending) == 1:  # nothing to compare; counting again costs a tenth of a second, not a probe
            self._settle(self._pending[0], math.inf, wait_s=self._reprobe_s)
            return
        self._try_next()

    def _try_next(self) -> None:
        self._trying, self._times = self._pending.pop(0), []
        self._use(self._trying)

    def _probe(self, seconds: float) -> None:
        """Count one step of the candidate being tried; move on once it is measured or dropped."""
        self._times.append(seconds)
        dropped = seconds > self._reject * min(self._medians.values(), default=math.inf)
        if not dropped and len(self._times) < self._probe_steps:
            return
        if not dropped:
            self._medians[self._trying] = statistics.median(self._times[1:])  # the first: a warm-up
        if self._pending:
            self._try_next()
            return
        fastest = min(self._medians.values())
        winner = min(n for n, median in self._medians.items() if median <= (1 + self._margin) * fastest)
        self._settle(winner, self._medians[winner])

    def _settle(self, winner: int, reference: float, *, wait_s: float | None = None) -> None:
        """End a probe (or a skipped one) at ``winner`` threads, whose steps take ``reference`` seconds;
        the next is due after ``wait_s`` (default: doubled when the same count won again).
        """
        same = winner == self._winner
        doubled = min(2 * self._wait_s, self._max_reprobe_s) if same else self._reprobe_s
        self._wait_s = doubled if wait_s is None else wait_s
        self._trying, self._winner, self._reference = None, winner, reference
        self._warm_up = 1 if winner != self.threads else 0
        self._use(winner)

    def _use(self, threads: int) -> None:
        if threads != self.threads:
            self._set_threads(threads)
            self.threads = threads
