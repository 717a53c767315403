"""Frame sources: cameras, video files, network streams and GStreamer pipelines.

Every source is read through OpenCV's ``cv2.VideoCapture``. How a spec is
read depends on its kind:

- Live sources (camera, stream, pipeline) are read by a thread that keeps
  only the newest frame. A frame that is replaced before the consumer takes
  it is dropped and counted, so the consumer always works on the present
  and never falls behind. A failed read closes the capture and reopens it
  with exponential back-off until ``stop()`` is called.
- A video file is read frame by frame in the consumer's thread, as fast as
  the consumer goes, so runs are deterministic. With ``realtime=True`` a
  thread paces the file at its own fps instead and drops frames like a
  live source. The end of the file ends the iteration.

Timestamps: ``Frame.media_s`` is the position in the file for files and
monotonic seconds since the source was first opened for live sources.
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
from typing import Iterator, Optional
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np

from edge_runtime.errors import SourceError

logger = logging.getLogger(__name__)

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")

# Open and read timeouts for network streams, so that a dead camera does
# not block a reader forever (FFmpeg backend; milliseconds).
STREAM_TIMEOUT_MS = 10_000


class SourceKind(str, Enum):
    CAMERA = "camera"
    FILE = "file"
    STREAM = "stream"
    GSTREAMER = "gstreamer"

    @property
    def is_live(self) -> bool:
        return self is not SourceKind.FILE


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    ``image`` is a BGR ``uint8`` array of shape ``(height, width, 3)``.
    ``index`` is the 0-based number of the frame among all frames the source
    decoded, including skipped and dropped ones.
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


class FrameSource:
    """Iterate the frames of a camera, file, stream or GStreamer pipeline.

    ``spec`` is a camera index ("0") or ``/dev/videoN``, a file path, a
    stream URL (rtsp://, http://, ...) or a GStreamer pipeline (any string
    containing ``!``, which needs an OpenCV built with GStreamer).
    ``every_n`` delivers every N-th decoded frame and skips the rest without
    counting them as dropped. ``kind`` overrides the kind derived from
    ``spec``; reading a file with ``kind=SourceKind.STREAM`` replays it as a
    live source that reconnects at its end.

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
        kind: Optional[SourceKind] = None,
    ) -> None:
        if every_n < 1:
            raise ValueError(f"every_n={every_n} must be at least 1")
        self.spec = spec.strip()
        self.kind = kind or classify_spec(self.spec)
        self.realtime = realtime
        self.every_n = every_n
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
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

        self._frames_read = 0
        self._frames_delivered = 0
        self._frames_dropped = 0
        self._reconnects = 0
        self._origin: Optional[float] = None

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
    def nominal_interval_s(self) -> Optional[float]:
        """Source seconds between two delivered frames at the nominal fps, or None when unknown."""
        if not self.fps:
            return None
        return self.every_n / self.fps

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
        """Open the source and, for threaded sources, start the reader.

        Raises SourceError naming the spec and the fix when it cannot be opened.
        """
        if self.kind is SourceKind.FILE:
            self._check_file_exists()

        self._capture = self._open_capture()
        self._read_properties(self._capture)
        self._origin = time.monotonic()
        logger.info(
            "source opened: %s (%sx%s, %s fps%s)",
            self.description,
            self.width,
            self.height,
            f"{self.fps:.3f}" if self.fps else "unknown",
            f", {self.frame_count} frames" if self.frame_count else "",
        )

        if self.threaded:
            self._reader = threading.Thread(target=self._read_loop, name="frame-reader", daemon=True)
            self._reader.start()

    def stop(self) -> None:
        """Ask the iteration to end after the current frame; safe from any thread or a signal handler."""
        self._stop.set()
        with self._condition:
            self._condition.notify_all()

    def close(self) -> None:
        """Stop the reader and release the capture; may be called more than once."""
        self.stop()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(timeout=5.0)
            if self._reader.is_alive():
                logger.warning("frame reader of %s did not stop within 5 s", self.description)
        self._reader = None
        if self._capture is not None:
            self._capture.release()
            self._capture = None

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

    def _open_capture(self) -> cv2.VideoCapture:
        # NOTE: the camera, network stream and GStreamer branches are untested here because the
        # test machine has no camera, no stream server and an OpenCV without GStreamer. The live
        # reader and its reconnects are tested on a file read as a stream.
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

    def _grab(self, capture: cv2.VideoCapture) -> Optional[tuple[int, float]]:
        """Advance to the next frame that ``every_n`` keeps; return its index and file position."""
        while True:
            if not capture.grab():
                return None
            index = self._frames_read
            with self._condition:
                self._frames_read += 1
            if index % self.every_n == 0:
                return index, self._file_position(capture, index)
            if self._stop.is_set():
                return None

    def _file_position(self, capture: cv2.VideoCapture, index: int) -> float:
        position_ms = capture.get(cv2.CAP_PROP_POS_MSEC)
        if position_ms > 0 or index == 0:
            return position_ms / 1000.0
        if self.fps:
            return index / self.fps
        return 0.0

    def _iterate_file(self) -> Iterator[Frame]:
        capture = self._capture
        while capture is not None and not self._stop.is_set():
            grabbed = self._grab(capture)
            if grabbed is None:
                break
            index, media_s = grabbed
            ok, image = capture.retrieve()
            if not ok or image is None:
                logger.warning("frame %d of %s cannot be decoded; skipping it", index, self.description)
                continue
            with self._condition:
                self._frames_delivered += 1
            yield Frame(image=_to_bgr(image), index=index, media_s=media_s, wall_time=time.time())
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

    def _hand_over(self, frame: Frame) -> None:
        with self._condition:
            if self._latest is not None:
                self._frames_dropped += 1
            self._latest = frame
            self._condition.notify_all()

    def _read_loop(self) -> None:
        try:
            if self.kind.is_live:
                self._read_live()
            else:
                self._read_paced_file()
        except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            logger.exception("frame reader of %s failed", self.description)
            self._reader_error = exc
        finally:
            with self._condition:
                self._ended = True
                self._condition.notify_all()

    def _read_paced_file(self) -> None:
        capture = self._capture
        started = time.monotonic()
        while capture is not None and not self._stop.is_set():
            grabbed = self._grab(capture)
            if grabbed is None:
                return
            index, media_s = grabbed
            delay = started + media_s - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                return
            ok, image = capture.retrieve()
            if ok and image is not None:
                self._hand_over(Frame(image=_to_bgr(image), index=index, media_s=media_s, wall_time=time.time()))

    def _read_live(self) -> None:
        capture = self._capture
        backoff = self.reconnect_min_s
        while not self._stop.is_set():
            if capture is None:
                capture = self._reopen(backoff)
                if capture is None:
                    backoff = min(backoff * 2, self.reconnect_max_s)
                    continue
                backoff = self.reconnect_min_s

            grabbed = self._grab(capture)
            ok, image = capture.retrieve() if grabbed is not None else (False, None)
            if not ok or image is None:
                if self._stop.is_set():
                    break
                logger.warning("source lost: %s; reconnecting in %.1f s", self.description, backoff)
                capture.release()
                capture = None
                self._capture = None
                continue

            index, _ = grabbed
            media_s = time.monotonic() - (self._origin or 0.0)
            self._hand_over(Frame(image=_to_bgr(image), index=index, media_s=media_s, wall_time=time.time()))

        if capture is not None:
            capture.release()
            self._capture = None

    def _reopen(self, delay_s: float) -> Optional[cv2.VideoCapture]:
        if self._stop.wait(delay_s):
            return None
        try:
            capture = self._open_capture()
        except SourceError as exc:
            logger.warning("reconnect failed: %s; next try in %.1f s", exc, min(delay_s * 2, self.reconnect_max_s))
            return None
        with self._condition:
            self._reconnects += 1
        self._capture = capture
        logger.info("source reconnected: %s (reconnect %d)", self.description, self._reconnects)
        return capture


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
