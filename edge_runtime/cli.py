"""Command-line entry point: ``edge-runtime <command> ...``.

Each command lives in its own module under ``edge_runtime.commands`` and
exposes ``register(subparsers)``, which adds its parser and sets ``handler``
to a function taking the parsed namespace and returning an exit code. A
command that also sets ``sysexits=True`` exits 78 for configuration errors
and 65 for model errors instead of 1 (see ``EXIT_STATUS_HELP``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import import_module
from typing import Optional, Sequence

from edge_runtime import __version__
from edge_runtime.errors import ConfigError, EdgeRuntimeError, ManifestError, ModelNotFoundError
from edge_runtime.service.journal import configure_logging, error_text

logger = logging.getLogger(__name__)

COMMAND_MODULES = ("models", "backends", "analyze", "run", "config", "service", "bench", "profile")

EXIT_ERROR = 1
EXIT_USAGE = 2
# sysexits.h codes, which the unit's RestartPreventExitStatus= lists so that
# systemd does not restart the service into the same error.
EXIT_MODEL = 65  # EX_DATAERR
EXIT_CONFIG = 78  # EX_CONFIG

EXIT_STATUS_HELP = """\
exit status:
  0    success
  1    an error; the message is on stderr
  2    invalid command-line arguments
  65   (run, config, service) a model is missing from the store, or its
       manifest or file checksums are invalid
  78   (run, config, service) the configuration is invalid
  130  interrupted by SIGINT
Other commands exit 1 for model and configuration errors too; 'edge-runtime
run --help' lists the statuses of the capture service.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-runtime",
        description="Facial expression and attribute recognition on edge boards, published over MQTT.",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    # Under systemd the lines go to the journal with a syslog priority prefix.
    configure_logging(args.log_level)

    try:
        return int(args.handler(args) or 0)
    except EdgeRuntimeError as exc:
        print(error_text(f"edge-runtime: error: {exc}"), file=sys.stderr)
        return error_exit_status(exc) if getattr(args, "sysexits", False) else EXIT_ERROR
    except KeyboardInterrupt:
        print("edge-runtime: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (e.g. `| head`); stop quietly.
        sys.stderr.close()
        return 0


def error_exit_status(exc: EdgeRuntimeError) -> int:
    """Return the exit status of an error for the commands that set ``sysexits`` (see ``EXIT_STATUS_HELP``)."""
    if isinstance(exc, ConfigError):
        return EXIT_CONFIG
    if isinstance(exc, (ManifestError, ModelNotFoundError)):
        return EXIT_MODEL
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
