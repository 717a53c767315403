"""Facial expression and attribute recognition on edge boards.

The device side of edge-runtime: model packages and their store, inference
backends, face detection and classification, and the capture loop that
publishes aggregated results over MQTT. Nothing here imports torch,
TensorFlow or the host-side ``converters`` package.
"""

__version__ = "0.1.0"
