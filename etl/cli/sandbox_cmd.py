"""``bulkcapture sandbox``: serve the local API simulator (etl/sandbox) in the foreground."""

from __future__ import annotations

from pathlib import Path

import click

from etl.cli.common import run_command
from etl.config import ENV_API_KEY, ENV_PASSWORD, ENV_USERNAME
from etl.sandbox.server import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    SandboxConfig,
    serve_forever,
)

_RATE = click.FloatRange(0.0, 1.0)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on; 0 picks a free one (the printed URL tells which).")
@click.option("--username", envvar=ENV_USERNAME, show_envvar=True,
              help="Basic-auth username the sandbox accepts.")
@click.option("--password", envvar=ENV_PASSWORD, show_envvar=True,
              help="Basic-auth password the sandbox accepts.")
@click.option("--api-key", envvar=ENV_API_KEY, show_envvar=True,
              help="An API key accepted as the Basic username with an empty password.")
@click.option("--orders", "orders_file", type=click.Path(path_type=Path),
              help="Order book, .csv or .json: order_id, order_amount, purchase_currency, "
                   "status, fraud_status, expires_at.")
@click.option("--auto-authorize", is_flag=True,
              help="Authorise an unknown order on first sight, for the first requested amount "
                   "times --authorize-factor.")
@click.option("--authorize-factor", default=1.0, show_default=True, type=click.FloatRange(1.0),
              help="Auto-authorised amount = first capture amount x this.")
@click.option("--currency", default="EUR", show_default=True,
              help="Currency of auto-authorised orders and order book rows without one.")
@click.option("--country", default="DE", show_default=True, help="purchase_country likewise.")
@click.option("--expiry-days", default=28.0, show_default=True, type=click.FloatRange(0),
              help="Authorisations expire this many days after creation.")
@click.option("--no-check-line-sum", is_flag=True,
              help="Accept order lines that do not add up to captured_amount.")
@click.option("--rate-limit", default=0, show_default=True, type=click.IntRange(0),
              help="Requests per second before 429 TOO_MANY_REQUESTS; 0 = off.")
@click.option("--fail-rate", default=0.0, type=_RATE, help="Share of calls answered 500/503.")
@click.option("--drop-rate", default=0.0, type=_RATE,
              help="Share of captures made and then answered by dropping the connection.")
@click.option("--latency-ms", default=0.0, type=click.FloatRange(0), help="Added latency.")
@click.option("--jitter-ms", default=0.0, type=click.FloatRange(0),
              help="Plus a uniform random 0..N ms.")
@click.option("--spike-rate", default=0.0, type=_RATE, help="Share of calls delayed --spike-ms.")
@click.option("--spike-ms", default=0.0, type=click.FloatRange(0), help="Latency of a spike.")
@click.option("--storm-every", default=0.0, type=click.FloatRange(0),
              help="Every N seconds, a 429 storm of --storm-seconds.")
@click.option("--storm-seconds", default=0.0, type=click.FloatRange(0),
              help="Length of each 429 storm.")
@click.option("--seed", type=int, help="Seed of the fault dice, for repeatable runs.")
@click.option("--fee-bps", default=249, show_default=True, type=click.IntRange(0),
              help="Settlement percentage fee per sale, in basis points.")
@click.option("--fee-fixed", default=25, show_default=True, type=click.IntRange(0),
              help="Settlement fixed fee per sale, in minor units.")
@click.option("--signed-csv-amounts", is_flag=True,
              help="Write debit rows (FEE, RETURN, ...) of the CSV report with a minus sign.")
@click.option("--uvloop/--no-uvloop", "use_uvloop", default=True, show_default=True,
              help="Serve on uvloop when installed.")
def sandbox(no_check_line_sum: bool, **options: object) -> None:
    """Serve a local simulator of the capture, order and settlement API.

    It accepts the credentials of BULKCAPTURE_API_USERNAME / BULKCAPTURE_API_PASSWORD (or
    BULKCAPTURE_API_KEY), so a run started from the same shell logs in; with none set it uses
    sandbox / sandbox and prints them. Stop it with Ctrl-C.

    Sandbox-only endpoints: GET /_sandbox/captures, GET /_sandbox/stats, POST /_sandbox/storm.

    \b
    Example:
        bulkcapture sandbox --auto-authorize --rate-limit 50 --drop-rate 0.01 --seed 7
        bulkcapture run shipments.csv --base-url http://127.0.0.1:8765 --results out.csv
    """
    config = SandboxConfig(check_line_sum=not no_check_line_sum, **options)  # type: ignore[arg-type]

    def start() -> None:
        config.credential_pairs()  # a half-given credential fails before anything is printed
        if config.uses_default_credentials:
            click.echo(f"No credentials configured: accepting username {DEFAULT_USERNAME!r}, "
                       f"password {DEFAULT_PASSWORD!r} (set {ENV_USERNAME} and {ENV_PASSWORD} "
                       "to choose).")
        serve_forever(config, click.echo)
        click.echo("Sandbox stopped.")

    run_command(start)
