"""Placeholder until the analyze command lands."""


def register(subparsers) -> None:
    pass
