"""``bulkcapture run``: the nightly job."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from etl.cli.common import emit_summary, fail, input_options, run_command, settings_from
from etl.pipeline import run_dry
from etl.results import default_results_path


@click.command()
@input_options
@click.option("--results", "results_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Results file (.parquet, .csv, .ndjson). Default: "
                   "<input>.captures.<date>.parquet in the working directory.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --results file.")
@click.option("--dry-run", is_flag=True,
              help="Everything but sending: results with status 'planned'.")
def run(inputs: tuple[str, ...], columns: Path | None, amounts: str | None,
        config_file: Path | None, summary_json: Path | None, results_path: Path | None,
        overwrite: bool, dry_run: bool) -> None:
    """Read, validate, plan and capture every valid capture; write the results file.

    Exit 0 when every capture is captured (or already was), 3 when some are invalid, rejected,
    failed or in conflict, 1 when an error stopped the run.

    \b
    Example, the nightly job (target and credentials in the environment):
        bulkcapture run shipments.parquet --results captures.parquet
    """
    settings = settings_from(config_file, columns=columns, amounts=amounts)
    path = results_path or default_results_path(list(inputs), datetime.now(UTC).date())
    if not dry_run:
        fail("sending is not available in this build yet: use --dry-run.")
    summary = run_command(lambda: run_dry(list(inputs), settings, path, overwrite))
    emit_summary(summary, summary_json)
    sys.exit(summary.exit_code)
