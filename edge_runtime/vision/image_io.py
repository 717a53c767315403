"""Reading still images and video files into BGR frames.

``read_image`` decodes with Pillow, which identifies the format from the
file's content, so a PNG named ``.jpg`` still decodes. Every frame it returns
is a C-contiguous ``uint8`` array of shape ``(height, width, 3)`` in BGR
order, the layout OpenCV and the detectors use. Pixel conversions:

* EXIF orientation is applied, so the frame is upright as viewers show it.
* Grayscale and palette images are expanded to three equal channels.
* 16-bit samples are mapped to 8 bits by rounding ``value / 257``.
* Alpha is dropped and the colour channels are kept as stored, with no
  compositing onto a background (OpenCV's ``IMREAD_COLOR`` does the same).
* CMYK is converted with Pillow's formula, without an ICC profile.

``iter_video_frames`` decodes videos with OpenCV. Every failure, in either
path, raises ``ImageReadError`` with the file name and the reason.
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import Iterator, NamedTuple, Optional, Union

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edge_runtime.errors import ImageReadError

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]

# 50 Mpx decodes to 150 MB of BGR pixels, plus one intermediate copy while
# the mode is converted. A board with 1 GB of memory can still hold that.
DEFAULT_MAX_PIXELS = 50_000_000

# Top-level box types that can open an ISO base media file (MP4, MOV, 3GP).
_ISO_BMFF_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"}

# Exceptions Pillow's decoders raise on damaged data: OSError for truncated or
# corrupt streams, SyntaxError from several plugins' header parsers, and the
# rest from malformed chunk lengths.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)


class VideoFrame(NamedTuple):
    """One decoded video frame: its index in the file, its time in seconds and the BGR pixels."""

    index: int
    time_s: float
    image: np.ndarray


def _check_file(path: Path) -> int:
    """Return the size in bytes of ``path``, raising ImageReadError when it cannot be read."""
    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a directory, not an image or video file")

    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read the file: {exc.strerror or exc}") from exc

    if size == 0:
        raise ImageReadError(f"{path}: the file is empty (0 bytes)")
    return size


def _read_header(path: Path, length: int = 512) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(length)
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read the file: {exc.strerror or exc}") from exc


def _video_container(header: bytes) -> Optional[str]:
    """Return the container name when ``header`` starts a known video format, else None."""
    if len(header) >= 8 and header[4:8] in _ISO_BMFF_BOXES:
        return "MP4/QuickTime"
    if header[:4] == b"RIFF" and header[8:12] == b"AVI ":
        return "AVI"
    if header[:4] == b"\x1a\x45\xdf\xa3":
        return "Matroska/WebM"
    if header[:3] == b"FLV":
        return "FLV"
    if header[:4] == b"\x00\x00\x01\xba":
        return "MPEG program stream"
    if header[:8] == b"\x30\x26\xb2\x75\x8e\x66\xcf\x11":
        return "ASF/WMV"
    # A transport stream repeats the 0x47 sync byte every 188 bytes.
    if len(header) > 376 and header[0] == header[188] == header[376] == 0x47:
        return "MPEG transport stream"
    return None


def is_video(path: PathLike) -> bool:
    """Return True when the file's first bytes match a video container (MP4, MOV, AVI, MKV, ...).

    The extension is not consulted. Raises ImageReadError when the file is
    missing, empty or unreadable.
    """
    path = Path(path)
    _check_file(path)
    return _video_container(_read_header(path)) is not None


def _scale_16bit(array: np.ndarray) -> np.ndarray:
    """Map 0..65535 samples to 0..255 by rounding ``value / 257``."""
    wide = np.clip(array.astype(np.int64), 0, 65535)
    return ((wide + 128) // 257).astype(np.uint8)


def _to_bgr(image: Image.Image, path: Path) -> np.ndarray:
    """Convert a loaded Pillow image of any supported mode to uint8 BGR."""
    mode = image.mode

    if mode.startswith("I;16") or mode == "I":
        # NOTE: 32-bit integer ("I") images are read as 16-bit data, the only
        # source of that mode among common formats (16-bit PNG and TIFF).
        gray = _scale_16bit(np.asarray(image))
        return cv2.cvtColor(np.ascontiguousarray(gray), cv2.COLOR_GRAY2BGR)

    if mode == "F":
        raise ImageReadError(
            f"{path}: 32-bit floating-point pixels have no standard 0..255 range; "
            "convert the image to 8 or 16 bits per channel"
        )

    if mode in ("L", "1"):
        gray = np.asarray(image.convert("L"))
        return cv2.cvtColor(np.ascontiguousarray(gray), cv2.COLOR_GRAY2BGR)

    # RGB, RGBA, LA, P, PA, CMYK, YCbCr, LAB, HSV: Pillow's convert drops alpha
    # without compositing and maps the other spaces to RGB.
    rgb = np.asarray(image if mode == "RGB" else image.convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def read_image(path: PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode the still image at ``path`` into an upright uint8 BGR array of shape (H, W, 3).

    ``max_pixels`` bounds width times height before any pixel is decoded, so
    a small file that expands to gigabytes is rejected cheaply.

    Raises:
        ImageReadError: the file is missing, empty, a video, not an image,
            truncated or corrupt, above ``max_pixels``, or of an unsupported
            pixel type. The message names the file and the reason.
    """
    path = Path(path)
    _check_file(path)

    try:
        image = Image.open(path)
    except UnidentifiedImageError as exc:
        container = _video_container(_read_header(path))
        if container is not None:
            raise ImageReadError(
                f"{path}: is a video file ({container}), not a still image; read it with iter_video_frames"
            ) from exc
        raise ImageReadError(f"{path}: not a recognised image format (the content matches no known image type)") from exc
    except Image.DecompressionBombError as exc:
        raise ImageReadError(
            f"{path}: image is too large to decode safely ({exc}); downscale it below {max_pixels} pixels"
        ) from exc
    except _DECODE_ERRORS as exc:
        raise ImageReadError(f"{path}: cannot read the image header: {exc}") from exc

    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageReadError(
                f"{path}: image is {width}x{height} = {width * height / 1e6:.1f} Mpx, above the limit of "
                f"{max_pixels / 1e6:.1f} Mpx; downscale it or raise max_pixels"
            )

        try:
            image.load()
        except Image.DecompressionBombError as exc:
            raise ImageReadError(f"{path}: image is too large to decode safely ({exc})") from exc
        except _DECODE_ERRORS as exc:
            raise ImageReadError(
                f"{path}: cannot decode the {image.format} image data ({exc}); the file is truncated or corrupt"
            ) from exc

        try:
            upright = ImageOps.exif_transpose(image)
        except _DECODE_ERRORS as exc:
            logger.warning("%s: EXIF orientation is unreadable (%s); using the stored pixel order", path, exc)
            upright = image

        return _to_bgr(upright, path)


