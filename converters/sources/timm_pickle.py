"""timm full-model pickles, as HSEmotion publishes them (``torch.save(model)``).

Unpickling runs code from the file, so it happens only with ``--trust-pickle``
or when the file's sha256 is pinned in the runtime's catalog.

Pickles made with timm < 0.9 often do not run under a newer timm: module
paths moved (``timm.models.efficientnet_blocks`` became
``_efficientnet_blocks``) and blocks gained attributes their ``forward``
reads (``DepthwiseSeparableConv.conv_s2d``). The loader therefore:

1. unpickles with every class that no longer resolves replaced by an empty
   ``torch.nn.Module`` stand-in, which keeps its parameters and buffers;
2. runs the model once on a zero batch; if that works, the pickle is used as is;
3. otherwise rebuilds the architecture in the installed timm (named by
   ``--arch`` or by the pickle's ``pretrained_cfg``/``default_cfg``), puts the
   pickled classifier module in place and loads the pickle's state dict,
   refusing if any parameter is missing or left over.

The SourceModel's notes record which path was taken.

HSEmotion conventions used as defaults: RGB input, NCHW, ImageNet mean
(0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) after scaling to 0..1,
input size from the architecture's pretrained config (224 for B0, 260 for
B2). A classifier with 8 outputs uses the AffectNet 8-class order, 7 outputs
the 7-class order, and 10 outputs (the ``va_mtl`` models) are the 8 emotion
logits followed by valence and arousal.
"""

from __future__ import annotations

import logging
import pickle
import re
import types
from pathlib import Path
from typing import Optional

import numpy as np

from edge_runtime.manifest import AFFECTNET_7, AFFECTNET_8, OutputHead, Provenance, Task, sha256_file

from converters import contract
from converters.deps import require
from converters.errors import ConversionError, ModelContractError, UntrustedPickleError
from converters.source_model import SourceModel
from converters.sources import LoadOptions
from converters.sources.torch_export import torch_stage

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _stub_pickle_module(torch, stubbed: list[str]) -> types.ModuleType:
    """Return a pickle module whose Unpickler replaces unresolvable classes with nn.Module stand-ins."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module_name: str, name: str):
            try:
                return super().find_class(module_name, name)
            except (ImportError, AttributeError):
                stubbed.append(f"{module_name}.{name}")

                def forward(self, *args, **kwargs):
                    raise RuntimeError(f"{module_name}.{name} does not exist in the installed timm")

                return type(name, (torch.nn.Module,), {"__module__": module_name, "forward": forward})

    module = types.ModuleType("edge_convert_stub_pickle")
    module.Unpickler = Unpickler
    module.load = pickle.load
    module.__dict__.update({k: getattr(pickle, k) for k in ("Pickler", "dump", "dumps", "loads", "HIGHEST_PROTOCOL")})
    return module


def _unpickle(torch, path: Path) -> tuple[object, list[str]]:
    stubbed: list[str] = []
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False,
                         pickle_module=_stub_pickle_module(torch, stubbed))
    except Exception as exc:
        raise ConversionError(f"{path}: cannot unpickle the file with torch.load: {exc}") from exc
    return obj, sorted(set(stubbed))


def _architecture(model, options: LoadOptions, path: Path) -> str:
    if options.architecture:
        return options.architecture
    for attribute in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(model, attribute, None)
        if isinstance(cfg, dict):
            if cfg.get("architecture"):
                return str(cfg["architecture"])
            url = cfg.get("url") or ""
            match = re.match(r"([a-z0-9_]+?)-[0-9a-f]{6,}\.pth$", url.rsplit("/", 1)[-1])
            if match:
                return match.group(1)
    raise ConversionError(
        f"{path}: the pickled modules do not run under the installed timm and the pickle does not name its "
        "architecture; pass --arch with the timm model name, e.g. --arch tf_efficientnet_b0"
    )


def _classifier_path(model) -> Optional[str]:
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    name = cfg.get("classifier") if isinstance(cfg, dict) else None
    if isinstance(name, (list, tuple)):
        name = name[0]
    return name or None


def _get_submodule(module, dotted: str):
    for part in dotted.split("."):
        module = getattr(module, part)
    return module


def _set_submodule(module, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for part in parents:
        module = getattr(module, part)
    setattr(module, last, value)


def _rebuild(timm, torch, pickled, architecture: str, path: Path):
    """Create ``architecture`` in the installed timm and load the pickle's weights into it."""
    state = pickled.state_dict()
    try:
        rebuilt = timm.create_model(architecture, pretrained=False)
    except Exception as exc:
        raise ConversionError(f"{path}: timm {timm.__version__} cannot create architecture {architecture!r}: {exc}; "
                              "pass the right name with --arch") from exc

    classifier = _classifier_path(rebuilt)
    if classifier:
        try:
            _set_submodule(rebuilt, classifier, _get_submodule(pickled, classifier))
        except AttributeError:
            logger.debug("pickle has no module %s; keeping timm's classifier", classifier)

    result = rebuilt.load_state_dict(state, strict=False)
    expected = set(rebuilt.state_dict())
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in result.unexpected_keys if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ConversionError(
            f"{path}: the pickle's weights do not fit timm {timm.__version__}'s {architecture!r}: "
            f"{len(missing)} missing ({', '.join(missing[:5])}) and {len(unexpected)} unexpected "
            f"({', '.join(unexpected[:5])}) of {len(expected)} tensors; pass the right --arch"
        )
    return rebuilt.eval()


