"""Frame sources: cameras, video files, network streams and GStreamer pipelines.

Every source is read through OpenCV's ``cv2.VideoCapture``. How a spec is
read depends on its kind:

- Live sources (camera, stream, pipeline) are read by a reader thread that
  keeps only the newest frame. A frame that is replaced before the consumer
  takes it is dropped and counted, so the consumer always works on the
  present and never falls behind. A watchdog thread supervises the reader
  (see "Watchdog" below).
- A video file is read frame by frame in the consumer's thread, as fast as
  the consumer goes, so runs are deterministic. With ``realtime=True`` a
  thread paces the file at its own fps instead and drops frames like a
  live source. The end of the file ends the iteration unless ``loop=True``,
  which reopens the file and starts again at frame 0.

Watchdog: the reader thread opens the capture and reads from it; the
watchdog thread only looks at the time of the reader's last progress. When
no frame arrives for ``stall_timeout_s`` seconds, the source is ``stalled``.
The watchdog then abandons that reader and starts a new one that reopens
the source, even while the old reader is still blocked in ``read()``,
because OpenCV's reads can block for as long as the backend's own timeout
(``STREAM_TIMEOUT_MS`` for FFmpeg streams). A failed read or open leads
to ``reconnecting`` without a stall. Reopen attempts wait with exponential
back-off from ``reconnect_min_s`` to ``reconnect_max_s``. ``health``
reports the state (``SourceState``) with the time it was entered, the
reconnect count and the last error, and state listeners are called on
every change.

A hung capture is never released from another thread, because
``VideoCapture`` is not thread-safe and releasing it under a blocked read
can crash the decoder. The abandoned reader releases it itself when its
blocking call returns, and delivers nothing more. At most
``MAX_HUNG_READERS`` abandoned readers may be blocked at once; beyond that
the watchdog waits for one of them to return before it reopens again.

Timestamps: ``Frame.media_s`` is the position in the file for files (a
looping file continues the time of the previous pass, so it only grows)
and monotonic seconds since the source was first opened for live sources.
``Frame.wall_time`` is the UNIX time at which the frame was read.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator, Optional
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from edge_runtime.errors import ConfigError, SourceError

logger = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")

# Open and read timeouts for network streams, so that a dead camera does
# not block a reader forever (FFmpeg backend; milliseconds).
STREAM_TIMEOUT_MS = 10_000

# Seconds an open may take before the watchdog calls the source stalled. It
# exceeds the FFmpeg open timeout, so that timeout normally fires first and
# the watchdog only catches an open that ignores it (a camera driver, a
# GStreamer pipeline).
OPEN_GRACE_S = STREAM_TIMEOUT_MS / 1000.0 + 1.0

# Abandoned readers that may still be blocked in OpenCV at the same time.
# Each keeps a capture, a thread and the decoder's buffers until it returns.
MAX_HUNG_READERS = 3

# Maximum pause between two watchdog checks, in seconds.
WATCH_INTERVAL_S = 0.25

# Seconds between the passes of a looping file that reports neither an fps
# nor frame positions (one frame at 30 fps), so its timestamps still grow.
UNKNOWN_FRAME_GAP_S = 1.0 / 30.0

StateListener = Callable[["SourceHealth"], None]


class SourceKind(str, Enum):
    CAMERA = "camera"
    FILE = "file"
    STREAM = "stream"
    GSTREAMER = "gstreamer"

    @property
    def is_live(self) -> bool:
        return self is not SourceKind.FILE


class SourceState(str, Enum):
    """Life-cycle state of a source.

    ``connecting``: the first open is done and no frame has arrived yet.
    ``streaming``: frames arrive. ``stalled``: a live source delivered no
    frame for ``stall_timeout_s`` seconds and its reader is abandoned.
    ``reconnecting``: a live source is lost and is being reopened with
    back-off. ``ended``: the file ended or ``stop()`` was called.
    ``failed``: the source cannot continue (the first open failed, a looping
    file cannot be reopened, or the reader raised an unexpected error).
    """

    CONNECTING = "connecting"
    STREAMING = "streaming"
    STALLED = "stalled"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    FAILED = "failed"


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    ``image`` is a BGR ``uint8`` array of shape ``(height, width, 3)``.
    ``index`` is the 0-based number of the frame among all frames the source
    decoded, including skipped and dropped ones (and, for a looping file,
    those of earlier passes).
    """

    image: np.ndarray
    index: int
    media_s: float
    wall_time: float


