"""The ``uadlab`` command line.

The only place that prints and exits. Every subcommand is a thin call into the library; a
:class:`uadlab.errors.UadlabError` (a problem with the user's files or runs), or a ValueError or
TypeError (the library's argument checks: an unknown profile or experiment, a fraction outside
(0, 1]...), or an OSError from the system (a read-only folder, a full disk), becomes one line on
stderr and exit code 2. ``uadlab --debug ...`` shows the traceback instead. A warning
(:class:`uadlab.errors.UadlabWarning` and others) is one ``uadlab: warning:`` line. Output piped
into a reader that stops early (``uadlab ... | head``) ends quietly with exit code 141, as other
Unix tools do.

Subcommands::

    uadlab data build --manifest M [--root R] --out DIR [--profile P] [--workers N] [--overwrite]
    uadlab data check --manifest M --root R | --study S.yaml
    uadlab data fetch ixi --out DIR
    uadlab train --experiment NAME [--model M] --data DIR --profile P --out runs/NAME [--fraction F] [--seed S]
                 [--precision 32|bf16-mixed|16-mixed] [--compile] [--resume] [--overwrite]
    uadlab evaluate --run runs/NAME --data DIR [--val-data DIR2] --out OUT
    uadlab reproduce --study bengs2021|lambert2021|behrendt2024|zoo|FILE.yaml --profile P --out results/
                     [--data phantom|MANIFEST|DIR] [--root R] [--val-data DIR] [--seeds 0,1,2] [--experiments A,B]
                     [--overwrite] [--workers N] [--plan | --only-run NAME] [--labelled-cases K]
                     [--executor local|slurm] [--jobs N] [--slurm-partition P] [--slurm-gpus G] [--slurm-time MIN]
    uadlab notebooks run --profile P --out DIR
    uadlab course prepare --profile P --out PACK [--seeds 0,1] [--reuse]
    uadlab course verify PACK
    uadlab course release --out COURSE [--profile P] [--pack PACK] [--seed S] [--course-id ID] [--overwrite]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from pathlib import Path
from typing import NoReturn

from uadlab import __version__
from uadlab._threads import ADAPTIVE_VARIABLE, limit_threads
from uadlab.errors import UadlabError, UadlabWarning

__all__ = ["main"]


def _data_build(args: argparse.Namespace) -> None:
    from uadlab.data.dataset import build_dataset, load_dataset

    out = build_dataset(
        args.manifest, args.out, root=args.root, profile=args.profile, overwrite=args.overwrite,
        progress=not args.quiet, workers=args.workers,
    )
    print(load_dataset(out).summary())


def _data_check(args: argparse.Namespace) -> int:
    from uadlab.data.manifests import check_manifest, load_manifest

    if (args.study is None) == (args.manifest is None) or (args.manifest is not None) != (args.root is not None):
        raise ValueError("`data check` needs --manifest M --root R, or --study S.yaml")
    if args.study is not None:
        _study_check(args.study)
        return
    problems = check_manifest(load_manifest(args.manifest), args.root)
    if problems:
        print(f"{args.manifest}: {len(problems)} problem(s) under {args.root}:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print(f"{args.manifest}: all files present and readable under {args.root}")
    return 0


def _study_check(path: Path) -> None:
    """Every problem of every data set of a study file, then exit 1 if there is any."""
    from uadlab.studies import check_study, load_study

    study = load_study(path)
    problems = check_study(study)
    count = sum(len(p) for p in problems.values())
    for data in study.sources:
        where = f"{data.manifest.name} under {data.root}" if data.root else data.manifest.name
        if problems[data.name]:
            print(f"{data.name} ({where}): {len(problems[data.name])} problem(s):", file=sys.stderr)
            for problem in problems[data.name]:
                print(f"  - {problem}", file=sys.stderr)
        else:
            print(f"{data.name} ({where}): all files present and readable")
    if count:
        print(f"{path}: {count} problem(s) in {sum(bool(p) for p in problems.values())} data set(s)", file=sys.stderr)
        raise SystemExit(1)


def _data_fetch(args: argparse.Namespace) -> None:
    from uadlab.data.fetch import REMOTES, fetch

    remote = REMOTES[args.name]
    print(f"{remote.name}: {remote.url} ({remote.licence})")
    folder = fetch(args.name, args.out, keep_archive=not args.delete_archive, progress=not args.quiet)
    print(f"{folder}: ready; next: uadlab data build --manifest {remote.manifest} --root {args.out} --out DIR")


def _train(args: argparse.Namespace) -> None:
    from uadlab.training import TrainConfig, train
    from uadlab.training.experiments import parse_experiment

    config = TrainConfig(
        experiment=args.experiment if args.model is None else parse_experiment(args.experiment, model=args.model).name,
        profile=args.profile, data=str(args.data), fraction=args.fraction,
        seed=args.seed, loss=args.loss, device=args.device, max_epochs=args.max_epochs,
        precision=args.precision, compile=args.compile,
    )
    main_rank = os.environ.get("RANK", "0") in ("", "0")  # under torchrun, rank 0 alone reports
    result = train(config, args.out, resume=args.resume, overwrite=args.overwrite,
                   progress=main_rank and not args.quiet)
    if main_rank:
        print(result.summary())


def _evaluate(args: argparse.Namespace) -> None:
    from uadlab.evaluation.protocol import evaluate_run

    metrics = evaluate_run(args.run, args.data, args.out, val_data=args.val_data, overwrite=args.overwrite,
                           progress=not args.quiet)

    def num(value: float | None, spec: str = ".3f") -> str:  # NaN metrics are stored as null
        return "n/a" if value is None else format(value, spec)

    print(f"{metrics['experiment']} ({metrics['run']}) on {metrics['data']}, written to {args.out}")
    print(f"  unsupervised FPR thresholds: {metrics['healthy_val_note']}")
    for cohort, m in metrics["cohorts"].items():
        print(f"  {cohort}: DICE_D {num(m['dice_d'])}  DICE_S {num(m['dice_s_mean'])} ± {num(m['dice_s_std'])}  "
              f"AUPRC {num(m['auprc'])}  slice AUPRC {num(m['slice_auprc'])}  threshold {num(m['threshold'], '.4g')}"
              f"  (n={m['n_subjects']}; test-tuned oracle DICE_D {num(m['oracle_dice_d'])}, reference only)")


def _reproduce(args: argparse.Namespace) -> None:
    from uadlab.studies import plan_study, run_study

    if args.seed is not None and args.seeds is not None:
        raise ValueError("--seed and --seeds: give one of them")
    seeds = _seed_list(args.seeds) if args.seeds is not None else None if args.seed is None else [args.seed]
    choices = {"data": args.data, "root": args.root, "val_data": args.val_data, "labelled_cases": args.labelled_cases,
               "experiments": None if args.experiments is None else args.experiments.split(",")}
    slurm = {key: value for key, value in (("partition", args.slurm_partition), ("gpus", args.slurm_gpus),
                                           ("time", args.slurm_time), ("cpus", args.slurm_cpus),
                                           ("mem", args.slurm_mem)) if value is not None}
    if args.plan:
        ignored = [flag for flag, given in (("--only-run", args.only_run is not None), ("--overwrite", args.overwrite),
                                            ("--executor", args.executor != "local"), ("--jobs", args.jobs != 1),
                                            ("--slurm-*", bool(slurm)))
                   if given]
        if ignored:
            raise ValueError(f"--plan and {', '.join(ignored)}: a plan only writes commands; run them, or drop --plan")
        print("\n".join(plan_study(args.study, args.out, profile=args.profile, seeds=seeds, workers=args.workers,
                                   device=args.device, max_epochs=args.max_epochs, **choices)))
        return
    outputs = run_study(args.study, args.out, profile=args.profile, seeds=seeds, only_run=args.only_run,
                        executor=args.executor, jobs=args.jobs, slurm=slurm, overwrite=args.overwrite,
                        progress=not args.quiet, workers=args.workers, device=args.device,
                        max_epochs=args.max_epochs, **choices)
    for name, path in outputs.items():
        print(f"{name}: {path}")


def _seed_list(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (ValueError for anything else)."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"`--seeds` must be comma-separated integers such as 0,1,2, got {text!r}") from None


def _notebooks_run(args: argparse.Namespace) -> None:
    from uadlab.notebooks import run_notebooks

    for path in run_notebooks(profile=args.profile, out=args.out, progress=not args.quiet):
        print(path)


def _course_prepare(args: argparse.Namespace) -> None:
    from uadlab.course import prepare_pack
    from uadlab.notebooks import run_notebooks

    def run_labs(out: Path, seed: int) -> None:
        for path in run_notebooks(profile=args.profile, out=out, seed=seed, progress=not args.quiet):
            print(f"seed {seed}: {path}", flush=True)

    pack = prepare_pack(args.out, run_labs, profile=args.profile, seeds=_seed_list(args.seeds), reuse=args.reuse)
    print(f"{pack.root}: a course pack of profile {pack.profile}, seed(s) {', '.join(map(str, pack.seeds))}, "
          f"{len(pack.files)} files ({pack.size / 1e6:.1f} MB); students: UADLAB_PACK={pack.root} or PACK in a lab")


def _course_release(args: argparse.Namespace) -> None:
    from uadlab.course.release import make_course
    from uadlab.notebooks import NOTEBOOK_DIR, NOTEBOOKS
    from uadlab.profiles import get_profile

    profile = None if args.profile is None else get_profile(args.profile).name  # ValueError: an unknown profile
    pack = None if args.pack is None else str(args.pack.resolve())  # every student's lab reads it from its own folder
    parameters = {name: value for name, value in (("PROFILE", profile), ("PACK", pack), ("SEED", args.seed))
                  if value is not None}
    for lab, student in make_course(args.out, NOTEBOOK_DIR, NOTEBOOKS, parameters=parameters,
                                    course_id=args.course_id, overwrite=args.overwrite).items():
        print(f"{lab}: {student}")


def _course_verify(args: argparse.Namespace) -> None:
    from uadlab.course import verify_pack

    pack = verify_pack(args.pack, full=True)
    print(f"{pack.root}: a complete course pack of profile {pack.profile}, seed(s) "
          f"{', '.join(map(str, pack.seeds))}, uadlab {pack.uadlab_version}; all {len(pack.files)} files "
          f"({pack.size / 1e6:.1f} MB) match their sha256")


class _Parser(argparse.ArgumentParser):
    """argparse with the promised error form: one line, exit code 2 (``-h`` still prints the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"uadlab: error: {message} (`{self.prog} -h` shows the usage)\n")


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    """The ``reproduce`` subcommand: the study, its data, seeds, plan and executors."""
    reproduce = sub.add_parser("reproduce", help="run a study: data, every run and seed, evaluation, tables")
    reproduce.add_argument("--study", default="bengs2021",
                           help="bengs2021 (Table 1, Figs. 4-7; default), lambert2021 (spatial vs dense VAEs), "
                                "behrendt2024 (reconstruction + supervised segmenter), zoo (every model family "
                                "in 2D and 3D), or a study file (.yaml: "
                                "protocol, training and test data sets, experiments, seeds)")
    reproduce.add_argument("--profile", default=None,
                           help="smoke | lab | paper (default: the study file's, else smoke)")
    reproduce.add_argument("--out", type=Path, default=Path("results"), help="output folder (default: results)")
    reproduce.add_argument("--data", default="phantom",
                           help="built-in studies: 'phantom' (default), a manifest (.yaml) or a built data folder")
    reproduce.add_argument("--root", type=Path, default=None, help="data root of a real manifest given as --data")
    reproduce.add_argument("--val-data", type=Path, default=None,
                           help="built-in studies: a built data set with labelled validation cases for lesion "
                                "cohorts that have none (e.g. a phantom build for the real sample)")
    reproduce.add_argument("--experiments", default=None,
                           help="comma-separated experiments instead of the study's, e.g. 3D-Cube-n,2D-None")
    reproduce.add_argument("--seeds", default=None,
                           help="comma-separated training seeds, e.g. 0,1,2: every run once per seed, tables with "
                                "mean ± sd and paired intervals over seeds and subjects")
    reproduce.add_argument("--seed", type=int, default=None, help="one training seed (same as --seeds S)")
    reproduce.add_argument("--labelled-cases", type=int, default=None, metavar="K",
                           help="behrendt2024: labelled validation cases per lesion cohort for the weakly "
                                "supervised segmenter (default: 2; 0: none)")
    reproduce.add_argument("--workers", type=int, default=1,
                           help="processes building a data set at once (default: 1)")
    reproduce.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present)")
    reproduce.add_argument("--max-epochs", type=int, default=None, help="override the profile's epoch limit")
    reproduce.add_argument("--overwrite", action="store_true",
                           help="replace tables in OUT that this study did not write, rebuild data sets, and "
                                "restart runs whose config differs (finished runs with the same config are kept)")
    reproduce.add_argument("--plan", action="store_true",
                           help="write OUT/plan.json and print the study as shell commands for a job runner "
                                "(data, one line per run and seed, collect), then exit")
    reproduce.add_argument("--only-run", default=None, metavar="NAME",
                           help="train and evaluate one run of the study, e.g. 2D-None@20 (a --plan line)")
    reproduce.add_argument("--executor", default="local", choices=["local", "slurm"],
                           help="local: runs on this machine (default); slurm: one SLURM job per run (submitit)")
    reproduce.add_argument("--jobs", type=int, default=1,
                           help="local: runs at once, each with its share of the cores (default: 1)")
    reproduce.add_argument("--slurm-partition", default=None, help="slurm: partition of the jobs")
    reproduce.add_argument("--slurm-gpus", type=int, default=None, help="slurm: GPUs per job")
    reproduce.add_argument("--slurm-time", type=int, default=None, metavar="MINUTES", help="slurm: time limit per job")
    reproduce.add_argument("--slurm-cpus", type=int, default=None, help="slurm: CPU cores per job")
    reproduce.add_argument("--slurm-mem", type=int, default=None, metavar="GB", help="slurm: memory per job")
    reproduce.set_defaults(func=_reproduce)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="uadlab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"uadlab {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="build or check a data set").add_subparsers(dest="action", required=True)
    build = data.add_parser("build", help="simulate (phantom) or preprocess (real) a data set into DIR")
    build.add_argument("--manifest", type=Path, required=True, help="data_manifests/*.yaml")
    build.add_argument("--root", type=Path, help="folder holding a real data set (not for the phantom)")
    build.add_argument("--out", type=Path, required=True, help="output folder")
    build.add_argument("--profile", default="lab", help="smoke | lab | paper (default: lab)")
    build.add_argument("--workers", type=int, default=1,
                       help="processes building subjects at once, e.g. the CPU core count (default: 1)")
    build.add_argument("--overwrite", action="store_true", help="replace an existing, different data set in --out")
    build.set_defaults(func=_data_build)
    check = data.add_parser("check", help="list every missing or unreadable file of a real data set or study")
    check.add_argument("--manifest", type=Path, default=None, help="a real data set's manifest (with --root)")
    check.add_argument("--root", type=Path, default=None, help="the folder holding that data set")
    check.add_argument("--study", type=Path, default=None, help="a study file: check every data set it names")
    check.set_defaults(func=_data_check)
    fetch = data.add_parser("fetch", help="download an openly licensed data set (checksummed, resumable)")
    fetch.add_argument("name", choices=["ixi"], help="ixi: IXI T1, the healthy set of data_manifests/ixi_t1.yaml")
    fetch.add_argument("--out", required=True, help="data root to fill (then pass it as --root)")
    fetch.add_argument("--delete-archive", action="store_true", help="remove the archive once unpacked")
    fetch.set_defaults(func=_data_fetch)

    train = sub.add_parser("train", help="train one experiment (a Table 1 name, optionally of another model)")
    train.add_argument("--experiment", required=True, help="e.g. 3D-Cube-n, 2D-None, spatial-vae:3D-None")
    train.add_argument("--model", default=None,
                       help="registered model: dense-vae (default), spatial-vae, mean-image, ddpm; "
                            "same as MODEL: in front of the experiment")
    train.add_argument("--data", type=Path, required=True, help="folder from `uadlab data build`")
    train.add_argument("--profile", default="lab", help="smoke | lab | paper (default: lab), as the data set's")
    train.add_argument("--out", type=Path, required=True, help="run folder, e.g. runs/3D-Cube-n")
    train.add_argument("--fraction", type=float, default=1.0, help="share of the healthy training set (0, 1]")
    train.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    train.add_argument("--loss", default="elbo", choices=["elbo", "lambert"],
                       help="the VAEs' loss: elbo (Bengs et al.) or lambert (Lambert et al.'s collapse-robust loss)")
    train.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when present)")
    train.add_argument("--max-epochs", type=int, default=None, help="override the profile's epoch limit")
    train.add_argument("--precision", default=None, choices=["32", "bf16-mixed", "16-mixed"],
                       help="numeric precision of training and inference (default: the profile's, else "
                            "bf16-mixed where the device runs bfloat16 natively, else 32)")
    train.add_argument("--compile", action="store_true", help="run the VAE through torch.compile")
    train.add_argument("--resume", action="store_true", help="continue a stopped run in --out")
    train.add_argument("--overwrite", action="store_true", help="discard an existing run in --out")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("evaluate", help="score one trained run on a data set")
    evaluate.add_argument("--run", type=Path, required=True, help="run folder from `uadlab train`")
    evaluate.add_argument("--data", type=Path, required=True, help="folder from `uadlab data build` to score")
    evaluate.add_argument("--val-data", type=Path, default=None,
                          help="labelled validation data for the threshold when --data has only test cases")
    evaluate.add_argument("--out", type=Path, required=True, help="folder for metrics.json and subjects.csv")
    evaluate.add_argument("--overwrite", action="store_true", help="replace OUT/metrics.json and OUT/subjects.csv")
    evaluate.set_defaults(func=_evaluate)

    _add_reproduce(sub)

    notebooks = sub.add_parser("notebooks", help="run the notebooks").add_subparsers(dest="action", required=True)
    run = notebooks.add_parser("run", help="execute all lab notebooks headless with papermill, in order")
    run.add_argument("--profile", default="smoke", help="smoke | lab | paper (default: smoke)")
    run.add_argument("--out", type=Path, default=Path("runs/notebooks"),
                     help="folder the labs share: data, runs, executed copies (default: runs/notebooks)")
    run.set_defaults(func=_notebooks_run)

    course = sub.add_parser("course", help="teach with the labs: a course pack of every run they need, "
                                           "student versions (nbgrader)")
    course_actions = course.add_subparsers(dest="action", required=True)
    prepare = course_actions.add_parser("prepare", help="run every lab headless into PACK and write PACK/pack.json "
                                                        "(resumes a stopped prepare)")
    prepare.add_argument("--profile", default="lab", help="smoke | lab | paper: the labs' PROFILE (default: lab)")
    prepare.add_argument("--out", type=Path, required=True, help="the pack's folder: new, empty, or a pack to finish")
    prepare.add_argument("--seeds", default="0", help="comma-separated SEED values the labs run with (default: 0)")
    prepare.add_argument("--reuse", action="store_true",
                         help="prepare in a non-empty folder that is no pack (an OUT_DIR of the labs), keeping "
                              "its runs; nothing is deleted")
    prepare.set_defaults(func=_course_prepare)
    verify = course_actions.add_parser("verify", help="check every file of a pack against its sha256 in pack.json")
    verify.add_argument("pack", type=Path, help="the pack's folder")
    verify.set_defaults(func=_course_verify)
    release = course_actions.add_parser("release", help="an nbgrader course of the labs: instructor versions in "
                                                        "COURSE/source, student versions in COURSE/release")
    release.add_argument("--out", type=Path, required=True, help="the course folder: new, empty, or an earlier course")
    release.add_argument("--profile", help="the labs' default PROFILE for the students (default: the labs' own)")
    release.add_argument("--pack", type=Path, help="the labs' default PACK: a course pack the students read")
    release.add_argument("--seed", type=int, help="the labs' default SEED")
    release.add_argument("--course-id", default="uadlab", help="nbgrader's course id (default: uadlab)")
    release.add_argument("--overwrite", action="store_true",
                         help="replace the source and student versions of an earlier course (submissions and "
                              "grades are kept)")
    release.set_defaults(func=_course_release)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``uadlab`` command. Returns the process exit code."""
    if os.environ.get("UADLAB_DRIVER_PID"):  # a run started by `reproduce --jobs N`: it dies with its driver
        from uadlab.studies.executors import follow_driver

        follow_driver()
    args = _parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", UadlabWarning)
        if not args.debug:
            warnings.showwarning = _show_warning
        try:
            ignored = _ignored_environment()  # before torch loads: libgomp would print its own two lines
            # One thread budget per process; `data build` leaves torch unimported (its workers share cores).
            threads = limit_threads(torch_threads=args.command != "data")
            for name, value, expected in ignored:
                warnings.warn(f"{name}={value!r} is not {expected}; ignored (this process uses {threads} "
                              "thread(s))", UadlabWarning, stacklevel=1)
            code = args.func(args) or 0  # a subcommand may return an exit code (data check: 1)
        except BrokenPipeError:
            return _broken_pipe()
        except (UadlabError, ValueError, TypeError, OSError) as error:
            if args.debug:
                raise
            print(f"uadlab: error: {_one_line(error, args)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("uadlab: interrupted", file=sys.stderr)
            return 130
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return _broken_pipe()
    return code


#: The thread settings read from the environment: what each must be, and the test of a value.
_THREAD_VARIABLES = {
    "OMP_NUM_THREADS": ("a positive integer", lambda v: v.strip().isdigit() and int(v) >= 1),
    "UADLAB_PROCESSES": ("a positive integer", lambda v: v.strip().isdigit() and int(v) >= 1),
    ADAPTIVE_VARIABLE: ("0 or 1", lambda v: v.strip() in ("0", "1")),
}


def _ignored_environment() -> list[tuple[str, str, str]]:
    """Thread settings (:data:`_THREAD_VARIABLES`) with a value they cannot take: removed, returned
    as ``(name, value, what it must be)``.
    """
    ignored = []
    for name, (expected, valid) in _THREAD_VARIABLES.items():
        value = os.environ.get(name)
        if value is not None and not valid(value):
            ignored.append((name, os.environ.pop(name), expected))
    return ignored


#: The library names a flag beside its Python argument ("pass overwrite=True (--overwrite)", "`seeds`
#: (--seeds)"); the command line says the flag alone.
_PYTHON_AND_FLAG = (
    (re.compile(r"\b\w+=True \((--[\w-]+)\)"), r"\1"),
    (re.compile(r"(--[\w-]+) \(\w+=True\)"), r"\1"),
    (re.compile(r"`\w+` \((--[\w-]+)\)"), r"\1"),
)


def _one_line(error: Exception, args: argparse.Namespace) -> str:
    """The error as one line; an OSError names its file, or the output folder being written.

    >>> _one_line(ValueError("x: pass overwrite=True (--overwrite); `jobs` (--jobs) is for local"), None)
    'x: pass --overwrite; --jobs is for local'
    """
    if isinstance(error, OSError):
        reason = error.strerror or str(error) or type(error).__name__
        if error.filename is not None:
            return f"{error.filename}: {reason}"
        out = getattr(args, "out", None)
        return f"{reason} (while writing {out})" if out is not None else reason
    message = str(error)
    for pattern, flag in _PYTHON_AND_FLAG:
        message = pattern.sub(flag, message)
    return message


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` of the command line: every warning on one line (``--debug``: where from)."""
    kind = "" if issubclass(category, UadlabWarning) else f"{category.__name__}: "
    text = " ".join(str(message).split())
    print(f"uadlab: warning: {kind}{text}", file=sys.stderr)


def _broken_pipe() -> int:
    """The reader of stdout went away (``| head``): no traceback, and none at interpreter exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 141


if __name__ == "__main__":
    raise SystemExit(main())
