"""The run folder: what a training run writes, how it resumes, and what it refuses.

One run folder per trained network (a reconstruction model, a segmenter), with the file names of
:mod:`uadlab.layout`::

    config.yaml      the run's config (checked on resume)
    checkpoint.pt    written atomically after every epoch from a CPU copy (:func:`host_copy`), in a
                     background thread while the next epoch trains (:class:`CheckpointWriter`):
                     weights, optimiser and loss-scaler state, best weights, best epoch, epochs since
                     best, RNG states, history, ``finished``, and what the trainer adds (the config
                     itself, the model record...)
    history.csv      one row per epoch; its ``seconds`` column is the one that differs between two
                     otherwise bit-identical seeded runs

Rules (:func:`prepare_run_dir`): a run is never written into a folder holding anything else; a
folder holding a run is resumed only with ``resume`` and the same config (:func:`refuse_differences`),
and replaced only with ``overwrite``, which deletes the old run files (:func:`clear_run`) once the
new run is known to start. The caller holds the folder's lock (:func:`uadlab.data.io.folder_lock`).
"""

from __future__ import annotations

import copy
import errno
import random
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import torch

from uadlab.data.io import atomic_write
from uadlab.errors import RunError
from uadlab.layout import DATASET_RECORD, RUN_CHECKPOINT, RUN_CONFIG, RUN_FILES, RUN_HISTORY

__all__ = ["prepare_run_dir", "refuse_differences", "clear_run", "read_run", "load_checkpoint", "CheckpointWriter",
           "write_checkpoint", "host_copy", "get_rng_states", "set_rng_states"]

T = TypeVar("T")


def prepare_run_dir(out_dir: str | Path, *, resume: bool, overwrite: bool,
                    differences: Callable[[Path], list[str]]) -> Path:
    """Check a run folder before training into it; nothing is written or deleted here.

    Args:
        out_dir: the run folder; it may not exist yet.
        resume: whether a run already there is to be continued.
        overwrite: whether a run already there is to be replaced (by the caller, :func:`clear_run`,
            once the new run's data has loaded, so that a failed start leaves the folder as it was).
        differences: ``config.yaml`` path -> the fields where the stored config differs from the new
            one (``"name (stored X, given Y)"``); called on resume when the file exists.

    Returns:
        The folder as a ``Path``.

    Raises:
        ValueError: both ``resume`` and ``overwrite``.
        RunError: ``out_dir`` is a file; it holds something other than run files (a data set, notes);
            it holds a run and neither flag is set; on resume, ``differences`` names a field.
    """
    if resume and overwrite:
        raise ValueError("`resume` and `overwrite` must not both be True")
    run_dir = Path(out_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"{run_dir}: exists and is not a folder")
    config_path = run_dir / RUN_CONFIG
    has_run = any((run_dir / name).exists() for name in RUN_FILES)
    if not has_run and run_dir.is_dir():
        foreign = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
        if foreign:
            what = "a built data set" if DATASET_RECORD in foreign else "not a training run"
            raise RunError(f"{run_dir}: holds {len(foreign)} other item(s) ({', '.join(foreign[:3])}"
                           f"{', ...' if len(foreign) > 3 else ''}), {what}; choose an empty or new --out "
                           "(it is never written into)")
    if has_run and resume and config_path.exists():
        refuse_differences(run_dir, differences(config_path))
    elif has_run and not (resume or overwrite):
        raise RunError(f"{run_dir}: holds a training run; pass resume=True (--resume) to continue it "
                       "or overwrite=True (--overwrite) to discard it")
    return run_dir


def refuse_differences(run_dir: Path, differences: Sequence[str], what: str = "the config") -> None:
    """RunError naming every difference between a stored run and the one asked for (none: return).

    Args:
        run_dir: the run folder, named in the message.
        differences: ``"name (stored X, given Y)"`` strings.
        what: what differs (``"the config"``, ``"the checkpoint's dense-vae"``...).

    Raises:
        RunError: ``differences`` is not empty.
    """
    if differences:
        raise RunError(f"{run_dir}: cannot resume, {what} differs in " + "; ".join(differences)
                       + "; pass overwrite=True (--overwrite) to start afresh")


def clear_run(run_dir: Path) -> None:
    """Delete the run files of ``run_dir`` (for ``overwrite``, once the new run is known to start)."""
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)


def write_checkpoint(run_dir: Path, checkpoint: dict, columns: Sequence[str], writer: CheckpointWriter, *,
                     ready: Callable[[], None] | None = None) -> None:
    """Write ``checkpoint.pt`` and ``history.csv`` (``checkpoint["history"]``, ``columns``) atomically,
    in ``writer``'s thread. ``checkpoint`` must be a copy that the training no longer changes
    (:func:`host_copy`); the thread first calls ``ready()``, the copy's wait, when given.
    """
    history = pd.DataFrame(checkpoint["history"], columns=list(columns))

    def write() -> None:
        if ready is not None:
            ready()
        with atomic_write(run_dir / RUN_CHECKPOINT, overwrite=True) as tmp:
            _save(checkpoint, tmp, run_dir / RUN_CHECKPOINT)
        with atomic_write(run_dir / RUN_HISTORY, overwrite=True) as tmp:
            history.to_csv(tmp, index=False)

    writer.submit(write)