def _emotion_heads(width: int, options: LoadOptions, path: Path, features: bool) -> tuple[list[OutputHead], list[str]]:
    labels = options.labels
    if width == 10 and (labels is None or len(labels) == 8):
        labels = list(labels or AFFECTNET_8)
        heads = [
            OutputHead(name="emotion", tensor=0, columns=(0, 8), kind="logits", labels=labels),
            OutputHead(name="valence", tensor=0, columns=(8, 9), kind="regression"),
            OutputHead(name="arousal", tensor=0, columns=(9, 10), kind="regression"),
        ]
    else:
        if labels is None and width == 8:
            labels = list(AFFECTNET_8)
        elif labels is None and width == 7:
            labels = list(AFFECTNET_7)
        contract.check_labels(labels, width, "logits", path)
        heads = [OutputHead(name="emotion", tensor=0, kind="logits", labels=labels)]
    if features:
        heads.append(OutputHead(name="features", tensor=1, kind="features"))
    return heads, labels


def load_timm_pickle(path: Path, options: LoadOptions) -> SourceModel:
    """Load a ``torch.save(model)`` pickle of a timm classifier as a SourceModel."""
    sha256 = sha256_file(path)
    if not options.trust_pickle and not contract.catalog_pins(sha256):
        raise UntrustedPickleError(
            f"{path}: unpickling runs code stored in the file and its sha256 {sha256} is not pinned in the "
            "catalog; pass --trust-pickle if you trust where the file came from"
        )

    torch = require("torch", "load torch pickles")
    timm = require("timm", "load timm models")
    notes = [f"torch {torch.__version__}, timm {timm.__version__}"]

    pickled, stubbed = _unpickle(torch, path)
    if isinstance(pickled, dict):
        raise ConversionError(
            f"{path}: the file contains a state dict, not a pickled model; load it into the architecture and "
            "save the whole model with torch.save(model), or convert it to ONNX first"
        )
    if not isinstance(pickled, torch.nn.Module):
        raise _not_a_module_error(path, pickled)
    if stubbed:
        notes.append(f"classes missing from the installed timm were stubbed while unpickling: {', '.join(stubbed[:6])}")

    cfg = getattr(pickled, "pretrained_cfg", None) or getattr(pickled, "default_cfg", None) or {}
    size = tuple(cfg.get("input_size", (3, 224, 224))[1:]) if isinstance(cfg, dict) else (224, 224)
    width, height = options.input_size or (int(size[1]), int(size[0]))

    model = pickled.eval()
    probe = torch.zeros(1, 3, height, width)
    try:
        if stubbed:
            raise RuntimeError("stubbed classes cannot run")
        with torch.inference_mode():
            model(probe)
        notes.append("the pickled model runs under the installed timm; used as is")
    except Exception as exc:
        architecture = _architecture(pickled, options, path)
        logger.warning("%s: the pickled model does not run under timm %s (%s: %s); rebuilding %r from its state dict",
                       path, timm.__version__, type(exc).__name__, exc, architecture)
        model = _rebuild(timm, torch, pickled, architecture, path)
        notes.append(f"the pickled model does not run under timm {timm.__version__} ({type(exc).__name__}: {exc}); "
                     f"rebuilt as {architecture!r} and loaded the pickle's state dict (all tensors matched)")

    with torch.inference_mode():
        logits = model(probe)
    width_out = int(logits.shape[-1])
    task = Task(options.task) if options.task else Task.EMOTION
    heads, labels = _emotion_heads(width_out, options, path, options.features_output)

    base = contract.catalog_base(sha256, options, path)
    if base is not None and options.labels is None:
        heads = [h for h in base.outputs]
        labels = base.labels
        if options.features_output:
            heads.append(OutputHead(name="features", tensor=1, kind="features"))
        for head in heads:
            if head.labels is not None and head.columns is None:
                contract.check_labels(head.labels, width_out, head.name, path)
    input_spec = contract.build_input_spec(
        options, width=width, height=height, color="rgb", layout="nchw",
        scale=1.0 / 255.0, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="linear",
        base=base.input if base else None,
    )
    if input_spec.layout != "nchw" or input_spec.color == "gray":
        raise ModelContractError(f"{path}: timm models take NCHW colour input; drop --layout/--color or fix them")

    wrapper = _export_module(torch, model, options.features_output, input_spec if options.preprocessing_in_graph else None)
    if options.preprocessing_in_graph:
        input_spec = input_spec.model_copy(update={"preprocessing_in_graph": True, "dtype": "uint8"})
        sample = np.zeros((1, height, width, 3), dtype=np.uint8)
        input_name = "image_bgr"
    else:
        sample = np.zeros((1, 3, height, width), dtype=np.float32)
        input_name = "input"

    output_names = ["logits", "features"] if options.features_output else ["logits"]
    stage = torch_stage(wrapper, "main", input_name, output_names, sample)
    name = options.name or (base.name if base else re.sub(r"[^a-z0-9._-]+", "-", path.stem.lower()).strip("-") or "model")
    provenance = base.provenance if base else Provenance(source=f"torch pickle {path.name} (sha256 {sha256})", license="unknown")
    return SourceModel(
        name=name, kind="timm-pickle", task=task, input=input_spec, outputs=heads, labels=labels,
        stages=[stage], provenance=provenance,
        description=f"timm {type(model).__name__} converted from {path.name}", notes=notes,
        source_path=path, source_sha256=sha256,
    )


