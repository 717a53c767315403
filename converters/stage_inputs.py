"""Calibration and parity inputs for MTCNN's stages, cut the way the runtime's detector cuts them.

Face crops are a poor stand-in for what MTCNN's networks see on a device.
P-Net scans every level of an image pyramid, R-Net classifies P-Net's
candidate windows and O-Net classifies R-Net's survivors. Most of those
windows are background. Here the runtime's own MTCNN detector (the ``mtcnn``
package of the model store) runs on real photos:

* ``pnet``: 48x48 tiles of the pyramid levels at the detector's scales, one
  around each detected face on every level where the face fits in a tile,
  plus tiles at random positions;
* ``rnet``: 24x24 patches of P-Net's candidate boxes, the highest-scored
  candidates first, then a random sample of the rest (faces and non-faces);
* ``onet``: 48x48 patches of the candidates that pass R-Net.

Every window is laid out as the detector feeds it: RGB, normalized by the
stage's input contract, and transposed (height and width swapped).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from edge_runtime.manifest import InputSpec
from edge_runtime.vision.crop import resize

from converters.preprocess import make_batch

logger = logging.getLogger(__name__)

STAGES = ("pnet", "rnet", "onet")
PNET_TILE = 48
# Windows taken per photo and stage: enough to cover a photo's faces and a
# sample of its background without one group photo filling the whole set.
PNET_FACE_TILES_PER_PHOTO = 6
PNET_RANDOM_TILES_PER_LEVEL = 2
TOP_CANDIDATES_PER_PHOTO = 8
RANDOM_CANDIDATES_PER_PHOTO = 24


def runtime_mtcnn(store_root: Optional[Path] = None):
    """Return the runtime's MTCNN detector from the model store, or None when it is not installed."""
    try:
        from edge_runtime.loader import load_model
        from edge_runtime.models import ModelStore
        from edge_runtime.vision.detectors import create_detector
    except ImportError as exc:
        logger.warning("the runtime's MTCNN detector cannot be imported (%s)", exc)
        return None

    store = ModelStore(store_root) if store_root else ModelStore()
    if not store.is_installed("mtcnn"):
        logger.warning("no mtcnn package in %s; MTCNN stages are calibrated on face crops instead of the "
                       "windows the detector feeds them. Run 'edge-runtime models pull mtcnn' to fix that", store.root)
        return None
    try:
        return create_detector(load_model(store.open("mtcnn")))
    except Exception as exc:  # a broken package only costs calibration fidelity; the fallback is logged
        logger.warning("the mtcnn package in %s cannot be loaded (%s); MTCNN stages are calibrated on face crops",
                       store.root, exc)
        return None


def _network_frame(windows_bgr: Sequence[np.ndarray], spec: InputSpec) -> np.ndarray:
    """Return BGR windows as the detector feeds them: normalized by ``spec``, height and width swapped."""
    batch = make_batch(list(windows_bgr), spec)
    return np.ascontiguousarray(batch.transpose(0, 2, 1, 3))


def _pnet_tiles(detector, image: np.ndarray, faces: Sequence, rng: np.random.Generator) -> list[np.ndarray]:
    """Cut 48x48 tiles from the pyramid levels of ``image`` at the detector's own scales."""
    height, width = image.shape[:2]
    tiles: list[np.ndarray] = []
    face_tiles = 0
    for scale in detector.pyramid_scales(height, width):
        level_w, level_h = int(math.ceil(width * scale)), int(math.ceil(height * scale))
        if level_w < PNET_TILE or level_h < PNET_TILE:
            break
        level = resize(image, level_w, level_h)

        for box in faces:
            side = max(box[2] - box[0], box[3] - box[1]) * scale
            if face_tiles >= PNET_FACE_TILES_PER_PHOTO or not 12 <= side <= PNET_TILE - 4:
                continue
            cx, cy = (box[0] + box[2]) / 2 * scale, (box[1] + box[3]) / 2 * scale
            x = int(np.clip(round(cx - PNET_TILE / 2), 0, level_w - PNET_TILE))
            y = int(np.clip(round(cy - PNET_TILE / 2), 0, level_h - PNET_TILE))
            tiles.append(level[y : y + PNET_TILE, x : x + PNET_TILE])
            face_tiles += 1

        for _ in range(PNET_RANDOM_TILES_PER_LEVEL):
            x = int(rng.integers(0, level_w - PNET_TILE + 1))
            y = int(rng.integers(0, level_h - PNET_TILE + 1))
            tiles.append(level[y : y + PNET_TILE, x : x + PNET_TILE])
    return tiles


def _sample_candidates(boxes: np.ndarray, scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Return the highest-scored candidate boxes plus a random sample of the others."""
    order = np.argsort(-scores)
    top, rest = order[:TOP_CANDIDATES_PER_PHOTO], order[TOP_CANDIDATES_PER_PHOTO:]
    if len(rest) > RANDOM_CANDIDATES_PER_PHOTO:
        rest = rng.choice(rest, RANDOM_CANDIDATES_PER_PHOTO, replace=False)
    return boxes[np.concatenate([top, rest]).astype(int)]


def stage_windows(detector, stage: str, photos: Sequence[tuple[np.ndarray, Sequence]], spec: InputSpec,
                  seed: int = 0) -> np.ndarray:
    """Return the input batch of MTCNN ``stage`` for ``photos`` (BGR image, face boxes), as the detector feeds it.

    NOTE: the candidate windows come from the runtime's installed MTCNN
    (its private ``_propose``, ``_refine`` and ``_patches`` steps), not from
    the earlier stages of the model being converted. Both are MTCNN cascades
    with the same thresholds, so the windows are alike but not identical.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown MTCNN stage {stage!r}; expected one of {STAGES}")
    rng = np.random.default_rng(seed)
    windows: list[np.ndarray] = []
    for image_bgr, faces in photos:
        if stage == "pnet":
            windows += _pnet_tiles(detector, image_bgr, faces, rng)
            continue

        image_rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        boxes, scores = detector._propose(image_rgb)
        if stage == "onet":
            boxes, scores = detector._refine(image_rgb, boxes)
        if len(boxes) == 0:
            continue
        size = spec.width
        patches = detector._patches(image_rgb, _sample_candidates(boxes, scores, rng), size)
        windows += [patch[:, :, ::-1] for patch in patches]  # back to BGR, which make_batch expects

    if not windows:
        raise ValueError(f"no {stage} windows could be cut from {len(photos)} photo(s)")
    logger.info("%s: %d windows from %d photo(s) cut by the runtime's MTCNN", stage, len(windows), len(photos))
    return _network_frame(windows, spec)
