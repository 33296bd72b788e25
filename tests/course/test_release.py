"""The labs' exercises as nbgrader sees them, and the course folder ``make_course`` writes.

Running the student versions and autograding them needs the labs' runs: those tests sit with the
executed notebook chains in tests/integration/test_notebooks.py.
"""

from __future__ import annotations

import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from uadlab.course.exercises import QUESTIONS
from uadlab.course.release import make_course, set_parameters
from uadlab.errors import CourseError
from uadlab.notebooks import NOTEBOOK_DIR, NOTEBOOKS


def _nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_lab_has_graded_exercises_after_their_solutions(name):
    cells = nbformat.read(NOTEBOOK_DIR / name, as_version=4).cells
    solutions = [i for i, c in enumerate(cells) if _nbgrader(c).get("solution")]
    graded = [i for i, c in enumerate(cells) if _nbgrader(c).get("grade")]
    assert 2 <= len(graded) <= 4 and len(solutions) == len(graded)
    for solution, check in zip(solutions, graded):
        source = cells[solution].source
        assert source.count("### BEGIN SOLUTION") == 1 and source.index("### BEGIN SOLUTION") < source.index(
            "### END SOLUTION"), f"{name} cell {solution}"
        assert solution < check and _nbgrader(cells[check]).get("locked") and _nbgrader(cells[check])["points"] > 0
        assert re.search(r"exercises\.check_\w+\(", cells[check].source), f"{name} cell {check}"
        assert _nbgrader(cells[check])["grade_id"] == _nbgrader(cells[solution])["grade_id"] + "_check"


def test_grade_ids_are_unique_across_the_labs():
    ids = [_nbgrader(c)["grade_id"] for name in NOTEBOOKS
           for c in nbformat.read(NOTEBOOK_DIR / name, as_version=4).cells if "nbgrader" in c.metadata]
    assert len(ids) == len(set(ids))


def test_every_multiple_choice_question_shows_its_options_in_a_lab():
    text = "\n".join(c.source for name in NOTEBOOKS for c in nbformat.read(NOTEBOOK_DIR / name, as_version=4).cells)
    for question, q in QUESTIONS.items():
        assert f'check_choice("{question}"' in text
        assert all(f"({letter}) {option}" in text for letter, option in q.options.items()), question


def test_set_parameters_replaces_values_and_keeps_comments():
    source = 'PROFILE: str = "smoke"  # run profile\nSEED: int = 0\nEXPERIMENTS: list = ["2D-None"]  # rows'
    assert set_parameters(source, {"SEED": 3, "EXPERIMENTS": []}) == \
        'PROFILE: str = "smoke"  # run profile\nSEED: int = 3\nEXPERIMENTS: list = []  # rows'
    with pytest.raises(ValueError, match="defines no 'PACK'"):
        set_parameters(source, {"PACK": "/srv/pack"})
    with pytest.raises(ValueError, match="must be a Python literal"):
        set_parameters(source, {"SEED": object()})


def _lab(path):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    parameters = new_code_cell('PROFILE: str = "smoke"  # profile')
    parameters.metadata["tags"] = ["parameters"]
    solution = new_code_cell("def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION")
    solution.metadata["nbgrader"] = {"grade": False, "grade_id": "double", "locked": False, "schema_version": 3,
                                     "solution": True, "task": False}
    nb.cells = [parameters, solution]
    nbformat.write(nb, str(path))


