"""Command-line options that several subcommands share, defined once."""

from __future__ import annotations

import argparse
from pathlib import Path

STORE_HELP = (
    "model store directory (default: $EDGE_RUNTIME_MODELS, else $STATE_DIRECTORY/models, "
    "else $XDG_DATA_HOME/edge-runtime/models)"
)
PROFILE_HELP = "device profile name or YAML path (default: detected from this machine)"


def add_store_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--store DIR`` to ``parser``."""
    parser.add_argument("--store", type=Path, metavar="DIR", help=STORE_HELP)


def add_profile_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--profile NAME`` to ``parser``."""
    parser.add_argument("--profile", metavar="NAME", help=PROFILE_HELP)
