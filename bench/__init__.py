"""Benchmark scenarios and recorded results of edge-runtime; the harness is ``edge_runtime.benchmark``."""
