"""What the pocket-* commands share: their help flags, and how a refused input ends them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import click

from pocket_ggml.errors import PocketError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


@contextmanager
def exit_on_pocket_error(prefix: str) -> Iterator[None]:
    """A `PocketError` (an input the library refused) ends the command: its message as one line on stderr
    after `prefix`, and exit status 2, the status click gives a usage error."""
    try:
        yield
    except PocketError as e:
        click.echo(f"{prefix}{e}", err=True)
        sys.exit(2)
