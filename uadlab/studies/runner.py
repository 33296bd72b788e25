"""One runner for every study: choose it, guard and lock its folder, build its data, run, collect.

:func:`run_study` runs any :class:`~uadlab.studies.spec.Study` (``uadlab reproduce``):

1. **Choose** — :func:`make_study`: a built-in study (:data:`STUDIES`) on ``data`` (``phantom``, a
   manifest, or a built folder), or a study file; options that do not apply are refused, never ignored.
2. **Guard** — the output folder is refused when it is a file, a data set or a run, or holds the
   study's tables without the record the study writes last, unless ``overwrite``
   (:func:`uadlab.layout.check_output_folder`); checked before any work and again before the tables.
3. **Data** — every data set is built (or reused), and every scored cohort must have a threshold
   source, before any training (:meth:`~uadlab.studies.context.StudyContext.prepare`).
4. **Runs** — the study's runs for every seed, in dependency order (a segmenter after its
   reconstruction model); an executor (:mod:`uadlab.studies.executors`) runs them here, several at
   once, or as SLURM jobs. Every run resumes, so a killed sweep finishes where it stopped.
5. **Collect** — each run is scored (trained and evaluated runs are reused, nothing is retrained),
   the study writes its tables, and ``reproduce.json`` is written last.

**Locks.** Nothing locks the whole output folder: a data set, a run and an evaluation are each locked
while they are written, and the study's own folder (``OUT``, ``OUT/lambert2021``...) while its tables
are (:meth:`~uadlab.studies.context.StudyContext.lock`). Studies sharing ``OUT`` (two labs in two
kernels, a lab beside ``uadlab reproduce``) therefore run at once: one waits for a data set, run or
evaluation the other is writing, then reuses it. A clash that waiting cannot resolve (another study's
tables in the same folder) stops with one line.

:func:`plan_study` writes the same study as ``plan.json`` and shell commands for a job runner; each
run line is ``uadlab reproduce ... --only-run NAME``, which :func:`run_study` executes alone.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pandas as pd

from uadlab._progress import progress_bar
from uadlab.errors import DatasetError, ManifestError
from uadlab.layout import DATASET_RECORD, ResultsLayout, check_output_folder
from uadlab.profiles import PROFILES, Profile, get_profile
from uadlab.studies import tables
from uadlab.studies.context import StudyContext
from uadlab.studies.executors import make_executor
from uadlab.studies.spec import DataSource, RunSpec, Study
from uadlab.studies.study_file import PROTOCOLS, check_seeds, check_study, is_study_file, load_study
from uadlab.training.experiments import parse_experiment

__all__ = ["STUDIES", "PHANTOM_MANIFEST", "make_study", "builtin_sources", "run_study", "plan_study"]

#: The built-in studies.
STUDIES: tuple[str, ...] = tuple(PROTOCOLS)
#: Manifest of the default data set (shipped beside the package in the source tree).
PHANTOM_MANIFEST = Path(__file__).resolve().parents[2] / "data_manifests" / "phantom.yaml"


def make_study(study: str | Path | Study = "bengs2021", *, data: str | Path = "phantom", root: str | Path | None = None,
               val_data: str | Path | None = None, experiments: list[str] | None = None,
               labelled_cases: int | None = None) -> Study:
    """The study to run: a built-in one on ``data``, a study file, or a :class:`~uadlab.studies.spec.Study` as it is.

    Args:
        study: ``bengs2021`` (default), ``lambert2021``, ``behrendt2024``, a study file (``.yaml``), or a study.
        data: a built-in study's data: ``"phantom"``, a manifest YAML (then ``root`` is its folder) or a
            folder built by ``uadlab data build``.
        root: data root of a real manifest.
        val_data: a built data set whose labelled validation cases fit the thresholds of lesion cohorts
            without a validation split of their own.
        experiments: the models to train, overriding the study's (any registered model's experiments).
        labelled_cases: ``behrendt2024``: ``K`` labelled cases per cohort (default 2).

    Returns:
        The :class:`~uadlab.studies.spec.Study`.

    Raises:
        ValueError: an unknown study or experiment, an empty ``experiments``, or an option the study does
            not take (``data``, ``root`` or ``val_data`` with a study file, which names its data sets;
            ``root`` with anything but a manifest; ``labelled_cases`` with another study than behrendt2024).
        DatasetError: ``data`` is not ``phantom``, a manifest or a built folder.
        uadlab.errors.ManifestError: a study file is invalid.
    """
    if isinstance(study, Study):
        if str(data) != "phantom" or any(v is not None for v in (root, val_data, experiments, labelled_cases)):
            raise ValueError("`data`, `root`, `val_data`, `experiments` and `labelled_cases` choose a study; "
                             "a Study object already has them")
        return study
    if is_study_file(study):
        given = [flag for flag, value in (("--data", str(data) != "phantom"), ("--root", root is not None),
                                          ("--val-data", val_data is not None)) if value]
        if given:
            raise ValueError(f"{', '.join(given)}: not for a study file, which names its own data sets ({study}); "
                             "edit the file instead")
        return load_study(study, experiments=experiments, labelled_cases=labelled_cases)
    if study not in STUDIES:
        raise ValueError(f"`study` must be one of {list(STUDIES)} or a study file (.yaml), got {study!r}")
    if labelled_cases is not None and study != "behrendt2024":
        raise ValueError(f"`labelled_cases` (--labelled-cases) is for behrendt2024, not {study}")
    options = {} if labelled_cases is None else {"labelled_cases": labelled_cases}
    return PROTOCOLS[study](builtin_sources(data, root, val_data), experiments, **options)


def builtin_sources(data: str | Path, root: str | Path | None, val_data: str | Path | None) -> tuple[DataSource, ...]:
    """A built-in study's data set (``"data"``, built into ``OUT/data``) and its ``val_data`` (:func:`make_study`)."""
    path = Path(data)
    val = None if val_data is None else DataSource("val", built=Path(val_data), role="val")
    val_name = None if val is None else val.name
    if str(data) == "phantom" or path.suffix in (".yaml", ".yml"):
        manifest = PHANTOM_MANIFEST if str(data) == "phantom" else path
        if root is not None and str(data) == "phantom":
            raise ValueError("`root` (--root) is the folder of a real manifest given as --data, not of the phantom")
        source = DataSource("data", manifest, None if root is None else Path(root), val_data=val_name)
    elif (path / DATASET_RECORD).exists():
        if root is not None:
            raise ValueError(f"`root` (--root) is for a manifest; {path} is already built")
        source = DataSource("data", built=path, val_data=val_name)
    else:
        raise DatasetError(f"{path}: not 'phantom', a manifest (.yaml) or a folder built by `uadlab data build` "
                           f"(no {DATASET_RECORD})")
    return (source,) if val is None else (source, val)


