"""The sender: turns planned ``CaptureRequest``s into ``CaptureOutcome``s, exactly once each.

The send stage of read → validate → plan → **send** → record → report. ``send_captures`` drives
a fixed pool of ``concurrency`` workers over one queue; each attempt takes a token from the
``TokenBucket``, goes through the ``CaptureClient`` (``etl.client.ApiClient`` in production) and is
recorded. Transient errors are retried with the same idempotency key after a jittered back-off
(``etl.retry``); terminal ones are final at once.

Write-ahead, batched: a worker that finds the queue empty admits the next batch of requests by
calling ``Recorder.intents`` for it; only admitted requests are ever started, so every request
on the wire has a durable intent. Attempts and outcomes are buffered and flushed every
``batch_size`` items, every ``flush_interval`` seconds, before any back-off, and at the end
(aborted or not). A crash between a response and its flush is safe: the ledger treats an
unfinished intent as outcome-unknown and re-sends it with the same key.

The run stops early, without raising, on a 401 (``AuthenticationError``), on ``breaker``
consecutive transient failures (``CircuitOpenError``) or when ``stop`` is set (``Interrupted``):
nothing new starts, requests in flight finish or time out, every request never started comes
back ``not_sent``, and ``SendReport.aborted`` holds the reason for the caller to raise once the
results are written.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from etl.client import CaptureSuccess
from etl.config import (
    DEFAULT_BREAKER,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RATE,
    Settings,
)
from etl.errors import (
    AuthenticationError,
    CaptureError,
    CircuitOpenError,
    Interrupted,
    RunAborted,
    TerminalError,
    TransientError,
)
from etl.limit import Clock, Sleep, TokenBucket
from etl.model import AttemptRecord, CaptureOutcome, CaptureRequest, SendStatus
from etl.retry import DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_CAP, Backoff

DEFAULT_BATCH_SIZE = 64  # intents per write-ahead batch; attempts/outcomes per flush
DEFAULT_FLUSH_INTERVAL = 0.1  # seconds an attempt or outcome may wait in the buffer
# A 429 without a Retry-After or X-Ratelimit-Reset: hold the whole run this long.
DEFAULT_429_PAUSE = 1.0
# The default bucket's slack, in seconds of tokens: its workers are released in ticks of this
# length (etl.limit), a few per loop wake-up instead of one, at the price of this much burst.
DEFAULT_TICK = 0.025


class CaptureClient(Protocol):
    """What the sender needs of a client: one capture attempt (``etl.client.ApiClient``)."""

    async def capture(self, req: CaptureRequest) -> CaptureSuccess: ...


class Recorder(Protocol):
    """Where the sender records; the ledger implements it on SQLite. Calls are synchronous."""

    def intents(self, reqs: Sequence[CaptureRequest], at: datetime) -> None:
        """Durable before any of ``reqs`` is sent (write-ahead)."""

    def attempts(self, records: Sequence[AttemptRecord]) -> None:
        """Every HTTP attempt, batched."""

    def outcomes(self, done: Sequence[tuple[CaptureRequest, CaptureOutcome]]) -> None:
        """Final outcomes of requests whose intent was recorded, ``not_sent`` included."""


@dataclass
class MemoryRecorder:
    """A ``Recorder`` in memory, for tests and benchmarks. ``events`` keeps the call order."""

    intent_at: dict[str, datetime] = field(default_factory=dict)
    attempt_log: list[AttemptRecord] = field(default_factory=list)
    outcome_log: dict[str, CaptureOutcome] = field(default_factory=dict)
    events: list[tuple[str, int]] = field(default_factory=list)  # (kind, batch size)

    def intents(self, reqs: Sequence[CaptureRequest], at: datetime) -> None:
        for req in reqs:
            self.intent_at[req.idempotency_key] = at
        self.events.append(("intents", len(reqs)))

    def attempts(self, records: Sequence[AttemptRecord]) -> None:
        self.attempt_log.extend(records)
        self.events.append(("attempts", len(records)))

    def outcomes(self, done: Sequence[tuple[CaptureRequest, CaptureOutcome]]) -> None:
        for req, outcome in done:
            self.outcome_log[req.idempotency_key] = outcome
        self.events.append(("outcomes", len(done)))


@dataclass(frozen=True, slots=True)
class SendPolicy:
    """How hard and how long to try. ``rate=None`` sends unthrottled (benchmarks, sandbox)."""

    rate: float | None = DEFAULT_RATE
    concurrency: int = DEFAULT_CONCURRENCY
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    breaker: int = DEFAULT_BREAKER  # consecutive transient failures that open the circuit
    backoff_base: float = DEFAULT_BACKOFF_BASE
    backoff_cap: float = DEFAULT_BACKOFF_CAP
    batch_size: int = DEFAULT_BATCH_SIZE
    flush_interval: float = DEFAULT_FLUSH_INTERVAL

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.max_attempts < 1 or self.breaker < 1:
            raise ValueError("concurrency, max_attempts and breaker must be at least 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")

    @classmethod
    def from_settings(cls, settings: Settings) -> SendPolicy:
        return cls(rate=settings.rate, concurrency=settings.concurrency,
                   max_attempts=settings.max_attempts, breaker=settings.breaker)


@dataclass
class SendReport:
    """Every request's outcome, keyed by idempotency key, and why the run stopped, if it did."""

    outcomes: dict[str, CaptureOutcome]
    aborted: RunAborted | None = None
    elapsed: float = 0.0  # seconds, on the injected clock
    attempts: int = 0  # HTTP attempts made

    @property
    def counts(self) -> dict[SendStatus, int]:
        return dict(Counter(o.status for o in self.outcomes.values()))


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def send_captures(
    requests: Sequence[CaptureRequest],
    client: CaptureClient,
    recorder: Recorder,
    policy: SendPolicy,
    *,
    stop: asyncio.Event | None = None,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    now: Callable[[], datetime] = _utcnow,
    backoff: Backoff | None = None,
    limiter: TokenBucket | None = None,
    on_progress: Callable[[CaptureOutcome], None] | None = None,
) -> SendReport:
    """Send every request once (retrying transient failures); never raises ``RunAborted``.

    ``limiter`` defaults to a ``TokenBucket(policy.rate)`` on the same clock and sleep, with
    ``DEFAULT_TICK`` seconds of burst; pass one
    to share it (with a settlements fetch, say). Recorder errors propagate after the workers are
    cancelled.
    """
    run = _Run(requests, client, recorder, policy, stop=stop, clock=clock, sleep=sleep, now=now,
               backoff=backoff or Backoff(policy.backoff_base, policy.backoff_cap),
               limiter=limiter or TokenBucket(
                   policy.rate, burst=1.0 + (policy.rate or 0.0) * DEFAULT_TICK, clock=clock,
                   sleep=sleep),
               on_progress=on_progress)
    return await run.run()


