"""Shared CLI pieces: the error boundary and option bundles used by several commands."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn, TypeVar

import click

from etl.errors import BulkCaptureError

T = TypeVar("T")


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``Error: <message>`` on stderr and exit with ``code``; never a traceback."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def run_command(fn: Callable[[], T]) -> T:
    """Call a library function; a ``BulkCaptureError`` becomes ``Error: ...`` and exit 1."""
    try:
        return fn()
    except BulkCaptureError as exc:
        fail(str(exc))
