"""etl/ledger.py and etl/resume.py on a real SQLite file, with an injected clock."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from etl.errors import LedgerBusyError, LedgerError, TerminalError
from etl.ledger import Ledger, RunLock
from etl.model import AttemptRecord, CaptureOutcome, CaptureRequest
from etl.plan import content_hash, idempotency_key
from etl.resume import check_orders, decide

T0 = datetime(2026, 11, 27, 22, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def req(order: str = "o1", ref: str = "s1", amount: int = 100) -> CaptureRequest:
    body = f'{{"captured_amount":{amount},"reference":"{ref}"}}'.encode()
    return CaptureRequest(order, ref, idempotency_key(order, ref), content_hash(body), amount,
                          "EUR", body)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(tmp_path: Path, clock: Clock) -> Any:
    with Ledger(tmp_path / "ledger.sqlite", now=clock) as led:
        led.begin_run("run-1", ["in.csv"])
        yield led


def settle(led: Ledger, r: CaptureRequest, status: str, *, unknown: bool = False,
           capture_id: str | None = None, at: datetime = T0) -> None:
    led.intents([r], at)
    led.attempts([AttemptRecord(r.idempotency_key, 1, at, 12.0, 201 if capture_id else None,
                                "corr-1", None, unknown)])
    led.outcomes([(r, CaptureOutcome(status, capture_id=capture_id,  # type: ignore[arg-type]
                                     attempts=1, outcome_unknown=unknown, completed_at=at))])


def test_intent_is_committed_before_anything_else(ledger: Ledger, tmp_path: Path) -> None:
    r = req()
    ledger.intents([r], T0)
    # A second connection (another process) sees it at once: it is committed, not buffered.
    other = sqlite3.connect(tmp_path / "ledger.sqlite")
    assert other.execute("SELECT state, idempotency_key FROM captures").fetchall() == [
        ("sending", r.idempotency_key)]
    other.close()


def test_outcome_and_attempts_are_recorded(ledger: Ledger) -> None:
    r = req()
    settle(ledger, r, "captured", capture_id="cap-1")
    [row] = ledger.captures_of("o1")
    assert (row.state, row.capture_id, row.attempts) == ("captured", "cap-1", 1)
    [att] = ledger.attempts_of("o1", "s1")
    assert (att["http_status"], att["correlation_id"], att["run_id"]) == (201, "corr-1", "run-1")


def test_captured_same_content_is_already_captured(ledger: Ledger) -> None:
    settle(ledger, req(), "captured", capture_id="cap-1")
    d = decide([req()], ledger)
    assert d.send == [] and d.done[("o1", "s1")]["status"] == "already_captured"
    assert d.done[("o1", "s1")]["capture_id"] == "cap-1"


def test_captured_other_content_is_a_conflict_never_sent(ledger: Ledger) -> None:
    settle(ledger, req(amount=100), "captured", capture_id="cap-1")
    d = decide([req(amount=150)], ledger)
    assert d.send == [] and d.check == []
    assert d.done[("o1", "s1")]["status"] == "conflict"
    assert "cap-1" in d.done[("o1", "s1")]["error_messages"]


def test_rejected_moves_to_the_next_key_generation(ledger: Ledger) -> None:
    settle(ledger, req(), "rejected")
    [again] = decide([req()], ledger).send
    assert again.generation == 1
    assert again.idempotency_key == idempotency_key("o1", "s1", 1) != req().idempotency_key
    settle(ledger, again, "rejected")
    assert decide([req()], ledger).send[0].generation == 2


@pytest.mark.parametrize("state", ["unknown", "failed"])
def test_unknown_is_resent_with_the_same_key_inside_23_hours(ledger: Ledger, clock: Clock,
                                                             state: str) -> None:
    settle(ledger, req(), state, unknown=state == "unknown")
    clock.now = T0 + timedelta(hours=22, minutes=59)
    [again] = decide([req()], ledger).send
    assert again.idempotency_key == req().idempotency_key and again.generation == 0


def test_crash_between_intent_and_outcome_counts_as_unknown(ledger: Ledger,
                                                            clock: Clock) -> None:
    ledger.intents([req()], T0)  # ... and the process died here
    clock.now = T0 + timedelta(hours=1)
    assert decide([req()], ledger).send[0].idempotency_key == req().idempotency_key
    clock.now = T0 + timedelta(hours=23)
    d = decide([req()], ledger)
    assert d.send == [] and len(d.check) == 1


class Orders:
    def __init__(self, orders: dict[str, Any]) -> None:
        self.orders, self.calls = orders, 0

    async def get_order(self, order_id: str) -> dict[str, Any]:
        self.calls += 1
        if order_id not in self.orders:
            raise TerminalError("no such order", http_status=404, error_code="NO_SUCH_ORDER")
        return dict(self.orders[order_id])


def test_past_23_hours_the_order_is_read_first(ledger: Ledger, clock: Clock) -> None:
    settle(ledger, req(), "unknown", unknown=True)
    settle(ledger, req("o2", "s2"), "unknown", unknown=True)
    clock.now = T0 + timedelta(hours=23, seconds=1)
    d = decide([req(), req("o2", "s2")], ledger)
    assert d.send == [] and len(d.check) == 2
    orders = Orders({"o1": {"captures": [{"reference": "s1", "capture_id": "found-1"}]},
                     "o2": {"captures": [{"reference": "other", "capture_id": "x"}]}})
    asyncio.run(check_orders(d, orders, ledger, clock()))
    assert orders.calls == 2
    assert d.done[("o1", "s1")]["status"] == "already_captured"
    assert d.done[("o1", "s1")]["capture_id"] == "found-1"
    assert ledger.captures_of("o1")[0].state == "captured"  # recorded, never re-sent
    [resend] = d.send
    assert (resend.order_id, resend.generation) == ("o2", 1)  # a fresh key: the old may be gone


def test_changed_content_after_an_unknown_outcome_checks_the_order(ledger: Ledger) -> None:
    settle(ledger, req(amount=100), "unknown", unknown=True)
    d = decide([req(amount=120)], ledger)
    assert len(d.check) == 1
    asyncio.run(check_orders(d, Orders({"o1": {"captures": [
        {"reference": "s1", "capture_id": "c9"}]}}), ledger, T0))
    assert d.done[("o1", "s1")]["status"] == "conflict" and d.send == []


def test_admitted_but_never_started_is_sent_with_the_same_key(ledger: Ledger) -> None:
    r = req()
    ledger.intents([r], T0)
    ledger.outcomes([(r, CaptureOutcome("not_sent"))])
    assert ledger.captures_of("o1")[0].state == "planned"
    assert decide([r], ledger).send == [r]


def test_the_key_window_starts_at_the_first_send_of_that_key(ledger: Ledger,
                                                             clock: Clock) -> None:
    settle(ledger, req(), "unknown", unknown=True, at=T0)
    ledger.intents([req()], T0 + timedelta(hours=5))  # a re-send keeps the first time
    assert ledger.captures_of("o1")[0].key_first_sent_at == T0


def test_run_lock_refuses_a_second_holder_and_frees_on_release(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    first = RunLock(path)
    first.acquire(run_id="A")
    with pytest.raises(LedgerBusyError, match="run A"):
        RunLock(path).acquire(wait=0.0, run_id="B")
    first.release()
    second = RunLock(path)
    second.acquire(run_id="B")
    second.release()


def test_a_file_that_is_not_a_ledger_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "ledger.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LedgerError, match="cannot open ledger"):
        Ledger(bad)
