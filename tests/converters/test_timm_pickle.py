"""timm full-model pickles saved the way HSEmotion saved them, with random weights.

Three pickles of EfficientNet-B0: one that runs under the installed timm, one
whose DepthwiseSeparableConv blocks lack the attributes newer timm reads
(``conv_s2d``, ``bn_s2d``), and one whose blocks are pickled under the old
module path ``timm.models.efficientnet_blocks``, which timm >= 0.9 no longer
has. The last two must be rebuilt from their state dicts.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from tests.converters.conftest import require_tensorflow, require_torch

pytestmark = [pytest.mark.convert, pytest.mark.shared_data]


def _b0(torch, timm, classes: int):
    torch.manual_seed(classes)
    model = timm.create_model("efficientnet_b0", pretrained=False)
    # HSEmotion replaced the head with a Sequential holding one Linear layer.
    model.classifier = torch.nn.Sequential(torch.nn.Linear(model.num_features, classes))
    return model.eval()


@pytest.fixture(scope="module")
def pickles(tmp_path_factory) -> dict[str, Path]:
    require_torch()
    import timm
    import torch
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv

    directory = tmp_path_factory.mktemp("pickles")
    paths = {}

    paths["current"] = directory / "enet_b0_8.pt"
    torch.save(_b0(torch, timm, 8), paths["current"])

    model = _b0(torch, timm, 8)
    for module in model.modules():
        if isinstance(module, DepthwiseSeparableConv):
            for attribute in ("conv_s2d", "bn_s2d"):
                module.__dict__.pop(attribute, None)
                module._modules.pop(attribute, None)
    paths["missing_attributes"] = directory / "enet_b0_8_old_attrs.pt"
    torch.save(model, paths["missing_attributes"])

    old_path = "timm.models.efficientnet_blocks"
    shim = types.ModuleType(old_path)
    shim.DepthwiseSeparableConv = DepthwiseSeparableConv
    original = DepthwiseSeparableConv.__module__
    sys.modules[old_path] = shim
    DepthwiseSeparableConv.__module__ = old_path
    try:
        paths["old_module"] = directory / "enet_b0_8_old_module.pt"
        torch.save(_b0(torch, timm, 8), paths["old_module"])
    finally:
        DepthwiseSeparableConv.__module__ = original
        del sys.modules[old_path]

    paths["va_mtl"] = directory / "enet_b0_8_va_mtl.pt"
    torch.save(_b0(torch, timm, 10), paths["va_mtl"])

    paths["state_dict"] = directory / "weights_only.pt"
    torch.save(_b0(torch, timm, 8).state_dict(), paths["state_dict"])
    return paths


def _expressions(shared_data: Path) -> list[str]:
    return ["--calibration-photos", str(shared_data / "expressions"), "--parity-count", "16"]


def test_pickle_without_trust_rejected(pickles, run_convert):
    run = run_convert(pickles["current"])

    assert run.exit_code == 1
    assert "--trust-pickle" in run.stderr


def test_current_pickle_used_as_is(pickles, run_convert, shared_data, detector_store):
    run = run_convert(pickles["current"], "--trust-pickle", "--targets", "onnx,openvino",
                      "--model-store", str(detector_store), *_expressions(shared_data))

    assert run.exit_code == 0, run.stderr
    notes = " ".join(run.report["source"]["notes"])
    assert "used as is" in notes
    assert "rebuilt" not in notes
    assert all(v["passed"] for v in run.report["variants"])


@pytest.mark.parametrize("kind", ["missing_attributes", "old_module"])
def test_old_pickle_rebuilt(pickles, run_convert, shared_data, kind):
    require_tensorflow()

    run = run_convert(pickles[kind], "--trust-pickle", *_expressions(shared_data))

    assert run.exit_code == 0, run.stderr
    notes = " ".join(run.report["source"]["notes"])
    assert "rebuilt as 'efficientnet_b0'" in notes
    if kind == "old_module":
        assert "timm.models.efficientnet_blocks.DepthwiseSeparableConv" in notes
    else:
        assert "conv_s2d" in notes
    assert {v["format"] for v in run.report["variants"]} == {"onnx", "openvino", "tflite"}
    for variant in run.report["variants"]:
        assert variant["passed"], variant
        assert max(variant["max_abs_diff"].values()) <= 1e-4


def test_rebuilt_pickle_matches_original_weights(pickles, tmp_path):
    """The rebuilt model computes what the pickle computes under the timm that made it."""
    require_torch()
    from converters.sources import LoadOptions, load_source

    rebuilt = load_source(pickles["missing_attributes"], LoadOptions(trust_pickle=True)).stages[0]
    current = load_source(pickles["current"], LoadOptions(trust_pickle=True)).stages[0]
    batch = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)

    # Both pickles were made from the same seed, so their weights are equal.
    np.testing.assert_allclose(rebuilt.reference(batch)[0], current.reference(batch)[0], atol=1e-6)


def test_va_mtl_heads_features_and_baked_preprocessing(pickles, run_convert, shared_data):
    require_tensorflow()
    from edge_runtime.manifest import AFFECTNET_8, load_manifest

    run = run_convert(pickles["va_mtl"], "--trust-pickle", "--features-output", "--preprocessing-in-graph",
                      "--precisions", "fp32,fp16", *_expressions(shared_data))

    assert run.exit_code == 0, run.stderr
    manifest = load_manifest(run.output)
    heads = {head.name: head for head in manifest.outputs}
    assert list(heads) == ["emotion", "valence", "arousal", "features"]
    assert heads["emotion"].columns == (0, 8)
    assert heads["emotion"].labels == list(AFFECTNET_8)
    assert heads["valence"].columns == (8, 9)
    assert heads["arousal"].columns == (9, 10)
    assert heads["features"].tensor == 1
    assert manifest.input.preprocessing_in_graph is True
    assert manifest.input.dtype == "uint8"
    assert len(run.report["variants"]) == 6
    for variant in run.report["variants"]:
        assert variant["passed"], variant
        assert set(variant["max_abs_diff"]) == {"logits", "features"}


def test_baked_preprocessing_runs_uint8_crop(pickles, run_convert, shared_data, tmp_path):
    require_tensorflow()
    from converters.calibration import center_box, cut, read_image
    from converters.preprocess import make_batch
    from converters.sources import LoadOptions, load_source
    from edge_runtime.backends import get_backend
    from edge_runtime.manifest import load_manifest

    run = run_convert(pickles["va_mtl"], "--trust-pickle", "--features-output", "--preprocessing-in-graph",
                      "--targets", "onnx,tflite", *_expressions(shared_data))
    assert run.exit_code == 0, run.stderr
    manifest = load_manifest(run.output)
    image = read_image(shared_data / "expressions" / "london_024_neutral.jpg")
    crop = cut(image, center_box(image, 0.5))

    # The source model on the float tensor the runtime would have made without in-graph preprocessing.
    float_spec = manifest.input.model_copy(update={"preprocessing_in_graph": False, "dtype": "float32"})
    plain = load_source(pickles["va_mtl"], LoadOptions(trust_pickle=True, features_output=True)).stages[0]
    expected_logits, expected_features = plain.reference(make_batch([crop], float_spec))

    pixels = make_batch([crop], manifest.input)
    assert pixels.dtype == np.uint8
    assert pixels.shape == (1, 224, 224, 3)
    for variant, backend in (("enet_b0_8_va_mtl-fp32.onnx", "onnxruntime"), ("enet_b0_8_va_mtl-fp32.tflite", "tflite")):
        with get_backend(backend).load(run.output / variant) as session:
            logits, features = session.run(pixels)
        assert logits.shape == (1, 10)
        assert features.shape == (1, 1280)
        np.testing.assert_allclose(logits, expected_logits, atol=1e-4)
        np.testing.assert_allclose(features, expected_features, atol=1e-4)


def test_state_dict_file_rejected(pickles, run_convert):
    run = run_convert(pickles["state_dict"], "--trust-pickle")

    assert run.exit_code == 1
    assert "state dict, not a pickled model" in run.stderr


def test_report_json_and_table_agree(pickles, run_convert, shared_data):
    run = run_convert(pickles["current"], "--trust-pickle", "--targets", "onnx", *_expressions(shared_data))

    assert run.exit_code == 0, run.stderr
    table = (run.output / "parity.txt").read_text()
    report = json.loads((run.output / "parity.json").read_text())
    assert "enet_b0_8-fp32.onnx" in table
    assert "onnxruntime" in table
    assert report["variants"][0]["latency_ms_median"] > 0
    assert report["source_latency_ms"]["main"] > 0
    assert report["machine"]["logical_cpus"] >= 1
