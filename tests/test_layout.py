"""Tests of uadlab.layout: one place for the folders and files uadlab writes."""

from pathlib import Path

from uadlab.layout import EVAL_METRICS, RUN_FILES, ResultsLayout, run_name


def test_run_names_are_file_safe_and_carry_the_fraction():
    assert run_name("3D-Cube-n") == "3D-Cube-n"
    assert run_name("2D-None", 0.1) == "2D-None@10"
    assert run_name("spatial-vae:3D-None", 0.6) == "spatial-vae_3D-None@60"
    assert ":" not in run_name("mean-image:3D-None")


def test_results_layout_paths(tmp_path):
    layout = ResultsLayout(str(tmp_path))
    assert layout.root == tmp_path and isinstance(layout.root, Path)
    assert layout.run("2D-None", 0.2) == tmp_path / "runs" / "2D-None@20"
    assert layout.metrics("spatial-vae:2D-None") == tmp_path / "evaluation" / "spatial-vae_2D-None" / EVAL_METRICS
    assert layout.subjects("3D-None").name == "subjects.csv"
    assert (layout.table1_csv.name, layout.table1_md.name, layout.record.name) == ("table1.csv", "table1.md",
                                                                                    "reproduce.json")
    assert layout.data == tmp_path / "data" and layout.figures == tmp_path / "figures"
    assert RUN_FILES == ("config.yaml", "checkpoint.pt", "history.csv")