@dataclass(frozen=True)
class SourceStats:
    """Counters of a source since it was opened."""

    frames_read: int
    frames_delivered: int
    frames_dropped: int
    reconnects: int
    queue_depth: int


@dataclass(frozen=True)
class SourceHealth:
    """State of a source for the status topic; every time is UNIX seconds.

    ``since`` is when ``state`` was entered. ``reconnects`` counts reopens
    that succeeded, ``loops`` the restarts of a looping file. ``hung_readers``
    is the number of abandoned readers still blocked in OpenCV.
    ``last_error`` is the latest failure (open, read or stall) with any URL
    credentials removed, and ``last_error_at`` its time.
    """

    state: SourceState
    since: float
    reconnects: int
    loops: int
    hung_readers: int
    last_frame_at: Optional[float]
    last_error: Optional[str]
    last_error_at: Optional[float]


def classify_spec(spec: str) -> SourceKind:
    """Return the kind of a source spec (see ``FrameSource``)."""
    text = spec.strip()
    if "!" in text:
        return SourceKind.GSTREAMER
    if text.isdigit() or re.fullmatch(r"/dev/video\d+", text):
        return SourceKind.CAMERA
    scheme = urlsplit(text).scheme.lower()
    if scheme in STREAM_SCHEMES:
        return SourceKind.STREAM
    return SourceKind.FILE


def describe_spec(spec: str) -> str:
    """Return the spec with any user name and password of a URL replaced by ``***``.

    The result is safe to log and to publish.
    """
    if classify_spec(spec) is not SourceKind.STREAM:
        return spec
    parts = urlsplit(spec)
    if parts.username is None and parts.password is None:
        return spec
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


