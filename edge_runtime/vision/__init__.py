"""Face detection, face crops and per-face classification."""