def run_study(study: str | Path | Study = "bengs2021", out: str | Path = "results", *,
              profile: str | Profile | None = None, seeds: list[int] | None = None, only_run: str | None = None,
              executor: str = "local", jobs: int = 1, slurm: dict[str, Any] | None = None, overwrite: bool = False,
              progress: bool = False, device: str | None = None, workers: int = 1, max_epochs: int | None = None,
              **choices: Any) -> dict[str, Path]:
    """Run a whole study (``uadlab reproduce``): see the module docstring.

    Args:
        study: as :func:`make_study`; ``**choices`` are its other arguments (``data``, ``root``,
            ``val_data``, ``experiments``, ``labelled_cases``).
        out: output folder; its data, runs and evaluations are reused, never discarded: a finished run
            is not trained again, and an evaluation is redone only when its run is newer.
        profile: ``smoke``, ``lab``, ``paper`` or a :class:`~uadlab.profiles.Profile` (``None``: a study
            file's own, else ``smoke``).
        seeds: training seeds (``None``: a study file's own, else ``[0]``); several give mean ± sd tables
            and paired intervals over seeds and subjects.
        only_run: execute this one run of the study (a line of :func:`plan_study`, e.g. ``2D-None@20``)
            and stop; its data sets must be built. ``seeds`` must then hold one seed.
        executor: ``"local"`` (this machine) or ``"slurm"`` (one SLURM job per run, through submitit).
        jobs: ``local``: runs at once, each in its own process with its share of the cores.
        slurm: ``slurm``: ``partition``, ``gpus``, ``time`` (minutes), ``cpus``, ``mem`` (GB), and
            ``cluster`` (submitit's; ``"local"`` runs the jobs as local processes).
        overwrite: replace tables this study did not write, rebuild data sets, restart runs whose config
            differs (finished runs with the same config are always kept).
        progress: a bar over the runs; the bars of each run inside it (epochs, predictions) are transient.
        device: where models train and run (``None``: CUDA when present).
        workers: processes building a data set.
        max_epochs: epoch limit of every run (``None``: the profile's).

    Returns:
        Paths of the outputs, keyed by file name (e.g. ``table1.csv``, ``figures``, ``runs``); with
        ``only_run``: ``run`` and ``evaluation``, the run's folders.

    Raises:
        ValueError, TypeError: a bad argument (named), an unknown ``only_run``, an option the study
            does not take, a custom :class:`~uadlab.profiles.Profile` with ``jobs`` > 1 or SLURM (their
            processes get the profile's name).
        DatasetError: no lesion cohort to score, or one without a threshold source.
        uadlab.errors.ManifestError: files of the study's data sets are missing or unreadable (every
            problem listed, before any work).
        RunError: ``out`` is refused (see the module docstring), a run there has another config
            without ``overwrite``, or a run executed elsewhere failed (named, with its log).
        uadlab.errors.UadlabError: another process still writes a folder the study needs (a data set,
            a run, an evaluation, its tables) after :data:`~uadlab.studies.context.LOCK_WAIT_S`.
    """
    chosen = make_study(study, **choices)
    runner = make_executor(executor, jobs=jobs, slurm=slurm)
    if runner.dispatches and isinstance(profile, Profile) and profile != PROFILES.get(profile.name):
        raise ValueError(f"`profile`: a custom Profile (here {profile.name!r}) runs in this process only; "
                         "--jobs and --executor slurm start each run by profile name")
    ctx = _context(chosen, out, profile, seeds, overwrite=overwrite, progress=progress, device=device,
                   workers=workers, build=only_run is None, max_epochs=max_epochs)
    if only_run is not None and (executor != "local" or jobs != 1):
        raise ValueError("`only_run` (--only-run) executes one run here; --executor and --jobs are for a sweep")
    _guard(chosen, ctx)
    if only_run is not None:
        return _run_one(chosen, ctx, only_run)
    _check_files(chosen)
    ctx.prepare()
    specs = [spec for seed in ctx.seeds for spec in chosen.runs(ctx, seed)]
    if runner.dispatches:  # runs elsewhere: only those not finished yet
        runner.execute([[(spec, _command(chosen, ctx, spec)) for spec in wave if not ctx.finished(spec)]
                        for wave in _waves(specs)], ctx)
    with progress_bar(ctx.progress, specs, desc="reproduce: runs", unit="run") as runs:  # inner bars: transient
        rows = [row for spec in runs for row in chosen.score(ctx, spec)]
    with ctx.lock(ctx.layout.root):  # the study's tables: one study at a time writes them
        _guard(chosen, ctx)  # again, now that no other process can write them
        _write_record(chosen, ctx, specs, complete=False)  # the tables about to be written are this study's
        outputs = chosen.collect(ctx, pd.DataFrame(rows), ctx.seeds)
        _write_record(chosen, ctx, specs, complete=True)
    return outputs


