"""Reference pipeline a: facenet-pytorch MTCNN and an HSEmotion-style torch classifier.

The classifier follows the hsemotion package (``HSEmotionRecognizer`` of
hsemotion 0.3). The face is cut from the RGB frame by the detector box
without margin and resized to 224x224 by torchvision's ``Resize`` on a PIL
image. ``ToTensor`` turns it into a tensor, which is normalized with the
ImageNet mean and std and run through the EfficientNet-B0 with its
classifier replaced by an identity. The logits are the features times the
Linear layer's weights plus its bias, computed in numpy. The model runs
under ``torch.no_grad()``, which hsemotion 0.3 leaves out, so this
reference is if anything faster than the package. All faces of a frame go
through the model as one batch, as ``predict_multi_emotions`` does.

The model is the random-weight stand-in of ``bench.references.stand_in``:
its speed is that of ``enet_b0_8_best_afew``, its outputs mean nothing.

Run: ``python -m bench.references.facenet_torch --video FILE --frames N --cache DIR``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Optional, Sequence

import numpy as np

from bench.references.common import FrameTimings, reference_parser, run_video, set_torch_threads, summarize, write_result
from bench.references.facenet_mtcnn import detect_faces, load_mtcnn
from bench.references.stand_in import INPUT_SIZE, PICKLE_NAME

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TorchEmotionClassifier:
    """The pickled B0 without its Linear head, plus that head as numpy weights."""

    def __init__(self, pickle_path) -> None:
        import torch
        from torchvision import transforms

        self.torch = torch
        model = torch.load(pickle_path, weights_only=False)
        linear = model.classifier[0] if isinstance(model.classifier, torch.nn.Sequential) else model.classifier
        self.weights = linear.weight.detach().numpy().T.copy()
        self.bias = linear.bias.detach().numpy().copy()
        model.classifier = torch.nn.Identity()
        self.model = model.eval()
        self.transform = transforms.Compose([
            transforms.Resize((INPUT_SIZE, INPUT_SIZE)),
            transforms.ToTensor(),
            transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD),
        ])

    def preprocess(self, faces_rgb: Sequence[np.ndarray]):
        """Return the (N, 3, 224, 224) float tensor of RGB face crops."""
        from PIL import Image

        return self.torch.stack([self.transform(Image.fromarray(face)) for face in faces_rgb])

    def logits(self, batch) -> np.ndarray:
        """Return the (N, 8) logits of a preprocessed batch."""
        with self.torch.no_grad():
            features = self.model(batch).numpy()
        return features @ self.weights + self.bias


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = reference_parser("python -m bench.references.facenet_torch", __doc__.splitlines()[0])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    set_torch_threads(args.torch_threads)

    import torch

    mtcnn = load_mtcnn()
    classifier = TorchEmotionClassifier(args.cache / PICKLE_NAME)

    def process(frame_bgr: np.ndarray, timings: FrameTimings) -> None:
        frame_rgb = np.ascontiguousarray(frame_bgr[..., ::-1])
        boxes = detect_faces(mtcnn, frame_rgb, timings)
        timings.faces = len(boxes)
        if not boxes:
            return

        start = time.perf_counter()
        batch = classifier.preprocess([frame_rgb[y1:y2, x1:x2] for x1, y1, x2, y2 in boxes])
        middle = time.perf_counter()
        classifier.logits(batch)
        timings.stages["preprocess"] = (middle - start) * 1000.0
        timings.stages["classify"] = (time.perf_counter() - middle) * 1000.0

    def warmup(frame_bgr: np.ndarray) -> None:
        process(frame_bgr, FrameTimings())

    records, wall_s = run_video(args.video, args.frames, process, warmup)
    details = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "detector": "facenet-pytorch MTCNN (keep_all, defaults)",
        "classifier": "timm efficientnet_b0, 8 classes, random weights (stand-in for enet_b0_8_best_afew)",
        "preprocessing": "PIL Resize 224x224 (bilinear), ToTensor, ImageNet Normalize",
    }
    try:
        import facenet_pytorch

        details["facenet_pytorch"] = getattr(facenet_pytorch, "__version__", "2.6.0")
    except ImportError:
        pass
    write_result(
        summarize("ref-torch", "facenet-pytorch MTCNN + HSEmotion-style torch B0", records, wall_s, details),
        args.output,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
