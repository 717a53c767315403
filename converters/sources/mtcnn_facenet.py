"""MTCNN face detector from facenet-pytorch's state dicts (``pnet.pt``, ``rnet.pt``, ``onet.pt``).

The three networks are defined here from the shapes of the state-dict
tensors, because installing facenet-pytorch would pull its own torch pin.
The state dicts hold tensors only, so they load with
``torch.load(weights_only=True)`` and need no ``--trust-pickle``.

Each stage is exported with the contract of the runtime's MTCNN detector,
which is that of the catalog's ``mtcnn`` package. The input is NHWC float,
normalized as ``(pixel - 127.5) / 128``, and contains the image transposed
(width and height swapped). P-Net returns its maps NHWC in that transposed
frame. facenet-pytorch's networks take ordinary NCHW images,
so the exported graph swaps the axes back on the way in (and, for P-Net, on
the way out). Output order per stage: boxes (4 offsets), then landmarks
(O-Net only, 5 x values then 5 y values), then scores (background, face).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edge_runtime.manifest import InputSpec, Normalization, OutputHead, Provenance, Task, sha256_file

from converters.deps import require
from converters.errors import ConversionError
from converters.source_model import SourceModel
from converters.sources import LoadOptions
from converters.sources.torch_export import torch_stage

logger = logging.getLogger(__name__)

STAGE_SIZES = {"pnet": 12, "rnet": 24, "onet": 48}
# Calibration and parity feed P-Net 48x48 pyramid tiles (or face crops without the runtime's
# MTCNN), which give 19x19 score maps.
PNET_SAMPLE_SIZE = 48


def _networks(nn, torch):
    """Return the P-Net, R-Net and O-Net classes; attribute names follow the state-dict keys."""

    def conv_block(module, index: int, in_channels: int, out_channels: int, kernel: int) -> None:
        setattr(module, f"conv{index}", nn.Conv2d(in_channels, out_channels, kernel_size=kernel))
        setattr(module, f"prelu{index}", nn.PReLU(out_channels))

    def max_pool(x, pool, padded: bool):
        """Run the ceil-mode ``pool``, or with ``padded`` the same pool as floor mode after edge padding.

        For the kernels and strides of these networks (2x2 stride 2, 3x3
        stride 2) a ceil-mode max pool equals a floor-mode one after
        repeating the last row and column once, for every input size. A
        window that reaches the copy also contains the edge value.
        """
        if not padded:
            return pool(x)
        return torch.nn.functional.max_pool2d(
            torch.nn.functional.pad(x, (0, 1, 0, 1), mode="replicate"), pool.kernel_size, pool.stride)

    class PNet(nn.Module):
        def __init__(self, padded_pool: bool = False) -> None:
            super().__init__()
            conv_block(self, 1, 3, 10, 3)
            self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
            conv_block(self, 2, 10, 16, 3)
            conv_block(self, 3, 16, 32, 3)
            self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
            self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)
            self.padded_pool = padded_pool

        def forward(self, x):
            # onnx2tf cannot convert the ceil-mode pool when height and width are dynamic, so the
            # export uses the padded form. Edge padding keeps int8 calibration ranges finite.
            x = max_pool(self.prelu1(self.conv1(x)), self.pool1, self.padded_pool)
            x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
            return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)

    class RNet(nn.Module):
        def __init__(self, padded_pool: bool = False) -> None:
            super().__init__()
            self.padded_pool = padded_pool
            conv_block(self, 1, 3, 28, 3)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            conv_block(self, 2, 28, 48, 3)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            conv_block(self, 3, 48, 64, 2)
            self.dense4 = nn.Linear(576, 128)
            self.prelu4 = nn.PReLU(128)
            self.dense5_1 = nn.Linear(128, 2)
            self.dense5_2 = nn.Linear(128, 4)

        def forward(self, x):
            x = max_pool(self.prelu1(self.conv1(x)), self.pool1, self.padded_pool)
            x = max_pool(self.prelu2(self.conv2(x)), self.pool2, self.padded_pool)
            x = self.prelu3(self.conv3(x))
            # The dense weights were trained on a column-major flatten (width before height).
            x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
            return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)

    class ONet(nn.Module):
        def __init__(self, padded_pool: bool = False) -> None:
            super().__init__()
            self.padded_pool = padded_pool
            conv_block(self, 1, 3, 32, 3)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            conv_block(self, 2, 32, 64, 3)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            conv_block(self, 3, 64, 64, 3)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            conv_block(self, 4, 64, 128, 2)
            self.dense5 = nn.Linear(1152, 256)
            self.prelu5 = nn.PReLU(256)
            self.dense6_1 = nn.Linear(256, 2)
            self.dense6_2 = nn.Linear(256, 4)
            self.dense6_3 = nn.Linear(256, 10)

        def forward(self, x):
            x = max_pool(self.prelu1(self.conv1(x)), self.pool1, self.padded_pool)
            x = max_pool(self.prelu2(self.conv2(x)), self.pool2, self.padded_pool)
            x = max_pool(self.prelu3(self.conv3(x)), self.pool3, self.padded_pool)
            x = self.prelu4(self.conv4(x))
            x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
            return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)

    return {"pnet": PNet, "rnet": RNet, "onet": ONet}


def _runtime_layout(nn, network, spatial_outputs: bool):
    """Wrap ``network`` to take transposed NHWC images (and return P-Net maps NHWC, transposed)."""

    class RuntimeLayout(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.network = network

        def forward(self, x):
            outputs = self.network(x.permute(0, 3, 2, 1))
            if spatial_outputs:
                return tuple(o.permute(0, 3, 2, 1) for o in outputs)
            return outputs

    return RuntimeLayout()


def load_mtcnn_facenet(directory: Path, options: LoadOptions) -> SourceModel:
    """Load facenet-pytorch's MTCNN weights from ``directory`` as a three-stage SourceModel."""
    torch = require("torch", "load the MTCNN state dicts")
    nn = torch.nn
    classes = _networks(nn, torch)

    stages = []
    hashes = []
    for name, cls in classes.items():
        path = directory / f"{name}.pt"
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ConversionError(f"{path}: cannot read the state dict: {exc}") from exc
        network = cls()
        try:
            network.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ConversionError(f"{path}: the tensors do not fit facenet-pytorch's {name}: {exc}") from exc
        # The exported graphs use edge padding and floor-mode pools (see max_pool). ONNX Runtime and
        # OpenVINO run either form, but the TFLite interpreter's XNNPACK delegate fails to prepare
        # the int8 PADV2 that onnx2tf writes for a ceil-mode pool of R-Net and O-Net.
        export_network = cls(padded_pool=True)
        export_network.load_state_dict(state, strict=True)
        hashes.append(f"{name}.pt {sha256_file(path)}")

        size = PNET_SAMPLE_SIZE if name == "pnet" else STAGE_SIZES[name]
        sample = np.zeros((1, size, size, 3), dtype=np.float32)
        names = ["boxes", "landmarks", "scores"] if name == "onet" else ["boxes", "scores"]
        # P-Net keeps a free height and width in every format; the runtime's TFLite session
        # allocates one interpreter per pyramid level's shape.
        spatial = name == "pnet"
        stage = torch_stage(
            _runtime_layout(nn, network.eval(), spatial), name, "input", names, sample,
            free_axes=(1, 2) if spatial else (),
            export_module=_runtime_layout(nn, export_network.eval(), spatial),
        )
        stage.input_spec = _input_spec(size)
        stage.detector_stage = name
        stages.append(stage)

    outputs = [
        OutputHead(name="boxes", tensor="boxes", kind="regression"),
        OutputHead(name="landmarks", tensor="landmarks", kind="regression"),
        OutputHead(name="scores", tensor="scores", kind="probabilities", labels=["background", "face"]),
    ]
    provenance = Provenance(
        source="facenet-pytorch state dicts " + "; ".join(hashes),
        url="https://pypi.org/project/facenet-pytorch/",
        license="MIT",
        license_notes="facenet-pytorch is MIT; its MTCNN weights descend from the MTCNN of Zhang et al. (2016).",
        citation="K. Zhang et al., Joint Face Detection and Alignment using Multi-task Cascaded Convolutional Networks, 2016",
    )
    return SourceModel(
        name=options.name or "mtcnn-facenet", kind="mtcnn-facenet", task=Task.FACE_DETECTION,
        input=_input_spec(STAGE_SIZES["onet"]), outputs=outputs, labels=None, stages=stages,
        provenance=provenance,
        description="MTCNN (P-Net, R-Net, O-Net) converted from facenet-pytorch's weights, with the input "
                    "contract of the runtime's MTCNN detector (transposed NHWC images).",
        notes=[f"torch {torch.__version__}; state dicts loaded with weights_only=True"],
        source_path=directory,
    )


def _input_spec(size: int) -> InputSpec:
    return InputSpec(
        width=size, height=size, color="rgb", layout="nhwc", dtype="float32",
        normalization=Normalization(scale=1.0, mean=[127.5], std=[128.0]),
        interpolation="area", crop={"rule": "full_frame"},
    )
