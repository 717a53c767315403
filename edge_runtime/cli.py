"""Command-line entry point: ``edge-runtime <command> ...``.

Each command lives in its own module under ``edge_runtime.commands`` and
exposes ``register(subparsers)``, which adds its parser and sets ``handler``
to a function taking the parsed namespace and returning an exit code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import import_module
from typing import Optional, Sequence

from edge_runtime import __version__
from edge_runtime.errors import EdgeRuntimeError

logger = logging.getLogger(__name__)

COMMAND_MODULES = ("models", "backends", "analyze", "run")

EXIT_ERROR = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-runtime",
        description="Facial expression and attribute recognition on edge boards, published over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"edge-runtime {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level for messages on stderr (default: INFO)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        import_module(f"edge_runtime.commands.{name}").register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )

    try:
        return int(args.handler(args) or 0)
    except EdgeRuntimeError as exc:
        print(f"edge-runtime: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("edge-runtime: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`); stop quietly.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
