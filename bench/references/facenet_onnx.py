"""Reference pipeline b: facenet-pytorch MTCNN and an hsemotion-onnx-style ONNX Runtime classifier.

The classifier follows the hsemotion-onnx package (``HSEmotionRecognizer``
of hsemotion-onnx 0.3). The face is cut from the RGB frame by the detector
box without margin and resized to 224x224 by ``cv2.resize`` with its
default bilinear filter. It is then divided by 255 in float64, normalized
channel by channel with the ImageNet mean and std, transposed to CHW and
cast to float32. The
faces of a frame are concatenated into one batch for one
``InferenceSession.run``, as ``predict_multi_emotions`` does, on ONNX
Runtime's CPU provider with its default session options.

The model is the plain ``torch.onnx.export`` of the random-weight stand-in
(``bench.references.stand_in``): its speed is that of the
``enet_b0_8_best_afew`` ONNX file, its outputs mean nothing.

Run: ``python -m bench.references.facenet_onnx --video FILE --frames N --cache DIR``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Optional, Sequence

import cv2
import numpy as np

from bench.references.common import FrameTimings, reference_parser, run_video, set_torch_threads, summarize, write_result
from bench.references.facenet_mtcnn import detect_faces, load_mtcnn
from bench.references.stand_in import INPUT_SIZE, ONNX_NAME

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess(face_rgb: np.ndarray) -> np.ndarray:
    """Return the (1, 3, 224, 224) float32 tensor of one RGB face crop."""
    pixels = cv2.resize(face_rgb, (INPUT_SIZE, INPUT_SIZE)) / 255.0
    for channel in range(3):
        pixels[..., channel] = (pixels[..., channel] - IMAGENET_MEAN[channel]) / IMAGENET_STD[channel]
    return pixels.transpose(2, 0, 1).astype(np.float32)[np.newaxis]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = reference_parser("python -m bench.references.facenet_onnx", __doc__.splitlines()[0])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    set_torch_threads(args.torch_threads)

    import onnxruntime
    import torch

    mtcnn = load_mtcnn()
    session = onnxruntime.InferenceSession(str(args.cache / ONNX_NAME), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def process(frame_bgr: np.ndarray, timings: FrameTimings) -> None:
        frame_rgb = np.ascontiguousarray(frame_bgr[..., ::-1])
        boxes = detect_faces(mtcnn, frame_rgb, timings)
        timings.faces = len(boxes)
        if not boxes:
            return

        start = time.perf_counter()
        batch = np.concatenate([preprocess(frame_rgb[y1:y2, x1:x2]) for x1, y1, x2, y2 in boxes], axis=0)
        middle = time.perf_counter()
        session.run(None, {input_name: batch})
        timings.stages["preprocess"] = (middle - start) * 1000.0
        timings.stages["classify"] = (time.perf_counter() - middle) * 1000.0

    def warmup(frame_bgr: np.ndarray) -> None:
        process(frame_bgr, FrameTimings())

    records, wall_s = run_video(args.video, args.frames, process, warmup)
    details = {
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "detector": "facenet-pytorch MTCNN (keep_all, defaults)",
        "classifier": "plain torch.onnx.export of the random-weight B0 (stand-in for enet_b0_8_best_afew)",
        "preprocessing": "cv2.resize 224x224 (bilinear), /255 and ImageNet mean/std in float64, CHW float32",
    }
    write_result(
        summarize("ref-onnx", "facenet-pytorch MTCNN + hsemotion-onnx-style ONNX Runtime B0", records, wall_s, details),
        args.output,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
