"""Inference backends behind one small interface; see ``base`` and ``registry``."""

from edge_runtime.backends.base import Backend, Session, SessionOptions, TensorSpec
from edge_runtime.backends.registry import BackendInfo, backend_names, describe_backends, get_backend

__all__ = [
    "Backend",
    "BackendInfo",
    "Session",
    "SessionOptions",
    "TensorSpec",
    "backend_names",
    "describe_backends",
    "get_backend",
]
