"""Errors raised by the converters, all subclasses of ``edge_runtime.errors.ConversionError``."""

from __future__ import annotations

from edge_runtime.errors import ConversionError

CONVERT_EXTRA = "pip install 'edge-runtime[convert]'"


class MissingDependencyError(ConversionError):
    """A package needed for one conversion step is not installed."""


class UnknownFormatError(ConversionError):
    """The source file's format is not recognised or not supported."""


class UntrustedPickleError(ConversionError):
    """A pickle would have to be unpickled (which runs code) without the user's consent."""


class ModelContractError(ConversionError):
    """The model disagrees with what the user declared: input size, label count, output count."""


class ParityError(ConversionError):
    """One or more variants drift from the source past their tolerance."""
