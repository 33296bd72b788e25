"""NIfTI reading and writing, and atomic writes of any file.

Every NIfTI volume in uadlab is read with :func:`load_volume` and written with :func:`save_volume`,
so that a bad file always fails the same way: a :class:`uadlab.errors.VolumeError` whose message
starts with the file name and says what is wrong (missing, not NIfTI, corrupt or truncated, 4D,
NaN/inf voxels, non-invertible affine). Every other file (CSV, JSON, checkpoints) is written through
:func:`atomic_write`: into a temporary file in the destination folder, then moved into place with
:func:`os.replace`, so a crash never leaves a half-written file under the final name.

Folders that a command writes (a data set, a training run, an evaluation, a study's tables) are
held with :func:`folder_lock` while it writes them, so a second process aiming at the same folder
fails at once with one line, or waits for the first and then reuses its work (a study), instead of
silently mixing or losing results.

Shape:
    - volume: ``(X, Y, Z)`` ``float32``, in the file's own voxel order (no reorientation here).
    - affine: ``(4, 4)`` ``float64``, voxel indices to world millimetres.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import uuid
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

import filelock
import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.spatialimages import HeaderDataError
from nibabel.wrapstruct import WrapStructError

from uadlab._checks import check_path, check_real
from uadlab.errors import UadlabError, UadlabWarning, VolumeError

__all__ = ["MAX_VOXELS", "atomic_write", "check_mask", "check_same_grid", "folder_lock", "load_volume",
           "save_volume"]

#: Largest number of voxels :func:`load_volume` reads (2**30: a 1024³ volume, 4 GiB as float32). A
#: header declaring more is refused before any memory is allocated (a corrupt or hostile header may
#: declare 32767³ voxels); a real head scan at 0.5 mm holds about 2**26.
MAX_VOXELS: int = 2**30

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
# What nibabel raises for a file that is not an image, has a broken header, or whose data ends early
# (a truncated .nii.gz often opens fine and only fails when the voxels are decompressed).
_READ_ERRORS = (ImageFileError, HeaderDataError, WrapStructError, OSError, EOFError, ValueError, zlib.error)
_THREAD = threading.local()  # .held: the lock files of folder_lock this thread holds (it is re-entrant)



def _reason(error: BaseException) -> str:
    """``"EOFError: message"`` on one line (nibabel messages may span several)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def _suffix(path: Path) -> str:
    """The full file suffix, ``".nii.gz"`` for ``a.nii.gz`` (``Path.suffix`` gives ``".gz"``)."""
    return "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix


