"""Subcommands of the ``edge-runtime`` CLI, one module each."""