class _Reader:
    """Bookkeeping of one live reader thread; fields change under the source's lock."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.thread: Optional[threading.Thread] = None
        self.opened = False
        self.frames = 0
        # Monotonic time of the last open, open completion or frame.
        self.last_progress = time.monotonic()
        self.abandoned = False
        self.exited = False
        self.error: Optional[str] = None
        self.crash: Optional[BaseException] = None


class FrameSource:
    """Iterate the frames of a camera, file, stream or GStreamer pipeline.

    ``spec`` is a camera index ("0") or ``/dev/videoN``, a file path, a
    stream URL (rtsp://, http://, ...) or a GStreamer pipeline (any string
    containing ``!``, which needs an OpenCV built with GStreamer).
    ``every_n`` delivers every N-th decoded frame and skips the rest without
    counting them as dropped. ``kind`` overrides the kind derived from
    ``spec``; reading a file with ``kind=SourceKind.STREAM`` replays it as a
    live source that reconnects at its end. ``stall_timeout_s`` is the time
    without a frame after which the watchdog reopens a live source, and
    ``loop`` restarts a video file at its end (files only).

    Use it as a context manager or call ``open()`` and ``close()``.
    """

    def __init__(
        self,
        spec: str,
        *,
        realtime: bool = False,
        every_n: int = 1,
        reconnect_min_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        stall_timeout_s: float = 10.0,
        loop: bool = False,
        kind: Optional[SourceKind] = None,
    ) -> None:
        if every_n < 1:
            raise ValueError(f"every_n={every_n} must be at least 1")
        if stall_timeout_s <= 0:
            raise ValueError(f"stall_timeout_s={stall_timeout_s} must be above 0")
        self.spec = spec.strip()
        self.kind = kind or classify_spec(self.spec)
        if loop and self.kind.is_live:
            raise ConfigError(
                f"source.loop is set for {self.kind.value} {describe_spec(self.spec)}, but only a video file "
                "can loop; remove source.loop (or --loop), because a live source reconnects by itself"
            )
        self.realtime = realtime
        self.every_n = every_n
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.stall_timeout_s = stall_timeout_s
        self.loop = loop
        self.description = f"{self.kind.value} {describe_spec(self.spec)}"

        self.fps: Optional[float] = None
        self.width: Optional[int] = None
        self.height: Optional[int] = None
        self.frame_count: Optional[int] = None

        self._capture: Optional[cv2.VideoCapture] = None
        self._stop = threading.Event()
        self._condition = threading.Condition()
        self._latest: Optional[Frame] = None
        self._ended = False
        self._reader: Optional[threading.Thread] = None
        self._reader_error: Optional[BaseException] = None

        # Live sources: the reader the watchdog currently trusts, and abandoned ones still blocked.
        self._current: Optional[_Reader] = None
        self._hung: list[_Reader] = []
        self._generation = 0

        # Looping files: seconds added to the file position, the frame index where this pass began
        # and the file position of the last frame grabbed in this pass.
        self._loop_offset_s = 0.0
        self._pass_start_index = 0
        self._pass_position_s = 0.0

        self._frames_read = 0
        self._frames_delivered = 0
        self._frames_dropped = 0
        self._reconnects = 0
        self._loops = 0
        self._origin: Optional[float] = None

        self._state = SourceState.CONNECTING
        self._state_since = time.time()
        self._last_frame_at: Optional[float] = None
        self._last_error: Optional[str] = None
        self._last_error_at: Optional[float] = None
        self._listeners: list[StateListener] = []

    @property
    def threaded(self) -> bool:
        """True when a reader thread hands over the newest frame (live sources, paced files)."""
        return self.kind.is_live or self.realtime

    @property
    def stats(self) -> SourceStats:
        with self._condition:
            return SourceStats(
                frames_read=self._frames_read,
                frames_delivered=self._frames_delivered,
                frames_dropped=self._frames_dropped,
                reconnects=self._reconnects,
                queue_depth=1 if self._latest is not None else 0,
            )

    @property
    def state(self) -> SourceState:
        with self._condition:
            return self._state

    @property
    def health(self) -> SourceHealth:
        """The current state, its start time, reconnect and loop counts and the last error."""
        with self._condition:
            return self._health_locked()

    @property
    def nominal_interval_s(self) -> Optional[float]:
        """Source seconds between two delivered frames at the nominal fps, or None when unknown."""
        if not self.fps:
            return None
        return self.every_n / self.fps

    def add_state_listener(self, listener: StateListener) -> None:
        """Call ``listener(health)`` after every state change.

        It runs in the thread that changed the state (the watchdog, a reader
        or the consumer), outside the source's lock, and must return quickly.
        An exception it raises is logged and otherwise ignored.
        """
        with self._condition:
            self._listeners.append(listener)

    def remove_state_listener(self, listener: StateListener) -> None:
        """Stop calling ``listener``; removing one that is not registered does nothing."""
        with self._condition:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def check(self) -> None:
        """Raise SourceError when the source cannot be opened, and keep nothing open.

        Cheap checks only, for a caller that wants to fail before slow work:
        a video file must exist and OpenCV must decode it, a pipeline needs
        an OpenCV built with GStreamer, and on Linux a camera's
        ``/dev/videoN`` node must exist. A stream is not contacted, so its
        errors still come from ``open()``.
        """
        if self.kind is SourceKind.FILE:
            self._check_file_exists()
            self._open_capture().release()
        elif self.kind is SourceKind.GSTREAMER:
            self._check_gstreamer()
        elif self.kind is SourceKind.CAMERA and sys.platform.startswith("linux"):
            node = Path(self.spec if self.spec.startswith("/dev/") else f"/dev/video{self.spec}")
            if not node.exists():
                raise SourceError(
                    f"camera {self.spec}: {node} not found; check that the camera is connected "
                    "(v4l2-ctl --list-devices lists them) or pass a video file or stream URL"
                )

    def open(self) -> None:
        """Open the source and, for threaded sources, start the reader (and the watchdog).

        The first open happens in the caller's thread. Raises SourceError
        naming the spec and the fix when it cannot be opened, and the state
        becomes ``failed``.
        """
        try:
            if self.kind is SourceKind.FILE:
                self._check_file_exists()
            capture = self._open_capture()
        except SourceError as exc:
            self._set_state(SourceState.FAILED, error=str(exc))
            raise

        self._read_properties(capture)
        self._origin = time.monotonic()
        logger.info(
            "source opened: %s (%sx%s, %s fps%s%s)",
            self.description,
            self.width,
            self.height,
            f"{self.fps:.3f}" if self.fps else "unknown",
            f", {self.frame_count} frames" if self.frame_count else "",
            ", looping" if self.loop else "",
        )

        if self.kind.is_live:
            # The watchdog owns the live readers; the capture goes to the first one.
            self._reader = threading.Thread(
                target=self._watch_live, args=(capture,), name="source-watchdog", daemon=True
            )
            self._reader.start()
            return

        # A file that opens is ready to deliver, so there is no connecting phase.
        self._capture = capture
        self._set_state(SourceState.STREAMING)
        if self.realtime:
            self._reader = threading.Thread(target=self._read_loop, name="frame-reader", daemon=True)
            self._reader.start()

    def stop(self) -> None:
        """Ask the iteration to end after the current frame; safe from any thread or a signal handler."""
        self._stop.set()
        with self._condition:
            self._condition.notify_all()

    def close(self) -> None:
        """Stop the readers and release the capture; may be called more than once."""
        self.stop()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=5.0)
            if self._reader.is_alive():
                logger.warning("frame reader of %s did not stop within 5 s", self.description)
        self._reader = None
        with self._condition:
            current = self._current
        if current is not None and current.thread is not None and current.thread is not threading.current_thread():
            current.thread.join(timeout=5.0)
            if current.thread.is_alive():
                logger.warning(
                    "frame reader of %s is still blocked in OpenCV after 5 s; it releases its capture "
                    "when the call returns",
                    self.description,
                )
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        self._set_state(SourceState.ENDED, keep_failed=True)

    def __enter__(self) -> "FrameSource":
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        if self._capture is None and self._reader is None:
            raise SourceError(f"source {self.description} is not open; call open() or use it in a with block")
        if self.threaded:
            return self._iterate_latest()
        return self._iterate_file()

    # ------------------------------------------------------------------
    # State

    def _health_locked(self) -> SourceHealth:
        return SourceHealth(
            state=self._state,
            since=self._state_since,
            reconnects=self._reconnects,
            loops=self._loops,
            hung_readers=sum(1 for reader in self._hung if not reader.exited),
            last_frame_at=self._last_frame_at,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
        )

    def _set_state(self, state: SourceState, *, error: Optional[str] = None, keep_failed: bool = False) -> None:
        """Enter ``state`` (and record ``error``); call the listeners when the state changed."""
        with self._condition:
            if error is not None:
                self._last_error = error
                self._last_error_at = time.time()
            if self._state is state or (keep_failed and self._state is SourceState.FAILED):
                return
            previous = self._state
            self._state = state
            self._state_since = time.time()
            health = self._health_locked()
            listeners = list(self._listeners)
            self._condition.notify_all()

        logger.log(
            logging.WARNING if state in (SourceState.STALLED, SourceState.FAILED) else logging.INFO,
            "source %s: %s -> %s%s",
            self.description,
            previous.value,
            state.value,
            f" ({error})" if error else "",
        )
        for listener in listeners:
            try:
                listener(health)
            except Exception:  # noqa: BLE001 - a listener must not stop the source
                logger.exception("source state listener %r failed", listener)

    # ------------------------------------------------------------------
    # Opening

    def _open_capture(self) -> cv2.VideoCapture:
        # NOTE: the camera and GStreamer branches are untested here because the test machine has
        # no camera and an OpenCV without GStreamer. Streams are tested with MJPEG over HTTP from
        # a loopback server.
        if self.kind is SourceKind.CAMERA:
            index_text = self.spec.removeprefix("/dev/video")
            capture = cv2.VideoCapture(int(index_text))
            fix = "check that the camera is connected and that this user may open /dev/video*"
        elif self.kind is SourceKind.GSTREAMER:
            self._check_gstreamer()
            capture = cv2.VideoCapture(self.spec, cv2.CAP_GSTREAMER)
            fix = "test the pipeline with gst-launch-1.0 and end it with an appsink"
        elif self.kind is SourceKind.STREAM:
            capture = cv2.VideoCapture(
                self.spec,
                cv2.CAP_FFMPEG,
                [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS],
            )
            fix = "check the URL, the credentials and that the stream is reachable"
        else:
            capture = cv2.VideoCapture(self.spec)
            fix = "check that it is a video OpenCV can decode (e.g. H.264 MP4) and that it is complete"

        if not capture.isOpened():
            capture.release()
            raise SourceError(f"cannot open {self.description}; {fix}")
        return capture

    def _check_file_exists(self) -> None:
        if not Path(self.spec).exists():
            raise SourceError(
                f"video file {self.spec} not found; pass an existing file, a camera index such as 0, "
                "or a stream URL such as rtsp://HOST/PATH"
            )

    def _check_gstreamer(self) -> None:
        if not re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()):
            raise SourceError(
                f"GStreamer pipeline {self.spec!r} cannot be opened: this OpenCV build has no "
                "GStreamer support; install an OpenCV built with GStreamer (e.g. the distribution's "
                "python3-opencv) or pass a camera index, file or stream URL"
            )

    def _read_properties(self, capture: cv2.VideoCapture) -> None:
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.width = width or None
        self.height = height or None
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if self.kind is SourceKind.FILE and count > 0 else None

    # ------------------------------------------------------------------
    # Files

    def _grab(self, capture: cv2.VideoCapture) -> Optional[tuple[int, float]]:
        """Advance to the next frame that ``every_n`` keeps; return its index and media time."""
        while True:
            if not capture.grab():
                return None
            index = self._frames_read
            with self._condition:
                self._frames_read += 1
            # Skipped frames count too, so a looping file's next pass starts after the real last frame.
            self._pass_position_s = self._file_position(capture, index - self._pass_start_index)
            if index % self.every_n == 0:
                return index, self._loop_offset_s + self._pass_position_s
            if self._stop.is_set():
                return None

    def _file_position(self, capture: cv2.VideoCapture, pass_index: int) -> float:
        """Return the position in seconds of the frame just grabbed, ``pass_index`` frames into the file."""
        position_ms = capture.get(cv2.CAP_PROP_POS_MSEC)
        if position_ms > 0 or pass_index == 0:
            return position_ms / 1000.0
        if self.fps:
            return pass_index / self.fps
        return 0.0

    def _decode_file(self) -> Iterator[Frame]:
        """Yield the kept frames of the file, and of every further pass when looping."""
        while not self._stop.is_set():
            capture = self._capture
            if capture is None:
                return
            pass_frames = 0
            while not self._stop.is_set():
                grabbed = self._grab(capture)
                if grabbed is None:
                    break
                index, media_s = grabbed
                ok, image = capture.retrieve()
                if not ok or image is None:
                    logger.warning("frame %d of %s cannot be decoded; skipping it", index, self.description)
                    continue
                pass_frames += 1
                self._note_frame()
                yield Frame(image=_to_bgr(image), index=index, media_s=media_s, wall_time=time.time())

            if self._stop.is_set() or not self.loop:
                return
            if pass_frames == 0:
                message = f"{self.description} delivered no frame in a whole pass, so looping stops"
                logger.error("%s", message)
                self._set_state(SourceState.FAILED, error=message)
                return
            self._restart_file()

    def _restart_file(self) -> None:
        """Reopen the file at frame 0 and continue the timestamps one frame after the last one grabbed."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        try:
            capture = self._open_capture()
        except SourceError as exc:
            self._set_state(SourceState.FAILED, error=str(exc))
            raise SourceError(f"looping {self.description} failed: {exc}") from exc

        # The next pass starts one frame interval after the last frame of this one. Without a
        # nominal fps, the interval is the mean of this pass.
        pass_frames = self._frames_read - self._pass_start_index
        if self.fps:
            frame_gap_s = 1.0 / self.fps
        elif pass_frames > 1 and self._pass_position_s > 0:
            frame_gap_s = self._pass_position_s / (pass_frames - 1)
        else:
            frame_gap_s = UNKNOWN_FRAME_GAP_S
        with self._condition:
            self._loops += 1
            self._loop_offset_s += self._pass_position_s + frame_gap_s
            self._pass_start_index = self._frames_read
            self._pass_position_s = 0.0
            self._capture = capture
        logger.debug("source %s: pass %d starts at %.3f s", self.description, self._loops + 1, self._loop_offset_s)

    def _note_frame(self) -> None:
        with self._condition:
            self._last_frame_at = time.time()

    def _iterate_file(self) -> Iterator[Frame]:
        for frame in self._decode_file():
            with self._condition:
                self._frames_delivered += 1
            yield frame
        if not self._stop.is_set():
            self._set_state(SourceState.ENDED, keep_failed=True)
        logger.info("source ended: %s after %d frames", self.description, self._frames_read)

    def _iterate_latest(self) -> Iterator[Frame]:
        while True:
            with self._condition:
                while self._latest is None and not self._ended and not self._stop.is_set():
                    self._condition.wait(timeout=1.0)
                if self._stop.is_set() or (self._latest is None and self._ended):
                    break
                frame = self._latest
                self._latest = None
                self._frames_delivered += 1
            yield frame

        if self._reader_error is not None:
            raise SourceError(f"reading {self.description} failed: {self._reader_error}") from self._reader_error
        logger.info("source ended: %s after %d frames", self.description, self._frames_read)

    def _hand_over(self, frame: Frame, reader: Optional[_Reader] = None) -> bool:
        """Make ``frame`` the newest one; return False when ``reader`` was abandoned meanwhile."""
        with self._condition:
            if reader is not None:
                if reader.abandoned:
                    return False
                reader.frames += 1
                reader.last_progress = time.monotonic()
            if self._latest is not None:
                self._frames_dropped += 1
            self._latest = frame
            self._last_frame_at = frame.wall_time
            self._condition.notify_all()
        return True

    def _read_loop(self) -> None:
        """Thread body of a paced file: hand the failure to the consumer, which raises it."""
        try:
            self._read_paced_file()
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            logger.exception("frame reader of %s failed", self.description)
            self._reader_error = exc
            self._set_state(SourceState.FAILED, error=str(exc))
        finally:
            with self._condition:
                self._ended = True
                self._condition.notify_all()
            if not self._stop.is_set():
                self._set_state(SourceState.ENDED, keep_failed=True)

    def _read_paced_file(self) -> None:
        started = time.monotonic()
        for frame in self._decode_file():
            delay = started + frame.media_s - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            self._hand_over(frame)

    # ------------------------------------------------------------------
    # Live sources: watchdog and readers

    def _watch_live(self, capture: cv2.VideoCapture) -> None:
        """Watchdog thread: run one reader at a time, and replace it when it fails or stalls."""
        first: Optional[cv2.VideoCapture] = capture
        failures = 0
        try:
            while not self._stop.is_set():
                delay = 0.0 if first is not None else min(self.reconnect_min_s * 2**failures, self.reconnect_max_s)
                if delay and self._stop.wait(delay):
                    break
                if not self._wait_for_hung_readers():
                    break

                if first is None:
                    self._set_state(SourceState.RECONNECTING)
                reader = self._start_reader(first)
                first = None
                outcome = self._supervise(reader)
                if outcome is None:
                    break

                # A reader that delivered frames was a working connection, so back-off starts over.
                failures = 0 if reader.frames else min(failures + 1, 30)
                next_delay = min(self.reconnect_min_s * 2**failures, self.reconnect_max_s)
                if self.state is not SourceState.STALLED:
                    self._set_state(SourceState.RECONNECTING, error=outcome)
                if reader.frames:
                    logger.warning("source lost: %s (%s); reopening in %.1f s", self.description, outcome, next_delay)
                else:
                    logger.warning(
                        "source %s delivered no frame (%s), %d failed attempts in a row; reopening in %.1f s",
                        self.description,
                        outcome,
                        failures,
                        next_delay,
                    )
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            logger.exception("watchdog of %s failed", self.description)
            self._reader_error = exc
            self._set_state(SourceState.FAILED, error=str(exc))
        finally:
            if first is not None:
                first.release()
            with self._condition:
                self._ended = True
                self._condition.notify_all()

    def _start_reader(self, capture: Optional[cv2.VideoCapture]) -> _Reader:
        with self._condition:
            self._generation += 1
            reader = _Reader(self._generation)
            self._current = reader
        reader.thread = threading.Thread(
            target=self._run_reader, args=(reader, capture), name=f"frame-reader-{reader.generation}", daemon=True
        )
        reader.thread.start()
        return reader

    def _supervise(self, reader: _Reader) -> Optional[str]:
        """Watch ``reader`` until it fails or stalls; return why, or None when the source stops.

        A reader that raised an unexpected error ends the source: its error
        is handed to the consumer, the state becomes ``failed`` and None is
        returned.
        """
        check_s = min(WATCH_INTERVAL_S, self.stall_timeout_s / 4)
        while True:
            with self._condition:
                if not (self._stop.is_set() or reader.exited):
                    self._condition.wait(timeout=check_s)
                if self._stop.is_set():
                    return None
                exited = reader.exited
                error = reader.error or "the reader ended"
                crash = reader.crash
                idle_s = time.monotonic() - reader.last_progress
                opened = reader.opened
                frames = reader.frames

            if exited and crash is not None:
                self._reader_error = crash
                self._set_state(SourceState.FAILED, error=error)
                return None
            if exited:
                return error

            limit_s = self.stall_timeout_s if opened else max(self.stall_timeout_s, OPEN_GRACE_S)
            if idle_s > limit_s:
                if frames:
                    phase = "since the last frame"
                elif opened:
                    phase = "after the source opened"
                else:
                    phase = "while opening"
                return self._abandon(reader, f"no frame for {idle_s:.1f} s {phase}")

    def _abandon(self, reader: _Reader, reason: str) -> str:
        """Mark a stalled reader abandoned; it releases its capture when its blocking call returns."""
        with self._condition:
            reader.abandoned = True
            if not reader.exited:
                self._hung.append(reader)
        self._set_state(SourceState.STALLED, error=reason)
        return reason

    def _wait_for_hung_readers(self) -> bool:
        """Wait while ``MAX_HUNG_READERS`` abandoned readers are still blocked; False when stopped."""
        warned = False
        while not self._stop.is_set():
            with self._condition:
                self._hung = [reader for reader in self._hung if not reader.exited]
                blocked = len(self._hung)
            if blocked < MAX_HUNG_READERS:
                return True
            if not warned:
                logger.warning(
                    "%d readers of %s are still blocked in OpenCV; waiting for one to return before reopening",
                    blocked,
                    self.description,
                )
                warned = True
            self._stop.wait(WATCH_INTERVAL_S)
        return False

    def _run_reader(self, reader: _Reader, capture: Optional[cv2.VideoCapture]) -> None:
        """Reader thread body: open (unless given a capture), then read until failure, stop or abandonment."""
        try:
            if capture is None:
                try:
                    capture = self._open_capture()
                except SourceError as exc:
                    with self._condition:
                        reader.error = str(exc)
                    return
                if not self._accept_reopen(reader):
                    return
            with self._condition:
                reader.opened = True
                reader.last_progress = time.monotonic()
            self._read_frames(reader, capture)
        except cv2.error as exc:
            with self._condition:
                reader.error = f"OpenCV error: {exc}".strip()
        except Exception as exc:  # noqa: BLE001 - the watchdog hands it to the consumer
            logger.exception("frame reader of %s failed", self.description)
            with self._condition:
                reader.crash = exc
                reader.error = f"unexpected error: {exc}"
        finally:
            if capture is not None:
                capture.release()
            with self._condition:
                reader.exited = True
                self._condition.notify_all()
            if reader.abandoned:
                logger.info("abandoned reader %d of %s returned and released its capture", reader.generation, self.description)

    def _accept_reopen(self, reader: _Reader) -> bool:
        """Count a reopen of the current reader; return False when it was abandoned during the open."""
        with self._condition:
            if reader.abandoned or self._stop.is_set():
                return False
            self._reconnects += 1
            count = self._reconnects
        logger.info("source reconnected: %s (reconnect %d)", self.description, count)
        return True

    def _read_frames(self, reader: _Reader, capture: cv2.VideoCapture) -> None:
        while not self._stop.is_set():
            grabbed = capture.grab()
            if reader.abandoned or self._stop.is_set():
                return
            if not grabbed:
                with self._condition:
                    reader.error = "read failed (end of stream, connection lost or read timeout)"
                return

            with self._condition:
                index = self._frames_read
                self._frames_read += 1
            if index % self.every_n != 0:
                continue

            ok, image = capture.retrieve()
            if not ok or image is None:
                with self._condition:
                    reader.error = f"frame {index} cannot be decoded"
                return

            media_s = time.monotonic() - (self._origin or 0.0)
            frame = Frame(image=_to_bgr(image), index=index, media_s=media_s, wall_time=time.time())
            if not self._hand_over(frame, reader):
                return
            if reader.frames == 1:
                self._set_state(SourceState.STREAMING)


def _to_bgr(image: np.ndarray) -> np.ndarray:
    """Convert a decoded frame to 3-channel uint8 BGR."""
    if image.dtype != np.uint8:
        scale = 255.0 / np.iinfo(image.dtype).max if np.issubdtype(image.dtype, np.integer) else 255.0
        image = np.clip(image.astype(np.float32) * scale, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return image
