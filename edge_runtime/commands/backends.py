"""``edge-runtime backends``: which inference backends can run on this machine."""

from __future__ import annotations

import argparse
import json

from edge_runtime.backends import describe_backends


def register(subparsers) -> None:
    parser = subparsers.add_parser("backends", help="list inference backends and whether they can run here")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    infos = describe_backends()
    if args.json:
        print(json.dumps([info.__dict__ for info in infos], indent=2))
        return 0

    for info in infos:
        formats = ",".join(info.formats) or "-"
        if info.available:
            print(f"{info.name:<12} available    {formats:<22} {info.version}")
        else:
            print(f"{info.name:<12} unavailable  {formats:<22} {info.reason}")
            if info.install_hint:
                print(f"{'':<12} fix: {info.install_hint}")
    return 0
