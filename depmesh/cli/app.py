"""The `depmesh` command group; each command group lives in its own module."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """depmesh: map and control the dependencies between models that feed each other."""
