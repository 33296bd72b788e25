"""Download the openly licensed data sets (``uadlab data fetch``): checksummed, resumable, reused.

Only data sets that anyone may download without a registration are here: IXI T1 (CC BY-SA 3.0), the
healthy training set of ``data_manifests/ixi_t1.yaml``. BraTS and ATLAS sit behind data use
agreements; their manifests say how to get them.

:func:`fetch` downloads a data set's archive into ``OUT`` and unpacks it in the layout its manifest
expects, so that ``uadlab data build --manifest data_manifests/ixi_t1.yaml --root OUT`` works next:

- **checksum** — the archive's MD5 (the checksum the IXI site's users publish) or SHA-256 must match,
  or the file is deleted and :class:`~uadlab.errors.DownloadError` raised;
- **resumable** — bytes arrive in ``OUT/<archive>.part``; a broken connection keeps them, and the
  next call asks the server for the rest (an HTTP ``Range`` request; a server that ignores it sends
  the whole file again, which is then written from the start);
- **reused** — a complete, verified archive is not downloaded again, and a finished unpacking
  (``OUT/.<name>.complete``, holding the checksum) makes the call return at once;
- **progress** — a tqdm bar behind ``progress=True`` (the CLI shows it);
- **safe unpacking** — :mod:`tarfile`'s ``data`` filter: no absolute paths, links or files
  outside the target folder.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from uadlab._progress import progress_bar
from uadlab.errors import DownloadError

__all__ = ["REMOTES", "Remote", "fetch"]

_CHUNK = 1 << 20  # bytes read at a time (1 MiB)


@dataclass(frozen=True)
class Remote:
    """One downloadable archive and where its files go.

    Attributes:
        name: short name, ``uadlab data fetch NAME``.
        url: the archive's address (``http(s)://``).
        filename: the archive's file name under ``OUT``.
        checksum: ``"md5:<hex>"`` or ``"sha256:<hex>"`` of the whole archive.
        subdir: folder under ``OUT`` the archive is unpacked into (the manifest's layout).
        licence: the data's licence, shown by the CLI.
        manifest: the manifest that reads the unpacked files.
    """

    name: str
    url: str
    filename: str
    checksum: str
    subdir: str
    licence: str
    manifest: str


#: Data sets :func:`fetch` knows. IXI-T1.tar is about 4.5 GB (581 T1 volumes, one folder level).
REMOTES: dict[str, Remote] = {
    "ixi": Remote(
        name="ixi",
        url="http://biomedic.doc.ic.ac.uk/brain-development/downloads/IXI/IXI-T1.tar",
        filename="IXI-T1.tar",
        checksum="md5:34901a0593b41dd19c1a1f746eac2d58",
        subdir="IXI-T1",
        licence="CC BY-SA 3.0 (https://brain-development.org/ixi-dataset/)",
        manifest="data_manifests/ixi_t1.yaml",
    ),
}


def fetch(name: str | Remote, out: str | os.PathLike, *, keep_archive: bool = True, progress: bool = False,
          timeout_s: float = 60.0) -> Path:
    """Download and unpack a data set into ``out`` (nothing is downloaded when it is already there).

    Args:
        name: a key of :data:`REMOTES` (``"ixi"``), or a :class:`Remote` (e.g. a mirror).
        out: the data root to fill, created if needed (pass it as ``--root`` afterwards).
        keep_archive: keep ``OUT/<archive>`` after unpacking (a later call then needs no
            download even if the unpacked files are removed).
        progress: show a tqdm progress bar of the download.
        timeout_s: seconds without data after which a connection counts as broken.

    Returns:
        The folder holding the unpacked files, ``OUT/<subdir>``.

    Raises:
        ValueError: an unknown ``name``, or an empty ``out``.
        TypeError: ``name`` or ``out`` of the wrong type.
        OSError: ``out`` cannot be written (checked before anything is downloaded).
        uadlab.errors.DownloadError: ``out`` is a file; the server cannot be reached or refuses, the connection
            breaks (rerun to resume), the checksum does not match (the file is deleted), or the
            archive cannot be unpacked.
    """
    remote = _remote(name)
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"`out` must be a str or path, got {out!r}")
    if not str(out).strip():
        raise ValueError(f"`out` (--out) must name a folder, got {str(out)!r}")
    out = Path(out)
    target = out / remote.subdir
    marker = out / f".{remote.name}.complete"
    if marker.is_file() and marker.read_text().strip() == remote.checksum and target.is_dir():
        return target
    if out.exists() and not out.is_dir():
        raise DownloadError(f"{out}: exists and is not a folder; choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out, prefix=".uadlab-write-test-"):  # a read-only folder: before any download
        pass
    archive = out / remote.filename
    if not (archive.is_file() and _digest(archive, remote.checksum) == remote.checksum):
        _download(remote, archive, progress=progress, timeout_s=timeout_s)
    _unpack(archive, target)
    marker.write_text(remote.checksum + "\n")
    if not keep_archive:
        archive.unlink()
    return target


def _remote(name: str | Remote) -> Remote:
    if isinstance(name, Remote):
        algorithm = name.checksum.split(":", 1)[0]
        if algorithm not in ("md5", "sha256"):
            raise ValueError(f"`checksum` must start with 'md5:' or 'sha256:', got {name.checksum!r}")
        return name
    if not isinstance(name, str):
        raise TypeError(f"`name` must be a data set name or a Remote, got {name!r}")
    if name not in REMOTES:
        raise ValueError(f"`name` must be one of {sorted(REMOTES)}, got {name!r}")
    return REMOTES[name]


def _download(remote: Remote, archive: Path, *, progress: bool, timeout_s: float) -> None:
    """Fetch ``remote`` into ``archive`` via ``archive.part``, resuming it; verify the checksum."""
    partial = archive.with_name(archive.name + ".part")
    have = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(remote.url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)  # noqa: S310 (http/https URLs only)
    except urllib.error.HTTPError as error:
        if error.code == 416 and have:  # asked beyond the end: the partial file is complete
            response = None
        else:
            raise DownloadError(f"{remote.url}: the server answered {error.code} {error.reason}") from error
    except (urllib.error.URLError, OSError) as error:
        raise DownloadError(f"{remote.url}: cannot connect ({getattr(error, 'reason', error)})") from error
    if response is not None:
        with response:
            resumed = have and response.status == 206
            if not resumed:
                have = 0  # the server sent the whole file
            length = response.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            try:
                with open(partial, "ab" if resumed else "wb") as handle, \
                        progress_bar(progress, total=total, initial=have, unit="B", unit_scale=True,
                                     desc=f"fetching {remote.name}") as bar:
                    while chunk := response.read(_CHUNK):
                        handle.write(chunk)
                        bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as error:  # a broken or timed-out connection
                raise DownloadError(f"{remote.url}: the download broke off after {partial.stat().st_size} bytes "
                                    f"({error}); run again to resume") from error
            if total is not None and partial.stat().st_size < total:
                raise DownloadError(f"{remote.url}: the download broke off after {partial.stat().st_size} of "
                                    f"{total} bytes; run again to resume")
    digest = _digest(partial, remote.checksum)
    if digest != remote.checksum:
        partial.unlink()
        raise DownloadError(f"{remote.url}: checksum mismatch (expected {remote.checksum}, got {digest}); "
                            "the corrupt download was deleted, run again")
    os.replace(partial, archive)


def _digest(path: Path, checksum: str) -> str:
    """``"<algorithm>:<hex>"`` of a file, with the algorithm of ``checksum``."""
    algorithm = checksum.split(":", 1)[0]
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
    return f"{algorithm}:{hasher.hexdigest()}"


def _unpack(archive: Path, target: Path) -> None:
    """Unpack a tar archive into ``target`` (via a temporary folder, renamed when complete)."""
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(partial, filter="data")
    except (tarfile.TarError, OSError) as error:
        shutil.rmtree(partial, ignore_errors=True)
        raise DownloadError(f"{archive}: cannot unpack ({error})") from error
    if target.exists():
        shutil.rmtree(target)
    os.replace(partial, target)
