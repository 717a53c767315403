"""Reference face-emotion pipelines for side-by-side comparison with edge-runtime (host side, may import torch)."""
