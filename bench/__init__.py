"""Per-stage latency benchmark of edge-runtime; run it with ``python -m bench``."""
