"""Face crops for int8 calibration and parity checks.

Crops come from a folder of photos that the user names, cut by the runtime's
own face detector so that the crops look like those the device will feed.
Each face keeps its photo and detection, so that ``crops_for_spec`` can cut
it again by the crop rule of a model's input contract (an aligned chip for
the dlib age and gender models, for example).
Without a folder, a built-in set is used: ``skimage/data/astronaut.png``
(NASA, public domain) taken from the scikit-image wheel with
``pip download --no-deps`` and checked against a pinned sha256. Augmentation
(flips, brightness, contrast, small rotations and scale changes) widens a
small set for calibration; parity uses the crops without augmentation.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import cv2
import numpy as np

from edge_runtime.errors import ConfigError, FetchError, ImageReadError, IntegrityError
from edge_runtime.manifest import InputSpec
from edge_runtime.samples import SAMPLES, WHEEL_REQUIREMENT, fetch_sample
from edge_runtime.vision.crop import crop_face
from edge_runtime.vision.types import Detection

from converters.errors import ConversionError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

BUILTIN_REQUIREMENT = WHEEL_REQUIREMENT
BUILTIN_MEMBER = SAMPLES["astronaut"].member
# Face box (x1, y1, x2, y2) in pixels of the 512x512 astronaut photo, without
# margins, measured by eye on the photo pinned in edge_runtime.samples. Used only when the
# runtime's detector is not installed.
BUILTIN_FACE_BOX = (178, 68, 272, 168)


def cache_dir() -> Path:
    """Directory for downloaded calibration files: ``$EDGE_CONVERT_CACHE`` or ``~/.cache/edge-convert``."""
    configured = os.environ.get("EDGE_CONVERT_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "edge-convert"


def read_image(path: Path) -> np.ndarray:
    """Decode ``path`` to a uint8 BGR image, whatever its channel count or bit depth."""
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None or image.size == 0:
        raise ImageReadError(f"{path}: cannot decode the image; remove it from the photo folder or re-save it")
    return image


def list_photos(folder: Path) -> list[Path]:
    """Return the image files directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConversionError(f"{folder}: photo folder not found; pass an existing directory of face photos")
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not photos:
        raise ConversionError(
            f"{folder}: no photos ({', '.join(IMAGE_SUFFIXES)}) found; pass a folder of face photos"
        )
    return photos


def fetch_builtin_photo(destination: Optional[Path] = None) -> Path:
    """Download the built-in calibration photo once and return its path.

    Raises:
        ConversionError: pip cannot download the wheel, or a sha256 differs from its pin.
    """
    destination = Path(destination) if destination else cache_dir()
    try:
        return fetch_sample("astronaut", destination)
    except (FetchError, IntegrityError) as exc:
        raise ConversionError(f"{exc}; pass --calibration-photos DIR to use your own photos") from exc


# A detector returns, for a BGR image, Detections or bare face boxes (x1, y1, x2, y2) in pixels.
FaceDetector = Callable[[np.ndarray], list[Detection | tuple[float, float, float, float]]]


DETECTOR_PREFERENCE = ("mtcnn", "blazeface-full-range", "blazeface-short-range")


def runtime_detector(store_root: Optional[Path] = None) -> Optional[FaceDetector]:
    """Return the runtime's face detector, or None when no detector package is installed.

    The first of DETECTOR_PREFERENCE installed in the model store at
    ``store_root`` (default: the runtime's default store) is loaded with the
    runtime's loader and ``create_detector``, so the crops match the device's.
    """
    try:
        from edge_runtime.loader import load_model
        from edge_runtime.models import ModelStore
        from edge_runtime.vision.detectors import create_detector
    except ImportError as exc:
        logger.warning("the runtime's face detector cannot be imported (%s)", exc)
        return None

    store = ModelStore(store_root) if store_root else ModelStore()
    for name in DETECTOR_PREFERENCE:
        if not store.is_installed(name):
            continue
        try:
            detector = create_detector(load_model(store.open(name)))
        except Exception as exc:  # a broken package must not stop the conversion; the fallback is logged
            logger.warning("face detector %r in %s cannot be loaded: %s", name, store.root, exc)
            continue
        logger.info("cutting face crops with the runtime's %s detector from %s", name, store.root)

        def detect(image: np.ndarray, detector=detector) -> list[Detection]:
            return list(detector.detect(image))

        detect.detector_name = f"edge-runtime {name} detector"  # type: ignore[attr-defined]
        return detect

    logger.warning(
        "no face detector package (%s) is installed in %s; run 'edge-runtime models pull mtcnn' so that "
        "crops are cut the way the device cuts them", ", ".join(DETECTOR_PREFERENCE), store.root,
    )
    return None


