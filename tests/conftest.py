"""Shared fixtures: a seeded generator, tiny NIfTI files, the real sample folder (skipped when absent)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from uadlab._threads import limit_threads, thread_budget

# pytest-xdist runs its workers at once: the cores are shared among them (one thread each for `-n 2`
# on two cores), also in the notebook kernels and JupyterLab that inherit OMP_NUM_THREADS
# (oversubscribed OpenMP threads make torch many times slower). Only a worker sets its budget: pytest
# also imports this file in the xdist controller, whose budget (all cores) the workers would inherit as
# an explicit OMP_NUM_THREADS. The budget is set explicitly, so that CLI calls made inside a test
# (whose `limit_threads(processes=...)` replaces an inherited budget) cannot raise it for the rest of
# the worker. A user's own OMP_NUM_THREADS wins.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_NUM_THREADS", str(thread_budget()))
    limit_threads()

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

os.environ.setdefault("UADLAB_CACHE", "")  # tests pass explicit cache folders; see uadlab.data.preprocessing
# Tests compare runs bit for bit, and a run's thread count chosen from step times (uadlab.speed.thread_tuner)
# would depend on the machine's load; the tests of the tuner switch it on themselves.
os.environ.setdefault("UADLAB_ADAPTIVE_THREADS", "0")

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
REPO = Path(__file__).resolve().parents[1]


class HoldingProcess:
    """Another process inside ``with <context>:`` (after ``<imports>``) until :meth:`release` (or the
    ``with`` block ends); ``env`` adds to its environment. It has entered when the constructor returns.
    """

    def __init__(self, imports: str, context: str, env: dict[str, str] | None = None) -> None:
        code = f"import sys; {imports}\nwith {context}:\n    print('inside', flush=True); sys.stdin.read()"
        env = {**os.environ, **(env or {}),
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout.readline().strip() == "inside"
        self.pid = self.process.pid

    def release(self) -> None:
        """Leave the ``with`` block: the process ends."""
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.process.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.release()


class LockHolder(HoldingProcess):
    """Another process holding :func:`uadlab.data.io.folder_lock` on ``folder`` until :meth:`release` (or the
    ``with`` block ends): another study, lab or command writing that folder.
    """

    def __init__(self, folder: Path) -> None:
        super().__init__("from uadlab.data.io import folder_lock", f"folder_lock({str(folder)!r})")


class RegisteredProcess(HoldingProcess):
    """Another process in the registry of trainings (:func:`uadlab._process_registry.registered`) until
    :meth:`release` (or the ``with`` block ends): another training on this machine. ``registry`` is the
    folder it registers in (``UADLAB_RUNTIME_DIR``).
    """

    def __init__(self, registry: Path) -> None:
        super().__init__("from uadlab._process_registry import registered", "registered()",
                         {"UADLAB_RUNTIME_DIR": str(registry)})


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


def write_blob_dataset(folder: Path, *, size: int = 32, seed: int = 0,
                       splits: dict[str, dict[str, int]] | None = None, profile: str = "smoke") -> Path:
    """Write a tiny built data set (the layout of docs/ARCHITECTURE.md) of smooth blob "brains".

    ``splits``: ``{cohort: {split: count}}``; default 3 healthy train, 2 healthy val, and for ``tumour``
    and ``stroke`` 2 val and 2 test each. Lesion cohorts carry one bright (tumour) or dark (stroke)
    sphere inside the brain as their lesion. Volumes ``size``³ in [0, 1], identity affine. ``profile``:
    the profile name the data set records (training checks it against the run's).
    """
    import json

    import pandas as pd

    rng = np.random.default_rng(seed)
    splits = splits or {"healthy": {"train": 3, "val": 2}, "tumour": {"val": 2, "test": 2},
                        "stroke": {"val": 2, "test": 2}}
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, size)] * 3, indexing="ij"))
    brain_mask = (grid ** 2).sum(0) < 0.8 ** 2
    rows = []
    for cohort, counts in splits.items():
        for split, count in counts.items():
            for i in range(count):
                subject_id = f"{cohort}-{split}-{i}"
                image = np.zeros((size,) * 3, np.float32)
                for centre in rng.uniform(-0.4, 0.4, size=(3, 3)):
                    image += np.exp(-((grid - centre[:, None, None, None]) ** 2).sum(0) / 0.3)
                image = 0.3 + 0.5 * image / image.max()
                lesion = np.zeros_like(brain_mask)
                if cohort != "healthy":
                    centre = rng.uniform(-0.3, 0.3, size=3)
                    lesion = ((grid - centre[:, None, None, None]) ** 2).sum(0) < rng.uniform(0.15, 0.3) ** 2
                    image[lesion] = 1.0 if cohort == "tumour" else 0.05
                image = (image * brain_mask).astype(np.float32)
                for kind, array in (("images", image), ("brain_masks", brain_mask.astype(np.uint8)),
                                    ("lesion_masks", lesion.astype(np.uint8))):
                    (folder / kind).mkdir(parents=True, exist_ok=True)
                    nib.save(nib.Nifti1Image(array, np.eye(4)), folder / kind / f"{subject_id}.nii.gz")
                rows.append({"subject_id": subject_id, "cohort": cohort, "split": split,
                             "image": f"images/{subject_id}.nii.gz", "brain_mask": f"brain_masks/{subject_id}.nii.gz",
                             "lesion_mask": "" if cohort == "healthy" else f"lesion_masks/{subject_id}.nii.gz",
                             "lesion_voxels": int(lesion.sum()), "lesion_volume_mm3": float(lesion.sum()),
                             "source": "blobs"})
    pd.DataFrame(rows).to_csv(folder / "subjects.csv", index=False)
    roles = {c: {"role": "healthy" if c == "healthy" else "lesion"} for c in splits}
    info = {"name": "blobs", "profile": profile, "image_size": size, "spacing_mm": 1.0,
            "preprocessing": {"pad_shape_mm": [size] * 3}, "cohorts": roles}
    (folder / "dataset.json").write_text(json.dumps(info))
    return folder


FAKE_SHAPE = (40, 48, 40)  # voxels of the fake real scans below
FAKE_VOXEL_MM = 4.0  # stored on the smoke profile's grid: no resampling work
_FAKE_COHORTS = """\
kind: real
description: a tiny fake data set
licence: none
citation: none
cohorts:
  - name: healthy
    role: healthy
    cases: "healthy/*.nii.gz"
    image: "{anchor}"
    brain_mask: nonzero
    split: {train: 0.75, val: 0.25}
    seed: 0
  - name: brats
    role: lesion
    cases: "lesion/*/"
    image: "{case_dir}/t1.nii.gz"
    brain_mask: "{case_dir}/brain_mask.nii.gz"
    lesion_mask: "{case_dir}/seg.nii.gz"
    split: {val: 0.5, test: 0.5}
    seed: 0
"""


def save_nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    """Save ``array`` at ``path`` (folders made); default affine: RAS, ``FAKE_VOXEL_MM`` isotropic."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([FAKE_VOXEL_MM] * 3 + [1.0]) if affine is None else affine), path)
    return path


def fake_scan(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A skull-stripped-looking ``FAKE_SHAPE`` scan (a noisy ellipsoid brain, zero outside; its centre
    jittered by up to 2 voxels) and its bool brain mask."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in FAKE_SHAPE], indexing="ij"), axis=-1)
    centre = np.array(FAKE_SHAPE) / 2 + rng.uniform(-2, 2, 3)
    brain = (((grid - centre) / np.array([15.0, 19.0, 15.0])) ** 2).sum(axis=-1) <= 1.0
    image = (80 + 20 * rng.standard_normal(FAKE_SHAPE)).astype(np.float32) * brain
    return image, brain


def write_fake_real(root: Path, *, name: str = "fake_real", seed: int = 7, lps_case: bool = False) -> Path:
    """A tiny fake real data set under ``root`` and its manifest ``root / f"{name}.yaml"`` (returned).

    Four healthy scans (``healthy/sub{i}.nii.gz``, brain mask: nonzero) and two BraTS-like lesion cases
    (``lesion/case{i}/`` with ``t1``, ``brain_mask`` and ``seg``: label 2 on the 4-voxel cube at
    ``[18:22, 20:24, 18:22]``, where the image is 20), ``FAKE_SHAPE`` voxels of ``FAKE_VOXEL_MM``.
    ``lps_case``: the second lesion case stores the same voxels with X and Y reversed (an LPS affine).
    """
    rng = np.random.default_rng(seed)
    for i in range(4):
        save_nifti(root / "healthy" / f"sub{i}.nii.gz", fake_scan(rng)[0])
    ras = np.diag([FAKE_VOXEL_MM] * 3 + [1.0])
    flip_xy = np.array([[-1, 0, 0, FAKE_SHAPE[0] - 1], [0, -1, 0, FAKE_SHAPE[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    for i in range(2):
        image, brain = fake_scan(rng)
        seg = np.zeros(FAKE_SHAPE, np.uint8)
        seg[18:22, 20:24, 18:22] = 2  # BraTS-like label; lesion = seg > 0
        image[seg > 0] = 20.0
        affine = ras
        if lps_case and i == 1:
            image, brain, seg = (np.flip(a, axis=(0, 1)).copy() for a in (image, brain, seg))
            affine = ras @ flip_xy
        case = root / "lesion" / f"case{i}"
        save_nifti(case / "t1.nii.gz", image, affine)
        save_nifti(case / "brain_mask.nii.gz", brain.astype(np.uint8), affine)
        save_nifti(case / "seg.nii.gz", seg, affine)
    manifest = root / f"{name}.yaml"
    manifest.write_text(f"name: {name}\n" + _FAKE_COHORTS)
    return manifest


@pytest.fixture(scope="module")
def blob_dataset(tmp_path_factory) -> Path:
    """A tiny built data set (32³ blobs; healthy train/val, tumour and stroke val/test).

    See :func:`write_blob_dataset`.
    """
    return write_blob_dataset(tmp_path_factory.mktemp("blobs") / "data")


@pytest.fixture
def one_thread(monkeypatch):
    """Every process of a test on one thread, so that tables made here and in child processes agree to the bit."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("UADLAB_THREADS_SET", raising=False)


# --- tiny models and volumes shared by tests of several modules ------------------------------------

#: Volume size and backbone of the tiny dense VAE of :func:`tiny_vae`.
VAE_SIZE, VAE_CHANNELS = 32, (4, 8, 16)


def tiny_vae(spatial_dims: int, latent_dim: int | None = 8):
    """A seeded dense VAE on ``VAE_SIZE`` volumes with a three-stage backbone."""
    import torch

    from uadlab.models import DenseVAE

    torch.manual_seed(0)
    return DenseVAE(spatial_dims, image_size=VAE_SIZE, latent_dim=latent_dim, channels=VAE_CHANNELS)


def vae_batch(spatial_dims: int, n: int = 3):
    """``(n, 1, VAE_SIZE, ...)`` seeded uniform samples."""
    import torch

    return torch.rand((n, 1) + (VAE_SIZE,) * spatial_dims, generator=torch.Generator().manual_seed(1))


#: Volume size of :data:`TINY_PROFILE` and :func:`blob_volumes`.
TINY_SIZE = 16


def _tiny_profile():
    import dataclasses

    from uadlab.profiles import get_profile

    return dataclasses.replace(get_profile("smoke"), name="tiny", image_size=TINY_SIZE, channels=(4, 8),
                               latent_2d=8, latent_3d=8, batch_size=4, max_epochs=3, patience=3)


#: A tiny backbone so that one epoch takes milliseconds.
TINY_PROFILE = _tiny_profile()


def blob_volumes(n: int, rng: np.random.Generator, size: int = TINY_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``n`` smooth "brains": a ball mask filled with a few Gaussian blobs; images in [0, 1]."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, size)] * 3, indexing="ij"))
    brain_masks = np.broadcast_to((grid ** 2).sum(0) < 0.7 ** 2, (n, size, size, size)).copy()
    images = np.zeros((n, size, size, size), np.float32)
    for i in range(n):
        for centre in rng.uniform(-0.4, 0.4, size=(3, 3)):
            images[i] += np.exp(-((grid - centre[:, None, None, None]) ** 2).sum(0) / 0.15)
    images = np.clip(images / images.max(axis=(1, 2, 3), keepdims=True), 0, 1) * brain_masks
    return images.astype(np.float32), brain_masks


# --- folders that must not change (a course pack read by the labs) --------------------------------


def tree_snapshot(folder: Path) -> dict[str, tuple]:
    """Every path under ``folder`` (``folder`` too) with its modification time, size and bytes' sha256:
    any write, new file or lock file in it changes the snapshot."""
    import hashlib

    return {p.relative_to(folder).as_posix(): (p.lstat().st_mtime_ns, p.lstat().st_size,
                                               hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
            for p in [folder, *folder.rglob("*")]}


def set_writable(folder: Path, writable: bool) -> None:
    """``chmod -R u+w`` or ``chmod -R a-w`` on ``folder`` (root writes all the same: compare snapshots too)."""
    import stat

    for path in [folder, *folder.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
