"""The sandbox's memory: the order book, the captures made, the idempotency cache, the rate-limit
window and the counters. Pure: no I/O, time comes from an injected clock (``Clock``), so tests move
past 24 h or past ``expires_at`` without sleeping.

Every mutation runs under one ``threading.Lock``: the HTTP handlers run on the server's event loop
while a test (or ``run --sandbox``) may read or seed the state from another thread. A capture is
decided in one locked, await-free step (look up the key, check, record, remember the answer), so
concurrent requests with one ``Klarna-Idempotency-Key`` can never capture twice: the first one in
records its outcome, the others replay it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from etl.sandbox.contract import check_capture_body

Clock = Callable[[], float]  # seconds since the epoch, like time.time

DAY = 86_400.0
IDEMPOTENCY_TTL = DAY  # api.md: the provider honours a key for 24 h after the first attempt
ORDER_STATUSES = ("AUTHORIZED", "PART_CAPTURED", "CAPTURED", "CANCELLED", "EXPIRED", "CLOSED")
FRAUD_STATUSES = ("ACCEPTED", "PENDING", "REJECTED")
_FINAL_STATUSES = frozenset({"CANCELLED", "EXPIRED", "CLOSED"})


def iso(ts: float) -> str:
    """Epoch seconds as the API's ISO 8601 UTC string, e.g. ``2024-05-01T12:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class FakeClock:
    """A clock for tests: stands still until ``advance``d."""

    def __init__(self, start: float = 1_714_557_600.0) -> None:  # 2024-05-01T10:00:00Z
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass(slots=True)
class Capture:
    """One capture the sandbox made."""

    capture_id: str
    order_id: str
    captured_amount: int
    captured_at: float
    reference: str | None
    klarna_reference: str
    idempotency_key: str | None
    description: str | None = None
    order_lines: list[Any] = field(default_factory=list)
    shipping_info: list[Any] = field(default_factory=list)

    def to_api(self) -> dict[str, Any]:
        """The capture as ``GET .../captures/{capture_id}`` and ``captures[]`` show it."""
        return {
            "capture_id": self.capture_id,
            "klarna_reference": self.klarna_reference,
            "captured_amount": self.captured_amount,
            "captured_at": iso(self.captured_at),
            "description": self.description,
            "reference": self.reference,
            "order_lines": self.order_lines,
            "refunded_amount": 0,
            "shipping_info": self.shipping_info,
        }

    def to_introspection(self) -> dict[str, Any]:
        """The row of ``GET /_sandbox/captures``."""
        return {
            "order_id": self.order_id,
            "reference": self.reference,
            "capture_id": self.capture_id,
            "captured_amount": self.captured_amount,
            "idempotency_key": self.idempotency_key,
            "captured_at": iso(self.captured_at),
        }


