"""Subcommands of ``hf-select``; each module has ``register(subparsers)``."""
