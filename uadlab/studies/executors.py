"""Where a study's runs execute: here, several processes at once, or one SLURM job each (through submitit).

An executor receives the runs in waves (a wave's runs are independent; a later wave needs the
earlier ones: a segmenter after its reconstruction model; the local one starts a run as soon as the
run it needs has finished) as the command lines of a plan (``uadlab reproduce ... --only-run
NAME``), executes them, and returns once all have finished; the
runner then scores every run in its own process, reusing what the runs wrote. Every run is
resumable, so killing the driver (or a run) and starting the same command again finishes the sweep
without retraining a finished run.

- :class:`LocalExecutor` with ``jobs=1`` executes nothing itself: the runner trains each run in the
  driver's process, one after the other. With ``jobs=N > 1`` it starts up to ``N`` runs as child
  processes, each with its share of the cores (``UADLAB_PROCESSES``, :mod:`uadlab._threads`), their
  output in ``OUT/logs/``; on Linux a child dies with its driver (:func:`follow_driver`).
- :class:`SlurmExecutor` submits each run as one job through submitit (a well-kept launcher,
  https://github.com/facebookincubator/submitit), waits for the wave and reports failed jobs;
  submitit's scripts and logs go to ``OUT/slurm/``. A job takes its thread budget from its own
  allocation, not the driver's. Its ``cluster="local"`` runs the jobs as local processes, as the
  tests do. SLURM jobs outlive a killed driver: wait for them (``squeue``) before running the same
  command again, or its new jobs meet their run locks and fail with one line each.

The runner passes only the runs that have not finished, so a rerun submits nothing already done.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

from uadlab._checks import check_int
from uadlab.errors import RunError

if TYPE_CHECKING:
    from uadlab.studies.context import StudyContext
    from uadlab.studies.spec import RunSpec

__all__ = ["Executor", "LocalExecutor", "SlurmExecutor", "make_executor", "run_plan_line", "follow_driver"]

#: Set in a child run's environment: the driver's process id, which the child follows (:func:`follow_driver`).
DRIVER_VARIABLE = "UADLAB_DRIVER_PID"

#: ``slurm`` options of :func:`make_executor` and the submitit parameters they set.
SLURM_PARAMETERS: dict[str, str] = {"partition": "slurm_partition", "gpus": "gpus_per_node", "time": "timeout_min",
                                    "cpus": "cpus_per_task", "mem": "mem_gb"}

Waves = list[list[tuple["RunSpec", list[str]]]]


class Executor(ABC):
    """Executes a study's runs, wave after wave (see the module docstring).

    Attributes:
        dispatches: whether runs execute outside the driver's process (else the runner trains them itself).
    """

    dispatches = True

    @abstractmethod
    def execute(self, waves: Waves, ctx: StudyContext) -> None:
        """Execute every ``(run, command line)`` of every wave; return when all have finished.

        Raises:
            RunError: runs failed (each named, with its log).
        """


class LocalExecutor(Executor):
    """Runs on this machine: in the driver's process (``jobs=1``) or ``jobs`` child processes at once."""

    def __init__(self, jobs: int = 1) -> None:
        self.jobs = check_int("jobs", jobs, "a positive int", lambda v: v >= 1)
        self.dispatches = self.jobs > 1

    def execute(self, waves: Waves, ctx: StudyContext) -> None:
        """Each run as ``python -m uadlab.cli ... --only-run``, ``jobs`` at a time (nothing with ``jobs=1``).

        A run starts as soon as a process is free and the run it depends on (``RunSpec.depends_on``, same
        seed) has finished, not when its whole wave has: a segmenter trains beside the next
        reconstruction model. The dependants of a failed run are not started.
        """
        if not self.dispatches or not any(waves):
            return
        ctx.layout.logs.mkdir(parents=True, exist_ok=True)
        pending = [item for wave in waves for item in wave]
        running: dict[Future, RunSpec] = {}
        failed: list[tuple[RunSpec, Path]] = []
        with ThreadPoolExecutor(self.jobs) as pool:
            while pending or running:
                waiting = {(spec.name, spec.seed) for spec in running.values()}
                waiting |= {(spec.name, spec.seed) for spec, _ in pending}
                ready = [item for item in pending if (item[0].depends_on, item[0].seed) not in waiting]
                for spec, command in ready[:self.jobs - len(running)]:
                    pending.remove((spec, command))
                    running[pool.submit(self._run, spec, command, ctx)] = spec
                if not running:  # what is left depends on failed runs
                    break
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    spec, log, code = future.result()
                    del running[future]
                    if code != 0:
                        failed.append((spec, log))
                        pending = [item for item in pending if (item[0].depends_on, item[0].seed)
                                   != (spec.name, spec.seed)]
        _raise_failures(failed)

    def _run(self, spec: RunSpec, command: list[str], ctx: StudyContext) -> tuple[RunSpec, Path, int]:
        log = ctx.layout.log(spec.name, spec.seed)
        env = _child_environment(os.environ, self.jobs) | {DRIVER_VARIABLE: str(os.getpid())}
        with open(log, "w") as handle:
            process = subprocess.run(_python_command(command), stdout=handle, stderr=subprocess.STDOUT, env=env,
                                     check=False)
        return spec, log, process.returncode


