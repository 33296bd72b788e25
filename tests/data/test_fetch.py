"""Tests of uadlab.data.fetch against a local HTTP server on 127.0.0.1 (nothing comes from the internet)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from uadlab.cli import main
from uadlab.data.fetch import REMOTES, Remote, fetch
from uadlab.data.manifests import discover_cases, load_manifest
from uadlab.errors import DownloadError

MANIFESTS = Path(__file__).resolve().parents[2] / "data_manifests"
SUBJECTS = ("IXI002-Guys-0828", "IXI012-HH-1211")


def _archive() -> bytes:
    """An IXI-T1.tar look-alike: two small T1 files at the top level, plus incompressible padding."""
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for subject in SUBJECTS:
            nifti = nib.Nifti1Image(rng.uniform(0, 100, (8, 8, 8)).astype(np.float32), np.eye(4))
            data = gzip.compress(nifti.to_bytes())
            info = tarfile.TarInfo(f"{subject}-T1.nii.gz")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        padding = rng.bytes(300_000)
        info = tarfile.TarInfo("README.padding")
        info.size = len(padding)
        tar.addfile(info, io.BytesIO(padding))
    return buffer.getvalue()


ARCHIVE = _archive()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.payload`` with Range support; ``server.cut_after`` closes the connection early."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        server = self.server
        server.requests.append(self.headers.get("Range"))
        payload = server.payload
        start = 0
        if self.headers.get("Range") and server.ranges:
            start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
            if start >= len(payload):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
        else:
            self.send_response(200)
        body = payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.cut_after is not None:
            body = body[:server.cut_after]
            server.cut_after = None  # once: the next request is served in full
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args) -> None:  # keep the test output clean
        pass


@pytest.fixture
def server():
    """A local HTTP server serving ARCHIVE at /IXI-T1.tar; attributes steer its behaviour."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.payload, httpd.cut_after, httpd.ranges, httpd.requests = ARCHIVE, None, True, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _remote(server, checksum=None) -> Remote:
    digest = checksum or "sha256:" + hashlib.sha256(ARCHIVE).hexdigest()
    return dataclasses.replace(REMOTES["ixi"], url=f"http://127.0.0.1:{server.server_port}/IXI-T1.tar",
                               checksum=digest)


def test_fetch_lays_out_ixi_as_its_manifest_expects_and_reuses_it(server, tmp_path):
    folder = fetch(_remote(server), tmp_path / "ixi")
    assert folder == tmp_path / "ixi" / "IXI-T1"
    assert sorted(p.name for p in folder.glob("*-T1.nii.gz")) == [f"{s}-T1.nii.gz" for s in SUBJECTS]
    assert (tmp_path / "ixi" / "IXI-T1.tar").read_bytes() == ARCHIVE
    assert not list((tmp_path / "ixi").glob("*.part"))
    assert server.requests == [None]
    fetch(_remote(server), tmp_path / "ixi")  # complete: no request at all
    assert server.requests == [None]
    for path in folder.iterdir():  # unpacked files gone, archive kept: unpacked again, not downloaded
        path.unlink()
    (tmp_path / "ixi" / ".ixi.complete").unlink()
    fetch(_remote(server), tmp_path / "ixi")
    assert server.requests == [None] and len(list(folder.glob("*-T1.nii.gz"))) == 2


def test_the_ixi_manifest_reads_the_fetched_layout(server, tmp_path):
    root = tmp_path / "ixi"
    fetch(_remote(server), root)
    assert [c.subject_id for c in discover_cases(load_manifest(MANIFESTS / "ixi_t1.yaml"), root)] == list(SUBJECTS)


def test_an_interrupted_download_resumes_where_it_stopped(server, tmp_path):
    server.cut_after = 100_000
    with pytest.raises(DownloadError, match="broke off after 100000 .*run again to resume"):
        fetch(_remote(server), tmp_path / "ixi")
    partial = tmp_path / "ixi" / "IXI-T1.tar.part"
    assert partial.stat().st_size == 100_000 and not (tmp_path / "ixi" / "IXI-T1").exists()
    fetch(_remote(server), tmp_path / "ixi")
    assert server.requests == [None, "bytes=100000-"]  # only the rest was asked for
    assert (tmp_path / "ixi" / "IXI-T1.tar").read_bytes() == ARCHIVE and not partial.exists()


def test_a_server_without_ranges_restarts_the_file(server, tmp_path):
    server.cut_after, server.ranges = 50_000, False
    with pytest.raises(DownloadError, match="broke off"):
        fetch(_remote(server), tmp_path / "ixi")
    fetch(_remote(server), tmp_path / "ixi")
    assert (tmp_path / "ixi" / "IXI-T1.tar").read_bytes() == ARCHIVE  # not 50 kB of it twice


def test_a_corrupt_download_is_deleted_and_named(server, tmp_path):
    server.payload = ARCHIVE[:-10] + b"x" * 10
    with pytest.raises(DownloadError, match="checksum mismatch \\(expected sha256:.*, got sha256:.*deleted"):
        fetch(_remote(server), tmp_path / "ixi")
    assert not list((tmp_path / "ixi").glob("IXI-T1.tar*")) and not (tmp_path / "ixi" / "IXI-T1").exists()
    server.payload = ARCHIVE
    md5 = "md5:" + hashlib.md5(ARCHIVE).hexdigest()  # noqa: S324 (a checksum, not security)
    assert fetch(_remote(server, md5), tmp_path / "ixi").is_dir()


def test_a_corrupt_archive_on_disk_is_downloaded_again(server, tmp_path):
    (tmp_path / "ixi").mkdir()
    (tmp_path / "ixi" / "IXI-T1.tar").write_bytes(b"not the archive")
    fetch(_remote(server), tmp_path / "ixi")
    assert server.requests == [None] and (tmp_path / "ixi" / "IXI-T1.tar").read_bytes() == ARCHIVE


def test_unreachable_server_and_bad_arguments(tmp_path):
    closed = dataclasses.replace(REMOTES["ixi"], url="http://127.0.0.1:9/IXI-T1.tar")  # discard port: refused
    with pytest.raises(DownloadError, match="cannot connect"):
        fetch(closed, tmp_path)
    with pytest.raises(ValueError, match="`name` must be one of \\['ixi'\\], got 'brats'"):
        fetch("brats", tmp_path)
    with pytest.raises(ValueError, match="`checksum` must start with 'md5:' or 'sha256:'"):
        fetch(dataclasses.replace(closed, checksum="crc:1"), tmp_path)
    with pytest.raises(TypeError, match="`out` must be a str or path"):
        fetch("ixi", 3)


def test_cli_fetch(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(REMOTES, "ixi", _remote(server))
    assert main(["-q", "data", "fetch", "ixi", "--out", str(tmp_path / "ixi"), "--delete-archive"]) == 0
    out = capsys.readouterr().out
    assert "CC BY-SA 3.0" in out and f"--manifest data_manifests/ixi_t1.yaml --root {tmp_path / 'ixi'}" in out
    assert not (tmp_path / "ixi" / "IXI-T1.tar").exists() and (tmp_path / "ixi" / "IXI-T1").is_dir()
    monkeypatch.setitem(REMOTES, "ixi", dataclasses.replace(REMOTES["ixi"], url="http://127.0.0.1:9/x.tar"))
    assert main(["-q", "data", "fetch", "ixi", "--out", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("uadlab: error: http://127.0.0.1:9/x.tar: cannot connect") and err.count("\n") == 1
