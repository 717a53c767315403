"""Render a short demo video from scikit-image's public-domain astronaut photo.

The clip is 960x540 at 15 fps. The portrait drifts slowly across a dark
background and zooms in. Halfway through, a mirrored copy enters from the
right, so the clip exercises tracking of two faces and the group statistics.
Both faces are the same photo, so expect the same emotion and attributes.

Usage: python scripts/make_demo_clip.py --output demo.mp4 [--seconds 20]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from edge_runtime.samples import fetch_sample

WIDTH, HEIGHT, FPS = 960, 540, 15


def _paste(canvas: np.ndarray, image: np.ndarray, x: int, y: int) -> None:
    """Copy ``image`` onto ``canvas`` with its top-left corner at (x, y), clipping at the edges."""
    h, w = image.shape[:2]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, canvas.shape[1]), min(y + h, canvas.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    canvas[y0:y1, x0:x1] = image[y0 - y : y1 - y, x0 - x : x1 - x]


def render(photo: np.ndarray, seconds: float) -> list[np.ndarray]:
    frames = []
    total = int(seconds * FPS)
    mirrored = photo[:, ::-1]

    for index in range(total):
        t = index / max(total - 1, 1)
        canvas = np.full((HEIGHT, WIDTH, 3), 24, dtype=np.uint8)

        # First face: drifts right and grows from 300 to 420 px.
        side = int(300 + 120 * t)
        face = cv2.resize(photo, (side, side), interpolation=cv2.INTER_AREA)
        _paste(canvas, face, int(20 + 160 * t), (HEIGHT - side) // 2)

        # Second face: enters from the right edge in the second half.
        if t >= 0.5:
            u = (t - 0.5) / 0.5
            side2 = 300
            face2 = cv2.resize(mirrored, (side2, side2), interpolation=cv2.INTER_AREA)
            _paste(canvas, face2, int(WIDTH - side2 * u * 0.95), (HEIGHT - side2) // 2 + 40)

        frames.append(canvas)
    return frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True, help="path of the .mp4 file to write")
    parser.add_argument("--seconds", type=float, default=20.0, help="clip length in seconds (default: 20)")
    args = parser.parse_args()

    photo = cv2.imread(str(fetch_sample("astronaut")), cv2.IMREAD_COLOR)
    frames = render(photo, args.seconds)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(args.output), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        print(f"make_demo_clip: OpenCV cannot write {args.output}; choose a path ending in .mp4", file=sys.stderr)
        return 1
    for frame in frames:
        writer.write(frame)
    writer.release()

    print(f"wrote {args.output}: {len(frames)} frames, {WIDTH}x{HEIGHT} at {FPS} fps", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
