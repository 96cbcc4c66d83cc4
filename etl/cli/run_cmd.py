"""``bulkcapture run``: the nightly job."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import click

from etl.cli.common import (
    F,
    check_outputs,
    emit_summary,
    fail,
    input_options,
    run_command,
    settings_from,
)
from etl.config import (
    ENV_LEDGER,
    Credentials,
    Secret,
    Settings,
    credentials_from_env,
    default_ledger_path,
    resolve_base_url,
)
from etl.errors import ConfigError
from etl.pipeline import Target, run_batch, run_dry
from etl.progress import Progress, default_progress
from etl.results import default_results_path


def target_options(fn: F) -> F:
    """Where to send: --base-url, or --provider/--region/--playground (else the environment)."""
    for deco in reversed([
        click.option("--base-url", help="API base URL (https; http only to loopback). "
                                        "Env: BULKCAPTURE_BASE_URL."),
        click.option("--provider", type=click.Choice(["klarna", "kustom"]),
                     help="Use the provider's documented host instead of --base-url."),
        click.option("--region", type=click.Choice(["eu", "na", "oc"]), default=None,
                     help="Provider region (default eu)."),
        click.option("--playground", is_flag=True, help="The provider's test environment."),
        click.option("--timeout", type=click.FloatRange(min=0.1), default=None,
                     help="Seconds per request (default 30)."),
    ]):
        fn = deco(fn)
    return fn


@click.command()
@input_options
@target_options
@click.option("--results", "results_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Results file (.parquet, .csv, .ndjson). Default: "
                   "<input>.captures.<date>.parquet in the working directory.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --results file.")
@click.option("--dry-run", is_flag=True,
              help="Everything but sending: results with status 'planned'.")
@click.option("--rate", type=click.FloatRange(min=0.1), default=None,
              help="Requests per second (token bucket; default 50, the test environment's "
                   "limit; production allows 200).")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Requests in flight at most (default 32).")
@click.option("--max-attempts", type=click.IntRange(min=1), default=None,
              help="Attempts per capture for 429, 5xx and network errors (default 5).")
@click.option("--breaker", type=click.IntRange(min=1), default=None,
              help="Consecutive transient failures that stop the run (default 50).")
@click.option("--ledger", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="SQLite ledger. Env: BULKCAPTURE_LEDGER. Default: "
                   "$XDG_STATE_HOME/bulkcapture/ledger.sqlite (~/.local/state/...).")
@click.option("--lock-wait", type=click.FloatRange(min=0), default=0.0,
              help="Seconds to wait for another run holding the ledger (default: refuse).")
@click.option("--sandbox", is_flag=True,
              help="Run against an in-process sandbox with auto-authorised orders.")
@click.option("--sandbox-orders", type=click.Path(path_type=Path, dir_okay=False),
              help="With --sandbox: an order book (CSV/JSON) instead of auto-authorising all.")
@click.option("--sandbox-settlements", type=click.Path(path_type=Path, dir_okay=False),
              help="With --sandbox: after the run, fetch the sandbox's settlement transactions "
                   "(as 'settlements fetch' does) into this JSON file, for 'reconcile'.")
@click.option("--progress/--no-progress", default=True,
              help="Progress bar on a terminal, log lines otherwise (default on).")
def run(inputs: tuple[str, ...], columns: Path | None, amounts: str | None,
        config_file: Path | None, summary_json: Path | None, base_url: str | None,
        provider: str | None, region: str | None, playground: bool, timeout: float | None,
        results_path: Path | None, overwrite: bool, dry_run: bool, rate: float | None,
        concurrency: int | None, max_attempts: int | None, breaker: int | None,
        ledger: Path | None, lock_wait: float, sandbox: bool, sandbox_orders: Path | None,
        sandbox_settlements: Path | None, progress: bool) -> None:
    """Read, validate and plan every capture, capture the valid ones, write the results file.

    The target and credentials come from the environment (BULKCAPTURE_BASE_URL,
    BULKCAPTURE_API_USERNAME + BULKCAPTURE_API_PASSWORD or BULKCAPTURE_API_KEY) or from
    --base-url / --provider. Exit 0 when every capture is captured (or already was), 3 when some
    are invalid, rejected, failed or in conflict, 1 when an error stopped the run.

    \b
    Example, the nightly job:
        bulkcapture run shipments.parquet --results captures.parquet --rate 200
    Example, no account needed:
        bulkcapture run sample_data/shipments.csv --sandbox
    """
    settings = settings_from(config_file, columns=columns, amounts=amounts, rate=rate,
                             concurrency=concurrency, max_attempts=max_attempts,
                             breaker=breaker, ledger=ledger, timeout=timeout)
    path = results_path or default_results_path(list(inputs), datetime.now(UTC).date())
    check_outputs(summary_json=summary_json, sandbox_settlements=sandbox_settlements)
    if dry_run:
        summary = run_command(lambda: run_dry(list(inputs), settings, path, overwrite))
        emit_summary(summary, summary_json)
        sys.exit(summary.exit_code)
    bar: Progress | None = (default_progress() if progress else None)
    with _target(sandbox, sandbox_orders, base_url, provider, region, playground,
                 settings) as (target, settings):
        summary = run_command(lambda: run_batch(
            list(inputs), settings, target, path, overwrite=overwrite, lock_wait=lock_wait,
            progress=bar))
        if sandbox and sandbox_settlements and target is not None:
            run_command(lambda: _fetch_settlements(target, sandbox_settlements))
            click.echo(f"sandbox settlements: {sandbox_settlements}", err=True)
    emit_summary(summary, summary_json)
    if summary.aborted:
        fail(f"the run stopped: {summary.aborted} Results for what was done are in "
             f"{summary.results_path}.")
    sys.exit(summary.exit_code)


def _fetch_settlements(target: Target, out: Path) -> None:
    """Everything the sandbox settled, fetched over HTTP with the production client."""
    from etl.client import ApiClient
    from etl.settlements import fetch_settlements, write_settlements_json

    async def fetch() -> dict[str, list[dict[str, object]]]:
        async with ApiClient(target.base_url, target.credentials) as client:
            return await fetch_settlements(client, date(2000, 1, 1))

    write_settlements_json(asyncio.run(fetch()), out)


@contextlib.contextmanager
def _target(sandbox: bool, orders: Path | None, base_url: str | None, provider: str | None,
            region: str | None, playground: bool,
            settings: Settings) -> Iterator[tuple[Target | None, Settings]]:
    """The real target from options and environment, or an in-process sandbox."""
    if not sandbox:
        url = run_command(lambda: resolve_base_url(base_url, provider, region, playground))
        creds = run_command(credentials_from_env)
        if url and creds is None:
            fail("no credentials: set BULKCAPTURE_API_USERNAME and BULKCAPTURE_API_PASSWORD, "
                 "or BULKCAPTURE_API_KEY.")
        yield (Target(url, creds) if url and creds else None), settings
        return
    if base_url or provider:
        fail("--sandbox runs against the embedded sandbox: drop --base-url/--provider.")
    from etl.sandbox.server import SandboxConfig, run_sandbox_in_thread

    config = SandboxConfig.from_env(auto_authorize=orders is None, orders_file=orders)
    try:
        with run_sandbox_in_thread(config) as sb:
            click.echo(f"sandbox: {sb.url} (in-process, auto-authorised orders)"
                       if orders is None else f"sandbox: {sb.url} (orders from {orders})",
                       err=True)
            creds = Credentials(Secret(sb.username), Secret(sb.password))
            if settings.ledger is None and not os.environ.get(ENV_LEDGER):
                # Never mix sandbox captures into the ledger of real ones.
                sandbox_ledger = default_ledger_path().with_name("sandbox-ledger.sqlite")
                settings = settings.with_overrides(ledger=sandbox_ledger)
            yield Target(sb.url, creds), settings
    except ConfigError as exc:
        fail(str(exc))

