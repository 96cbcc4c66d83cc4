"""The command line: the only package that imports click. Thin commands over library functions.

Each command lives in its own module and is registered here. Library errors
(``BulkCaptureError``) become ``click.ClickException`` at one place, ``run_command``.
"""

from __future__ import annotations

import click

from etl import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="bulkcapture")
def main() -> None:
    """bulkcapture: capture shipped orders through the Order Management API, exactly once.

    \b
    Example, the nightly job:
        bulkcapture run shipments.parquet --results captures.parquet
    """


def _register() -> None:
    # Imported here so that each command module can import `main`'s helpers without a cycle.
    from etl.cli import ledger_cmd, reconcile_cmd, run_cmd, sandbox_cmd, validate_cmd

    main.add_command(validate_cmd.validate)
    main.add_command(run_cmd.run)
    main.add_command(ledger_cmd.ledger)
    main.add_command(sandbox_cmd.sandbox)
    main.add_command(reconcile_cmd.reconcile_command)
    main.add_command(reconcile_cmd.settlements)


_register()