class SlurmExecutor(Executor):
    """One SLURM job per run through submitit; the driver waits for each wave.

    Args:
        partition, gpus, time, cpus, mem: the job's partition, GPUs, time limit (minutes), CPU cores and
            memory (GB); ``None``: the cluster's default.
        cluster: submitit's cluster (``"slurm"``; ``"local"`` runs the jobs as local processes).
    """

    def __init__(self, *, partition: str | None = None, gpus: int | None = None, time: int | None = None,
                 cpus: int | None = None, mem: int | None = None, cluster: str = "slurm") -> None:
        self.cluster = cluster
        self.parameters = {SLURM_PARAMETERS[key]: value for key, value in
                           (("partition", partition), ("gpus", gpus), ("time", time), ("cpus", cpus), ("mem", mem))
                           if value is not None}

    def executor(self, folder: Path) -> Any:
        """The submitit executor with this executor's parameters."""
        import submitit

        executor = submitit.AutoExecutor(folder=folder, cluster=self.cluster)
        executor.update_parameters(name="uadlab", **self.parameters)
        return executor

    def execute(self, waves: Waves, ctx: StudyContext) -> None:
        """Submit each wave's runs as jobs (each runs its plan line) and wait for them."""
        if not any(waves):
            return
        executor = self.executor(ctx.layout.slurm)
        # local jobs share this machine's cores; a SLURM job has its own allocation (os.sched_getaffinity)
        processes = max(len(wave) for wave in waves) if self.cluster == "local" else None
        for wave in waves:
            try:
                jobs = [(spec, executor.submit(run_plan_line, command, processes)) for spec, command in wave]
            except Exception as error:  # submitit raises plain errors (no sbatch, a refused job)
                raise RunError(f"submitting to SLURM failed: {' '.join(str(error).split())[:300]}") from None
            failed = []
            for spec, job in jobs:
                try:
                    job.result()
                except Exception:  # the job's own error is in its log
                    failed.append((spec, Path(job.paths.stdout)))
            _raise_failures(failed)


def make_executor(name: str = "local", *, jobs: int = 1, slurm: dict[str, Any] | None = None) -> Executor:
    """The executor of ``uadlab reproduce --executor NAME``.

    Args:
        name: ``"local"`` or ``"slurm"``.
        jobs: ``local``: runs at once.
        slurm: ``slurm``: options of :class:`SlurmExecutor` (``partition``, ``gpus``, ``time``, ``cpus``,
            ``mem``, ``cluster``).

    Raises:
        ValueError, TypeError: an unknown executor, ``jobs`` below 1, SLURM options with ``local``, or
            ``jobs`` with ``slurm``.
    """
    if name == "local":
        if slurm:
            raise ValueError(f"SLURM options ({', '.join(sorted(slurm))}) need --executor slurm")
        return LocalExecutor(jobs)
    if name == "slurm":
        if jobs != 1:
            raise ValueError("`jobs` (--jobs) is for --executor local; SLURM runs every run as its own job")
        unknown = sorted(set(slurm or {}) - {*SLURM_PARAMETERS, "cluster"})
        if unknown:
            raise ValueError(f"`slurm` takes {sorted(SLURM_PARAMETERS)} and 'cluster', got {unknown}")
        return SlurmExecutor(**(slurm or {}))
    raise ValueError(f"`executor` must be 'local' or 'slurm', got {name!r}")


def run_plan_line(command: list[str], processes: int | None = None) -> None:
    """Execute one plan line (``uadlab reproduce ... --only-run NAME``) in a child process: a SLURM job's task.

    The child's thread budget is its own: an ``OMP_NUM_THREADS`` inherited from the driver (which sbatch
    exports) is dropped, and ``processes`` runs sharing one machine split its cores.

    Args:
        command: the line, ``["uadlab", "reproduce", ...]``.
        processes: runs sharing this machine (``UADLAB_PROCESSES``); ``None``: the job's own cores.

    Raises:
        subprocess.CalledProcessError: the line exited with an error (its one-line message is in the job's log).
    """
    subprocess.run(_python_command(command), env=_child_environment(os.environ, processes), check=True)


def follow_driver() -> None:
    """In a run started by :class:`LocalExecutor` (Linux): be killed when the driver dies, even by ``kill -9``.

    Called at the start of ``uadlab`` when ``UADLAB_DRIVER_PID`` is set; exits at once if the driver
    is already gone.
    """
    driver = os.environ.pop(DRIVER_VARIABLE, None)
    if driver is None or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != int(driver):  # the driver died before the line above
        os._exit(137)


def _python_command(command: list[str]) -> list[str]:
    """A plan line (``uadlab reproduce ...``) as this Python's ``-m uadlab.cli -q`` (no console script needed)."""
    return [sys.executable, "-m", "uadlab.cli", "-q", *command[1:]]


def _child_environment(environ: Mapping[str, str], processes: int | None) -> dict[str, str]:
    """A run's environment: its share of the cores among ``processes``, not the driver's thread budget."""
    env = dict(environ)
    if processes is not None:
        env["UADLAB_PROCESSES"] = str(processes)
    if env.get("UADLAB_THREADS_SET") is not None and env.get("UADLAB_THREADS_SET") == env.get("OMP_NUM_THREADS"):
        del env["OMP_NUM_THREADS"]  # the driver's own budget, not the user's choice
    return env


def _raise_failures(failed: list[tuple[RunSpec, Path]]) -> None:
    """RunError naming every failed run and its log."""
    if failed:
        listing = "; ".join(f"{spec.name} seed {spec.seed} (log {log})" for spec, log in failed)
        raise RunError(f"{len(failed)} run(s) failed: {listing}")