def load_volume(path: str | os.PathLike, *, ndim: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI volume and check it is usable.

    Trailing singleton dimensions beyond ``ndim`` are dropped (a ``(X, Y, Z, 1)`` file is a common
    export artefact); a real fourth dimension is rejected. Scaling (``scl_slope``/``scl_inter``) is
    applied. The data are read fully into memory (no memory map), so the file may be replaced or
    deleted afterwards. No reorientation: callers use :func:`nibabel.as_closest_canonical` when they
    need RAS+.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        ndim: number of dimensions expected, 3 for a volume.

    Returns:
        ``(data, affine)``: ``data`` ``(X, Y, Z)`` ``float32``, every voxel finite;
        ``affine`` ``(4, 4)`` ``float64``, invertible, voxel indices to world mm.

    Raises:
        TypeError: ``path`` is not a str/path, or ``ndim`` not an int.
        ValueError: ``ndim`` is smaller than 1.
        uadlab.errors.VolumeError: the file is missing, not a NIfTI image, corrupt or truncated, declares
            more than :data:`MAX_VOXELS` voxels (checked on the header, before reading), has
            another number of (non-singleton) dimensions than ``ndim``, holds NaN or infinite voxels
            (the message counts them), or has a non-invertible or non-finite affine.
    """
    path = check_path("path", path)
    if not isinstance(ndim, int) or isinstance(ndim, bool):
        raise TypeError(f"`ndim` must be an int, got {ndim!r}")
    if ndim < 1:
        raise ValueError(f"`ndim` must be at least 1, got {ndim!r}")
    if not path.exists():
        raise VolumeError(f"{path}: file not found")
    if path.is_dir():
        raise VolumeError(f"{path}: is a folder, expected a NIfTI file")
    try:
        image = nib.load(path, mmap=False)
    except _READ_ERRORS as error:
        raise VolumeError(f"{path}: not a readable NIfTI image ({_reason(error)})") from error
    if not isinstance(image, (nib.Nifti1Pair, nib.Nifti2Pair)):
        raise VolumeError(f"{path}: not a NIfTI image (nibabel read it as {type(image).__name__})")
    n_voxels = math.prod(int(n) for n in image.shape)
    if n_voxels > MAX_VOXELS:
        raise VolumeError(f"{path}: header declares shape {tuple(image.shape)} ({n_voxels} voxels), more than "
                          f"the {MAX_VOXELS} uadlab reads; a corrupt header or not a single head scan")
    try:
        data = np.asarray(image.get_fdata(dtype=np.float32))
    except _READ_ERRORS as error:
        raise VolumeError(
            f"{path}: corrupt or truncated voxel data ({_reason(error)})"
        ) from error

    while data.ndim > ndim and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != ndim:
        raise VolumeError(f"{path}: has shape {data.shape}, expected a {ndim}D volume")

    finite = np.isfinite(data)
    if not finite.all():
        n_nan = int(np.isnan(data).sum())
        n_inf = int(data.size - finite.sum()) - n_nan
        raise VolumeError(f"{path}: holds {n_nan} NaN and {n_inf} infinite voxel(s)")

    affine = np.asarray(image.affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all() or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise VolumeError(f"{path}: non-invertible or non-finite affine {affine.tolist()}")
    return data, affine


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Write a file atomically: yield a temporary path, then move it onto ``path``.

    The temporary file lives in the destination folder (so :func:`os.replace` is an atomic rename on
    the same file system) and keeps the destination's suffix (``.nii.gz``, ``.csv``...), so writers
    that choose a format or compression from the name work unchanged. If the ``with`` body raises,
    the temporary file is removed and ``path`` is left untouched. Missing parent folders are created.

    Example:
        >>> with atomic_write(out / "table.csv") as tmp:   # doctest: +SKIP
        ...     frame.to_csv(tmp, index=False)

    Args:
        path: final file name.
        overwrite: replace an existing ``path``; without it an existing file is an error.

    Yields:
        The temporary :class:`~pathlib.Path` to write to (not yet created).

    Raises:
        TypeError: ``path`` is not a str/path.
        uadlab.errors.UadlabError: ``path`` exists and ``overwrite`` is false (checked before the body
            runs and again before the move), or the body wrote nothing to the temporary path.
    """
    path = check_path("path", path)
    if path.exists() and not overwrite:
        raise UadlabError(f"{path}: already exists; pass overwrite=True (--overwrite) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = _suffix(path)
    base = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    tmp = path.with_name(f".{base}.{uuid.uuid4().hex[:12]}.tmp{suffix}")
    try:
        yield tmp
        if not tmp.exists():
            raise UadlabError(f"{path}: nothing was written to the temporary file {tmp.name}")
        if path.exists() and not overwrite:
            raise UadlabError(f"{path}: appeared while it was being written; pass overwrite=True to replace it")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, wait: float = 0.0) -> Iterator[Path]:
    """Hold an exclusive lock on a folder a command writes; another process holding it makes this fail or wait.

    The lock is an OS file lock (:mod:`filelock`, ``flock`` on Linux and macOS) on the hidden file
    ``.<name>.lock`` *beside* the folder, so that it also guards a folder that does not exist yet or
    is replaced by a rename (a data-set build). The kernel releases it when the process ends, even
    on ``kill -9``; the empty lock file may stay behind and is harmless. The lock is re-entrant in
    the thread that holds it (a study holds a run's lock and calls :func:`uadlab.training.train`,
    which asks for it again); another thread or process is kept out.

    Example:
        >>> with folder_lock(run_dir):  # doctest: +SKIP
        ...     train_into(run_dir)

    Args:
        folder: the folder to guard (it need not exist; its parent is created).
        wait: seconds to wait for another process to release the lock, with one
            :class:`~uadlab.errors.UadlabWarning` saying so when the wait begins (``0``: fail at once).

    Yields:
        ``folder`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``folder`` is not a str/path, or ``wait`` not a number.
        ValueError: ``folder`` is the file-system root, or ``wait`` is negative or not finite.
        uadlab.errors.UadlabError: another process holds the lock (after ``wait`` seconds), named in one line.
        OSError: the lock file cannot be created (e.g. a read-only parent folder).
    """
    folder = check_path("folder", folder)
    wait = check_real("wait", wait, "a finite number of seconds >= 0", lambda v: math.isfinite(v) and v >= 0)
    absolute = Path(os.path.abspath(folder))  # "." has no name to put beside
    if not absolute.name:
        raise ValueError(f"`folder` must not be the file-system root, got {str(folder)!r}")
    lock_file = absolute.with_name(f".{absolute.name}.lock")
    held = _held_locks()
    if lock_file in held:  # this thread holds it already
        held[lock_file] += 1
        try:
            yield folder
        finally:
            held[lock_file] -= 1
        return
    absolute.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(lock_file, timeout=0, thread_local=False)
    _acquire(lock, folder, lock_file, wait)
    held[lock_file] = 1
    try:
        yield folder
    finally:
        del held[lock_file]
        lock.release()


def _held_locks() -> dict[Path, int]:
    """The lock files this thread holds, with how often it entered each (:func:`folder_lock` is re-entrant)."""
    if not hasattr(_THREAD, "held"):
        _THREAD.held = {}
    return _THREAD.held


def _acquire(lock: filelock.FileLock, folder: Path, lock_file: Path, wait: float) -> None:
    """Take ``lock`` now, or after waiting up to ``wait`` seconds (announced by a warning); else UadlabError."""
    try:
        lock.acquire(timeout=0)
        return
    except filelock.Timeout:
        if wait == 0:
            raise UadlabError(f"{folder}: in use by another uadlab process (lock {lock_file.name}); "
                              "wait for it to finish or choose another folder") from None
    warnings.warn(f"{folder}: in use by another uadlab process; waiting for it to finish (at most {_duration(wait)})",
                  UadlabWarning, stacklevel=4)
    try:
        lock.acquire(timeout=wait)
    except filelock.Timeout:
        raise UadlabError(f"{folder}: still in use by another uadlab process after {_duration(wait)} "
                          f"(lock {lock_file.name}); run again to wait longer, or choose another folder") from None


def _duration(seconds: float) -> str:
    """``"2 h"``, ``"5 min"``, ``"1.5 s"``: a wait, as a person reads it.

    >>> _duration(7200), _duration(300), _duration(1.5)
    ('2 h', '5 min', '1.5 s')
    """
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.3g} {unit}"
    return f"{seconds:.3g} s"