def plan_study(study: str | Path | Study = "bengs2021", out: str | Path = "results", *, profile: str | None = None,
               seeds: list[int] | None = None, workers: int = 1, device: str | None = None,
               max_epochs: int | None = None, **choices: Any) -> list[str]:
    """The study as shell commands for a job runner, and ``plan.json`` with its run specifications.

    The lines, in order: a ``#`` comment, one ``uadlab data build`` per data set to build (run them
    first, once), one ``uadlab reproduce ... --only-run NAME`` per run and seed (in dependency order:
    a segmenter after its reconstruction model; independent lines in any order, in parallel, on any
    machine that sees ``out``; each resumes a stopped run and does nothing for a finished one), and
    last the ``uadlab reproduce`` that collects the tables. Relative paths stay relative: run the
    lines from the folder the plan was made in. A ``behrendt2024`` plan builds the data set first
    (its segmenter runs depend on the lesion cohorts).

    Args:
        study, out, seeds, workers, device, max_epochs, **choices: as :func:`run_study`.
        profile: a profile *name* (a custom :class:`~uadlab.profiles.Profile` cannot be written on a
            command line; ``None``: a study file's own, else ``smoke``).

    Returns:
        The lines, without newlines.

    Raises:
        TypeError: ``profile`` is not a name.
        ValueError, DatasetError, RunError: as :func:`run_study`, before anything is written (a
            ``behrendt2024`` plan may have built the data set).

    >>> lines = plan_study("bengs2021", "results", experiments=["2D-None"])  # doctest: +SKIP
    """
    if profile is not None and not isinstance(profile, str):
        raise TypeError(f"`profile` must be a profile name for a plan of shell commands, got {profile!r}")
    chosen = make_study(study, **choices)
    ctx = _context(chosen, out, profile, seeds, workers=workers, device=device, max_epochs=max_epochs)
    _guard(chosen, ctx)
    specs = [spec for seed in ctx.seeds for spec in chosen.runs(ctx, seed)]
    lines = ["# uadlab reproduce plan: run the data lines first, then the run lines (a segmenter after its "
             "reconstruction model; the others in any order or in parallel, each resumable), then the last line"]
    lines += [shlex.join(line) for line in _data_commands(chosen, ctx)]
    lines += [shlex.join(_command(chosen, ctx, spec)) for wave in _waves(specs) for spec in wave]
    lines.append(shlex.join(_collect_command(chosen, ctx)))
    ctx.layout.root.mkdir(parents=True, exist_ok=True)
    tables.write_text(ctx.layout.plan, json.dumps({"study": chosen.argument, "profile": ctx.resolved_profile.name,
                                                   "seeds": ctx.seeds, "runs": [s.to_dict() for s in specs],
                                                   "commands": lines[1:]}, indent=2) + "\n")
    return lines


