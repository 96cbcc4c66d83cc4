"""Decide, from the ledger, what each planned capture needs before anything is sent.

Sits between plan and send on every run, and is what makes a re-run safe:

| ledger says                                 | decision                                      |
|---------------------------------------------|-----------------------------------------------|
| nothing                                     | send, generation 0 key                        |
| captured, same content                      | ``already_captured`` (original capture id)   |
| captured, other content                     | ``conflict``: never sent                      |
| rejected (a definitive 4xx)                 | send under the next key generation            |
| planned, never attempted                    | send, same key                                |
| sending/failed/unknown, same content, < 23 h| re-send with the same key (the provider       |
|                                             | replays the first answer if it had one)       |
| … ≥ 23 h, or other content                  | GET the order, look for a capture with this   |
|                                             | ``reference`` first; found: captured (or      |
|                                             | conflict), not found: send, next generation   |

Why a new generation after a miss: past 24 h the provider may no longer honour the old key, and
within it a key whose first request was refused or never processed might replay that answer;
the order itself proved nothing was captured, so a fresh key is the safe one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol

from etl.errors import CaptureError
from etl.ledger import Ledger, LedgerRow
from etl.model import CaptureOutcome, CaptureRequest
from etl.plan import idempotency_key


class OrderReader(Protocol):
    async def get_order(self, order_id: str) -> dict[str, Any]: ...


@dataclass
class Decisions:
    """Each planned capture lands in exactly one list."""

    send: list[CaptureRequest] = field(default_factory=list)
    check: list[tuple[CaptureRequest, LedgerRow]] = field(default_factory=list)
    done: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # result rows


def next_generation(req: CaptureRequest, row: LedgerRow) -> CaptureRequest:
    gen = row.generation + 1
    return replace(req, generation=gen,
                   idempotency_key=idempotency_key(req.order_id, req.capture_reference, gen))


def same_key(req: CaptureRequest, row: LedgerRow) -> CaptureRequest:
    return replace(req, generation=row.generation, idempotency_key=row.idempotency_key)


def ledger_result(row: LedgerRow, status: str) -> dict[str, Any]:
    """A results row with ``status``, from what the ledger recorded of the capture."""
    return {"status": status, "idempotency_key": row.idempotency_key,
            "capture_id": row.capture_id, "capture_location": row.capture_location,
            "correlation_id": row.correlation_id, "http_status": row.http_status,
            "error_code": row.error_code, "error_messages": row.error_messages,
            "attempts": row.attempts, "completed_at": row.completed_at,
            "first_attempt_at": row.key_first_sent_at}


def already(row: LedgerRow) -> dict[str, Any]:
    return ledger_result(row, "already_captured")


def conflict(row: LedgerRow, req: CaptureRequest, capture_id: str | None) -> dict[str, Any]:
    return {"status": "conflict", "idempotency_key": row.idempotency_key,
            "capture_id": capture_id, "error_code": "CAPTURE_CONFLICT",
            "error_messages": (
                f"already captured as capture {capture_id} "
                f"({row.captured_amount} {row.currency or ''}) with different content than "
                f"this run's ({req.captured_amount} {req.currency or ''}); nothing sent. A "
                "changed shipment needs its own capture_reference."),
            "attempts": 0}


def decide(requests: list[CaptureRequest], ledger: Ledger) -> Decisions:
    """Sort the planned captures by what the ledger says (table in the module docstring)."""
    rows = ledger.rows_for((r.order_id, r.capture_reference) for r in requests)
    out = Decisions()
    for req in requests:
        row = rows.get((req.order_id, req.capture_reference))
        if row is None:
            out.send.append(req)
        elif row.state == "captured":
            if row.content_hash == req.content_hash:
                out.done[(req.order_id, req.capture_reference)] = already(row)
            else:
                out.done[(req.order_id, req.capture_reference)] = conflict(
                    row, req, row.capture_id)
        elif row.state == "rejected":
            out.send.append(next_generation(req, row))
        elif (row.state == "planned" and row.attempts == 0) or (
                row.content_hash == req.content_hash and ledger.within_window(row)):
            # Never on the wire, or the provider still replays the key's first answer.
            out.send.append(same_key(req, row))
        else:
            out.check.append((req, row))
    return out


async def check_orders(decisions: Decisions, client: OrderReader, ledger: Ledger,
                       now: datetime, concurrency: int = 8) -> None:
    """For each capture in ``check``: GET its order and look for its reference.

    Found with the same content: recorded as captured. Found with other content: conflict.
    Not found: sent under the next generation. The order cannot be read: ``failed`` for this
    run, nothing sent (the next run checks again).
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(req: CaptureRequest, row: LedgerRow) -> None:
        ident = (req.order_id, req.capture_reference)
        async with gate:
            try:
                order = await client.get_order(req.order_id)
            except CaptureError as exc:
                if exc.http_status == 404:
                    decisions.send.append(next_generation(req, row))
                    return
                decisions.done[ident] = {
                    "status": "failed", "idempotency_key": row.idempotency_key,
                    "http_status": exc.http_status, "error_code": exc.error_code,
                    "correlation_id": exc.correlation_id, "attempts": 0,
                    "error_messages": f"could not read the order to check an earlier attempt "
                                      f"({exc}); nothing sent, the next run checks again."}
                return
        found = next((c for c in order.get("captures") or []
                      if c.get("reference") == req.capture_reference), None)
        if found is None:
            decisions.send.append(next_generation(req, row))
        elif row.content_hash == req.content_hash:
            ledger.record_found(req, found, now)
            decisions.done[ident] = {**already(row), "capture_id": found.get("capture_id")}
        else:
            decisions.done[ident] = conflict(row, req, found.get("capture_id"))

    await asyncio.gather(*(one(req, row) for req, row in decisions.check))
    decisions.check.clear()


def outcome_row(req: CaptureRequest, o: CaptureOutcome) -> dict[str, Any]:
    """A sender outcome as a results row (keyed by identity)."""
    return {"status": o.status, "idempotency_key": req.idempotency_key,
            "http_status": o.http_status, "capture_id": o.capture_id,
            "capture_location": o.capture_location, "correlation_id": o.correlation_id,
            "error_code": o.error_code,
            "error_messages": "; ".join(o.error_messages) or None,
            "attempts": o.attempts, "first_attempt_at": o.first_attempt_at,
            "completed_at": o.completed_at}
