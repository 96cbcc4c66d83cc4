"""The data types that cross stage boundaries: a planned capture, one attempt, one outcome.

plan builds ``CaptureRequest``s; send turns each into a ``CaptureOutcome`` (recording every
``AttemptRecord`` on the way); results and the ledger store both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Status = Literal[
    "captured", "already_captured", "invalid", "rejected", "failed", "conflict", "planned",
    "not_sent",
]
STATUSES: tuple[Status, ...] = (
    "captured", "already_captured", "invalid", "rejected", "failed", "conflict", "planned",
    "not_sent",
)
# Statuses that make a finished run exit 3 (product.md § Exit codes).
EXCEPTION_STATUSES: frozenset[str] = frozenset({"invalid", "rejected", "failed", "conflict"})


@dataclass(frozen=True, slots=True)
class CaptureRequest:
    """One capture, ready to send: the identity, its key, and the exact JSON body."""

    order_id: str
    capture_reference: str
    idempotency_key: str
    content_hash: str  # sha256 of the body: what "the same content" means for conflicts
    captured_amount: int
    currency: str | None
    body: bytes
    generation: int = 0  # bumped by the ledger after a definitive refusal (see etl/plan.py)


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One HTTP attempt of one capture, as the ledger keeps it."""

    idempotency_key: str
    attempt: int  # 1-based within this run
    started_at: datetime
    latency_ms: float
    http_status: int | None
    correlation_id: str | None
    error: str | None  # error_code or exception class; never a secret
    outcome_unknown: bool = False


SendStatus = Literal["captured", "rejected", "failed", "not_sent"]


@dataclass(frozen=True, slots=True)
class CaptureOutcome:
    """What sending one capture came to, after every retry."""

    status: SendStatus
    http_status: int | None = None
    capture_id: str | None = None
    capture_location: str | None = None
    correlation_id: str | None = None
    error_code: str | None = None
    error_messages: tuple[str, ...] = field(default=())
    attempts: int = 0
    first_attempt_at: datetime | None = None
    completed_at: datetime | None = None
    outcome_unknown: bool = False  # failed after a timeout/drop: the capture may exist
