"""A live stream that disappears, freezes and returns: the watchdog, reconnects and the status topic.

The stream is MJPEG over HTTP (``multipart/x-mixed-replace``), served from
127.0.0.1 by a child process that runs this module (``python -m``). OpenCV's
FFmpeg backend reads it like a network camera. The tests kill the server
(the connection drops and reads fail at once) or freeze it with SIGSTOP
(the connection stays open and ``read()`` blocks until FFmpeg's 10 s read
timeout), then bring it back on the same port.
"""

from __future__ import annotations

import http.server
import logging
import os
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Optional

import cv2
import pytest

from edge_runtime.capture.runner import open_service
from edge_runtime.capture.source import FrameSource, SourceHealth, SourceState
from edge_runtime.config import parse_config

from tests.capture.conftest import Received, validate_payload
from tests.fixtures.mosquitto import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_FPS = 10.0
START_TIMEOUT_S = 20.0
STALL_TIMEOUT_S = 1.5


# --------------------------------------------------------------------------
# The MJPEG server (child process)


def serve_mjpeg(port: int, video: Path, fps: float) -> None:
    """Serve the frames of ``video`` as an endless MJPEG stream on 127.0.0.1:``port``."""
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
    capture.release()
    if not frames:
        raise SystemExit(f"{video} has no decodable frame")

    class StreamHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            index = 0
            try:
                while True:
                    data = frames[index % len(frames)]
                    self.wfile.write(
                        b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(data) + data + b"\r\n"
                    )
                    index += 1
                    time.sleep(1.0 / fps)
            except (BrokenPipeError, ConnectionResetError):
                return

        def log_message(self, format: str, *args: object) -> None:
            return

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    Server(("127.0.0.1", port), StreamHandler).serve_forever()


class MjpegServer:
    """A child process serving the MJPEG stream; the test starts, kills, freezes and resumes it."""

    def __init__(self, video: Path, port: int) -> None:
        self.video = video
        self.port = port
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def start(self) -> float:
        """Start the server and return the wall time at which it first accepted a connection."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(self.port), str(self.video), str(SERVER_FPS)],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise RuntimeError(f"MJPEG server on port {self.port} exited with {self.process.returncode}: {error}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return time.time()
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"MJPEG server did not accept connections on port {self.port} within {START_TIMEOUT_S} s")

    def kill(self) -> None:
        """Kill the server with SIGKILL; the kernel closes its connections."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            if self.process.stderr:
                self.process.stderr.close()
            self.process = None

    def freeze(self) -> None:
        """Stop the server with SIGSTOP: connections stay open and no byte is sent."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@pytest.fixture
def mjpeg_server(astronaut_video):
    server = MjpegServer(astronaut_video, free_port())
    yield server
    if server.process is not None:
        server.resume()
        server.kill()


class StateLog:
    """Records every health a source reports to its state listener."""

    def __init__(self) -> None:
        self.entries: list[SourceHealth] = []
        self._condition = threading.Condition()

    def __call__(self, health: SourceHealth) -> None:
        with self._condition:
            self.entries.append(health)
            self._condition.notify_all()

    @property
    def states(self) -> list[str]:
        with self._condition:
            return [entry.state.value for entry in self.entries]

    def wait_for(self, state: SourceState, timeout: float) -> Optional[SourceHealth]:
        """Wait for a report of ``state``; return that health, or None on timeout."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                found = next((entry for entry in self.entries if entry.state is state), None)
                remaining = deadline - time.monotonic()
                if found is not None or remaining <= 0:
                    return found
                self._condition.wait(timeout=remaining)