def _reason_not_playable(path: Path) -> Optional[str]:
    """Return why the file at ``path`` cannot be a playable video, or None when it may be one.

    It runs before OpenCV opens the file, so that a still image or an MP4
    without its index gets a specific message instead of a failed open.
    """
    container = _video_container(_read_header(path))
    if container == "MP4/QuickTime":
        return _check_iso_bmff(path)
    if container is not None:
        return None

    try:
        with Image.open(path) as image:
            kind = image.format
    except (UnidentifiedImageError, *_DECODE_ERRORS):
        return None
    return f"is a still image ({kind}), not a video; read it with read_image"


def _check_iso_bmff(path: Path) -> Optional[str]:
    """Walk the top-level boxes of an MP4/MOV file; return what is wrong, or None."""
    file_size = path.stat().st_size
    offset = 0
    found_moov = False
    with open(path, "rb") as handle:
        while offset + 8 <= file_size:
            handle.seek(offset)
            size, kind = struct.unpack(">I4s", handle.read(8))
            if size == 1:
                size = struct.unpack(">Q", handle.read(8))[0]
            elif size == 0:
                size = file_size - offset
            if size < 8:
                return f"damaged MP4/QuickTime structure: box at byte {offset} declares {size} bytes"
            if kind == b"moov":
                found_moov = True
            if offset + size > file_size:
                name = kind.decode("latin-1")
                missing = "" if found_moov else "; the 'moov' index is missing"
                return (
                    f"the file is truncated: box '{name}' at byte {offset} needs {size} bytes but only "
                    f"{file_size - offset} remain{missing}"
                )
            offset += size
    if not found_moov:
        return "the 'moov' index (moov atom) is missing, so the frames cannot be located"
    return None


def _first_frame_failure(path: Path, capture: cv2.VideoCapture) -> str:
    if _video_container(_read_header(path)) is None:
        return "the content matches no known video container or image format"
    return (
        f"codec {_fourcc(capture)} is unsupported by this OpenCV build, or the stream data is damaged"
    )


def _fourcc(capture: cv2.VideoCapture) -> str:
    code = int(capture.get(cv2.CAP_PROP_FOURCC))
    if code <= 0:
        return "unknown"
    return code.to_bytes(4, "little").decode("latin-1").strip("\x00") or "unknown"


def iter_video_frames(path: PathLike, every_n: int = 1) -> Iterator[VideoFrame]:
    """Yield every ``every_n``-th frame of the video at ``path`` as a ``VideoFrame``, starting with frame 0.

    Raises:
        ImageReadError: the file is missing, empty or cannot be opened, or not
            even its first frame decodes. A stream that breaks after some
            frames ends the iteration with a warning in the log.
        ValueError: ``every_n`` is below 1.
    """
    if every_n < 1:
        raise ValueError(f"every_n is {every_n}; it must be 1 or more")

    path = Path(path)
    _check_file(path)
    reason = _reason_not_playable(path)
    if reason is not None:
        raise ImageReadError(f"{path}: cannot open the video: {reason}")

    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ImageReadError(
                f"{path}: cannot open the video: OpenCV has no decoder for this file "
                "(unsupported container or codec, or damaged data)"
            )

        fps = capture.get(cv2.CAP_PROP_FPS)
        index = 0
        while True:
            if index % every_n == 0:
                ok, frame = capture.read()
            else:
                ok, frame = capture.grab(), None

            if not ok:
                if index == 0:
                    raise ImageReadError(f"{path}: no video frame decodes: {_first_frame_failure(path, capture)}")
                # The container's frame count is an estimate (duration x fps),
                # so a shortfall of a few frames is normal.
                logger.debug(
                    "%s: end of stream after %d frames (container estimate %d)",
                    path, index, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)),
                )
                return

            if frame is not None:
                time_s = index / fps if fps > 0 else capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                yield VideoFrame(index, time_s, frame)
            index += 1
    finally:
        capture.release()
