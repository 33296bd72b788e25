"""Tests of uadlab.speed.thread_tuner: the thread count chosen from step times, on a simulated machine (no timing)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from uadlab._threads import ADAPTIVE_VARIABLE
from uadlab.speed.thread_tuner import ThreadTuner, _runnable_elsewhere, busy_cores, candidate_threads

QUIET = {1: 0.033, 2: 0.028}  # seconds a 2D lab step, issue 29's probe on 2 quiet cores
BUSY = {1: 0.033, 2: 0.058}  # ... beside one busy Python process
STALLED = {1: 0.04, 2: 1.8}  # ... under background load (a lab batch)


class Machine:
    """A simulated machine of ``cores`` cores (2): each step takes ``seconds[threads in force]`` on its clock, and its
    threads get ``share`` of a core each (1.0 on a quiet machine: CPU time = threads x wall time).

    Attributes:
        seconds: step seconds by thread count; change it to change the load.
        share: the share of a core each of several threads gets; change it with the load.
        budget: what the tuner's budget function returns.
        others: the cores other processes keep busy (the tuner's ``others``); 0: none seen.
        looked: how often the tuner read ``others``.
        now, cpu: the clocks (wall, the process's CPU time).
        used: the thread count of every step run, in order.
        applied: every count the tuner set.
    """

    def __init__(self, seconds: dict[int, float], budget: int = 2, share: float = 1.0) -> None:
        self.seconds, self.budget, self.share, self.now, self.cpu = dict(seconds), budget, share, 0.0, 0.0
        self.others, self.looked, self.cores = 0.0, 0, 2
        self.used: list[int] = []
        self.applied: list[int] = []

    def tuner(self, **options) -> ThreadTuner:
        return ThreadTuner(budget=lambda: self.budget, others=self._others, cores=lambda: self.cores,
                           set_threads=self.applied.append, clock=lambda: self.now, cpu_clock=lambda: self.cpu,
                           **options)

    def _others(self) -> float:
        self.looked += 1
        return self.others

    def run(self, tuner: ThreadTuner, steps: int, *, pause: float = 0.0) -> None:
        """``steps`` training steps, ``pause`` seconds between two (validation, checkpoints)."""
        for _ in range(steps):
            with tuner.step():
                threads = tuner.threads
                self.used.append(threads)
                self.now += self.seconds[threads]
                self.cpu += self.seconds[threads] * (1 if threads == 1 else threads * self.share)
            self.now += pause


STARVED = 0.6  # each of two threads gets 60 % of a core beside other work (issue 29: 1.2-1.25 CPU s / s)


@pytest.fixture(autouse=True)
def adaptive(monkeypatch):
    """The default: no OMP_NUM_THREADS, the choice from step times switched on (the tests' conftest
    switches it off for every other test)."""
    for name in ("OMP_NUM_THREADS", "UADLAB_THREADS_SET", ADAPTIVE_VARIABLE):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("budget", "expected"), [(1, [1]), (2, [1, 2]), (3, [1, 2, 3]), (8, [1, 2, 4, 8]),
                                                  (12, [1, 2, 4, 8, 12])])
def test_the_candidates_are_powers_of_two_and_the_budget(budget, expected):
    assert candidate_threads(budget) == expected


def test_on_a_quiet_machine_it_trains_at_the_budget_and_never_probes():
    machine = Machine(QUIET)
    with machine.tuner() as tuner:
        machine.run(tuner, 200, pause=1.0)  # more than reprobe_s
        assert tuner.adaptive
    assert set(machine.used) == {2} and machine.applied == [2]


@pytest.mark.parametrize(("seconds", "winner"), [(BUSY, 1), (QUIET, 2), ({1: 0.030, 2: 0.0295}, 1)])
def test_starved_threads_start_a_probe_that_picks_the_fastest_count_and_fewer_threads_on_a_tie(seconds, winner):
    machine = Machine(seconds, share=STARVED)
    with machine.tuner(window=3) as tuner:
        machine.run(tuner, 26)
        # 3 warm-up steps at the budget, 3 that show the threads waiting for a core; ascending candidates,
        # 4 steps each (the first a warm-up), then the winner.
        assert machine.used == [2] * 6 + [1] * 4 + [2] * 4 + [winner] * 12
        assert tuner.threads == winner


def test_a_candidate_that_stalls_is_dropped_after_one_step():
    machine = Machine(STALLED, share=STARVED)
    with machine.tuner(window=3) as tuner:
        machine.run(tuner, 16)
    assert machine.used == [2] * 6 + [1] * 4 + [2] + [1] * 5


def test_a_jump_in_step_time_starts_a_new_probe():
    machine = Machine(BUSY, share=STARVED)
    with machine.tuner(window=3) as tuner:
        machine.run(tuner, 16)  # the winner's first step is a warm-up, its second is watched
        assert tuner.threads == 1
        machine.seconds = {1: 0.066, 2: 0.2}  # a second busy process starts
        machine.run(tuner, 11)
        assert tuner.threads == 1
    # Two slow steps make the median of the last three jump; a new probe (2 threads dropped at their
    # first step, over 3x one thread's), then its winner.
    assert machine.used[16:] == [1] * 2 + [1] * 4 + [2] + [1] * 4


def test_a_new_probe_follows_the_load_after_reprobe_s():
    machine = Machine(BUSY, share=STARVED)
    with machine.tuner(reprobe_s=60.0) as tuner:
        machine.run(tuner, 16)
        assert tuner.threads == 1
        machine.seconds, machine.share = dict(QUIET), 1.0  # the load goes; one thread's step time does not change
        machine.run(tuner, 10, pause=5.0)  # 50 s more
        assert tuner.threads == 1
        machine.run(tuner, 12, pause=5.0)
        assert machine.used[-12:] == [1] * 3 + [1] * 4 + [2] * 4 + [2]  # 60 s reached, a probe, its winner
        machine.run(tuner, 100, pause=5.0)
        assert set(machine.used[-100:]) == {2}  # back at the budget, watching: no further probe on a quiet machine


@pytest.mark.parametrize(("max_reprobe_s", "probes"), [(480.0, 4), (120.0, 5), (60.0, 9)])
def test_the_wait_for_a_new_probe_doubles_while_the_same_count_wins(max_reprobe_s, probes):
    machine = Machine(BUSY, share=STARVED)
    with machine.tuner(reprobe_s=60.0, max_reprobe_s=max_reprobe_s) as tuner:
        machine.run(tuner, 500, pause=1.0)  # about 517 s
    # Probes start at 0, 60, 180 (+120), 420 (+240) s; the cap shortens the waits. Each tries 2 threads,
    # after the first 6 steps at the budget (3 of warm-up, 3 watched).
    starts = [i for i in range(1, len(machine.used)) if machine.used[i - 1] == 1 and machine.used[i] == 2]
    assert len(starts) == probes and machine.used.count(2) == 6 + 4 * probes


def test_the_budget_is_read_again_every_recheck_s():
    machine = Machine(QUIET)
    with machine.tuner(recheck_s=5.0) as tuner:
        machine.run(tuner, 10)
        assert tuner.threads == 2
        machine.budget = 1  # a second training registered
        machine.run(tuner, 1, pause=5.0)
        machine.run(tuner, 1)
        assert tuner.threads == 1 and machine.applied[-1] == 1
        machine.run(tuner, 5)
        assert set(machine.used[-5:]) == {1}  # no probe within a budget of one
        machine.budget = 2  # it ended
        machine.run(tuner, 1, pause=5.0)
        machine.run(tuner, 10)
        assert machine.used[-10:] == [1] + [2] * 9  # the step that read the budget, then the budget, watched
        assert tuner.threads == 2


def test_switched_off_it_holds_the_budget_and_follows_it(monkeypatch):
    monkeypatch.setenv(ADAPTIVE_VARIABLE, "0")
    machine = Machine(BUSY)
    with machine.tuner(recheck_s=5.0) as tuner:
        assert not tuner.adaptive
        machine.run(tuner, 10)
        machine.budget = 1
        machine.run(tuner, 2, pause=5.0)  # the second reads the budget
        machine.run(tuner, 1)
    assert machine.used == [2] * 12 + [1]
    assert machine.applied == [2, 1]


def test_omp_num_threads_wins(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    machine = Machine({1: 0.01, 2: 0.01, 3: 1.0})
    with ThreadTuner(set_threads=machine.applied.append, clock=lambda: machine.now, recheck_s=1.0) as tuner:
        assert not tuner.adaptive
        machine.run(tuner, 10, pause=1.0)
    assert set(machine.used) == {3} and set(machine.applied) == {3}


def test_on_exit_the_process_is_left_at_its_budget():
    machine = Machine(BUSY, budget=2, share=STARVED)
    with machine.tuner() as tuner:
        machine.run(tuner, 16)
        assert tuner.threads == 1
        machine.budget = 2
    assert machine.applied[-1] == 2 and tuner.threads == 2


def test_not_adaptive_when_asked():
    machine = Machine(BUSY)
    with machine.tuner(adaptive=False) as tuner:
        machine.run(tuner, 10)
    assert not tuner.adaptive and set(machine.used) == {2}


@pytest.mark.parametrize(("options", "error", "match"), [
    ({"probe_steps": 1}, ValueError, "`probe_steps` must be an int >= 2, got 1"),
    ({"window": True}, TypeError, "`window` must be a positive int, got True"),
    ({"recheck_s": 0}, ValueError, "`recheck_s` must be a positive number, got 0"),
    ({"reprobe_s": "60"}, TypeError, "`reprobe_s` must be a positive number"),
    ({"max_reprobe_s": 30.0}, ValueError, "`max_reprobe_s` must be a number >= `reprobe_s`, got 30.0"),
    ({"jump": 1.0}, ValueError, "`jump` must be a number > 1, got 1.0"),
    ({"reject": 0.5}, ValueError, "`reject` must be a number > 1, got 0.5"),
    ({"margin": -0.1}, ValueError, "`margin` must be a number >= 0, got -0.1"),
    ({"busy": 1.5}, ValueError, r"`busy` must be a number in \(0, 1\], got 1.5"),
])
def test_bad_options_are_refused(options, error, match):
    with pytest.raises(error, match=match):
        ThreadTuner(**options)


@pytest.mark.parametrize(("budget", "error"), [(0, ValueError), (1.5, TypeError)])
def test_candidate_threads_refuses_a_bad_budget(budget, error):
    with pytest.raises(error, match="`budget` must be a positive int"):
        candidate_threads(budget)


def test_when_the_budget_wins_a_probe_under_load_the_next_waits_for_reprobe_s():
    machine = Machine(QUIET, share=STARVED)  # threads wait for a core, yet two are still faster than one
    with machine.tuner(reprobe_s=60.0) as tuner:
        machine.run(tuner, 100)  # about 3 s
        assert machine.used.count(1) == 4 and tuner.threads == 2  # one probe, the budget won
        machine.run(tuner, 20, pause=5.0)  # 100 s more
        assert machine.used.count(1) == 8  # the next probe came after the wait


def test_the_first_steps_at_a_new_budget_are_not_watched():
    machine = Machine(QUIET, share=STARVED)
    with machine.tuner() as tuner:
        machine.run(tuner, 3)  # kernels compiled, caches filled: much of it on one thread
        machine.share = 1.0
        machine.run(tuner, 50)
    assert set(machine.used) == {2}


TWO_SPINNERS = {1: 0.035, 2: 2.8}  # issue 29, docs/speed.md: a 2-thread step right after 1-thread steps


def test_it_starts_on_the_free_cores_and_tries_no_more_while_other_processes_keep_the_rest_busy():
    machine = Machine(TWO_SPINNERS, share=0.3)
    machine.others = 2.0  # two spinning processes on the 2 cores
    with machine.tuner(reprobe_s=60.0) as tuner:
        machine.run(tuner, 3000, pause=0.1)  # about 405 s: due for a probe every 60 s
        assert tuner.threads == 1
    assert set(machine.used) == {1} and machine.applied[0] == 1
    # Counted on entry, and before each due probe, skipped (one core is free) without doubling the wait.
    assert machine.looked == 1 + 6


def test_when_the_other_processes_end_the_next_due_probe_finds_the_budget():
    machine = Machine(TWO_SPINNERS, share=0.3)
    machine.others = 1.0  # one core busy: 1.0 -> 1 free core
    with machine.tuner(reprobe_s=60.0) as tuner:
        machine.run(tuner, 100, pause=0.5)  # about 53 s
        assert set(machine.used) == {1}
        machine.others, machine.seconds, machine.share = 0.0, dict(QUIET), 1.0
        machine.run(tuner, 40, pause=0.5)  # 60 s passes: a probe of 1 and 2 threads, and 2 win
        assert tuner.threads == 2
    first = machine.used.index(2)
    assert first > 100 and set(machine.used[first:]) == {2} and machine.looked == 2


def test_threads_that_wait_for_a_core_taken_by_other_processes_go_to_the_free_cores_without_a_probe():
    machine = Machine(QUIET)
    with machine.tuner(window=3) as tuner:
        machine.run(tuner, 10)
        machine.others, machine.seconds, machine.share = 1.4, dict(TWO_SPINNERS), 0.3  # a spinner starts
        machine.run(tuner, 10)
    # Two slow steps make the median of the last three show the threads waiting; then one thread, and
    # no probe's step at 2 threads.
    assert machine.used == [2] * 12 + [1] * 8


def test_threads_on_free_cores_taken_without_a_probe_are_watched_like_the_budget():
    machine = Machine({1: 0.05, 2: 0.03, 4: 0.02}, budget=4)
    machine.cores, machine.others = 4, 2.0  # 2 of 4 cores free
    with machine.tuner(window=3) as tuner:
        machine.run(tuner, 10)
        assert set(machine.used) == {2}  # the free cores, watched: their threads do not wait
        machine.share = STARVED  # now they do
        machine.run(tuner, 12)
    # Two steps to show it, then a probe of the free cores' candidates, 1 and 2 (never 4).
    assert machine.used[10:] == [2] * 2 + [1] * 4 + [2] * 4 + [2] * 2


def test_a_budget_of_one_never_counts_other_processes():
    machine = Machine(TWO_SPINNERS, budget=1)
    machine.others = 2.0
    with machine.tuner() as tuner:
        machine.run(tuner, 500, pause=1.0)
    assert set(machine.used) == {1} and machine.looked == 0


def _thread_stat(root, pid, tid, state, nice=0, core=0, name="python"):
    """A ``/proc/<pid>/task/<tid>/stat`` line as Linux writes it: pid (comm) state, then fields 4-53."""
    fields = ["1"] * 50  # fields 4-53
    fields[19 - 4], fields[39 - 4] = str(nice), str(core)
    folder = root / str(pid) / "task" / str(tid)
    folder.mkdir(parents=True)
    (folder / "stat").write_text(f"{tid} ({name}) {state} {' '.join(fields)}\n")


def test_runnable_threads_of_other_processes_on_our_cores_are_counted(tmp_path):
    _thread_stat(tmp_path, 10, 10, "R")  # counted
    _thread_stat(tmp_path, 10, 11, "R", core=1, name="a) R (b")  # counted: a name with spaces and parentheses
    _thread_stat(tmp_path, 10, 12, "S")  # sleeping
    _thread_stat(tmp_path, 20, 20, "R", core=5)  # on a core we may not use
    _thread_stat(tmp_path, 30, 30, "R", nice=19)  # niced far above us
    _thread_stat(tmp_path, 40, 40, "R", nice=9)  # counted: niced less than 10 above us
    _thread_stat(tmp_path, 99, 99, "R")  # this process
    (tmp_path / "self").mkdir()
    (tmp_path / "50" / "task").mkdir(parents=True)  # a process that ended while read
    assert _runnable_elsewhere(99, {0, 1}, 0 + 10, proc=str(tmp_path)) == 3


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux's /proc")
@pytest.mark.parametrize(("program", "runnable"), [("while True: pass", 1), ("import time; time.sleep(60)", 0)])
def test_a_spinning_process_is_counted_and_a_sleeping_one_is_not(tmp_path, program, runnable):
    child = subprocess.Popen([sys.executable, "-c", program])
    try:
        time.sleep(0.5)
        (tmp_path / str(child.pid)).symlink_to(f"/proc/{child.pid}")  # a /proc that holds only the child
        cores = os.sched_getaffinity(0)
        assert _runnable_elsewhere(os.getpid(), cores, os.nice(0) + 10, proc=str(tmp_path)) == runnable
        assert busy_cores(samples=3, interval_s=0.0) >= runnable  # the whole machine's /proc
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize(("options", "match"), [({"samples": 0}, "`samples` must be a positive int"),
                                                ({"interval_s": -1.0}, "`interval_s` must be a number >= 0")])
def test_busy_cores_refuses_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        busy_cores(**options)
