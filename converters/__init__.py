"""Host-side converters: turn a trained model file into an edge-runtime model package.

This package runs on a workstation and needs the ``convert`` extra
(``pip install 'edge-runtime[convert]'``). Device-side code never imports it.
The entry points are ``converters.cli.main`` (the ``edge-convert`` command)
and ``converters.pipeline.convert``.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
