"""Placeholder until the models command lands."""


def register(subparsers) -> None:
    pass
