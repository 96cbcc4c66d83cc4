"""The sandbox's capture and order endpoints over real loopback HTTP: auth, the contract and its
limits, business rules, idempotency (also concurrent), rate limit, injected faults."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from etl.sandbox import FakeClock
from schemas.limits import CAPTURE_STRING_LIMITS, LINE_STRING_LIMITS, MAX_AMOUNT, MAX_BODY_BYTES

OM = "/ordermanagement/v1/orders"
Factory = Callable[..., Any]


def _line(amount: int, **kw: Any) -> dict[str, Any]:
    return {"name": "Socks", "quantity": 1, "unit_price": amount, "total_amount": amount, **kw}


def _body(amount: int = 1000, **kw: Any) -> dict[str, Any]:
    return {"captured_amount": amount, "reference": "ref-1", **kw}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def book(sandbox: Factory, clock: FakeClock) -> Iterator[tuple[Any, httpx.Client]]:
    """A sandbox with an order book (no auto-authorise) on a fake clock, and a logged-in client."""
    sb = sandbox(clock=clock, orders=(
        {"order_id": "o-1", "order_amount": 10_000},
        {"order_id": "o-cancelled", "order_amount": 1000, "status": "CANCELLED"},
        {"order_id": "o-closed", "order_amount": 1000, "status": "CLOSED"},
        {"order_id": "o-pending", "order_amount": 1000, "fraud_status": "PENDING"},
        {"order_id": "o-rejected", "order_amount": 1000, "fraud_status": "REJECTED"},
        {"order_id": "o-sek", "order_amount": 1000, "purchase_currency": "SEK"},
    ))
    with httpx.Client(base_url=sb.url, auth=sb.auth) as client:
        yield sb, client


def _capture(client: httpx.Client, order_id: str, body: Any, key: str | None = None,
             **kw: Any) -> httpx.Response:
    headers = {"Klarna-Idempotency-Key": key or str(uuid.uuid4())}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(f"{OM}/{order_id}/captures", content=content,
                       headers={"Content-Type": "application/json", **headers}, **kw)


def _assert_error(resp: httpx.Response, status: int, code: str, mentions: str = "") -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["error_code"] == code
    assert uuid.UUID(body["correlation_id"]).version == 4
    assert isinstance(body["error_messages"], list) and body["error_messages"]
    assert mentions in body["error_messages"][0]
    assert resp.headers["Klarna-Correlation-Id"] == body["correlation_id"]


# -- auth ---------------------------------------------------------------------------------------
def test_default_credentials_and_401(sandbox: Factory) -> None:
    sb = sandbox(auto_authorize=True)
    assert (sb.username, sb.password) == ("sandbox", "sandbox")
    with httpx.Client(base_url=sb.url) as client:
        _assert_error(_capture(client, "o", _body()), 401, "UNAUTHORIZED")
        _assert_error(_capture(client, "o", _body(), auth=("sandbox", "wrong")), 401,
                      "UNAUTHORIZED")
        assert client.get(f"{OM}/o").status_code == 401
        assert client.get("/settlements/v1/payouts").status_code == 401
        assert _capture(client, "o", _body(), auth=sb.auth).status_code == 201


def test_configured_credentials_and_api_key(sandbox: Factory) -> None:
    sb = sandbox(auto_authorize=True, username="merchant", password="pw", api_key="kco_test_key")
    with httpx.Client(base_url=sb.url) as client:
        assert _capture(client, "a", _body(), auth=("merchant", "pw")).status_code == 201
        assert _capture(client, "b", _body(), auth=("kco_test_key", "")).status_code == 201
        assert _capture(client, "c", _body(), auth=("sandbox", "sandbox")).status_code == 401


# -- capture and order --------------------------------------------------------------------------
def test_capture_201_and_order_view(book: tuple[Any, httpx.Client], clock: FakeClock) -> None:
    sb, client = book
    resp = _capture(client, "o-1", _body(4000, reference="ship-1"))
    assert resp.status_code == 201 and resp.content == b""
    capture_id = resp.headers["Capture-Id"]
    assert resp.headers["Location"] == f"{sb.url}{OM}/o-1/captures/{capture_id}"

    order = client.get(f"{OM}/o-1").json()
    assert order["status"] == "PART_CAPTURED"
    assert (order["order_amount"], order["captured_amount"],
            order["remaining_authorized_amount"]) == (10_000, 4000, 6000)
    [cap] = order["captures"]
    assert cap["capture_id"] == capture_id and cap["reference"] == "ship-1"
    assert cap["captured_amount"] == 4000 and cap["klarna_reference"]
    assert cap["captured_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock()))
    assert client.get(resp.headers["Location"]).json() == cap

    assert _capture(client, "o-1", _body(6000)).status_code == 201
    order = client.get(f"{OM}/o-1").json()
    assert order["status"] == "CAPTURED" and order["remaining_authorized_amount"] == 0


def test_capture_with_lines_is_accepted(book: tuple[Any, httpx.Client]) -> None:
    _, client = book
    lines = [_line(700, quantity=1, type="physical", tax_rate=2500),
             {"name": "Two", "quantity": 2, "unit_price": 200, "total_discount_amount": 100,
              "total_amount": 300},
             _line(-100, type="discount", unit_price=-100)]
    body = _body(900, order_lines=lines,
                 shipping_info=[{"shipping_company": "DHL SE", "shipping_method": "Home"}])
    assert _capture(client, "o-1", body).status_code == 201


def test_unknown_order_404(book: tuple[Any, httpx.Client]) -> None:
    _, client = book
    _assert_error(_capture(client, "nope", _body()), 404, "NO_SUCH_ORDER", "nope")
    _assert_error(client.get(f"{OM}/nope"), 404, "NO_SUCH_ORDER")
    _assert_error(client.get(f"{OM}/o-1/captures/{uuid.uuid4()}"), 404, "NO_SUCH_CAPTURE")


# -- the contract -------------------------------------------------------------------------------
LONG_LINE = {k: "x" * (n + 1) for k, n in LINE_STRING_LIMITS.items()}


@pytest.mark.parametrize(("body", "field"), [
    ({"reference": "r"}, "captured_amount"),
    ({"captured_amount": "100"}, "captured_amount"),
    ({"captured_amount": True}, "captured_amount"),
    ({"captured_amount": -1}, "captured_amount"),
    ({"captured_amount": MAX_AMOUNT + 1}, "captured_amount"),
    *[({"captured_amount": 1, k: "x" * (n + 1)}, k) for k, n in CAPTURE_STRING_LIMITS.items()],
    *[({"captured_amount": 100, "order_lines": [_line(100, **{k: v})]}, f"order_lines[0].{k}")
      for k, v in LONG_LINE.items()],
    ({"captured_amount": 100, "order_lines": [{"quantity": 1, "unit_price": 100,
                                               "total_amount": 100}]}, "order_lines[0].name"),
    ({"captured_amount": 100, "order_lines": [_line(100, quantity=-1)]}, "order_lines[0].quantity"),
    ({"captured_amount": 100, "order_lines": [_line(100, type="robot")]}, "order_lines[0].type"),
    ({"captured_amount": 100, "order_lines": [_line(100, tax_rate=-1)]}, "order_lines[0].tax_rate"),
    ({"captured_amount": 100, "order_lines": [_line(100, total_amount=99)]},
     "order_lines[0].total_amount"),
    ({"captured_amount": 100, "order_lines": [_line(50), _line(40)]}, "captured_amount"),
    ({"captured_amount": 1, "order_lines": [_line(1)] * 1001}, "order_lines"),
    ({"captured_amount": 1, "order_lines": [_line(1, product_identifiers={"brand": "b" * 71})]},
     "order_lines[0].product_identifiers.brand"),
    ({"captured_amount": 1, "shipping_info": [{}] * 501}, "shipping_info"),
    ({"captured_amount": 1, "shipping_info": [{"shipping_method": "Teleport"}]},
     "shipping_info[0].shipping_method"),
    ({"captured_amount": 1, "shipping_delay": -1}, "shipping_delay"),
    ([1, 2], "body"),
])
def test_contract_violations_are_400_naming_the_field(
        book: tuple[Any, httpx.Client], body: Any, field: str) -> None:
    sb, client = book
    _assert_error(_capture(client, "o-1", body), 400, "BAD_VALUE", f"Bad value: {field} (")
    assert sb.state.list_captures() == []


def test_invalid_json_is_400(book: tuple[Any, httpx.Client]) -> None:
    _, client = book
    _assert_error(_capture(client, "o-1", b"{not json"), 400, "BAD_VALUE", "body")


@pytest.mark.parametrize("field", ["shipping_company", "tracking_number", "tracking_uri",
                                   "return_tracking_uri"])
def test_shipping_info_field_too_long_is_422(book: tuple[Any, httpx.Client], field: str) -> None:
    _, client = book
    body = _body(1, shipping_info=[{field: "x" * 1025}])
    _assert_error(_capture(client, "o-1", body), 422, "UNPROCESSABLE_ENTITY",
                  f"shipping_info[0].{field}")


def test_body_over_1mb_is_413_even_before_parsing(book: tuple[Any, httpx.Client]) -> None:
    sb, client = book
    padding = "x" * (MAX_BODY_BYTES - 40)
    body = json.dumps({"captured_amount": 1, "description": padding}).encode()
    assert len(body) > MAX_BODY_BYTES
    _assert_error(_capture(client, "o-1", body), 413, "REQUEST_TOO_LARGE")
    # Not even JSON: refused on size alone.
    _assert_error(_capture(client, "o-1", b"x" * (MAX_BODY_BYTES + 1)), 413, "REQUEST_TOO_LARGE")
    # Just under the limit, the size check lets it through to the contract (description too long).
    small = json.dumps({"captured_amount": 1, "description": "x" * 300}).encode()
    _assert_error(_capture(client, "o-1", small), 400, "BAD_VALUE", "description")
    assert sb.state.list_captures() == []


# -- business rules -----------------------------------------------------------------------------
@pytest.mark.parametrize(("order_id", "mentions"), [
    ("o-cancelled", "cancelled"), ("o-closed", "closed"), ("o-pending", "PENDING"),
    ("o-rejected", "REJECTED"),
])
def test_capture_not_allowed(book: tuple[Any, httpx.Client], order_id: str, mentions: str) -> None:
    _, client = book
    _assert_error(_capture(client, order_id, _body(100)), 403, "CAPTURE_NOT_ALLOWED", mentions)


def test_over_capture_is_403_and_exact_remainder_passes(book: tuple[Any, httpx.Client]) -> None:
    _, client = book
    assert _capture(client, "o-1", _body(7000)).status_code == 201
    _assert_error(_capture(client, "o-1", _body(3001)), 403, "CAPTURE_NOT_ALLOWED", "3001")
    assert _capture(client, "o-1", _body(3000)).status_code == 201


def test_no_capture_after_expires_at(book: tuple[Any, httpx.Client], clock: FakeClock) -> None:
    _, client = book
    assert _capture(client, "o-1", _body(1000)).status_code == 201
    clock.advance(28 * 86_400 - 1)
    assert _capture(client, "o-1", _body(1000)).status_code == 201
    clock.advance(2)
    _assert_error(_capture(client, "o-1", _body(1000)), 403, "CAPTURE_NOT_ALLOWED", "expired")
    assert client.get(f"{OM}/o-sek").json()["status"] == "EXPIRED"


def test_auto_authorize_uses_first_amount_times_factor(sandbox: Factory,
                                                       clock: FakeClock) -> None:
    sb = sandbox(auto_authorize=True, authorize_factor=1.5, currency="SEK", clock=clock)
    with httpx.Client(base_url=sb.url, auth=sb.auth) as client:
        assert _capture(client, "new", _body(1000)).status_code == 201
        order = client.get(f"{OM}/new").json()
        assert (order["order_amount"], order["purchase_currency"]) == (1500, "SEK")
        assert order["expires_at"] == time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                    time.gmtime(clock() + 28 * 86_400))
        assert _capture(client, "new", _body(500)).status_code == 201
        _assert_error(_capture(client, "new", _body(1)), 403, "CAPTURE_NOT_ALLOWED")


# -- idempotency --------------------------------------------------------------------------------
def test_same_key_replays_first_answer_and_ignores_body(book: tuple[Any, httpx.Client]) -> None:
    sb, client = book
    first = _capture(client, "o-1", _body(1000), key="k-1")
    again = _capture(client, "o-1", _body(9999, reference="other"), key="k-1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["Capture-Id"] == first.headers["Capture-Id"]
    assert again.headers["Location"] == first.headers["Location"]
    assert len(sb.state.list_captures()) == 1
    assert client.get(f"{OM}/o-1").json()["captured_amount"] == 1000

    refused = _capture(client, "o-1", _body(50_000), key="k-2")
    replay = _capture(client, "o-1", _body(1), key="k-2")  # body ignored: still refused
    assert refused.status_code == replay.status_code == 403
    assert refused.json() == replay.json()
    stats = client.get("/_sandbox/stats").json()
    assert (stats["captures"], stats["idempotent_replays"]) == (1, 2)


def test_key_is_forgotten_after_24h(book: tuple[Any, httpx.Client], clock: FakeClock) -> None:
    sb, client = book
    first = _capture(client, "o-1", _body(1000), key="k")
    clock.advance(24 * 3600 - 1)
    assert _capture(client, "o-1", _body(1000), key="k").headers["Capture-Id"] == \
        first.headers["Capture-Id"]
    clock.advance(2)
    late = _capture(client, "o-1", _body(1000), key="k")
    assert late.status_code == 201 and late.headers["Capture-Id"] != first.headers["Capture-Id"]
    assert len(sb.state.list_captures()) == 2  # the provider no longer protects past 24 h


def test_concurrent_same_key_captures_once(sandbox: Factory) -> None:
    sb = sandbox(auto_authorize=True, authorize_factor=100, latency_ms=20)

    async def fire() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=sb.url, auth=sb.auth,
                                     limits=httpx.Limits(max_connections=20)) as client:
            return await asyncio.gather(*[
                client.post(f"{OM}/o-c/captures", json=_body(100 + i),
                            headers={"Klarna-Idempotency-Key": "same"}) for i in range(20)])

    answers = asyncio.run(fire())
    assert {r.status_code for r in answers} == {201}
    assert len({r.headers["Capture-Id"] for r in answers}) == 1
    assert len(sb.state.list_captures()) == 1


# -- faults -------------------------------------------------------------------------------------
def test_dropped_connection_after_capture_then_retry_replays(sandbox: Factory) -> None:
    sb = sandbox(auto_authorize=True, drop_rate=1.0, seed=1)
    with httpx.Client(base_url=sb.url, auth=sb.auth) as client:
        with pytest.raises(httpx.TransportError):
            _capture(client, "o-d", _body(), key="drop-key")
        [made] = client.get("/_sandbox/captures").json()
        assert (made["order_id"], made["idempotency_key"]) == ("o-d", "drop-key")
        retry = _capture(client, "o-d", _body(), key="drop-key")
        assert retry.status_code == 201 and retry.headers["Capture-Id"] == made["capture_id"]
        assert len(client.get("/_sandbox/captures").json()) == 1
        assert client.get("/_sandbox/stats").json()["drops"] == 1


def test_fail_rate_answers_5xx_before_processing(sandbox: Factory) -> None:
    sb = sandbox(auto_authorize=True, fail_rate=1.0, seed=3)
    with httpx.Client(base_url=sb.url, auth=sb.auth) as client:
        codes = set()
        for _ in range(12):
            resp = _capture(client, "o-f", _body(), key="k")
            codes.add(resp.status_code)
            expected = "INTERNAL_SERVER_ERROR" if resp.status_code == 500 else \
                "TEMPORARILY_UNAVAILABLE"
            _assert_error(resp, resp.status_code, expected)
        assert codes == {500, 503}
        assert sb.state.list_captures() == []
        sb.state.faults.fail_rate = 0.0  # faults are live-tunable
        assert _capture(client, "o-f", _body(), key="k").status_code == 201


def test_fail_rate_is_seeded(sandbox: Factory) -> None:
    def pattern(seed: int) -> list[int]:
        sb = sandbox(auto_authorize=True, fail_rate=0.5, seed=seed, authorize_factor=1000)
        with httpx.Client(base_url=sb.url, auth=sb.auth) as client:
            return [_capture(client, "o", _body(1)).status_code for _ in range(16)]

    assert pattern(42) == pattern(42)
    assert 201 in pattern(42) and len(set(pattern(42))) > 1


def test_rate_limit_429_with_headers(sandbox: Factory, clock: FakeClock) -> None:
    sb = sandbox(auto_authorize=True, rate_limit=3, clock=clock, authorize_factor=100)
    with httpx.Client(base_url=sb.url, auth=sb.auth) as client:
        answers = [_capture(client, "o-r", _body(1)) for _ in range(5)]
        assert [r.status_code for r in answers] == [201, 201, 201, 429, 429]
        assert [r.headers["X-Ratelimit-Remaining"] for r in answers[:3]] == ["2", "1", "0"]
        for r in answers:
            assert r.headers["X-Ratelimit-Limit"] == "3, 3;w=1"
            assert 1 <= int(r.headers["X-Ratelimit-Reset"]) <= 1
        _assert_error(answers[3], 429, "TOO_MANY_REQUESTS")
        clock.advance(1)
        assert _capture(client, "o-r", _body(1)).status_code == 201
        assert client.get("/_sandbox/stats").json()["rate_limited"] == 2


def test_storm_answers_429_until_it_ends(sandbox: Factory, clock: FakeClock) -> None:
    sb = sandbox(auto_authorize=True, clock=clock, authorize_factor=100)
    with httpx.Client(base_url=sb.url, auth=sb.auth) as client:
        assert client.post("/_sandbox/storm", json={"seconds": 5}).status_code == 200
        resp = _capture(client, "o-s", _body(1))
        _assert_error(resp, 429, "TOO_MANY_REQUESTS")
        assert resp.headers["X-Ratelimit-Reset"] == "5"
        clock.advance(5)
        assert _capture(client, "o-s", _body(1)).status_code == 201


def test_periodic_storms(sandbox: Factory, clock: FakeClock) -> None:
    clock.now = 60 * 16_667.0  # a multiple of storm_every: a storm starts now
    sb = sandbox(auto_authorize=True, clock=clock, storm_every=60, storm_seconds=10,
                 authorize_factor=100)
    with httpx.Client(base_url=sb.url, auth=sb.auth) as client:
        assert _capture(client, "o", _body(1)).status_code == 429
        clock.advance(10)
        assert _capture(client, "o", _body(1)).status_code == 201
        clock.advance(50)
        assert _capture(client, "o", _body(1)).status_code == 429


def test_latency_is_added(sandbox: Factory) -> None:
    sb = sandbox(auto_authorize=True, latency_ms=150)
    with httpx.Client(base_url=sb.url, auth=sb.auth) as client:
        start = time.perf_counter()
        assert _capture(client, "o", _body()).status_code == 201
        assert time.perf_counter() - start >= 0.15


def test_introspection_lists_every_capture(book: tuple[Any, httpx.Client]) -> None:
    _, client = book
    _capture(client, "o-1", _body(100, reference="a"), key="ka")
    _capture(client, "o-1", _body(200, reference="b"), key="kb")
    rows = client.get("/_sandbox/captures").json()
    assert [(r["order_id"], r["reference"], r["captured_amount"], r["idempotency_key"])
            for r in rows] == [("o-1", "a", 100, "ka"), ("o-1", "b", 200, "kb")]
    assert all(r["capture_id"] and r["captured_at"] for r in rows)
    stats = client.get("/_sandbox/stats").json()
    assert stats["requests_by_status"]["201"] == 2 and stats["captures"] == 2
