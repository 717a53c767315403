"""Exporters, one module per target format: ``onnx``, ``openvino`` and ``tflite``.

Each exporter writes one variant file for a precision (fp32, fp16, int8) and
returns the paths it wrote, the main file first.
"""

TARGETS = ("onnx", "openvino", "tflite")
PRECISIONS = ("fp32", "fp16", "int8")