class _Halt(Exception):
    """Raised inside a worker when the run stopped while the worker was waiting."""


class _Run:
    """The state of one ``send_captures`` call: queue, buffers, breaker, workers."""

    def __init__(self, requests: Sequence[CaptureRequest], client: CaptureClient,
                 recorder: Recorder, policy: SendPolicy, *, stop: asyncio.Event | None,
                 clock: Clock, sleep: Sleep, now: Callable[[], datetime], backoff: Backoff,
                 limiter: TokenBucket,
                 on_progress: Callable[[CaptureOutcome], None] | None) -> None:
        keys = {r.idempotency_key for r in requests}
        if len(keys) != len(requests):
            raise ValueError("two requests share an idempotency key: plan must dedupe captures")
        self.requests = requests
        self.client = client
        self.recorder = recorder
        self.policy = policy
        self.stop = stop
        self.clock = clock
        self.sleep = sleep
        self.now = now
        self.backoff = backoff
        self.limiter = limiter
        self.on_progress = on_progress

        self.next_index = 0  # requests[:next_index] are admitted (their intents recorded)
        self.ready: deque[CaptureRequest] = deque()  # admitted, not started
        self.outcomes: dict[str, CaptureOutcome] = {}
        self.attempt_buf: list[AttemptRecord] = []
        self.outcome_buf: list[tuple[CaptureRequest, CaptureOutcome]] = []
        self.last_flush = clock()
        self.attempt_count = 0
        self.consecutive_transient = 0
        self.aborted: RunAborted | None = None
        # Workers currently waiting (for a token or a back-off): these may be cancelled on a
        # halt; a worker with a request on the wire never is.
        self.waiting: set[asyncio.Task[None]] = set()

    # -- admission (write-ahead) -----------------------------------------------------------

    def take(self) -> CaptureRequest | None:
        if self.aborted is not None:
            return None
        if not self.ready:
            batch = self.requests[self.next_index:self.next_index + self.policy.batch_size]
            if not batch:
                return None
            # Synchronous: no other worker runs until the intents are durable.
            self.recorder.intents(batch, self.now())
            self.next_index += len(batch)
            self.ready.extend(batch)
        return self.ready.popleft()

    # -- stopping --------------------------------------------------------------------------

    def halt(self, reason: RunAborted) -> None:
        if self.aborted is not None:
            return
        self.aborted = reason
        for task in list(self.waiting):
            task.cancel()

    async def watch_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self.halt(Interrupted("interrupted by a signal: no new captures were started, those in "
                              "flight were finished."))

    async def wait(self, fn: Callable[..., Awaitable[object]], *args: float) -> None:
        """Await ``fn(*args)``, a wait (token or back-off) that a halt cuts short."""
        task = asyncio.current_task()
        assert task is not None
        if self.aborted is not None:
            raise _Halt
        self.waiting.add(task)
        try:
            await fn(*args)
        except asyncio.CancelledError:
            if self.aborted is None:
                raise  # cancelled from outside: the whole send is being torn down
            task.uncancel()
            raise _Halt from None
        finally:
            self.waiting.discard(task)
        if self.aborted is not None:
            raise _Halt

    # -- buffers ---------------------------------------------------------------------------

    def maybe_flush(self) -> None:
        size = len(self.attempt_buf) + len(self.outcome_buf)
        if size >= self.policy.batch_size or (
                size and self.clock() - self.last_flush >= self.policy.flush_interval):
            self.flush()

    def flush(self) -> None:
        # Attempts before outcomes: an outcome in the ledger always has its attempts.
        if self.attempt_buf:
            batch, self.attempt_buf = self.attempt_buf, []
            self.recorder.attempts(batch)
        if self.outcome_buf:
            done, self.outcome_buf = self.outcome_buf, []
            self.recorder.outcomes(done)
        self.last_flush = self.clock()

    def finish(self, req: CaptureRequest, outcome: CaptureOutcome, *,
               admitted: bool = True) -> None:
        self.outcomes[req.idempotency_key] = outcome
        if admitted:
            self.outcome_buf.append((req, outcome))
        if self.on_progress is not None:
            self.on_progress(outcome)

    # -- one capture -----------------------------------------------------------------------

    async def worker(self) -> None:
        while (req := self.take()) is not None:
            await self.send_one(req)

    async def send_one(self, req: CaptureRequest) -> None:
        attempt = 0
        first_at: datetime | None = None
        unknown = False
        last: CaptureError | None = None
        while True:
            try:
                await self.wait(self.limiter.acquire)
            except _Halt:
                break
            attempt += 1
            started_at = self.now()
            if first_at is None:
                first_at = started_at
            t0 = self.clock()
            try:
                ok = await self.client.capture(req)
            except RunAborted as exc:  # a 401, or a certificate that does not verify
                status, code = ((401, "UNAUTHORIZED") if isinstance(exc, AuthenticationError)
                                else (None, "TLS_ERROR"))
                self.record_attempt(req, attempt, started_at, t0, status, None, code)
                last = TerminalError(str(exc), http_status=status, error_code=code)
                self.halt(exc)
                break
            except TerminalError as exc:
                self.record_attempt(req, attempt, started_at, t0, exc.http_status,
                                    exc.correlation_id, exc.error_code or type(exc).__name__)
                self.consecutive_transient = 0
                self.conclude_terminal(req, exc, attempt, first_at, unknown)
                return
            except TransientError as exc:
                self.record_attempt(req, attempt, started_at, t0, exc.http_status,
                                    exc.correlation_id, exc.error_code or type(exc).__name__,
                                    exc.outcome_unknown)
                last = exc
                unknown = unknown or exc.outcome_unknown
                if exc.http_status == 429:
                    self.limiter.pause(exc.retry_after if exc.retry_after is not None
                                       else DEFAULT_429_PAUSE)
                self.consecutive_transient += 1
                if self.consecutive_transient >= self.policy.breaker:
                    self.halt(CircuitOpenError(
                        f"{self.consecutive_transient} consecutive transient failures (the last: "
                        f"{exc}): the provider looks unavailable; the run stopped."))
                    break
                if attempt >= self.policy.max_attempts:
                    break
                self.flush()  # nothing buffered waits out a back-off
                try:
                    await self.wait(self.sleep, self.backoff.delay(attempt - 1, exc.retry_after))
                except _Halt:
                    break
                continue
            # Success.
            self.record_attempt(req, attempt, started_at, t0, ok.http_status, ok.correlation_id,
                                None)
            self.consecutive_transient = 0
            rl = ok.ratelimit
            if rl is not None:
                self.limiter.observe(rl.remaining, rl.reset, rl.limit)
            self.finish(req, CaptureOutcome(
                status="captured", http_status=ok.http_status, capture_id=ok.capture_id,
                capture_location=ok.location, correlation_id=ok.correlation_id, attempts=attempt,
                first_attempt_at=first_at, completed_at=self.now()))
            self.maybe_flush()
            return
        # Out of attempts, or halted before/between attempts.
        if attempt == 0:
            self.finish(req, CaptureOutcome(status="not_sent"))
        else:
            self.finish(req, self.failed(last, attempt, first_at, unknown))
        self.maybe_flush()

    def conclude_terminal(self, req: CaptureRequest, exc: TerminalError, attempt: int,
                          first_at: datetime | None, unknown: bool) -> None:
        if unknown and exc.http_status == 409:
            # A 409 after an attempt of unknown outcome may be the provider still working on that
            # same key (undocumented): the capture may exist, so it is not a rejection.
            outcome = self.failed(exc, attempt, first_at, True)
        else:
            outcome = CaptureOutcome(
                status="rejected", http_status=exc.http_status, correlation_id=exc.correlation_id,
                error_code=exc.error_code, error_messages=exc.error_messages, attempts=attempt,
                first_attempt_at=first_at, completed_at=self.now())
        self.finish(req, outcome)
        self.maybe_flush()

    def failed(self, last: CaptureError | None, attempt: int, first_at: datetime | None,
               unknown: bool) -> CaptureOutcome:
        return CaptureOutcome(
            status="failed",
            http_status=last.http_status if last else None,
            correlation_id=last.correlation_id if last else None,
            error_code=(last.error_code or type(last).__name__) if last else None,
            error_messages=(last.error_messages or (str(last),)) if last else (),
            attempts=attempt, first_attempt_at=first_at, completed_at=self.now(),
            outcome_unknown=unknown)

    def record_attempt(self, req: CaptureRequest, attempt: int, started_at: datetime, t0: float,
                       http_status: int | None, correlation_id: str | None, error: str | None,
                       unknown: bool = False) -> None:
        self.attempt_count += 1
        self.attempt_buf.append(AttemptRecord(
            req.idempotency_key, attempt, started_at, (self.clock() - t0) * 1000.0, http_status,
            correlation_id, error, unknown))

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> SendReport:
        t_start = self.clock()
        watcher: asyncio.Task[None] | None = None
        if self.stop is not None:
            if self.stop.is_set():
                self.halt(Interrupted("interrupted by a signal before any capture was sent."))
            else:
                watcher = asyncio.ensure_future(self.watch_stop(self.stop))
        n_workers = min(self.policy.concurrency, len(self.requests))
        workers = [asyncio.ensure_future(self.worker()) for _ in range(n_workers)]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
        # Admitted but never started: their intents are on record, so record them as not sent.
        while self.ready:
            self.finish(self.ready.popleft(), CaptureOutcome(status="not_sent"))
        for req in self.requests[self.next_index:]:
            self.finish(req, CaptureOutcome(status="not_sent"), admitted=False)
        self.flush()
        return SendReport(outcomes=self.outcomes, aborted=self.aborted,
                          elapsed=self.clock() - t_start, attempts=self.attempt_count)