def _not_a_module_error(path: Path, obj: object) -> ConversionError:
    return ConversionError(f"{path}: the pickle contains a {type(obj).__name__}, not a torch.nn.Module; "
                           "only torch.save(model) files of timm classifiers are supported")


def _export_module(torch, model, features: bool, preprocessing):
    """Return a module computing the logits (and features) the way the exported graph should."""

    class ExportModule(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.features = features
            if preprocessing is not None:
                norm = preprocessing.normalization
                mean = torch.tensor(norm.mean, dtype=torch.float32).view(1, -1, 1, 1)
                std = torch.tensor(norm.std, dtype=torch.float32).view(1, -1, 1, 1)
                self.register_buffer("mean", mean)
                self.register_buffer("std", std)
                self.scale = float(norm.scale)
                self.to_rgb = preprocessing.color == "rgb"
            self.preprocess = preprocessing is not None

        def forward(self, x):
            if self.preprocess:
                # uint8 NHWC BGR crop -> float NCHW in the model's colour order, normalized.
                x = x.permute(0, 3, 1, 2).to(torch.float32)
                if self.to_rgb:
                    x = x.flip(1)
                x = (x * self.scale - self.mean) / self.std
            if not self.features:
                return self.model(x)
            pooled = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
            logits = self.model.get_classifier()(pooled)
            return logits, pooled

    return ExportModule()
