"""etl.send: retries, the breaker, 401, stop, write-ahead ordering, with fake clients and time."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from etl.client import ApiClient, CaptureSuccess, RateLimit
from etl.config import Credentials, Secret
from etl.errors import (
    AuthenticationError,
    CircuitOpenError,
    Interrupted,
    TerminalError,
    TransientError,
)
from etl.model import AttemptRecord, CaptureOutcome, CaptureRequest
from etl.retry import Backoff
from etl.send import MemoryRecorder, SendPolicy, SendReport, send_captures


def make_requests(n: int) -> list[CaptureRequest]:
    return [CaptureRequest(order_id=f"ord-{i}", capture_reference=f"shp-{i}",
                           idempotency_key=f"key-{i}", content_hash=f"h{i}",
                           captured_amount=100 + i, currency="EUR", body=b"{}")
            for i in range(n)]


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []
        self.base = datetime(2025, 1, 1, tzinfo=UTC)

    def clock(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)

    def now(self) -> datetime:
        return self.base + timedelta(seconds=self.t)


Script = list[CaptureSuccess | Exception]


def ok(capture_id: str = "cap", ratelimit: RateLimit | None = None) -> CaptureSuccess:
    return CaptureSuccess(201, capture_id, f"/captures/{capture_id}", "corr-ok", ratelimit)


def unavailable(unknown: bool = False) -> TransientError:
    return TransientError("503", http_status=503, error_code="TEMPORARILY_UNAVAILABLE",
                          correlation_id="corr-503", outcome_unknown=unknown)


class FakeClient:
    """Answers from a script per key (the last answer repeats); checks write-ahead on each call."""

    def __init__(self, recorder: MemoryRecorder, scripts: dict[str, Script] | None = None,
                 default: CaptureSuccess | Exception | None = None) -> None:
        self.recorder = recorder
        self.scripts = scripts or {}
        self.default = default or ok()
        self.calls: list[str] = []
        self.gate: asyncio.Event | None = None  # when set, every call waits for it
        self.in_flight = 0

    async def capture(self, req: CaptureRequest) -> CaptureSuccess:
        assert req.idempotency_key in self.recorder.intent_at, "sent before its intent"
        self.calls.append(req.idempotency_key)
        self.in_flight += 1
        try:
            if self.gate is not None:
                await self.gate.wait()
            script = self.scripts.get(req.idempotency_key)
            answer = (script.pop(0) if len(script) > 1 else script[0]) if script else self.default
            if isinstance(answer, Exception):
                raise answer
            return answer
        finally:
            self.in_flight -= 1


def send(reqs: Sequence[CaptureRequest], client: FakeClient, recorder: MemoryRecorder,
         ft: FakeTime, stop: asyncio.Event | None = None, **policy: object) -> SendReport:
    pol = SendPolicy(**{"rate": None, "concurrency": 4, **policy})  # type: ignore[arg-type]

    async def go() -> SendReport:
        return await send_captures(reqs, client, recorder, pol, stop=stop, clock=ft.clock,
                                   sleep=ft.sleep, now=ft.now,
                                   backoff=Backoff(1.0, 8.0, random=lambda: 0.5))
    return asyncio.run(go())


def test_everything_captured_and_recorded() -> None:
    reqs, rec, ft = make_requests(10), MemoryRecorder(), FakeTime()
    report = send(reqs, FakeClient(rec), rec, ft)
    assert report.aborted is None and report.counts == {"captured": 10}
    assert report.attempts == 10
    out = report.outcomes["key-3"]
    assert (out.status, out.http_status, out.capture_id, out.capture_location,
            out.correlation_id, out.attempts) == ("captured", 201, "cap", "/captures/cap",
                                                  "corr-ok", 1)
    assert out.first_attempt_at is not None and out.completed_at is not None
    assert out.first_attempt_at.tzinfo is UTC
    assert rec.outcome_log == report.outcomes
    assert sorted(a.idempotency_key for a in rec.attempt_log) == sorted(r.idempotency_key
                                                                        for r in reqs)


def test_retries_reuse_the_key_and_back_off() -> None:
    reqs, rec, ft = make_requests(1), MemoryRecorder(), FakeTime()
    client = FakeClient(rec, {"key-0": [unavailable(), unavailable(unknown=True), ok("c9")]})
    report = send(reqs, client, rec, ft)
    out = report.outcomes["key-0"]
    assert out.status == "captured" and out.capture_id == "c9" and out.attempts == 3
    assert client.calls == ["key-0"] * 3
    assert ft.sleeps == [0.5, 1.0]  # full jitter at random()=0.5: base*2**n/2
    assert [(a.attempt, a.http_status, a.error, a.outcome_unknown) for a in rec.attempt_log] == [
        (1, 503, "TEMPORARILY_UNAVAILABLE", False), (2, 503, "TEMPORARILY_UNAVAILABLE", True),
        (3, 201, None, False)]
    assert out.completed_at is not None and out.first_attempt_at is not None
    assert out.completed_at - out.first_attempt_at == timedelta(seconds=1.5)


def test_a_terminal_error_is_final_at_once() -> None:
    reqs, rec, ft = make_requests(1), MemoryRecorder(), FakeTime()
    refused = TerminalError("403", http_status=403, error_code="CAPTURE_NOT_ALLOWED",
                            error_messages=("over the remaining amount",), correlation_id="c4")
    client = FakeClient(rec, {"key-0": [refused]})
    report = send(reqs, client, rec, ft)
    assert client.calls == ["key-0"]
    assert report.outcomes["key-0"] == CaptureOutcome(
        status="rejected", http_status=403, correlation_id="c4", error_code="CAPTURE_NOT_ALLOWED",
        error_messages=("over the remaining amount",), attempts=1,
        first_attempt_at=ft.base, completed_at=ft.base)


def test_a_409_after_an_unknown_attempt_is_not_a_rejection() -> None:
    reqs, rec, ft = make_requests(1), MemoryRecorder(), FakeTime()
    conflict = TerminalError("409", http_status=409, error_code="CONFLICT")
    timeout = TransientError("t", error_code="TIMEOUT", outcome_unknown=True)
    report = send(reqs, FakeClient(rec, {"key-0": [timeout, conflict]}), rec, ft)
    out = report.outcomes["key-0"]
    assert (out.status, out.outcome_unknown, out.http_status) == ("failed", True, 409)


def test_max_attempts_then_failed_with_the_last_error() -> None:
    reqs, rec, ft = make_requests(2), MemoryRecorder(), FakeTime()
    timeout = TransientError("capture of order ord-0: ReadTimeout", error_code="TIMEOUT",
                             outcome_unknown=True)
    client = FakeClient(rec, {"key-0": [timeout, unavailable()], "key-1": [unavailable()]})
    report = send(reqs, client, rec, ft, max_attempts=3)
    assert client.calls.count("key-0") == 3 and client.calls.count("key-1") == 3
    out0, out1 = report.outcomes["key-0"], report.outcomes["key-1"]
    assert (out0.status, out0.attempts, out0.http_status, out0.error_code,
            out0.correlation_id, out0.outcome_unknown) == (
        "failed", 3, 503, "TEMPORARILY_UNAVAILABLE", "corr-503", True)
    assert (out1.status, out1.outcome_unknown) == ("failed", False)
    assert report.aborted is None


def test_the_breaker_opens_after_n_consecutive_transient_failures() -> None:
    reqs, rec, ft = make_requests(20), MemoryRecorder(), FakeTime()
    client = FakeClient(rec, default=unavailable())
    report = send(reqs, client, rec, ft, concurrency=1, max_attempts=1, breaker=5)
    assert isinstance(report.aborted, CircuitOpenError)
    assert "5 consecutive" in str(report.aborted)
    assert len(client.calls) == 5
    assert report.counts == {"failed": 5, "not_sent": 15}
    assert len(report.outcomes) == 20


def test_a_success_resets_the_breaker() -> None:
    reqs, rec, ft = make_requests(12), MemoryRecorder(), FakeTime()
    scripts: dict[str, Script] = {f"key-{i}": [unavailable()] for i in range(12) if i % 3}
    report = send(reqs, FakeClient(rec, scripts), rec, ft, concurrency=1, max_attempts=1,
                  breaker=3)
    assert report.aborted is None and report.counts == {"captured": 4, "failed": 8}


def test_a_401_stops_the_run_at_once() -> None:
    reqs, rec, ft = make_requests(50), MemoryRecorder(), FakeTime()
    client = FakeClient(rec, default=AuthenticationError("the provider answered 401"))
    report = send(reqs, client, rec, ft, concurrency=1)
    assert isinstance(report.aborted, AuthenticationError)
    assert client.calls == ["key-0"]
    out = report.outcomes["key-0"]
    assert (out.status, out.http_status, out.error_code, out.attempts) == (
        "failed", 401, "UNAUTHORIZED", 1)
    assert report.counts == {"failed": 1, "not_sent": 49}


def test_a_401_cuts_short_the_back_off_of_others() -> None:
    reqs, rec, ft = make_requests(2), MemoryRecorder(), FakeTime()
    # key-0 fails and backs off; key-1's 401 must stop it from trying again.
    client = FakeClient(rec, {"key-0": [unavailable()],
                              "key-1": [AuthenticationError("401")]})

    async def slow_sleep(seconds: float) -> None:
        await asyncio.sleep(3600)  # a back-off only a halt can end

    async def go() -> SendReport:
        return await send_captures(reqs, client, rec, SendPolicy(rate=None, concurrency=2),
                                   clock=ft.clock, sleep=slow_sleep, now=ft.now)
    report = asyncio.run(asyncio.wait_for(go(), 5))
    assert isinstance(report.aborted, AuthenticationError)
    assert client.calls == ["key-0", "key-1"]
    assert report.outcomes["key-0"].status == "failed"


def test_stop_lets_in_flight_finish_and_sends_nothing_new() -> None:
    reqs, rec, ft = make_requests(30), MemoryRecorder(), FakeTime()
    client = FakeClient(rec)
    client.gate = asyncio.Event()
    stop = asyncio.Event()

    async def go() -> SendReport:
        task = asyncio.ensure_future(send_captures(
            reqs, client, rec, SendPolicy(rate=None, concurrency=3), stop=stop,
            clock=ft.clock, sleep=ft.sleep, now=ft.now))
        while client.in_flight < 3:
            await asyncio.sleep(0)
        stop.set()  # what the pipeline's SIGINT handler does
        await asyncio.sleep(0)
        assert client.gate is not None
        client.gate.set()
        return await task

    report = asyncio.run(go())
    assert isinstance(report.aborted, Interrupted)
    assert client.calls == ["key-0", "key-1", "key-2"]
    assert report.counts == {"captured": 3, "not_sent": 27}
    # Admitted-but-unstarted requests have intents, so their not_sent is on record too.
    assert {k for k, o in rec.outcome_log.items() if o.status == "not_sent"} == (
        set(rec.intent_at) - {"key-0", "key-1", "key-2"})


def test_stop_before_the_start_sends_nothing() -> None:
    reqs, rec, ft = make_requests(5), MemoryRecorder(), FakeTime()
    client = FakeClient(rec)

    async def go() -> SendReport:
        stop = asyncio.Event()
        stop.set()
        return await send_captures(reqs, client, rec, SendPolicy(), stop=stop,
                                   clock=ft.clock, sleep=ft.sleep, now=ft.now)
    report = asyncio.run(go())
    assert isinstance(report.aborted, Interrupted)
    assert client.calls == [] and report.counts == {"not_sent": 5} and rec.intent_at == {}


def test_intents_are_written_ahead_in_batches_and_everything_flushed() -> None:
    reqs, rec, ft = make_requests(200), MemoryRecorder(), FakeTime()
    report = send(reqs, FakeClient(rec), rec, ft, concurrency=8, batch_size=64)
    assert [n for kind, n in rec.events if kind == "intents"] == [64, 64, 64, 8]
    assert len(rec.attempt_log) == 200 and len(rec.outcome_log) == 200
    assert report.counts == {"captured": 200}
    # Batched, not one write per capture.
    assert sum(1 for kind, _ in rec.events if kind != "intents") < 20


def test_write_ahead_through_the_real_client() -> None:
    """The intent is recorded before the transport sees the request."""
    reqs, rec, ft = make_requests(5), MemoryRecorder(), FakeTime()
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        key = request.headers["Klarna-Idempotency-Key"]
        assert key in rec.intent_at
        seen.append(key)
        return httpx.Response(201, headers={"Capture-Id": f"c-{key}"})

    async def go() -> SendReport:
        async with ApiClient("https://api.example", Credentials(Secret("k")),
                             transport=httpx.MockTransport(handler)) as client:
            return await send_captures(reqs, client, rec, SendPolicy(rate=None), clock=ft.clock,
                                       sleep=ft.sleep, now=ft.now)
    report = asyncio.run(go())
    assert sorted(seen) == sorted(rec.intent_at) and len(seen) == 5
    assert report.outcomes["key-2"].capture_id == "c-key-2"


def test_a_429_holds_the_whole_run_and_headers_slow_it() -> None:
    reqs, rec, ft = make_requests(1), MemoryRecorder(), FakeTime()
    too_many = TransientError("429", http_status=429, retry_after=2.0)
    client = FakeClient(rec, {"key-0": [too_many, ok(ratelimit=RateLimit(0, 0.5, 200))]})
    report = send(reqs, client, rec, ft, rate=100.0)
    assert report.outcomes["key-0"].status == "captured"
    assert ft.sleeps[0] == 2.0  # the back-off honours Retry-After; the bucket's hold is spent
    assert ft.t >= 2.0


def test_the_limiter_paces_attempts() -> None:
    reqs, rec, ft = make_requests(101), MemoryRecorder(), FakeTime()
    send(reqs, FakeClient(rec), rec, ft, rate=50.0, concurrency=8)
    assert ft.t == pytest.approx(100 / 50, rel=0.01)


def test_a_recorder_failure_propagates() -> None:
    class Broken(MemoryRecorder):
        def attempts(self, records: Sequence[AttemptRecord]) -> None:
            raise OSError("disk full")

    reqs, ft = make_requests(3), FakeTime()
    rec = Broken()
    with pytest.raises(OSError, match="disk full"):
        send(reqs, FakeClient(rec), rec, ft, batch_size=1)


def test_duplicate_keys_are_refused() -> None:
    reqs, rec, ft = make_requests(2), MemoryRecorder(), FakeTime()
    with pytest.raises(ValueError, match="idempotency key"):
        send([*reqs, reqs[0]], FakeClient(rec), rec, ft)