def host_copy(tree: T) -> tuple[T, Callable[[], None]]:
    """A copy of ``tree`` with every tensor on the CPU, and the function that waits until it is complete.

    CUDA tensors are copied into page-locked memory without blocking: the copy is queued on the device
    behind the work already asked of it, so the training goes on at once and its next in-place updates
    of the weights cannot reach the copy; read the copied tensors only after calling the wait function
    (the checkpoint's writer thread does, :func:`write_checkpoint`). CPU tensors are cloned (the wait
    function then returns at once). Dicts (their type and attributes kept: a state dict's
    ``_metadata``), lists and tuples are copied level by level, any other value deep-copied; a
    tensor met twice is copied once.

    Args:
        tree: state dicts, a loop state: nested dicts, lists and tuples of tensors and plain values.

    Returns:
        ``(copy, wait)``.
    """
    copies: dict[int, torch.Tensor] = {}
    devices: set[torch.device] = set()

    def copy_of(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            if id(value) not in copies:
                if value.device.type == "cuda":
                    host = torch.empty_like(value, device="cpu", pin_memory=True)
                    copies[id(value)] = host.copy_(value.detach(), non_blocking=True)
                    devices.add(value.device)
                else:
                    copies[id(value)] = value.detach().clone()
            return copies[id(value)]
        if isinstance(value, dict):
            out = copy.copy(value)
            for key, item in value.items():
                out[key] = copy_of(item)
            return out
        if type(value) in (list, tuple):
            return type(value)(copy_of(item) for item in value)
        return copy.deepcopy(value)

    copied = copy_of(tree)
    events = [torch.cuda.Event() for _ in devices]
    for event, device in zip(events, devices):
        event.record(torch.cuda.current_stream(device))

    def wait() -> None:
        for event in events:
            event.synchronize()

    return copied, wait


def _save(checkpoint: dict, tmp: Path, path: Path) -> None:
    """``torch.save``, its failed writes as the OSError they are (torch's zip writer raises RuntimeError)."""
    try:
        torch.save(checkpoint, tmp)
    except RuntimeError as error:  # "file write failed", "unexpected pos ...": a full disk, a vanished folder
        reason = " ".join(str(error).split())[:200]
        raise OSError(errno.EIO, f"writing the checkpoint failed ({reason}); is the disk full?", str(path)) from None


class CheckpointWriter:
    """Runs each epoch's checkpoint write in one background thread, overlapping the next epoch.

    Serialising a checkpoint (weights, best weights and Adam's two moments: four copies of the
    parameters) takes 0.4-0.5 s for the 3D lab model on a 2-core CPU, a third of a 40-volume bf16
    epoch (``benchmarks/train_epoch.py``). One write is in flight at a time: :meth:`submit` first
    waits for the previous one. :meth:`wait` joins the write in flight and raises its error, if any
    (a full disk fails the run as a synchronous write would; the write is atomic, so the previous
    checkpoint stays). The training loop waits before it returns, so a finished ``train`` has
    everything on disk, and the run folder's lock is held until then.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, write: Callable[[], None]) -> None:
        """Wait for the write in flight, then start ``write()`` in a new thread."""
        self.wait()

        def run() -> None:
            try:
                write()
            except BaseException as error:  # re-raised in the training thread by wait()
                self._error = error

        self._thread = threading.Thread(target=run, name="uadlab-checkpoint", daemon=False)
        self._thread.start()

    def wait(self, *, raise_error: bool = True) -> None:
        """Block until the write in flight is done; raise its error (unless ``raise_error`` is False)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None and raise_error:
            error, self._error = self._error, None
            raise error


def read_run(run_dir: Path, read_config: Callable[[Path], T], kind: str, noun: str) -> tuple[T, dict]:
    """A finished or stopped run's config (``read_config(run_dir / config.yaml)``) and checkpoint.

    Args:
        run_dir: the run folder.
        read_config: reads ``config.yaml`` (``TrainConfig.from_yaml``, ``SegmenterConfig.from_yaml``).
        kind, noun: for the messages, e.g. ``"training run"`` and ``"run"``.

    Raises:
        RunError: no ``config.yaml`` or ``checkpoint.pt`` in ``run_dir``, or either is unreadable.
    """
    if not (run_dir / RUN_CONFIG).is_file():
        raise RunError(f"{run_dir}: not a {kind} (no {RUN_CONFIG})")
    config = read_config(run_dir / RUN_CONFIG)
    checkpoint = load_checkpoint(run_dir)
    if checkpoint is None:
        raise RunError(f"{run_dir}: no {RUN_CHECKPOINT}; train the {noun} first")
    return config, checkpoint


def load_checkpoint(run_dir: Path) -> dict | None:
    """The checkpoint in ``run_dir``, loaded on the CPU; ``None`` when there is none.

    Raises:
        RunError: the checkpoint is unreadable.
    """
    path = run_dir / RUN_CHECKPOINT
    if not path.exists():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for corrupt files
        raise RunError(f"{path}: unreadable checkpoint ({type(error).__name__}: {error})") from None
    _upgrade_history(checkpoint)
    return checkpoint


def _upgrade_history(checkpoint: dict) -> None:
    """Rename the l1 columns of a run written before they were both per voxel, in place.

    Such runs stored ``train_recon`` (l1 summed over a sample's voxels) and ``val_recon`` (already
    per voxel); the training value is divided by the voxels of one sample (``image_size **
    spatial_dims``: a slice in 2D, a volume in 3D; from the model record, or ``model_args`` before
    the registry).
    """
    args = (checkpoint.get("model_record") or {}).get("config") or checkpoint.get("model_args") or {}
    voxels = int(args.get("image_size", 0)) ** int(args.get("spatial_dims", 0))
    for row in checkpoint.get("history", []):
        if "val_recon" in row:
            row["val_l1_per_voxel"] = row.pop("val_recon")
        if "train_recon" in row:
            train_recon = row.pop("train_recon")
            row["train_l1_per_voxel"] = train_recon / voxels if voxels else float("nan")



def get_rng_states() -> dict:
    """Python, NumPy (global) and torch RNG states as tensors/lists (loadable with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"python": [version, list(internal), gauss],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_states(states: dict) -> None:
    """Inverse of :func:`get_rng_states`."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])

