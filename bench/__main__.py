"""``python -m bench [options]``: the standard scenario, ``edge-runtime bench`` with its result recorded here.

Without ``--quick``, the files go to ``bench/results/<board>.json``, ``.csv``
and ``.png`` (``<board>`` as ``board_slug`` names this machine), unless
``--output-dir`` or ``--name`` is given. With ``--quick``, the command's
own defaults apply (``./bench-results/``, ignored by git, and no
``latest.json`` unless ``--latest``), so a smoke run never replaces a
record. Every option
of ``edge-runtime bench`` passes through. The standard set is
``python -m bench --video WolfgangLanger_Pexels.mp4``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from edge_runtime.benchmark.platform_info import board_slug, describe_platform
from edge_runtime.cli import main as cli_main

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _has_option(arguments: Sequence[str], option: str) -> bool:
    return any(argument == option or argument.startswith(option + "=") for argument in arguments)


def standard_arguments(argv: Sequence[str]) -> list[str]:
    """Return the ``edge-runtime`` arguments of the standard scenario for the options ``argv``."""
    arguments = list(argv)
    if "--quick" not in arguments:
        if not _has_option(arguments, "--output-dir"):
            arguments += ["--output-dir", str(RESULTS_DIR)]
        if not _has_option(arguments, "--name"):
            arguments += ["--name", board_slug(describe_platform())]
    return ["--log-level", "WARNING", "bench", *arguments]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the standard scenario with ``argv`` (default: the command line) and return the exit status."""
    return cli_main(standard_arguments(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
