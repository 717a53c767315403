"""The capture service: frame sources, face tracking, windowed aggregation and MQTT publishing."""

from edge_runtime.capture.aggregation import WindowAggregator, WindowSummary
from edge_runtime.capture.mqtt import MqttPublisher
from edge_runtime.capture.runner import Runner, RunSummary, open_service
from edge_runtime.capture.source import Frame, FrameSource, SourceKind
from edge_runtime.capture.tracking import IouTracker

__all__ = [
    "Frame",
    "FrameSource",
    "IouTracker",
    "MqttPublisher",
    "RunSummary",
    "Runner",
    "SourceKind",
    "WindowAggregator",
    "WindowSummary",
    "open_service",
]