def _context(study: Study, out: str | Path, profile: str | Profile | None, seeds: list[int] | None,
             **options: Any) -> StudyContext:
    """The study's context: its folders, profile (checked) and seeds (checked), before any work."""
    profile = profile if profile is not None else study.profile or "smoke"
    get_profile(profile)
    seeds = check_seeds(list(seeds) if seeds is not None else list(study.seeds or [0]))
    root = ResultsLayout(out)
    layout = root if study.folder is None else root.study(study.folder)
    return StudyContext(root, layout, profile, {s.name: s for s in study.sources}, seeds=seeds, **options)


def _guard(study: Study, ctx: StudyContext) -> None:
    """The one output-folder guard, for ``OUT`` and the study's own folder (see the module docstring)."""
    check_output_folder(ctx.out.root, writer="`uadlab reproduce`")
    owned = tuple(ctx.layout.table(name) for name in study.tables)
    check_output_folder(ctx.layout.root, writer="`uadlab reproduce`", owned=owned, record=ctx.layout.record,
                        owner=study.argument, overwrite=ctx.overwrite)


def _check_files(study: Study) -> None:
    """Every missing or unreadable file of every data set at once, before hours of work (``uadlab data check``).

    Raises:
        uadlab.errors.ManifestError: the problems, all of them.
    """
    problems = {name: found for name, found in check_study(study).items() if found}
    if problems:
        listing = "\n".join(f"  - {name}: {problem}" for name, found in problems.items() for problem in found)
        raise ManifestError(f"study {study.argument}: {sum(map(len, problems.values()))} problem(s):\n{listing}")


def _run_one(study: Study, ctx: StudyContext, name: str) -> dict[str, Path]:
    """Execute one run of the study (``--only-run``): train or resume it, evaluate it; nothing else."""
    if len(ctx.seeds) != 1:
        raise ValueError(f"`only_run` runs one seed, got seeds {ctx.seeds}")
    specs = {spec.name: spec for spec in study.runs(ctx, ctx.seeds[0])}
    wanted = _canonical_run_name(name)
    if wanted not in specs:
        raise ValueError(f"`only_run` must be a run of this study such as {', '.join(list(specs)[:3])} "
                         f"(of {len(specs)}), got {name!r}")
    spec = specs[wanted]
    study.score(ctx, spec)
    return {"run": ctx.run_dir(spec), "evaluation": ctx.evaluation_dir(spec, ctx.train_data)}


