"""Tests of the command line: errors are one line and exit code 2, ``--debug`` shows the traceback."""

from __future__ import annotations

import argparse

import pytest

from uadlab.cli import _parser, main
from uadlab.errors import RunError


@pytest.mark.parametrize(("args", "message"), [
    (["--fraction", "2"], "`fraction` must be in (0, 1], got 2.0"),
    (["--experiment", "2D-Foo"], "`experiment` must be a Table 1 name"),
    (["--profile", "huge"], "`profile` must be one of ['lab', 'paper', 'smoke'], got 'huge'"),
])
def test_a_bad_argument_is_one_line_and_exit_code_2(tmp_path, capsys, args, message):
    defaults = {"--experiment": "2D-None", "--profile": "smoke", "--data": str(tmp_path / "data"),
                "--out": str(tmp_path / "run")}
    defaults.update(dict(zip(args[::2], args[1::2])))
    assert main(["train", *[x for pair in defaults.items() for x in pair]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("uadlab: error: ") and message in err and err.count("\n") == 1
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_a_problem_with_the_users_files_is_one_line_and_exit_code_2(tmp_path, capsys):
    code = main(["evaluate", "--run", str(tmp_path / "run"), "--data", str(tmp_path / "nothing"),
                 "--out", str(tmp_path / "eval")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("uadlab: error: ") and err.count("\n") == 1
    assert f"{tmp_path / 'run'}: not a training run" in err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="`workers` must be at least 1"):
        main(["--debug", "data", "build", "--manifest", "data_manifests/phantom.yaml", "--out", str(tmp_path / "d"),
              "--workers", "0"])
    with pytest.raises(RunError, match="not a training run"):
        main(["--debug", "evaluate", "--run", str(tmp_path / "run"), "--data", str(tmp_path / "nothing"),
              "--out", str(tmp_path / "eval")])


def test_reproduce_passes_workers_to_the_data_build(tmp_path, capsys):
    assert main(["reproduce", "--profile", "smoke", "--out", str(tmp_path / "results"), "--workers", "0"]) == 2
    assert "`workers` must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "results" / "data").exists()


def test_train_passes_precision_and_compile_to_the_config(tmp_path, monkeypatch):
    import uadlab.training

    seen = []
    monkeypatch.setattr(uadlab.training, "train", lambda config, out, **kwargs: seen.append(config) or _Done())
    assert main(["-q", "train", "--experiment", "2D-None", "--profile", "smoke", "--data", str(tmp_path),
                 "--out", str(tmp_path / "run"), "--precision", "bf16-mixed", "--compile"]) == 0
    assert (seen[0].precision, seen[0].compile) == ("bf16-mixed", True)
    assert main(["-q", "train", "--experiment", "2D-None", "--data", str(tmp_path), "--out", str(tmp_path / "r")]) == 0
    assert (seen[1].precision, seen[1].compile) == (None, False)  # the profile's / the device's default


class _Done:
    def summary(self) -> str:
        return "done"


def test_reproduce_plan_prints_commands_and_trains_nothing(tmp_path, capsys):
    assert main(["reproduce", "--profile", "lab", "--out", str(tmp_path / "results"), "--experiments", "2D-None",
                 "--plan"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("uadlab data build")
    assert lines[-1].startswith("uadlab reproduce --study bengs2021 --profile lab")
    assert sum("--only-run" in line for line in lines) == 4  # 100 % and the profile's three fractions
    assert [p.name for p in (tmp_path / "results").iterdir()] == ["plan.json"]  # the plan, nothing built


def test_every_option_of_every_command_has_help_text():
    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    missing = [f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
               for parser in parsers(_parser()) for action in parser._actions
               if not isinstance(action, argparse._SubParsersAction) and not action.help]
    assert missing == []


def test_course_prepare_runs_the_labs_per_seed_and_verify_checks_every_checksum(tmp_path, monkeypatch, capsys):
    import uadlab.notebooks

    def fake_labs(*, profile, out, seed, progress):
        (out / "runs" / "2D-None" / f"seed{seed}").mkdir(parents=True, exist_ok=True)
        (out / "runs" / "2D-None" / f"seed{seed}" / "checkpoint.pt").write_text(f"weights of seed {seed}")
        return [out / "executed" / "01_vae_2d.ipynb"]

    monkeypatch.delenv("UADLAB_PACK", raising=False)
    monkeypatch.setattr(uadlab.notebooks, "run_notebooks", fake_labs)
    pack = tmp_path / "pack"
    assert main(["-q", "course", "prepare", "--profile", "smoke", "--out", str(pack), "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == [f"seed {seed}: {pack.resolve()}/executed/01_vae_2d.ipynb" for seed in (0, 1)]
    assert out[2].startswith(f"{pack.resolve()}: a course pack of profile smoke, seed(s) 0, 1, 2 files")
    assert main(["course", "verify", str(pack)]) == 0
    assert "all 2 files (0.0 MB) match their sha256" in capsys.readouterr().out
    (pack / "runs/2D-None/seed1/checkpoint.pt").write_text("weights of seed 9")  # same size
    assert main(["course", "verify", str(pack)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seed1/checkpoint.pt: its sha256 is not the one pack.json lists" in err
    (tmp_path / "results" / "runs").mkdir(parents=True)
    assert main(["course", "prepare", "--out", str(tmp_path / "results")]) == 2
    assert "not a course pack (no pack.json); choose an empty --out, or pass --reuse to" in capsys.readouterr().err
