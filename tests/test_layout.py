"""Tests of uadlab.layout: one place for the folders and files uadlab writes."""

from pathlib import Path

import pytest

from uadlab.errors import RunError
from uadlab.layout import EVAL_METRICS, RUN_FILES, ResultsLayout, check_output_folder, run_name


def test_run_names_are_file_safe_and_carry_the_fraction():
    assert run_name("3D-Cube-n") == "3D-Cube-n"
    assert run_name("2D-None", 0.1) == "2D-None@10"
    assert run_name("spatial-vae:3D-None", 0.6) == "spatial-vae_3D-None@60"
    assert ":" not in run_name("mean-image:3D-None")


def test_results_layout_paths(tmp_path):
    layout = ResultsLayout(str(tmp_path))
    assert layout.root == tmp_path and isinstance(layout.root, Path)
    assert layout.run("2D-None", 0.2) == tmp_path / "runs" / "2D-None@20" / "seed0"
    assert layout.run("2D-None", seed=3) == tmp_path / "runs" / "2D-None" / "seed3"
    assert layout.metrics("spatial-vae:2D-None") == (tmp_path / "evaluation" / "spatial-vae_2D-None" / "seed0"
                                                     / EVAL_METRICS)
    assert layout.evaluation("3D-None", 1.0, 2, "brats") == tmp_path / "evaluation" / "3D-None" / "seed2" / "brats"
    assert layout.study("lambert2021").run("3D-None") == tmp_path / "lambert2021" / "runs" / "3D-None" / "seed0"
    assert layout.subjects("3D-None").name == "subjects.csv"
    assert (layout.table1_csv.name, layout.table1_md.name, layout.record.name) == ("table1.csv", "table1.md",
                                                                                    "reproduce.json")
    assert layout.data == tmp_path / "data" and layout.figures == tmp_path / "figures"
    assert RUN_FILES == ("config.yaml", "checkpoint.pt", "history.csv")


def test_the_output_folder_guard(tmp_path):
    table, record = tmp_path / "table1.csv", tmp_path / "reproduce.json"
    check_output_folder(tmp_path / "absent", writer="w", owned=(table,), record=record)  # nothing there: fine
    table.write_text("mine")
    with pytest.raises(RunError, match="table1.csv: exists and was not written by w .no reproduce.json"):
        check_output_folder(tmp_path, writer="w", owned=(table,), record=record)
    check_output_folder(tmp_path, writer="w", owned=(table,), record=record, overwrite=True)
    record.write_text("{}")
    check_output_folder(tmp_path, writer="w", owned=(table,), record=record)  # the writer's own table
    with pytest.raises(RunError, match="table1.csv: already exists; pass --overwrite"):
        check_output_folder(tmp_path, writer="w", owned=(table,))
    (tmp_path / "config.yaml").write_text("")
    with pytest.raises(RunError, match="holds a training run .config.yaml.; w never writes into one"):
        check_output_folder(tmp_path, writer="w", overwrite=True)
    with pytest.raises(RunError, match="exists and is not a folder"):
        check_output_folder(table, writer="w")