def _canonical_run_name(name: str) -> str:
    """A run name as :attr:`RunSpec.name` spells it: experiments in any letter case, ``:`` as ``_``.

    >>> _canonical_run_name("3d-cube-n@20"), _canonical_run_name("ddpm:2d-none__synthetic")
    ('3D-Cube-n@20', 'ddpm_2D-None__synthetic')
    """
    base, _, labels = str(name).partition("__")
    experiment, at, percent = base.partition("@")
    if ":" not in experiment and "_" in experiment:
        experiment = experiment.replace("_", ":", 1)
    try:
        experiment = parse_experiment(experiment).name
    except ValueError:
        return str(name).replace(":", "_")  # not an experiment: refused with the study's run names
    return f"{experiment.replace(':', '_')}{at}{percent}" + (f"__{labels}" if labels else "")


def _waves(specs: list[RunSpec]) -> list[list[RunSpec]]:
    """The runs in waves that can run at once: reconstruction runs first, then the runs that depend on them."""
    waves = [[s for s in specs if s.depends_on is None], [s for s in specs if s.depends_on is not None]]
    return [wave for wave in waves if wave]


def _base_command(study: Study, ctx: StudyContext) -> list[str]:
    """``uadlab reproduce`` with the study, profile and output folder of this study."""
    return ["uadlab", "reproduce", "--study", study.argument, "--profile", ctx.resolved_profile.name,
            "--out", str(ctx.out.root)]


def _command(study: Study, ctx: StudyContext, spec: RunSpec) -> list[str]:
    """The command line that executes one run (``--only-run``), data sets already built."""
    data = []
    if study.argument in STUDIES:  # a built-in study reads the built folder; a study file finds OUT/data/<name>
        source = ctx.sources["data"]
        data = ["--data", str(source.built or ctx.out.data)]
        if "val" in ctx.sources:
            data += ["--val-data", str(ctx.sources["val"].built)]
    flags = (["--overwrite"] if ctx.overwrite else []) + ([] if ctx.device is None else ["--device", ctx.device])
    flags += [] if ctx.max_epochs is None else ["--max-epochs", str(ctx.max_epochs)]
    return [*_base_command(study, ctx), *data, *study.options(), *flags, "--seed", str(spec.seed),
            "--only-run", spec.name]


def _data_commands(study: Study, ctx: StudyContext) -> list[list[str]]:
    """One ``uadlab data build`` per data set the study builds."""
    lines = []
    for source in ctx.sources.values():
        if source.built is None:
            target = ctx.out.data if source.name == "data" else ctx.out.dataset(source.name)
            lines.append(["uadlab", "data", "build", "--manifest", str(source.manifest), "--out", str(target),
                          "--profile", ctx.resolved_profile.name, "--workers", str(ctx.workers)]
                         + ([] if source.root is None else ["--root", str(source.root)]))
    return lines


def _collect_command(study: Study, ctx: StudyContext) -> list[str]:
    """The command that collects the tables once every run is done: the study's own command line."""
    line = [*_base_command(study, ctx), "--seeds", ",".join(map(str, ctx.seeds)), *study.options()]
    if study.argument in STUDIES:
        source = ctx.sources["data"]
        data = source.built or ("phantom" if source.manifest == PHANTOM_MANIFEST else source.manifest)
        line += ["--data", str(data)] + ([] if source.root is None else ["--root", str(source.root)])
        line += ["--val-data", str(ctx.sources["val"].built)] if "val" in ctx.sources else []
    return line


def _write_record(study: Study, ctx: StudyContext, specs: list[RunSpec], *, complete: bool) -> None:
    """``reproduce.json``: what the study ran; ``complete`` once every table is written.

    Written before the tables too (``complete: false``), so that a study killed while writing them
    finds them its own when the same command runs again.
    """
    record = {"study": study.argument, "name": study.name, "protocol": study.protocol,
              "profile": ctx.resolved_profile.name, "seeds": ctx.seeds,
              "data": {name: str(ctx.data_dir(name)) for name in ctx.sources}, "scored": ctx.scored(),
              "runs": [s.to_dict() for s in specs], "complete": complete}
    tables.write_text(ctx.layout.record, json.dumps(record, indent=2) + "\n")