def center_box(image: np.ndarray, fraction: float = 0.6) -> tuple[float, float, float, float]:
    """Return a centred square box whose side is ``fraction`` of the image's shorter side."""
    height, width = image.shape[:2]
    side = fraction * min(width, height)
    cx, cy = width / 2.0, height / 2.0
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def cut(image: np.ndarray, box: Sequence[float]) -> Optional[np.ndarray]:
    """Cut ``box`` (no margins, clipped to the image) from ``image``; None when it is empty."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1 = max(0, x1), max(0, y1)
    x2, y2 = min(width, x2), min(height, y2)
    if x2 - x1 < 8 or y2 - y1 < 8:
        return None
    return image[y1:y2, x1:x2].copy()


@dataclass
class CropSet:
    """Face crops (uint8 BGR) and where they came from.

    ``distinct`` is the number of crops cut from photos, before augmentation
    added copies; None means every crop is distinct. ``faces`` contains the
    photo and detection behind each crop (in crop order) when they are
    known, so that ``crops_for_spec`` can cut them again by another crop rule.
    """

    crops: list[np.ndarray]
    origin: str
    detector: str
    distinct: Optional[int] = None
    faces: Optional[list[tuple[np.ndarray, Detection]]] = None

    def __len__(self) -> int:
        return len(self.crops)


def crops_from_photos(photos: Sequence[Path], detector: Optional[FaceDetector] = None,
                      max_faces_per_photo: int = 8) -> CropSet:
    """Detect faces in ``photos`` and return their crops.

    Without ``detector`` a centred square is cut from each photo, a rough
    stand-in that suits portrait photos only, and a warning is logged.
    """
    detector_name = getattr(detector, "detector_name", "custom detector") if detector else "centre-crop fallback"
    if detector is None:
        logger.warning("no face detector given; cutting a centred square from each photo instead")

    crops: list[np.ndarray] = []
    faces: list[tuple[np.ndarray, Detection]] = []
    for path in photos:
        try:
            image = read_image(path)
        except ImageReadError as exc:
            logger.warning("skipping %s", exc)
            continue

        found = detector(image) if detector else [center_box(image)]
        if not found:
            logger.info("%s: no face found, skipped", path.name)
        for face in found[:max_faces_per_photo]:
            detection = face if isinstance(face, Detection) else Detection(box=tuple(face), score=1.0)
            crop = cut(image, detection.box)
            if crop is not None:
                crops.append(crop)
                faces.append((image, detection))

    if not crops:
        raise ConversionError(
            f"no face crops could be cut from {len(photos)} photo(s); pass a folder with visible faces"
        )
    origin = str(Path(photos[0]).parent) if photos else "<none>"
    return CropSet(crops, origin, detector_name, faces=faces)


def builtin_crops(detector: Optional[FaceDetector] = None) -> CropSet:
    """Return the face crops of the built-in calibration photo (downloaded on first use)."""
    photo = fetch_builtin_photo()
    if detector is not None:
        found = crops_from_photos([photo], detector)
        return CropSet(found.crops, f"built-in {BUILTIN_MEMBER} ({BUILTIN_REQUIREMENT})", found.detector,
                       faces=found.faces)

    image = read_image(photo)
    crop = cut(image, BUILTIN_FACE_BOX)
    assert crop is not None
    faces = [(image, Detection(box=BUILTIN_FACE_BOX, score=1.0))]
    return CropSet([crop], f"built-in {BUILTIN_MEMBER} ({BUILTIN_REQUIREMENT})", "pinned face box", faces=faces)


def crops_for_spec(crop_set: CropSet, spec: InputSpec) -> list[np.ndarray]:
    """Return the crops of ``crop_set`` cut by the crop rule of the input contract ``spec``.

    A plain ``box`` rule (no margin, no eye alignment) returns the detector
    crops as they are. ``square_box``, ``aligned_chip`` and ``box`` with a
    margin or eye alignment cut each face again from its photo with the
    runtime's ``crop_face``, already resized to the input size. ``full_frame``
    also returns the detector crops unchanged.

    NOTE: ``full_frame`` marks detector stages (MTCNN's P-, R- and O-Net),
    which see pyramid windows and candidate boxes on a device. Face crops are
    only a stand-in for those, so their int8 calibration is approximate.

    Raises:
        ConversionError: the crop set has no photos and detections to cut
            from, or the rule needs landmarks that the detector did not give.
    """
    rule = spec.crop
    if rule.rule == "full_frame" or (rule.rule == "box" and rule.margin == 0.0 and not rule.align_eyes):
        return list(crop_set.crops)

    if crop_set.faces is None:
        raise ConversionError(
            f"the crops from {crop_set.origin} have no photos and detections, so the {rule.rule!r} crop rule "
            "cannot be applied; cut them with crops_from_photos or builtin_crops"
        )
    try:
        return [crop_face(image, detection, spec) for image, detection in crop_set.faces]
    except ConfigError as exc:
        raise ConversionError(
            f"the model's crop rule {rule.rule!r} cannot be applied to the crops from {crop_set.origin} "
            f"({crop_set.detector}): {exc}"
        ) from exc


def augment(crops: Sequence[np.ndarray], count: int, seed: int = 0) -> list[np.ndarray]:
    """Return ``count`` crops: the originals first, then random variants of them.

    Each variant gets a horizontal flip (half the time), brightness in [-40, 40]
    grey levels, contrast in [0.7, 1.3], a rotation in [-12, 12] degrees and a
    scale in [0.9, 1.15] about the crop centre.
    """
    rng = np.random.default_rng(seed)
    result = [c for c in crops[:count]]
    while len(result) < count:
        base = crops[int(rng.integers(len(crops)))]
        height, width = base.shape[:2]
        image = base[:, ::-1] if rng.random() < 0.5 else base

        angle = float(rng.uniform(-12, 12))
        scale = float(rng.uniform(0.9, 1.15))
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
        image = cv2.warpAffine(np.ascontiguousarray(image), matrix, (width, height), borderMode=cv2.BORDER_REFLECT)

        contrast = float(rng.uniform(0.7, 1.3))
        brightness = float(rng.uniform(-40, 40))
        image = np.clip((image.astype(np.float32) - 128) * contrast + 128 + brightness, 0, 255).astype(np.uint8)
        result.append(image)
    return result


def batches(array: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Yield ``array`` in slices of ``batch_size`` along the first axis."""
    for start in range(0, len(array), batch_size):
        yield array[start : start + batch_size]


def photos_of(crop_set: CropSet) -> list[tuple[np.ndarray, list[tuple[float, float, float, float]]]]:
    """Return each distinct photo of ``crop_set`` with the boxes of its faces, in first-face order."""
    photos: dict[int, tuple[np.ndarray, list]] = {}
    for image, detection in crop_set.faces or []:
        photos.setdefault(id(image), (image, []))[1].append(tuple(detection.box))
    return list(photos.values())


def partition_by_photo(crop_set: CropSet, roles: Sequence[str]) -> dict[str, CropSet]:
    """Split ``crop_set`` by photo: the i-th distinct photo's faces go to ``roles[i % len(roles)]``.

    Faces of one photo stay together, so no photo is in two parts. Returns
    one CropSet per distinct role; a role that gets no photo is missing.
    """
    if crop_set.faces is None:
        raise ConversionError(f"the crops from {crop_set.origin} have no photos to split by")
    order: dict[int, int] = {}
    parts: dict[str, tuple[list, list]] = {}
    for crop, (image, detection) in zip(crop_set.crops, crop_set.faces):
        index = order.setdefault(id(image), len(order))
        crops, faces = parts.setdefault(roles[index % len(roles)], ([], []))
        crops.append(crop)
        faces.append((image, detection))
    return {role: CropSet(crops, crop_set.origin, crop_set.detector, faces=faces)
            for role, (crops, faces) in parts.items()}
