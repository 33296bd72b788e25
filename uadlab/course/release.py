"""Student versions of the labs, made by nbgrader from the instructor versions (``uadlab course release``).

The labs in ``notebooks/`` are the instructor versions: every exercise's solution sits between
``### BEGIN SOLUTION`` and ``### END SOLUTION`` in a cell nbgrader marks as a solution, and the locked,
graded cell after it calls a check of :mod:`uadlab.course.exercises`. :func:`make_course` lays the labs
out as an nbgrader course, one assignment per lab, and runs ``nbgrader generate_assignment`` on each:
the student versions in ``COURSE/release/<lab>/`` have each solution replaced by
``raise NotImplementedError()``, and no one keeps them by hand.

From there the course is nbgrader's (https://nbgrader.readthedocs.io): ``nbgrader release_assignment``
on a JupyterHub, ``nbgrader collect``, then ``nbgrader autograde <lab>`` runs each submission and scores
its graded cells, and ``nbgrader generate_feedback`` returns the checks' hints to the students.
Autograding executes every submitted lab, so set ``PACK`` (a course pack, :mod:`uadlab.course.pack`)
in the released labs: the labs then read the pack's runs instead of training them.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from uadlab._checks import check_path
from uadlab.data.io import atomic_write
from uadlab.errors import CourseError

__all__ = ["make_course", "set_parameters"]

#: nbgrader's settings for a uadlab course: a lab runs for minutes, not nbgrader's default 30 s per cell.
_CONFIG = """\
# nbgrader settings of a uadlab course (written by `uadlab course release`).
c = get_config()  # noqa: F821
c.CourseDirectory.root = {root!r}
c.CourseDirectory.course_id = {course_id!r}  # nbgrader's exchange (release_assignment, collect) needs one
c.ExecutePreprocessor.timeout = 3600  # seconds per cell: a lab trains models
c.ExecutePreprocessor.kernel_name = "python3"
"""


def set_parameters(source: str, parameters: Mapping[str, Any]) -> str:
    """A lab's parameters cell with new default values (``NAME: type = value  # comment`` lines).

    Args:
        source: the cell's source.
        parameters: new values by name, Python literals (``str``, ``int``, ``bool``, ``list``).

    Returns:
        The source with each named line's value replaced; comments and other lines kept.

    Raises:
        ValueError: a name the cell does not define, or a value that is not a literal.

    >>> set_parameters('PROFILE: str = "smoke"  # run profile', {"PROFILE": "lab"})
    "PROFILE: str = 'lab'  # run profile"
    """
    lines = source.splitlines()
    for name, value in parameters.items():
        text = repr(value)
        try:
            ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ValueError(f"parameter {name!r} must be a Python literal, got {value!r}") from None
        for i, line in enumerate(lines):
            head, _, rest = line.partition("=")
            if head.split(":")[0].strip() == name and ":" in head:
                comment = rest[rest.index("  #"):] if "  #" in rest else ""
                lines[i] = f"{head.rstrip()} = {text}{comment}"
                break
        else:
            raise ValueError(f"the parameters cell defines no {name!r}; it defines "
                             f"{[line.split(':')[0] for line in lines if ': ' in line and not line.startswith('#')]}")
    return "\n".join(lines)


def make_course(out: str | os.PathLike, source_dir: str | os.PathLike, labs: Sequence[str], *,
                parameters: Mapping[str, Any] | None = None, course_id: str = "uadlab",
                overwrite: bool = False) -> dict[str, Path]:
    """An nbgrader course of the labs, with the student versions generated.

    Writes ``out/nbgrader_config.py`` (once: an instructor's edits are kept), the instructor versions as
    ``out/source/<lab>/<lab>.ipynb`` (with ``parameters`` as their defaults) and, through ``nbgrader
    generate_assignment``, the student versions as ``out/release/<lab>/<lab>.ipynb``. nbgrader's gradebook
    is ``out/gradebook.db``.

    Args:
        out: the course folder: new, empty, or an earlier course (``overwrite`` replaces its source and
            release versions of ``labs``; submissions and grades are never touched).
        source_dir: folder of the labs (``uadlab.notebooks.NOTEBOOK_DIR``).
        labs: the labs' file names, e.g. ``["01_vae_2d.ipynb"]``; each becomes the assignment of its stem.
        parameters: default values of the labs' parameters in both versions, e.g. ``{"PROFILE": "lab",
            "PACK": "/srv/uadlab/pack"}``; every lab must define each.
        course_id: nbgrader's course id (its exchange folders on a JupyterHub), written into a new
            ``nbgrader_config.py``.
        overwrite: replace the source and release versions of ``labs`` in an existing course.

    Returns:
        ``{lab stem: student version}``.

    Raises:
        TypeError: ``out`` or ``source_dir`` is not a path.
        ValueError: no labs, or a parameter a lab does not define.
        CourseError: ``out`` is a file or a non-empty folder that is no course, a lab exists there and
            ``overwrite`` is not set, a lab file is missing, or nbgrader failed (its last lines quoted).
    """
    import nbformat

    out, source_dir = check_path("out", out).resolve(), check_path("source_dir", source_dir)
    if not labs:
        raise ValueError("`labs` must name at least one lab, got none")
    if out.is_file():
        raise CourseError(f"{out}: is a file, not a course folder")
    if out.is_dir() and any(out.iterdir()) and not (out / "nbgrader_config.py").is_file():
        raise CourseError(f"{out}: not empty and not a uadlab course (no nbgrader_config.py); choose a new folder")
    stems = [Path(lab).stem for lab in labs]
    for lab, stem in zip(labs, stems):
        if not (source_dir / lab).is_file():
            raise CourseError(f"{source_dir / lab}: lab not found")
        if (out / "source" / stem).exists() and not overwrite:
            raise CourseError(f"{out / 'source' / stem}: the course already has this lab; pass overwrite=True "
                              "(--overwrite) to replace its source and student versions")
    notebooks = {}
    for lab, stem in zip(labs, stems):  # every parameter checked before anything is written
        nb = nbformat.read(source_dir / lab, as_version=4)
        if parameters:
            nb.cells[0].source = set_parameters(nb.cells[0].source, parameters)
        notebooks[stem] = nb
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "nbgrader_config.py").is_file():
        with atomic_write(out / "nbgrader_config.py") as tmp:
            tmp.write_text(_CONFIG.format(root=str(out), course_id=course_id))
    released = {}
    for stem, nb in notebooks.items():
        for folder in (out / "source" / stem, out / "release" / stem):
            shutil.rmtree(folder, ignore_errors=True)
        with atomic_write(out / "source" / stem / f"{stem}.ipynb") as tmp:
            nbformat.write(nb, str(tmp))
        _nbgrader(out, "generate_assignment", stem, "--force")
        released[stem] = out / "release" / stem / f"{stem}.ipynb"
    return released


def _nbgrader(course: Path, *args: str) -> None:
    """Run the ``nbgrader`` command of this environment in ``course``; :class:`CourseError` when it fails."""
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "nbgrader").is_file():
        raise CourseError(f"{course}: nbgrader is not installed here; pip install -e '.[course]' (or 'uadlab[course]')")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")  # it calls `alembic`
    done = subprocess.run([str(bin_dir / "nbgrader"), *args], cwd=course, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = " | ".join(line for line in (done.stdout + done.stderr).splitlines()[-4:] if line.strip())
        raise CourseError(f"{course}: `nbgrader {' '.join(args)}` failed: {tail}")
