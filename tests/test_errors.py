"""Tests of uadlab.errors: a uadlab error shows as one line in IPython (a notebook cell), as on the command line."""

from __future__ import annotations

import pytest

from uadlab.errors import ManifestError, RunError, UadlabError


@pytest.fixture
def shell(tmp_path, monkeypatch):
    """An IPython shell in this process (its profile and history under ``tmp_path``)."""
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    from IPython.core.interactiveshell import InteractiveShell

    yield InteractiveShell.instance()
    InteractiveShell.clear_instance()


def test_ipython_shows_a_uadlab_error_as_one_line_and_tb_shows_its_traceback(shell, capsys):
    result = shell.run_cell("from uadlab.errors import RunError\n"
                            "raise RunError('runs/2D-None/seed0: holds a training run; pass resume=True')")
    assert isinstance(result.error_in_exec, RunError) and not result.success  # the cell still fails
    assert capsys.readouterr().out == ("RunError: runs/2D-None/seed0: holds a training run; pass resume=True  "
                                       "(%tb shows the traceback)\n")
    shell.run_line_magic("tb", "")
    shown = capsys.readouterr().out
    assert shown.startswith("Traceback (most recent call last):") and "raise RunError(" in shown
    assert shown.rstrip().endswith("RunError: runs/2D-None/seed0: holds a training run; pass resume=True")


def test_ipython_shows_other_errors_with_their_traceback(shell, capsys):
    shell.run_cell("raise ValueError('`seed` must be an int, got 1.5')")
    assert "Traceback" in capsys.readouterr().out  # a programming error keeps its traceback


def test_every_uadlab_error_renders_its_class_and_whole_message():
    error = ManifestError("study x: 2 problem(s):\n  - a\n  - b")
    assert error._render_traceback_() == [
        "ManifestError: study x: 2 problem(s):\n  - a\n  - b  (%tb shows the traceback)"]
    try:
        raise UadlabError("folder: in use")
    except UadlabError as raised:
        raised._render_traceback_()  # shown once
        assert raised._render_traceback_()[-1] == "uadlab.errors.UadlabError: folder: in use"  # then in full
