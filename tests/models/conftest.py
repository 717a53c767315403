"""Helpers of the model tests: a local HTTP file server and catalog files written on the fly."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Optional

import pytest
import yaml

HOST = "127.0.0.1"


class FileServer:
    """An HTTP server on 127.0.0.1 that serves byte strings by path.

    ``fail(path, status, times)`` makes the next ``times`` requests of
    ``path`` return ``status``; ``truncate(path)`` announces the full
    Content-Length but sends half the body. ``requests`` records every path
    asked for.
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.failures: dict[str, tuple[int, int]] = {}
        self.truncated: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - name fixed by BaseHTTPRequestHandler
                server.requests.append(self.path)
                status, times = server.failures.get(self.path, (0, 0))
                if times > 0:
                    server.failures[self.path] = (status, times - 1)
                    self.send_error(status)
                    return
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.path in server.truncated:
                    self.wfile.write(data[: len(data) // 2])
                    self.close_connection = True
                    return
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def start(self) -> "FileServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def url(self, path: str) -> str:
        port = self._httpd.server_address[1]
        return f"http://{HOST}:{port}{path}"

    def add(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url(path)

    def fail(self, path: str, status: int, times: int) -> None:
        self.failures[path] = (status, times)

    def truncate(self, path: str) -> None:
        self.truncated.add(path)


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    server = FileServer().start()
    yield server
    server.stop()


@pytest.fixture
def closed_port_url() -> str:
    """A URL on 127.0.0.1 whose port had no listener a moment ago, so connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    return f"http://{HOST}:{port}/model.onnx"


def write_catalog_entry(
    directory: Path,
    manifest: dict,
    fetch: list[dict],
    name: Optional[str] = None,
) -> Path:
    """Write ``<directory>/<name>.yaml`` with the given manifest and fetch list; return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name or manifest['name']}.yaml"
    path.write_text(yaml.safe_dump({"manifest": manifest, "fetch": fetch}, sort_keys=False), encoding="utf-8")
    return path
