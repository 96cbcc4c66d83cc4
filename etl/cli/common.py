"""Shared CLI pieces: the error boundary, option bundles, and summary output."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from etl.config import Settings, load_config
from etl.errors import BulkCaptureError
from etl.summary import RunSummary, render_text

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


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


def input_options(fn: F) -> F:
    """INPUT... plus the options that say how to read it."""
    for deco in reversed([
        click.argument("inputs", nargs=-1, required=True, metavar="INPUT..."),
        click.option("--columns", type=click.Path(path_type=Path, dir_okay=False),
                     help="TOML file mapping the export's column names onto bulkcapture's."),
        click.option("--amounts", type=click.Choice(["minor", "major"]), default=None,
                     help="Amount columns in integer minor units (default) or decimal major "
                          "units, converted exactly by the currency's ISO 4217 exponent."),
        click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False),
                     help="TOML file with any setting but secrets."),
        click.option("--summary-json", type=click.Path(path_type=Path, dir_okay=False),
                     help="Also write the summary as JSON to this file."),
    ]):
        fn = deco(fn)
    return fn


def check_outputs(**paths: Path | None) -> None:
    """Pre-flight for side outputs (``summary_json=…``, ``rejects=…``): fail before any work."""
    from etl.results import check_writable

    for name, path in paths.items():
        if path is not None:
            option = "--" + name.replace("_", "-")
            try:
                check_writable(path, f"{option[2:]} file", option)
            except BulkCaptureError as exc:
                fail(str(exc))


def settings_from(config_file: Path | None, **options: Any) -> Settings:
    """Defaults, overridden by the config file, overridden by options given on the command line."""
    data = run_command(lambda: load_config(config_file))
    known = set(Settings.__dataclass_fields__)
    file_settings = {k: v for k, v in data.items() if k in known}
    for key in ("columns", "ledger"):
        if isinstance(file_settings.get(key), str):
            file_settings[key] = Path(file_settings[key])
    return Settings().with_overrides(**file_settings).with_overrides(
        **{k: v for k, v in options.items() if k in known})


def emit_summary(summary: RunSummary, summary_json: Path | None) -> None:
    click.echo(render_text(summary))
    if summary_json is not None:
        run_command(lambda: summary.write_json(summary_json))
