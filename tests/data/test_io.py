"""Tests of uadlab.data.io: NIfTI reading with every failure mode, atomic writes, folder locks, grid and mask checks."""

from __future__ import annotations

import gzip
import io as stdio
import threading
import time

import nibabel as nib
import numpy as np
import pytest
from conftest import LockHolder

from uadlab.data.io import (
    MAX_VOXELS,
    atomic_write,
    check_mask,
    check_same_grid,
    folder_lock,
    load_volume,
    save_volume,
)
from uadlab.errors import UadlabError, UadlabWarning, VolumeError

AFFINE = np.array([[-1.5, 0, 0, 10], [0, 1.5, 0, -20], [0, 0, 2.0, 5], [0, 0, 0, 1]])


def _leftovers(folder):
    """Hidden temporary files atomic_write may have left behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------------------------------
# load_volume


def test_load_volume_returns_float32_data_and_float64_affine(write_nifti, rng):
    data = rng.normal(size=(4, 5, 6)).astype(np.float64)
    path = write_nifti("a.nii.gz", data, AFFINE)
    loaded, affine = load_volume(path)
    assert loaded.dtype == np.float32 and loaded.shape == (4, 5, 6)
    np.testing.assert_allclose(loaded, data, rtol=1e-6)
    assert affine.dtype == np.float64 and affine.shape == (4, 4)
    np.testing.assert_allclose(affine, AFFINE)


def test_load_volume_applies_scaling(tmp_path):
    image = nib.Nifti1Image(np.array([[[1, 2], [3, 4]]], dtype=np.int16), np.eye(4))
    image.header.set_slope_inter(0.5, 10.0)
    path = tmp_path / "scaled.nii"
    nib.save(image, path)
    loaded, _ = load_volume(str(path))  # a str works as well as a Path
    np.testing.assert_allclose(loaded, [[[10.5, 11.0], [11.5, 12.0]]])


def test_load_volume_squeezes_trailing_singleton(write_nifti):
    path = write_nifti("b.nii.gz", np.ones((3, 4, 5, 1), np.float32))
    assert load_volume(path)[0].shape == (3, 4, 5)


def test_load_volume_rejects_real_4d_and_accepts_it_with_ndim_4(write_nifti):
    path = write_nifti("four_d.nii.gz", np.zeros((3, 4, 5, 2), np.float32))
    with pytest.raises(VolumeError, match=r"four_d\.nii\.gz: has shape \(3, 4, 5, 2\), expected a 3D volume"):
        load_volume(path)
    assert load_volume(path, ndim=4)[0].shape == (3, 4, 5, 2)


def test_load_volume_rejects_2d(write_nifti):
    path = write_nifti("flat.nii.gz", np.zeros((3, 4), np.float32))
    with pytest.raises(VolumeError, match=r"flat\.nii\.gz: has shape \(3, 4\), expected a 3D volume"):
        load_volume(path)


def test_load_volume_missing_file(tmp_path):
    with pytest.raises(VolumeError, match=r"nothere\.nii\.gz: file not found"):
        load_volume(tmp_path / "nothere.nii.gz")


def test_load_volume_folder(tmp_path):
    with pytest.raises(VolumeError, match="is a folder, expected a NIfTI file"):
        load_volume(tmp_path)


@pytest.mark.parametrize("name", ["junk.nii.gz", "junk.nii"])
def test_load_volume_rejects_non_nifti_bytes(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"this is not an image " * 30)
    with pytest.raises(VolumeError, match=rf"{name}: not a readable NIfTI image"):
        load_volume(path)


def test_load_volume_rejects_gzip_of_garbage(tmp_path):
    path = tmp_path / "garbage.nii.gz"
    path.write_bytes(gzip.compress(b"\x00" * 10 + b"no header here" * 40))
    with pytest.raises(VolumeError, match=r"garbage\.nii\.gz: not a readable NIfTI image"):
        load_volume(path)


@pytest.mark.parametrize("name", ["cut.nii.gz", "cut.nii"])
def test_load_volume_rejects_truncated_file(write_nifti, rng, name):
    path = write_nifti(name, rng.normal(size=(16, 16, 16)).astype(np.float32))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(VolumeError, match=rf"{name}: corrupt or truncated voxel data"):
        load_volume(path)


def test_load_volume_counts_nan_and_inf(write_nifti):
    data = np.zeros((4, 4, 4), np.float32)
    data[0, 0, :2] = np.nan
    data[1, 1, 1] = np.inf
    data[2, 2, 2] = -np.inf
    path = write_nifti("bad.nii.gz", data)
    with pytest.raises(VolumeError, match=r"bad\.nii\.gz: holds 2 NaN and 2 infinite voxel\(s\)"):
        load_volume(path)


def test_load_volume_rejects_singular_affine(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((4, 4, 4))
    header.set_data_dtype(np.float32)
    header.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)  # z axis collapsed: not invertible
    header.set_qform(None, code=0)
    buffer = stdio.BytesIO()
    header.write_to(buffer)
    path = tmp_path / "flatz.nii"
    path.write_bytes(buffer.getvalue().ljust(int(header["vox_offset"]), b"\x00") + np.zeros(64, np.float32).tobytes())
    with pytest.raises(VolumeError, match=r"flatz\.nii: non-invertible or non-finite affine"):
        load_volume(path)


def test_load_volume_rejects_other_formats(tmp_path):
    path = tmp_path / "brain.mgz"
    nib.save(nib.MGHImage(np.zeros((4, 4, 4), np.float32), np.eye(4)), path)
    with pytest.raises(VolumeError, match=r"brain\.mgz: not a NIfTI image \(nibabel read it as MGHImage\)"):
        load_volume(path)


def test_load_volume_validates_arguments(write_nifti):
    path = write_nifti("ok.nii.gz", np.zeros((2, 2, 2), np.float32))
    with pytest.raises(TypeError, match="`path` must be a str or path, got 3"):
        load_volume(3)
    with pytest.raises(TypeError, match="`ndim` must be an int, got 3.0"):
        load_volume(path, ndim=3.0)
    with pytest.raises(ValueError, match="`ndim` must be at least 1, got 0"):
        load_volume(path, ndim=0)


# --------------------------------------------------------------------------------------------------
# save_volume / atomic_write


def test_save_volume_round_trip(tmp_path, rng):
    data = rng.normal(size=(5, 6, 7)).astype(np.float32)
    out = save_volume(tmp_path / "sub" / "x.nii.gz", data, AFFINE)  # missing folder is created
    assert out == tmp_path / "sub" / "x.nii.gz"
    with gzip.open(out) as handle:  # really gzip-compressed, although written under a temp name
        assert len(handle.read(348)) == 348
    loaded, affine = load_volume(out)
    np.testing.assert_array_equal(loaded, data)
    np.testing.assert_allclose(affine, AFFINE)
    assert _leftovers(out.parent) == []


def test_save_volume_stores_bool_as_uint8(tmp_path):
    mask = np.zeros((3, 3, 3), bool)
    mask[1, 1, 1] = True
    out = save_volume(tmp_path / "m.nii", mask, np.eye(4))
    assert nib.load(out).get_data_dtype() == np.uint8
    assert load_volume(out)[0].sum() == 1.0


def test_save_volume_refuses_to_overwrite(tmp_path):
    path = save_volume(tmp_path / "v.nii.gz", np.ones((2, 2, 2), np.float32), np.eye(4))
    with pytest.raises(UadlabError, match=r"v\.nii\.gz: already exists; pass overwrite=True"):
        save_volume(path, np.zeros((2, 2, 2), np.float32), np.eye(4))
    assert load_volume(path)[0].sum() == 8.0  # untouched
    save_volume(path, np.zeros((2, 2, 2), np.float32), np.eye(4), overwrite=True)
    assert load_volume(path)[0].sum() == 0.0
    assert _leftovers(tmp_path) == []


def test_save_volume_validates_arguments(tmp_path):
    volume = np.zeros((2, 2, 2), np.float32)
    with pytest.raises(ValueError, match=r"`path` must end in \.nii or \.nii\.gz, got '.*v\.npy'"):
        save_volume(tmp_path / "v.npy", volume, np.eye(4))
    with pytest.raises(TypeError, match="`array` must be a numpy array, got list"):
        save_volume(tmp_path / "v.nii", [[[0.0]]], np.eye(4))
    with pytest.raises(ValueError, match="`array` must have 1 to 7 dimensions, got shape"):
        save_volume(tmp_path / "v.nii", np.zeros((), np.float32), np.eye(4))
    with pytest.raises(ValueError, match="`array` must be numeric or bool, got dtype complex64"):
        save_volume(tmp_path / "v.nii", volume.astype(np.complex64), np.eye(4))
    with pytest.raises(ValueError, match=r"`affine` must be a finite \(4, 4\) matrix"):
        save_volume(tmp_path / "v.nii", volume, np.eye(3))
    with pytest.raises(ValueError, match=r"`affine` must be a finite \(4, 4\) matrix"):
        save_volume(tmp_path / "v.nii", volume, np.full((4, 4), np.nan))
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_uses_hidden_temp_with_same_suffix(tmp_path):
    target = tmp_path / "table.csv"
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".table.") and tmp.name.endswith(".csv")
        assert not tmp.exists() and not target.exists()
        tmp.write_text("a,b\n1,2\n")
    assert target.read_text() == "a,b\n1,2\n"
    assert _leftovers(tmp_path) == []


def test_atomic_write_failure_leaves_target_untouched(tmp_path):
    target = tmp_path / "keep.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target, overwrite=True) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_atomic_write_refuses_existing_file(tmp_path):
    target = tmp_path / "x.txt"
    target.write_text("old")
    with pytest.raises(UadlabError, match=r"x\.txt: already exists"):
        with atomic_write(target) as tmp:
            tmp.write_text("new")  # never reached
    assert target.read_text() == "old"


def test_atomic_write_detects_file_created_meanwhile(tmp_path):
    target = tmp_path / "race.txt"
    with pytest.raises(UadlabError, match=r"race\.txt: appeared while it was being written"):
        with atomic_write(target) as tmp:
            tmp.write_text("mine")
            target.write_text("theirs")
    assert target.read_text() == "theirs"
    assert _leftovers(tmp_path) == []


def test_atomic_write_requires_something_written(tmp_path):
    with pytest.raises(UadlabError, match=r"empty\.txt: nothing was written"):
        with atomic_write(tmp_path / "empty.txt"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_validates_path():
    with pytest.raises(TypeError, match="`path` must be a str or path, got None"):
        with atomic_write(None):
            pass


# --------------------------------------------------------------------------------------------------
# check_same_grid / check_mask


def test_check_same_grid_accepts_float32_rounding():
    check_same_grid("a", (2, 3, 4), AFFINE, "b", [2, 3, 4], AFFINE.astype(np.float32) + 1e-4)


def test_check_same_grid_shape_mismatch():
    with pytest.raises(VolumeError, match=r"mask\.nii: shape \(2, 3, 5\) differs from \(2, 3, 4\) of img\.nii"):
        check_same_grid("img.nii", (2, 3, 4), AFFINE, "mask.nii", (2, 3, 5), AFFINE)


def test_check_same_grid_affine_mismatch():
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.5
    with pytest.raises(VolumeError, match=r"mask\.nii: affine differs from that of img\.nii by up to 0\.5 mm"):
        check_same_grid("img.nii", (2, 3, 4), AFFINE, "mask.nii", (2, 3, 4), shifted)
    check_same_grid("img.nii", (2, 3, 4), AFFINE, "mask.nii", (2, 3, 4), shifted, atol=0.5)


def test_check_same_grid_validates_arguments():
    with pytest.raises(ValueError, match=r"`other_affine` must be a \(4, 4\) matrix, got shape \(3, 3\)"):
        check_same_grid("a", (1,), np.eye(4), "b", (1,), np.eye(3))
    with pytest.raises(ValueError, match="`atol` must be >= 0, got -1"):
        check_same_grid("a", (1,), np.eye(4), "b", (1,), np.eye(4), atol=-1)


def test_check_mask():
    mask = np.zeros((3, 3, 3), bool)
    with pytest.raises(VolumeError, match=r"brain\.nii: mask is empty"):
        check_mask("brain.nii", mask)
    mask[0, 0, 0] = True
    check_mask("brain.nii", mask)
    with pytest.raises(TypeError, match="`mask` must be a numpy array, got list"):
        check_mask("brain.nii", [1])


# --- folder_lock ------------------------------------------------------------------------------------


def test_folder_lock_is_exclusive_reentrant_in_its_thread_and_released(tmp_path):
    refused = []

    def other_thread():  # another thread of this process: kept out like another process
        try:
            with folder_lock(tmp_path / "run"):
                refused.append(None)
        except UadlabError as error:
            refused.append(str(error))

    def try_from_another_thread():
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        return refused.pop()

    with folder_lock(tmp_path / "run") as folder:
        assert folder == tmp_path / "run" and (tmp_path / ".run.lock").exists()
        with folder_lock(tmp_path / "run"):  # this thread holds it: re-entrant
            pass
        assert try_from_another_thread() == (f"{tmp_path / 'run'}: in use by another uadlab process (lock .run.lock); "
                                             "wait for it to finish or choose another folder")  # still held
    assert try_from_another_thread() is None  # released on exit
    assert not (tmp_path / "run").exists()  # the folder itself is never created


def test_folder_lock_waits_for_another_process_then_takes_the_lock(tmp_path):
    holder, told = LockHolder(tmp_path / "run"), threading.Event()

    def release_once_waited_for(caught):
        deadline = time.monotonic() + 30
        while not caught and time.monotonic() < deadline:
            time.sleep(0.05)
        told.set()
        holder.release()

    with pytest.warns(UadlabWarning, match=r"run: in use by another uadlab process; waiting for it to finish "
                                           r"\(at most 1 min\)$") as caught:
        other = threading.Thread(target=release_once_waited_for, args=(caught,))
        other.start()
        with folder_lock(tmp_path / "run", wait=60):
            assert told.is_set()  # taken once the other process was told to let go
        other.join()


def test_folder_lock_gives_up_after_waiting_with_one_line(tmp_path):
    holder = LockHolder(tmp_path / "run")
    try:
        with pytest.warns(UadlabWarning, match="waiting for it"):
            with pytest.raises(UadlabError) as raised:
                with folder_lock(tmp_path / "run", wait=0.2):
                    pass
    finally:
        holder.release()
    assert str(raised.value) == (f"{tmp_path / 'run'}: still in use by another uadlab process after 0.2 s "
                                 "(lock .run.lock); run again to wait longer, or choose another folder")
    with pytest.raises(ValueError, match="`wait` must be a finite number of seconds >= 0, got -1"):
        with folder_lock(tmp_path / "run", wait=-1):
            pass
    with pytest.raises(TypeError, match="`wait` must be a finite number of seconds >= 0, got '1'"):
        with folder_lock(tmp_path / "run", wait="1"):
            pass


def test_folder_lock_of_a_relative_folder_lies_beside_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with folder_lock("."):
        assert (tmp_path.parent / f".{tmp_path.name}.lock").exists()
    with pytest.raises(ValueError, match="`folder` must not be the file-system root"):
        with folder_lock("/"):
            pass
    with pytest.raises(TypeError, match="`folder` must be a str or path"):
        with folder_lock(3):
            pass


def test_a_header_declaring_too_many_voxels_is_refused_before_reading(tmp_path):
    image = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    raw = bytearray(image.header.binaryblock) + b"\0" * 4 + np.zeros(8, np.float32).tobytes()
    raw[40:56] = np.array([3, 2048, 1024, 1024, 1, 1, 1, 1], dtype="<i2").tobytes()  # 2**31 voxels
    path = tmp_path / "huge.nii"
    path.write_bytes(bytes(raw))
    with pytest.raises(VolumeError, match=rf"huge\.nii: header declares shape \(2048, 1024, 1024\) \(2147483648 "
                                          rf"voxels\), more than the {MAX_VOXELS} uadlab reads"):
        load_volume(path)
