"""``bulkcapture reconcile`` and ``bulkcapture settlements fetch``: thin commands over
``etl.reconcile``, ``etl.settlements`` and ``etl.report``."""

from __future__ import annotations

import asyncio
import glob
import json
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import click
import polars as pl

from etl.cli.common import fail, run_command
from etl.config import (
    DEFAULT_TIMEOUT,
    ENV_API_KEY,
    ENV_BASE_URL,
    ENV_PASSWORD,
    ENV_USERNAME,
    credentials_from_env,
    resolve_base_url,
)
from etl.errors import CaptureError, ConfigError
from etl.reconcile import (
    Reconciliation,
    read_captures,
    read_ledger_captures,
    reconcile,
    select_captures,
)
from etl.report import check_report_path, summary_headline, summary_rows, summary_text
from etl.report import write_report as write_report_file
from etl.settlements import fetch_settlements, read_settlements, write_settlements_json

GREEDY_OPTIONS = ("--captures", "--settlement")


def expand_greedy(args: Sequence[str], greedy: Sequence[str] = GREEDY_OPTIONS) -> list[str]:
    """``--captures a b --settlement c`` → ``--captures a --captures b --settlement c``.

    product.md spells the options ``--captures RESULTS... --settlement FILE...``, and a shell glob
    (``--captures results/*.parquet``) expands to several words; click options take one value
    each, so the words after a greedy option are given back to it, up to the next option.
    """
    out: list[str] = []
    current: str | None = None
    taking = False  # the word right after the option is its own value already
    for i, arg in enumerate(args):
        if arg == "--":
            return out + list(args[i:])
        name = arg.split("=", 1)[0]
        if name in greedy:
            current, taking = name, "=" not in arg
            out.append(arg)
        elif arg.startswith("-") and arg != "-":
            current = None
            out.append(arg)
        elif current is not None and not taking:
            out += [current, arg]
        else:
            taking = False
            out.append(arg)
    return out


class _GreedyCommand(click.Command):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_greedy(args))


def _expand(patterns: Sequence[str], what: str) -> list[Path]:
    """Paths and globs → existing paths, in the given order; a pattern matching nothing fails."""
    paths: list[Path] = []
    for pattern in patterns:
        if Path(pattern).exists() or not glob.has_magic(pattern):
            paths.append(Path(pattern))
            continue
        matches = sorted(glob.glob(pattern))
        if not matches:
            fail(f"{what} pattern {pattern!r} matches no file: check the path.")
        paths += [Path(m) for m in matches]
    return paths


def _today() -> date:
    return datetime.now(UTC).date()


@click.command("reconcile", cls=_GreedyCommand)
@click.option("--captures", "captures", multiple=True, metavar="RESULTS...",
              help="Results files of bulkcapture run (.parquet, .csv, .ndjson) or globs; "
                   "several may follow the option. Only captured / already_captured count; "
                   "a capture in several files counts once, its latest row winning.")
@click.option("--ledger", "ledger_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Read our captures from the run's SQLite ledger (instead of, or as well as, "
                   "results files).")
@click.option("--settlement", "settlement", multiple=True, required=True, metavar="FILE...",
              help="Settlement files: the CSV payout report (major units, ';' or ',') or "
                   "Settlements API JSON (minor units, e.g. from 'settlements fetch').")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Report to write: .xlsx (Summary, Exceptions, Detail), .html, or the detail "
                   "table as .csv / .parquet (minor units).")
@click.option("--as-of", "as_of", type=click.DateTime(["%Y-%m-%d"]),
              help="Date the age of unsettled captures is counted to.  [default: today, UTC]")
@click.option("--summary-json", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the counts and per-currency totals as JSON.")
def reconcile_command(captures: tuple[str, ...], ledger_path: Path | None,
                      settlement: tuple[str, ...], out: Path | None,
                      as_of: datetime | None, summary_json: Path | None) -> None:
    """Match capture results against settlement reports; write a finance report.

    Each capture of ours is matched (settled for exactly the captured amount), amount_mismatch,
    or not_settled (with its age in days); each settled SALE without a capture of ours is
    not_ours. FEE rows are tied to their sale by capture_id, RETURN and REVERSAL rows to the
    order. Settlement amounts are magnitudes; the direction comes from the type.

    Exit status: 0 when everything matched, 3 when there are exceptions, 1 on unreadable input.

    \b
    Example:
        bulkcapture reconcile --captures results/2024-05-*.parquet \\
            --settlement payouts/*.csv --out reconcile.xlsx
    """
    if not captures and ledger_path is None:
        fail("name our captures: --captures RESULTS... and/or --ledger PATH.", code=2)
    if out is not None:
        run_command(lambda: check_report_path(out))
    capture_paths = _expand(captures, "--captures")
    settlement_paths = _expand(settlement, "--settlement")
    day = as_of.date() if as_of else _today()

    def ours() -> pl.DataFrame:
        frames = [read_captures(capture_paths)] if capture_paths else []
        if ledger_path is not None:
            frames.append(read_ledger_captures(ledger_path))
        return select_captures(pl.concat(frames, how="vertical_relaxed"))

    rec = run_command(lambda: reconcile(ours(), read_settlements(settlement_paths), day))
    if out is not None:
        run_command(lambda: write_report_file(rec, out))
    if summary_json is not None:
        run_command(lambda: _write_summary_json(rec, summary_json))
    _print_summary(rec)
    if out is not None:
        click.echo(f"Report: {out}")
    sys.exit(rec.exit_code)


def _print_summary(rec: Reconciliation) -> None:
    if not sys.stdout.isatty():
        click.echo(summary_text(rec))
        return
    from rich.console import Console
    from rich.table import Table

    header, rows = summary_rows(rec)
    table = Table(title=summary_headline(rec))
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _write_summary_json(rec: Reconciliation, path: Path) -> None:
    from etl.results import write_atomic

    doc: dict[str, Any] = {
        "as_of": rec.as_of.isoformat(),
        "counts": rec.counts,
        "exit_code": rec.exit_code,
        "by_currency": rec.by_currency.to_dicts(),
    }
    text = json.dumps(doc, indent=1, default=str) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


@click.group()
def settlements() -> None:
    """The provider's settlement reports (Settlements API)."""


@settlements.command("fetch")
@click.option("--since", required=True, type=click.DateTime(["%Y-%m-%d"]),
              help="First payout date to fetch (YYYY-MM-DD).")
@click.option("--until", type=click.DateTime(["%Y-%m-%d"]),
              help="Last payout date to fetch, inclusive.  [default: open-ended]")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="JSON file to write: {\"payouts\": [...], \"transactions\": [...]}.")
@click.option("--base-url", help=f"API base URL (https, or http to loopback).  [env: "
                                 f"{ENV_BASE_URL}]")
@click.option("--provider", type=click.Choice(["klarna", "kustom"]),
              help="Pick the host by provider instead of --base-url.")
@click.option("--region", type=click.Choice(["eu", "na", "oc"]), help="With --provider.")
@click.option("--playground", is_flag=True, help="With --provider: the test environment.")
@click.option("--timeout", default=DEFAULT_TIMEOUT, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="Seconds per request.")
def fetch(since: datetime, until: datetime | None, out: Path, base_url: str | None,
          provider: str | None, region: str | None, playground: bool, timeout: float) -> None:
    """Download payouts and their transactions for a date range, as JSON.

    Credentials come from the environment: BULKCAPTURE_API_USERNAME + BULKCAPTURE_API_PASSWORD,
    or BULKCAPTURE_API_KEY. Payouts are chosen by payout date.
    The file is what 'bulkcapture reconcile --settlement' reads.

    \b
    Example:
        bulkcapture settlements fetch --since 2024-05-01 --until 2024-05-31 \\
            --out settlements-2024-05.json
    """
    if out.suffix.lower() != ".json":
        fail(f"--out {out}: settlements are written as JSON; name the file *.json.")
    if until is not None and until < since:
        fail(f"--until {until.date()} is before --since {since.date()}: swap them.")

    def target() -> tuple[str, Any]:
        url = resolve_base_url(base_url, provider, region, playground)
        if url is None:
            raise ConfigError(f"no API target: pass --base-url or --provider, or set "
                              f"{ENV_BASE_URL}.")
        credentials = credentials_from_env()
        if credentials is None:
            raise ConfigError(f"no credentials: set {ENV_USERNAME} and {ENV_PASSWORD}, or "
                              f"{ENV_API_KEY}.")
        return url, credentials

    url, credentials = run_command(target)

    async def download() -> dict[str, list[dict[str, Any]]]:
        from etl.client import ApiClient

        async with ApiClient(url, credentials, timeout=timeout, max_connections=4) as client:
            return await fetch_settlements(client, since.date(),
                                           until.date() if until else None)

    try:
        document = run_command(lambda: asyncio.run(download()))
    except CaptureError as exc:  # the client's messages are already redacted
        fail(f"fetching settlements failed: {str(exc).rstrip('.')}; try again later, or check "
             "--base-url.")
    run_command(lambda: write_settlements_json(document, out))
    click.echo(f"{len(document['payouts'])} payouts, {len(document['transactions'])} "
               f"transactions written to {out}")