@pytest.mark.slow  # nbgrader generate_assignment: ~3 s
def test_make_course_generates_the_student_version(tmp_path):
    labs = tmp_path / "labs"
    labs.mkdir()
    _lab(labs / "01_x.ipynb")
    released = make_course(tmp_path / "course", labs, ["01_x.ipynb"], parameters={"PROFILE": "lab"}, course_id="mri101")
    assert "course_id = 'mri101'" in (tmp_path / "course" / "nbgrader_config.py").read_text()
    student = nbformat.read(released["01_x"], as_version=4)
    assert "raise NotImplementedError()" in student.cells[1].source and "return 2 * x" not in student.cells[1].source
    assert student.cells[0].source == "PROFILE: str = 'lab'  # profile"
    source = nbformat.read(tmp_path / "course" / "source" / "01_x" / "01_x.ipynb", as_version=4)
    assert "return 2 * x" in source.cells[1].source and source.cells[0].source.startswith("PROFILE: str = 'lab'")

    with pytest.raises(CourseError, match="already has this lab; pass overwrite=True"):
        make_course(tmp_path / "course", labs, ["01_x.ipynb"])
    (tmp_path / "course" / "nbgrader_config.py").write_text("# the instructor's own settings\n")
    make_course(tmp_path / "course", labs, ["01_x.ipynb"], overwrite=True)
    assert (tmp_path / "course" / "nbgrader_config.py").read_text() == "# the instructor's own settings\n"  # kept
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(CourseError, match="not empty and not a uadlab course"):
        make_course(tmp_path / "other", labs, ["01_x.ipynb"])
    with pytest.raises(CourseError, match="lab not found"):
        make_course(tmp_path / "new", labs, ["02_y.ipynb"])
    with pytest.raises(ValueError, match="defines no 'SEED'"):
        make_course(tmp_path / "new", labs, ["01_x.ipynb"], parameters={"SEED": 1})
    assert not (tmp_path / "new").exists()  # nothing written before the parameters were checked


def _solution(lab: str, grade_id: str) -> dict:
    """The namespace a lab's solution cell (instructor version) leaves behind, with numpy and torch imported."""
    import numpy as np
    import torch

    cells = nbformat.read(NOTEBOOK_DIR / lab, as_version=4).cells
    source = next(c.source for c in cells if _nbgrader(c).get("grade_id") == grade_id)
    namespace: dict = {"np": np, "torch": torch}
    exec(compile(source, f"{lab}:{grade_id}", "exec"), namespace)  # noqa: S102 - the repository's own notebooks
    return namespace


@pytest.mark.parametrize(("lab", "grade_id", "name", "check"), [
    ("00_data_prep.ipynb", "lab00_dice", "dice", "check_dice"),
    ("00_data_prep.ipynb", "lab00_dice_d", "dice_d", "check_dice_d"),
    ("01_vae_2d.ipynb", "lab01_kl", "kl_divergence", "check_kl"),
    ("01_vae_2d.ipynb", "lab01_reparameterize", "reparameterize", "check_reparameterize"),
    ("02_vae_3d.ipynb", "lab02_threshold", "threshold_search", "check_threshold_search"),
    ("03_erasing_ablation.ipynb", "lab03_fill", "fill", "check_fill"),
    ("04_lesion_size.ipynb", "lab04_volume", "lesion_volume_ml", "check_lesion_volume"),
    ("05_data_size.ipynb", "lab05_slices", "slice_labels", "check_slice_labels"),
])
def test_the_labs_own_solutions_pass_their_checks(lab, grade_id, name, check):
    """What autograding the instructor version does, for the functions a student writes (without the lab's runs)."""
    from uadlab.course import exercises

    getattr(exercises, check)(_solution(lab, grade_id)[name])


@pytest.mark.parametrize("size", [32, 64])  # the smoke and the lab/paper grids
def test_lab_07s_own_anomaly_passes_its_check_on_every_grid(size):
    import numpy as np

    from uadlab.course import exercises

    grid = np.indices((size,) * 3) - size / 2
    brain = ((grid / np.array([0.38, 0.45, 0.4])[:, None, None, None] / size) ** 2).sum(0) <= 1  # ~ the phantom's
    image = np.where(brain, 0.6, 0.0).astype(np.float32)
    exercises.check_anomaly(_solution("07_recon_plus_supervised.ipynb", "lab07_anomaly")["make_anomaly"], image, brain)
