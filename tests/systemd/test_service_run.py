"""``edge-runtime run`` as systemd runs it: sd_notify over a real socket, SIGTERM, a real broker.

The test plays the service manager: it binds the notification socket, sets
``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``, starts the real command on a video
paced at its own frame rate (a live-like source), and stops it with SIGTERM
as ``systemctl stop`` does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from edge_runtime.service.shutdown import SHUTDOWN_TIMEOUT_S
from tests.capture.conftest import Subscriber, ends_offline
from tests.systemd.conftest import REPO_ROOT
from tests.systemd.test_notify import NotifySocket

VIDEO = "videos/WolfgangLanger_Pexels.mp4"
VIDEO_FRAMES = 472
# 169 frames at 26.4 fps.
SHORT_VIDEO = "videos/face_then_noface.mov"
SHORT_VIDEO_S = 6.4
EVERY_N = 3
WATCHDOG_USEC = 2_000_000
START_TIMEOUT_S = 120


@dataclass
class StoppedService:
    """What a service run stopped by SIGTERM left behind."""

    returncode: int
    # Seconds from SIGTERM to the exit of the process.
    shutdown_s: float
    running_before_signal: bool
    log: str
    notifications: list[str]


def run_until_sigterm(
    tmp_path: Path,
    arguments: list[str],
    broker_url: str,
    store_root: Path,
    device_id: str,
    stop_when: Callable[[NotifySocket], bool],
    stop_timeout_s: float = 30.0,
) -> StoppedService:
    """Start ``edge-runtime run`` under a fake service manager, wait for ``stop_when``, then send SIGTERM.

    Fails the test when READY=1 does not arrive within ``START_TIMEOUT_S`` or
    ``stop_when`` does not hold within ``stop_timeout_s`` after it.
    """
    listener = NotifySocket(str(tmp_path / "notify.sock"))
    environment = dict(
        os.environ,
        NOTIFY_SOCKET=listener.address,
        WATCHDOG_USEC=str(WATCHDOG_USEC),
        XDG_STATE_HOME=str(tmp_path / "state"),
    )
    stderr_path = tmp_path / "stderr.log"
    command = [
        sys.executable, "-m", "edge_runtime", "--log-level", "DEBUG", "run", *arguments,
        "--broker", broker_url, "--device-id", device_id, "--store", str(store_root),
    ]

    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=environment, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            ready = listener.wait_for(lambda texts: any(t.startswith("READY=1") for t in texts), START_TIMEOUT_S)
            assert ready, stderr_path.read_text()[-3000:]
            assert listener.wait_for(lambda texts: stop_when(listener), stop_timeout_s), listener.texts()
            running = process.poll() is None

            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            returncode = process.wait(timeout=SHUTDOWN_TIMEOUT_S + 10)
            shutdown_s = time.monotonic() - signalled
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            listener.close()

    return StoppedService(returncode, shutdown_s, running, stderr_path.read_text(), listener.texts())


def assert_clean_stop(stopped: StoppedService) -> None:
    """Check the exit, its time bound and the READY/STOPPING notifications of a SIGTERM stop."""
    assert stopped.running_before_signal, stopped.log[-3000:]
    assert stopped.returncode == 0, stopped.log[-3000:]
    assert stopped.shutdown_s < SHUTDOWN_TIMEOUT_S, stopped.log[-3000:]

    # READY=1 follows the warm-up, STOPPING=1 the signal.
    assert stopped.log.index("analyzer warmed up") < stopped.log.index("sd_notify: READY=1")
    assert stopped.notifications[0].startswith("READY=1\nSTATUS=")
    stopping = [text for text in stopped.notifications if text.startswith("STOPPING=1")]
    assert len(stopping) == 1
    assert "SIGTERM received" in stopping[0]


@pytest.mark.shared_data
def test_notify_and_sigterm_shutdown(tmp_path, shared_data, model_store, mosquitto_broker) -> None:
    video = shared_data / VIDEO
    if not video.is_file():
        pytest.skip(f"{video} not present")
    subscriber = Subscriber(mosquitto_broker.host, mosquitto_broker.port, "edge-runtime/notify-test/#")

    def frames_flow(listener: NotifySocket) -> bool:
        # The loop pings (at least three pings, 1 s apart) and reports its rate.
        texts = listener.texts()
        return texts.count("WATCHDOG=1") >= 3 and any(text.startswith("STATUS=analyzing") for text in texts)

    try:
        stopped = run_until_sigterm(
            tmp_path,
            # One window longer than the video, so the window SIGTERM ends is partial.
            ["--source", str(video), "--realtime", "--every-n", str(EVERY_N), "--window", "60"],
            mosquitto_broker.url,
            model_store.root,
            "notify-test",
            frames_flow,
        )
        assert subscriber.wait_for(ends_offline), [message.topic for message in subscriber.messages]
    finally:
        subscriber.close()

    print(f"SIGTERM to exit: {stopped.shutdown_s:.2f} s")
    assert_clean_stop(stopped)

    # The partial window and the final stats were published before offline.
    faces = [message.json() for message in subscriber.on("faces")]
    assert len(faces) == 1
    window = faces[0]["window"]
    assert window["final"] is True
    assert 0 < window["frames"] < VIDEO_FRAMES // EVERY_N
    assert subscriber.on("stats")[-1].json()["final"] is True
    assert subscriber.on("availability")[-1].payload == b"offline"


@pytest.mark.shared_data
def test_looping_file_stops_on_sigterm(tmp_path, shared_data, model_store, mosquitto_broker) -> None:
    video = shared_data / SHORT_VIDEO
    if not video.is_file():
        pytest.skip(f"{video} not present")
    window_s = 4.0
    subscriber = Subscriber(mosquitto_broker.host, mosquitto_broker.port, "edge-runtime/loop-stop/#")

    def past_end_of_file(listener: NotifySocket) -> bool:
        # Window 1 ends at 8 s of source time, so it is published only after the file looped.
        return any(message.json()["window"]["index"] >= 1 for message in subscriber.on("faces"))

    try:
        stopped = run_until_sigterm(
            tmp_path,
            ["--source", str(video), "--loop", "--realtime", "--every-n", str(EVERY_N), "--window", str(window_s)],
            mosquitto_broker.url,
            model_store.root,
            "loop-stop",
            past_end_of_file,
            stop_timeout_s=60.0,
        )
        assert subscriber.wait_for(ends_offline), [message.topic for message in subscriber.messages]
    finally:
        subscriber.close()

    print(f"SIGTERM to exit after the file looped: {stopped.shutdown_s:.2f} s")
    assert_clean_stop(stopped)

    windows = [message.json()["window"] for message in subscriber.on("faces")]
    indexes = [window["index"] for window in windows]
    assert indexes == list(range(indexes[0], indexes[0] + len(indexes)))
    assert [window["final"] for window in windows] == [False] * (len(windows) - 1) + [True]
    # The last, partial window lies past the end of the file on the growing timeline.
    last = windows[-1]
    assert last["media_start_s"] >= 2 * window_s
    assert last["media_end_s"] > SHORT_VIDEO_S
    assert last["frames"] >= 1
    assert subscriber.on("stats")[-1].json()["final"] is True
    assert subscriber.on("availability")[-1].payload == b"offline"
