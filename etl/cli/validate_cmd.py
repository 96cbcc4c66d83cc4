"""``bulkcapture validate``: read and validate only."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from etl.cli.common import (
    check_outputs,
    emit_summary,
    input_options,
    run_command,
    settings_from,
)
from etl.pipeline import check_inputs


@click.command()
@input_options
@click.option("--rejects", type=click.Path(path_type=Path, dir_okay=False),
              help="Write one row per failed check (.csv, .parquet, .ndjson).")
def validate(inputs: tuple[str, ...], columns: Path | None, amounts: str | None,
             config_file: Path | None, summary_json: Path | None, rejects: Path | None) -> None:
    """Read and validate shipment exports; send nothing.

    Exit 0 when every capture is valid, 3 when some are invalid, 1 when the input cannot be read.

    \b
    Example:
        bulkcapture validate exports/2026-11-27/*.csv --rejects rejects.csv
    """
    settings = settings_from(config_file, columns=columns, amounts=amounts)
    check_outputs(summary_json=summary_json, rejects=rejects)
    summary = run_command(lambda: check_inputs(list(inputs), settings, rejects))
    emit_summary(summary, summary_json)
    sys.exit(summary.exit_code)