@dataclass(slots=True)
class Order:
    """One authorised order of the order book."""

    order_id: str
    order_amount: int
    purchase_currency: str = "EUR"
    status: str = "AUTHORIZED"  # only the final statuses are stored; the rest is derived
    fraud_status: str = "ACCEPTED"
    expires_at: float = 0.0
    created_at: float = 0.0
    purchase_country: str = "DE"
    merchant_reference1: str | None = None
    merchant_reference2: str | None = None
    captured_amount: int = 0
    captures: list[Capture] = field(default_factory=list)
    short_order_id: str = ""

    def __post_init__(self) -> None:
        if not self.short_order_id:
            digest = hashlib.blake2b(self.order_id.encode(), digest_size=5).digest()
            self.short_order_id = base64.b32encode(digest).decode()[:7]

    @property
    def remaining_authorized_amount(self) -> int:
        if self.status in _FINAL_STATUSES:
            return 0
        return self.order_amount - self.captured_amount

    def status_at(self, now: float) -> str:
        if self.status in _FINAL_STATUSES:
            return self.status
        if self.captured_amount == 0:
            # An uncaptured authorisation lapses at expires_at.
            return "EXPIRED" if now > self.expires_at else "AUTHORIZED"
        return "CAPTURED" if self.captured_amount >= self.order_amount else "PART_CAPTURED"

    def to_api(self, now: float) -> dict[str, Any]:
        """The order as ``GET /ordermanagement/v1/orders/{order_id}`` shows it."""
        return {
            "order_id": self.order_id,
            "status": self.status_at(now),
            "fraud_status": self.fraud_status,
            "order_amount": self.order_amount,
            "original_order_amount": self.order_amount,
            "captured_amount": self.captured_amount,
            "refunded_amount": 0,
            "remaining_authorized_amount": max(0, self.remaining_authorized_amount)
            if self.status_at(now) != "EXPIRED" else 0,
            "purchase_currency": self.purchase_currency,
            "purchase_country": self.purchase_country,
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "merchant_reference1": self.merchant_reference1,
            "merchant_reference2": self.merchant_reference2,
            "klarna_reference": self.short_order_id,
            "captures": [c.to_api() for c in self.captures],
            "refunds": [],
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    """The answer to one capture request, kept per idempotency key for replays."""

    status: int
    capture: Capture | None = None
    error_code: str | None = None
    error_messages: tuple[str, ...] = ()
    correlation_id: str = ""
    replayed: bool = False

    def error_body(self) -> dict[str, Any]:
        return {"error_code": self.error_code, "error_messages": list(self.error_messages),
                "correlation_id": self.correlation_id}


def error_outcome(status: int, code: str, message: str) -> Outcome:
    return Outcome(status, error_code=code, error_messages=(message,),
                   correlation_id=str(uuid.uuid4()))


@dataclass
class Faults:
    """Injected faults; mutable so a test or a soak can change them while the server runs."""

    fail_rate: float = 0.0  # share of requests answered 500/503 before any processing
    drop_rate: float = 0.0  # share of captures made, then answered by closing the connection
    latency_ms: float = 0.0  # added to every API response
    jitter_ms: float = 0.0  # plus uniform 0..jitter_ms
    spike_rate: float = 0.0  # share of responses delayed by spike_ms instead
    spike_ms: float = 0.0
    rate_limit: int = 0  # requests per second (one fixed 1 s window); 0 = off
    storm_every: float = 0.0  # every storm_every seconds of clock time ...
    storm_seconds: float = 0.0  # ... answer 429 to everything for storm_seconds


@dataclass(frozen=True, slots=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # whole seconds until the window resets


@dataclass
class SandboxState:
    """Everything the sandbox knows. Construct with a ``clock`` to control time in tests."""

    clock: Clock = time.time
    auto_authorize: bool = False
    authorize_factor: float = 1.0  # auto-authorised amount = first requested amount x this
    default_currency: str = "EUR"
    default_country: str = "DE"
    expiry_days: float = 28.0
    check_line_sum: bool = True
    idempotency_ttl: float = IDEMPOTENCY_TTL
    faults: Faults = field(default_factory=Faults)
    fee_bps: int = 249  # settlement FEE rows: 2.49 % of each sale ...
    fee_fixed: int = 25  # ... plus 25 minor units per sale
    signed_csv_amounts: bool = False  # see settlements.py: CSV amounts as magnitudes by default
    seed: int | None = None

    def __post_init__(self) -> None:
        self.orders: dict[str, Order] = {}
        self.captures: list[Capture] = []
        self.captures_by_id: dict[str, Capture] = {}
        self._keys: dict[str, tuple[float, Outcome]] = {}
        self._lock = threading.Lock()
        self.rng = random.Random(self.seed)
        self.stats: Counter[str] = Counter()
        self.status_counts: Counter[int] = Counter()
        self._window = -1
        self._window_count = 0
        self.storm_until = 0.0

    # -- the order book -------------------------------------------------------------------
    def add_order(self, order_id: str, order_amount: int, *, purchase_currency: str | None = None,
                  status: str = "AUTHORIZED", fraud_status: str = "ACCEPTED",
                  expires_at: float | None = None, created_at: float | None = None,
                  purchase_country: str | None = None, merchant_reference1: str | None = None,
                  merchant_reference2: str | None = None) -> Order:
        """Put an authorised order in the book (replacing one with the same id)."""
        now = self.clock()
        created = now if created_at is None else created_at
        order = Order(
            order_id=order_id, order_amount=order_amount,
            purchase_currency=purchase_currency or self.default_currency,
            status=status, fraud_status=fraud_status,
            expires_at=created + self.expiry_days * DAY if expires_at is None else expires_at,
            created_at=created, purchase_country=purchase_country or self.default_country,
            merchant_reference1=merchant_reference1, merchant_reference2=merchant_reference2,
        )
        with self._lock:
            self.orders[order_id] = order
        return order

    def add_orders(self, specs: Iterable[dict[str, Any]]) -> None:
        for spec in specs:
            self.add_order(**spec)

    def get_order(self, order_id: str) -> dict[str, Any] | None:
        with self._lock:
            order = self.orders.get(order_id)
            return None if order is None else order.to_api(self.clock())

    def get_capture(self, order_id: str, capture_id: str) -> dict[str, Any] | None:
        with self._lock:
            cap = self.captures_by_id.get(capture_id)
            return cap.to_api() if cap is not None and cap.order_id == order_id else None

    def list_captures(self) -> list[Capture]:
        with self._lock:
            return list(self.captures)

    def snapshot(self) -> tuple[list[Capture], dict[str, Order]]:
        """The captures made and the order book, copied under the lock (for settlements)."""
        with self._lock:
            return list(self.captures), dict(self.orders)

    # -- capture --------------------------------------------------------------------------
    def capture(self, order_id: str, raw_body: bytes, idempotency_key: str | None) -> Outcome:
        """Decide one capture request: replay, refuse, or capture. Atomic per call."""
        with self._lock:
            now = self.clock()
            if idempotency_key:
                seen = self._keys.get(idempotency_key)
                if seen is not None and now - seen[0] < self.idempotency_ttl:
                    self.stats["replays"] += 1
                    return replace(seen[1], replayed=True)
            outcome = self._decide(order_id, raw_body, idempotency_key, now)
            if idempotency_key:
                # Refusals are remembered too: the provider answers a repeat "with the same
                # response", and the body of a repeat is ignored (api.md § Idempotency).
                self._keys[idempotency_key] = (now, outcome)
            return outcome

    def _decide(self, order_id: str, raw_body: bytes, key: str | None, now: float) -> Outcome:
        try:
            body = json.loads(raw_body)
        except (ValueError, UnicodeDecodeError):
            return error_outcome(400, "BAD_VALUE", "Bad value: body (not valid JSON)")
        problem = check_capture_body(body, check_line_sum=self.check_line_sum)
        if problem is not None:
            return error_outcome(problem.status, problem.error_code, problem.message)
        amount: int = body["captured_amount"]
        order = self.orders.get(order_id)
        if order is None:
            if not self.auto_authorize:
                return error_outcome(404, "NO_SUCH_ORDER", f"No such order: {order_id}")
            order = Order(order_id=order_id,
                          order_amount=math.ceil(amount * self.authorize_factor),
                          purchase_currency=self.default_currency, created_at=now,
                          expires_at=now + self.expiry_days * DAY,
                          purchase_country=self.default_country)
            self.orders[order_id] = order
        refusal = self._refusal(order, amount, now)
        if refusal:
            return error_outcome(403, "CAPTURE_NOT_ALLOWED", refusal)
        cap = Capture(
            capture_id=str(uuid.uuid4()), order_id=order_id, captured_amount=amount,
            captured_at=now, reference=body.get("reference"),
            klarna_reference=f"{order.short_order_id}-{len(order.captures) + 1}",
            idempotency_key=key, description=body.get("description"),
            order_lines=body.get("order_lines") or [],
            shipping_info=body.get("shipping_info") or [],
        )
        order.captured_amount += amount
        order.captures.append(cap)
        self.captures.append(cap)
        self.captures_by_id[cap.capture_id] = cap
        self.stats["captures"] += 1
        return Outcome(201, capture=cap)

    @staticmethod
    def _refusal(order: Order, amount: int, now: float) -> str | None:
        status = order.status_at(now)
        if status in _FINAL_STATUSES:
            return f"Capture not allowed: the order is {status.lower()}"
        if order.fraud_status != "ACCEPTED":
            return f"Capture not allowed: fraud_status is {order.fraud_status}"
        if now > order.expires_at:
            return f"Capture not allowed: the order expired at {iso(order.expires_at)}"
        if amount > order.remaining_authorized_amount:
            return (f"Capture not allowed: captured_amount {amount} exceeds the remaining "
                    f"authorized amount {order.remaining_authorized_amount}")
        return None

    # -- rate limit and faults ------------------------------------------------------------
    def start_storm(self, seconds: float) -> None:
        """Answer 429 to every rate-limited call for the next ``seconds`` of clock time."""
        with self._lock:
            self.storm_until = self.clock() + seconds

    def take_rate(self) -> RateDecision | None:
        """Count one call against the 1 s window; ``None`` when no limit or storm applies."""
        f = self.faults
        with self._lock:
            now = self.clock()
            storm_left = self.storm_until - now
            if f.storm_every > 0 and now % f.storm_every < f.storm_seconds:
                storm_left = max(storm_left, f.storm_seconds - now % f.storm_every)
            if not f.rate_limit and storm_left <= 0:
                return None
            window = math.floor(now)
            if window != self._window:
                self._window, self._window_count = window, 0
            self._window_count += 1
            limit = f.rate_limit
            if storm_left > 0:
                allowed, reset = False, max(1, math.ceil(storm_left))
            else:
                allowed, reset = self._window_count <= limit, max(1, math.ceil(window + 1 - now))
            if not allowed:
                self.stats["rate_limited"] += 1
            return RateDecision(allowed, limit, max(0, limit - self._window_count), reset)

    def roll(self, rate: float) -> bool:
        """A seeded coin: true with probability ``rate``."""
        if rate <= 0:
            return False
        with self._lock:
            return self.rng.random() < rate

    def count(self, status: int) -> None:
        with self._lock:
            self.status_counts[status] += 1

    def bump(self, name: str) -> None:
        with self._lock:
            self.stats[name] += 1

    def stats_snapshot(self) -> dict[str, Any]:
        """What ``GET /_sandbox/stats`` shows."""
        with self._lock:
            return {
                "requests_by_status": {str(k): v for k, v in sorted(self.status_counts.items())},
                "captures": self.stats["captures"],
                "idempotent_replays": self.stats["replays"],
                "drops": self.stats["drops"],
                "rate_limited": self.stats["rate_limited"],
                "injected_failures": self.stats["injected_failures"],
                "orders": len(self.orders),
            }
