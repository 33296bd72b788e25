"""Shared fixtures: a seeded generator, tiny NIfTI files, the real sample folder (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

from uadlab._threads import limit_threads

# pytest-xdist runs its workers at once: the cores are shared among them (one thread each for `-n 2`
# on two cores), also in the notebook kernels that inherit OMP_NUM_THREADS (oversubscribed OpenMP
# threads make torch many times slower). An explicit OMP_NUM_THREADS wins.
limit_threads()

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

os.environ.setdefault("UADLAB_CACHE", "")  # tests pass explicit cache folders; see uadlab.data.preprocessing

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded NumPy generator, fresh for every test."""
    return np.random.default_rng(1234)


@pytest.fixture
def write_nifti(tmp_path):
    """Write a small NIfTI file: ``write_nifti("a.nii.gz", array, affine=None) -> Path``."""

    def _write(name: str, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), path)
        return path

    return _write


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """``../shared/data/real``; tests that need it skip, with a reason, when it is absent."""
    if not (REAL_DATA / "SOURCES.md").exists():
        pytest.skip(f"real sample cases not found at {REAL_DATA} (they live beside the checkout in CI)")
    return REAL_DATA
