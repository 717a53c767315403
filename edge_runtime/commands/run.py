"""Placeholder until the run command lands."""


def register(subparsers) -> None:
    pass
