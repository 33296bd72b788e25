"""The code as issue 16 found it, for the benchmarks that time it against today's (same session).

``checkout`` extracts ``uadlab/`` and ``data_manifests/`` of a commit with ``git archive`` (needs the
git history; on a machine without it, pass a folder that already holds such an extraction). Run the
old code in a subprocess with that folder as its working folder and on ``PYTHONPATH``: ``python -c``
imports from its working folder first, so from anywhere else this checkout's ``uadlab`` would load
instead.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "32e46d4"  # the commit issue 16 measured (2026-11-23): eager float32, no precision option


def checkout(commit: str, folder: Path) -> Path:
    """``uadlab/`` and ``data_manifests/`` of ``commit`` extracted into ``folder`` (created); returns it.

    ``commit`` may instead name a folder holding such an extraction (made with ``git archive`` where
    the history is, e.g. for a GPU machine that gets the working tree only); it is returned as it is.
    """
    if Path(commit).is_dir():
        return Path(commit).resolve()
    folder.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "uadlab", "data_manifests"],
                             capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder
