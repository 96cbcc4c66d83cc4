"""``bulkcapture ledger ORDER_ID``: the operator's question, answered from the ledger."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from etl.cli.common import fail, run_command
from etl.ledger import Ledger, LedgerRow, resolve_ledger_path


def _describe(row: LedgerRow, attempts: list[dict[str, object]]) -> str:
    head = (f"{row.order_id} / {row.capture_reference}: {row.state}"
            + (f", capture id {row.capture_id}" if row.capture_id else "")
            + (f", at {row.completed_at:%Y-%m-%d %H:%M:%S}Z" if row.completed_at else "")
            + f", {row.captured_amount} {row.currency or ''} (minor units)".rstrip()
            + f", {row.attempts} attempt(s), key {row.idempotency_key}"
            + (f" (generation {row.generation})" if row.generation else ""))
    lines = [head]
    if row.error_code or row.error_messages:
        lines.append(f"  last error: {row.error_code or ''} {row.error_messages or ''}".rstrip())
    for a in attempts:
        lines.append(f"  attempt {a['attempt']} at {a['started_at']}: "
                     f"HTTP {a['http_status'] or '-'}, {a['latency_ms'] or 0:.0f} ms"
                     + (f", {a['error']}" if a["error"] else "")
                     + (", outcome unknown" if a["outcome_unknown"] else "")
                     + (f", correlation id {a['correlation_id']}" if a["correlation_id"]
                        else "")
                     + f" (run {a['run_id']})")
    return "\n".join(lines)


@click.command("ledger")
@click.argument("order_id")
@click.option("--reference", help="Only this capture_reference of the order.")
@click.option("--ledger", "ledger_path", type=click.Path(path_type=Path, dir_okay=False),
              help="SQLite ledger (default: BULKCAPTURE_LEDGER, else the documented default).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ledger(order_id: str, reference: str | None, ledger_path: Path | None,
           as_json: bool) -> None:
    """Was this order captured, when, with which capture id, after how many attempts?

    Exit 0 when the ledger knows the order, 1 when it does not.

    \b
    Example:
        bulkcapture ledger 7f0c2a9e-1b2c-4d5e-8f90-123456789abc
    """
    path = resolve_ledger_path(ledger_path)
    if not path.exists():
        fail(f"no ledger at {path}: pass --ledger PATH or set BULKCAPTURE_LEDGER.")
    with run_command(lambda: Ledger(path)) as led:
        rows = [r for r in led.captures_of(order_id)
                if reference is None or r.capture_reference == reference]
        if not rows:
            fail(f"the ledger {path} has no capture of order {order_id}"
                 + (f" with reference {reference}" if reference else "") + ".")
        found = [(r, led.attempts_of(r.order_id, r.capture_reference)) for r in rows]
    if as_json:
        out = [{**{k: (v.isoformat() if hasattr(v, "isoformat") else v)
                   for k, v in vars(r).items()}, "attempt_log": a} for r, a in found]
        click.echo(json.dumps(out, indent=2, default=str))
    else:
        click.echo("\n".join(_describe(r, a) for r, a in found))
    sys.exit(0)
