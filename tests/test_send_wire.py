"""etl.send + etl.client over real loopback HTTP against the sandbox, with the aiohttp transport."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from etl.client import ApiClient
from etl.config import Credentials, Secret
from etl.errors import AuthenticationError
from etl.model import CaptureRequest
from etl.send import MemoryRecorder, SendPolicy, SendReport, send_captures


def make_requests(n: int) -> list[CaptureRequest]:
    return [CaptureRequest(order_id=f"wire-{i}", capture_reference=f"shp-{i}",
                           idempotency_key=f"00000000-0000-5000-8000-{i:012d}", content_hash="h",
                           captured_amount=1000, currency="EUR",
                           body=f'{{"captured_amount":1000,"reference":"shp-{i}"}}'.encode())
            for i in range(n)]


def run(url: str, creds: Credentials, reqs: list[CaptureRequest], **policy: Any) -> SendReport:
    async def go() -> SendReport:
        async with ApiClient(url, creds, timeout=5, max_connections=8) as client:
            return await send_captures(reqs, client, MemoryRecorder(),
                                       SendPolicy(**{"rate": None, "concurrency": 8, **policy}))
    return asyncio.run(go())


def test_captures_over_the_wire_once_per_key(sandbox: Callable[..., Any]) -> None:
    sb = sandbox(auto_authorize=True, username="merchant", password="pw", fail_rate=0.2, seed=7)
    creds = Credentials(Secret("merchant"), Secret("pw"))
    reqs = make_requests(30)
    first = run(sb.url, creds, reqs, backoff_base=0.001, backoff_cap=0.01, max_attempts=10)
    assert first.aborted is None and first.counts == {"captured": 30}, first.outcomes
    assert first.attempts > 30  # the injected 5xx were retried
    again = run(sb.url, creds, reqs)  # the same keys: the provider replays, captures nothing new
    assert {k: o.capture_id for k, o in again.outcomes.items()} == {
        k: o.capture_id for k, o in first.outcomes.items()}


def test_wrong_credentials_stop_the_run(sandbox: Callable[..., Any]) -> None:
    sb = sandbox(auto_authorize=True, username="merchant", password="pw")
    report = run(sb.url, Credentials(Secret("merchant"), Secret("pw-Xq93z")), make_requests(40),
                 concurrency=1)
    assert isinstance(report.aborted, AuthenticationError)
    assert report.counts == {"failed": 1, "not_sent": 39}
    assert "pw-Xq93z" not in str(report.aborted) + repr(report.aborted)