def save_volume(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray, *, overwrite: bool = False) -> Path:
    """Write a volume as NIfTI, atomically (see :func:`atomic_write`).

    The dtype is kept, except ``bool``, which NIfTI lacks and is stored as ``uint8`` (0/1).

    Args:
        path: destination, ending in ``.nii`` or ``.nii.gz`` (gzip-compressed).
        array: ``(X, Y, Z)`` (any number of dimensions NIfTI allows, 1 to 7) numeric or bool array.
        affine: ``(4, 4)`` finite voxel-to-world matrix, mm.
        overwrite: replace an existing file.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        TypeError: ``path`` is not a str/path, or ``array`` not a numpy array.
        ValueError: ``path`` has another suffix, ``array`` has 0 or more than 7 dimensions or a
            non-numeric dtype, or ``affine`` is not a finite ``(4, 4)`` matrix.
        uadlab.errors.UadlabError: ``path`` exists and ``overwrite`` is false.
    """
    path = check_path("path", path)
    if _suffix(path) not in _NIFTI_SUFFIXES:
        raise ValueError(f"`path` must end in .nii or .nii.gz, got {str(path)!r}")
    if not isinstance(array, np.ndarray):
        raise TypeError(f"`array` must be a numpy array, got {type(array).__name__}")
    if not 1 <= array.ndim <= 7:
        raise ValueError(f"`array` must have 1 to 7 dimensions, got shape {array.shape}")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"`array` must be numeric or bool, got dtype {array.dtype}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise ValueError(f"`affine` must be a finite (4, 4) matrix, got {affine.tolist()!r}")
    image = nib.Nifti1Image(array, affine)
    with atomic_write(path, overwrite=overwrite) as tmp:
        nib.save(image, tmp)
    return path


def check_same_grid(
    ref_name: str,
    ref_shape: tuple[int, ...],
    ref_affine: np.ndarray,
    other_name: str,
    other_shape: tuple[int, ...],
    other_affine: np.ndarray,
    *,
    atol: float = 1e-3,
) -> None:
    """Check that two volumes share one voxel grid (e.g. an image and its brain or lesion mask).

    Args:
        ref_name: name of the reference volume in messages (usually its file).
        ref_shape: its shape ``(X, Y, Z)``.
        ref_affine: its ``(4, 4)`` affine.
        other_name: name of the other volume.
        other_shape: its shape.
        other_affine: its ``(4, 4)`` affine.
        atol: largest absolute difference tolerated between affine entries, mm (NIfTI stores them
            as float32, and tools round them differently).

    Raises:
        ValueError: an affine is not ``(4, 4)``, or ``atol`` is negative.
        uadlab.errors.VolumeError: the shapes differ, or the affines differ by more than ``atol``.
    """
    ref_affine = np.asarray(ref_affine, dtype=np.float64)
    other_affine = np.asarray(other_affine, dtype=np.float64)
    for name, affine in (("ref_affine", ref_affine), ("other_affine", other_affine)):
        if affine.shape != (4, 4):
            raise ValueError(f"`{name}` must be a (4, 4) matrix, got shape {affine.shape}")
    if not atol >= 0:
        raise ValueError(f"`atol` must be >= 0, got {atol!r}")
    if tuple(ref_shape) != tuple(other_shape):
        raise VolumeError(
            f"{other_name}: shape {tuple(other_shape)} differs from {tuple(ref_shape)} of {ref_name}"
        )
    diff = float(np.abs(ref_affine - other_affine).max())
    if not diff <= atol:
        raise VolumeError(
            f"{other_name}: affine differs from that of {ref_name} by up to {diff:.4g} mm (tolerance {atol})"
        )


def check_mask(name: str, mask: np.ndarray) -> None:
    """Check that a mask selects at least one voxel.

    Args:
        name: name of the mask in messages (usually its file).
        mask: array of any shape; non-zero voxels are inside.

    Raises:
        TypeError: ``mask`` is not a numpy array.
        uadlab.errors.VolumeError: ``mask`` has no non-zero voxel.
    """
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"`mask` must be a numpy array, got {type(mask).__name__}")
    if not mask.any():
        raise VolumeError(f"{name}: mask is empty (no non-zero voxel)")