def next_frame_after(source_iterator, moment: float, timeout: float):
    """Return the first frame read after the wall time ``moment``, or None after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    for frame in source_iterator:
        if frame.wall_time > moment:
            return frame
        if time.monotonic() > deadline:
            return None
    return None


# --------------------------------------------------------------------------
# Tests on the source alone


def test_mjpeg_stream_is_read_live(mjpeg_server) -> None:
    mjpeg_server.start()
    states = StateLog()

    with FrameSource(mjpeg_server.url, stall_timeout_s=STALL_TIMEOUT_S) as source:
        source.add_state_listener(states)
        assert source.state is SourceState.CONNECTING
        frames = []
        for frame in source:
            frames.append(frame)
            if len(frames) == 5:
                break
        health = source.health

    assert frames[0].image.shape == (512, 512, 3)
    assert [frame.media_s for frame in frames] == sorted(frame.media_s for frame in frames)
    assert health.state is SourceState.STREAMING
    assert health.last_frame_at is not None
    assert health.reconnects == 0
    assert states.states[0] == "streaming"
    assert source.state is SourceState.ENDED


def test_killed_stream_reconnects_when_back(mjpeg_server) -> None:
    mjpeg_server.start()
    states = StateLog()

    with FrameSource(
        mjpeg_server.url, stall_timeout_s=STALL_TIMEOUT_S, reconnect_min_s=0.2, reconnect_max_s=1.0
    ) as source:
        source.add_state_listener(states)
        frames = iter(source)
        assert next_frame_after(frames, 0.0, timeout=20) is not None

        mjpeg_server.kill()
        lost = states.wait_for(SourceState.RECONNECTING, timeout=20)
        assert lost is not None, states.states
        time.sleep(2.0)
        assert source.state is SourceState.RECONNECTING
        failed_open = source.health.last_error

        back = mjpeg_server.start()
        frame = next_frame_after(frames, back, timeout=30)
        health = source.health
        reported = states.states

    assert frame is not None, reported
    recovery_s = frame.wall_time - back
    print(f"\nMJPEG stream killed and restarted: first frame {recovery_s:.2f} s after the server was back")
    assert "read failed" in (lost.last_error or "")
    assert failed_open is not None and "cannot open stream" in failed_open
    assert health.reconnects >= 1
    assert reported[-1] == "streaming"
    assert "stalled" not in reported


def test_reconnect_backoff_doubles_up_to_max(mjpeg_server, caplog) -> None:
    mjpeg_server.start()
    caplog.set_level(logging.WARNING, logger="edge_runtime.capture.source")

    with FrameSource(
        mjpeg_server.url, stall_timeout_s=STALL_TIMEOUT_S, reconnect_min_s=0.2, reconnect_max_s=1.0
    ) as source:
        assert next_frame_after(iter(source), 0.0, timeout=20) is not None
        mjpeg_server.kill()
        time.sleep(5.0)
        reconnects = source.health.reconnects

    records = [record for record in caplog.records if "reopening in" in record.getMessage()]
    delays = [record.args[-1] for record in records]
    gaps = [later.created - earlier.created for earlier, later in zip(records, records[1:])]

    # The lost connection waits reconnect_min_s, then each refused open doubles the wait up to reconnect_max_s.
    assert delays[:5] == pytest.approx([0.2, 0.4, 0.8, 1.0, 1.0])
    assert "source lost" in records[0].getMessage()
    assert "2 failed attempts in a row" in records[2].getMessage()
    # 10 ms of slack for the different clocks of the log records (wall) and of the waits (monotonic).
    assert all(gap >= delay - 0.01 for gap, delay in zip(gaps, delays)), (gaps, delays)
    assert reconnects == 0


def test_frozen_stream_is_stalled_while_read_blocks(mjpeg_server) -> None:
    mjpeg_server.start()
    states = StateLog()

    with FrameSource(
        mjpeg_server.url, stall_timeout_s=STALL_TIMEOUT_S, reconnect_min_s=0.2, reconnect_max_s=1.0
    ) as source:
        source.add_state_listener(states)
        frames = iter(source)
        assert next_frame_after(frames, 0.0, timeout=20) is not None

        mjpeg_server.freeze()
        frozen = time.time()
        stalled = states.wait_for(SourceState.STALLED, timeout=20)
        assert stalled is not None, states.states
        # FFmpeg's own read timeout is 10 s, so the reader is still blocked when the watchdog reports.
        hung_while_stalled = source.health.hung_readers

        time.sleep(1.0)
        resumed = time.time()
        mjpeg_server.resume()
        frame = next_frame_after(frames, resumed, timeout=30)

        deadline = time.monotonic() + 15
        while source.health.hung_readers and time.monotonic() < deadline:
            time.sleep(0.1)
        health = source.health
        reported = states.states

    assert frame is not None, states.states
    print(
        f"\nMJPEG stream frozen: stall reported {stalled.since - frozen:.2f} s after SIGSTOP; "
        f"first frame {frame.wall_time - resumed:.2f} s after SIGCONT"
    )
    assert hung_while_stalled == 1
    assert "no frame for" in (stalled.last_error or "")
    assert reported.index("stalled") < reported.index("reconnecting")
    assert reported[-1] == "streaming"
    assert health.hung_readers == 0
    assert health.reconnects >= 1


# --------------------------------------------------------------------------
# The whole service: real models, real broker


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def source_states(messages: list[Received]) -> list[dict]:
    return [message.json()["source"]["health"] for message in messages if message.leaf == "status"]


def test_service_reports_outage_and_recovers(
    model_store, mjpeg_server, mosquitto_broker, subscribe, validators
) -> None:
    device_id = "outage-test"
    config = parse_config(
        {
            "source": {
                "spec": mjpeg_server.url,
                "stall_timeout_s": 2.0,
                "reconnect_min_s": 0.25,
                "reconnect_max_s": 2.0,
            },
            "store": str(model_store.root),
            "window_s": 1.0,
            "stats_interval_s": 2.0,
            "mqtt": {"broker": mosquitto_broker.url, "device_id": device_id, "flush_timeout_s": 10},
        }
    )
    subscriber = subscribe(mosquitto_broker, f"edge-runtime/{device_id}/#")
    mjpeg_server.start()

    service = open_service(config)
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(summary=service.runner.run()), daemon=True)
    thread.start()
    try:
        def face_window_after(moment: float):
            def check(messages: list[Received]) -> bool:
                for message in messages:
                    if message.leaf != "faces":
                        continue
                    document = message.json()
                    if document["tracks"] and parse_time(document["window"]["start"]) > moment:
                        return True
                return False

            return check

        assert subscriber.wait_for(face_window_after(0.0), timeout=90), [m.topic for m in subscriber.messages]

        mjpeg_server.kill()
        killed = time.time()
        assert subscriber.wait_for(
            lambda messages: any(health["state"] == "reconnecting" for health in source_states(messages)), timeout=30
        ), source_states(subscriber.messages)

        # A client that subscribes now gets the retained status, which shows the outage.
        late = subscribe(mosquitto_broker, f"edge-runtime/{device_id}/status")
        assert late.wait_for(lambda messages: len(messages) >= 1, timeout=10)
        retained = late.messages[0]

        time.sleep(max(0.0, killed + 3.0 - time.time()))
        # The service can connect before start()'s own probe does, so "again" counts from the restart.
        restarting = time.time()
        back = mjpeg_server.start()

        def streaming_again(messages: list[Received]) -> bool:
            return any(
                health["state"] == "streaming" and parse_time(health["since"]) >= restarting
                for health in source_states(messages)
            )

        assert subscriber.wait_for(streaming_again, timeout=60), source_states(subscriber.messages)
        assert subscriber.wait_for(face_window_after(restarting), timeout=60), "no faces window after the stream returned"
    finally:
        service.runner.stop("test finished")
        thread.join(timeout=60)
        service.close()

    recovered = next(
        health for health in source_states(subscriber.messages)
        if health["state"] == "streaming" and parse_time(health["since"]) >= restarting
    )
    recovery_s = parse_time(recovered["since"]) - restarting
    print(f"\nservice recovery: streaming {recovery_s:.2f} s after the MJPEG server was restarted (outage 3 s)")

    assert retained.retain is True
    assert retained.json()["source"]["health"]["state"] in ("reconnecting", "stalled")
    assert retained.json()["source"]["health"]["last_error"]
    assert recovered["reconnects"] >= 1
    assert 0.0 <= recovery_s < 30.0
    summary = outcome["summary"]
    assert summary.stopped is True
    assert summary.frames_analyzed > 0
    for message in subscriber.on("status"):
        validate_payload(validators, message)


if __name__ == "__main__":
    serve_mjpeg(int(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]))
