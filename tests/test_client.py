"""etl.client: the wire ↔ error-tree boundary, against httpx.MockTransport handlers."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable

import aiohttp
import httpx
import pytest

from etl.client import ApiClient, CaptureSuccess, RateLimit
from etl.config import Credentials, Secret
from etl.errors import AuthenticationError, TerminalError, TransientError
from etl.model import CaptureRequest

BASE = "https://api.playground.klarna.com"
USER, PASSWORD = "merchant_K123", "sup3r-s3cret-pw"
CREDS = Credentials(Secret(USER), Secret(PASSWORD))
TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
REQ = CaptureRequest(order_id="ord-1", capture_reference="shp-1", idempotency_key="key-1",
                     content_hash="h", captured_amount=1000, currency="EUR",
                     body=b'{"captured_amount":1000}')

Handler = Callable[[httpx.Request], httpx.Response]


def run_capture(handler: Handler, creds: Credentials = CREDS) -> CaptureSuccess:
    async def go() -> CaptureSuccess:
        async with ApiClient(BASE, creds, timeout=5, max_connections=4,
                             transport=httpx.MockTransport(handler)) as client:
            return await client.capture(REQ)
    return asyncio.run(go())


def capture_error(handler: Handler) -> BaseException:
    with pytest.raises((TerminalError, TransientError, AuthenticationError)) as info:
        run_capture(handler)
    return info.value


def error_body(status: int, code: str, *messages: str, corr: str = "corr-9",
               headers: dict[str, str] | None = None) -> httpx.Response:
    body = {"error_code": code, "error_messages": list(messages), "correlation_id": corr}
    return httpx.Response(status, json=body, headers=headers)


def assert_no_secret(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), repr(exc.args), repr(vars(exc))):
        for secret in (USER, PASSWORD, TOKEN):
            assert secret not in text


def test_201_is_parsed_and_the_request_is_what_the_api_expects() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, headers={
            "Capture-Id": "cap-77",
            "Location": f"{BASE}/ordermanagement/v1/orders/ord-1/captures/cap-77",
            "Klarna-Correlation-Id": "corr-1", "X-Ratelimit-Limit": "200, 200;w=1",
            "X-Ratelimit-Remaining": "198", "X-Ratelimit-Reset": "0.4"})

    ok = run_capture(handler)
    assert ok == CaptureSuccess(201, "cap-77",
                                f"{BASE}/ordermanagement/v1/orders/ord-1/captures/cap-77",
                                "corr-1", RateLimit(198, 0.4, 200))
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/ordermanagement/v1/orders/ord-1/captures"
    assert request.headers["Klarna-Idempotency-Key"] == "key-1"
    assert request.headers["Authorization"] == f"Basic {TOKEN}"  # on the wire...
    assert request.headers["Content-Type"] == "application/json"
    assert request.content == REQ.body
    assert TOKEN not in repr(request.headers)  # ...but never shown


def test_an_api_key_is_sent_as_the_username_with_an_empty_password() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(201, headers={"Capture-Id": "c"})

    run_capture(handler, Credentials(Secret("klarna_test_api_xyz")))
    assert seen == ["Basic " + base64.b64encode(b"klarna_test_api_xyz:").decode()]


@pytest.mark.parametrize(("status", "code"), [
    (400, "BAD_VALUE"), (403, "CAPTURE_NOT_ALLOWED"), (404, "NO_SUCH_ORDER"), (409, "CONFLICT"),
    (413, "REQUEST_TOO_LARGE"), (422, "UNPROCESSABLE_ENTITY")])
def test_other_4xx_are_terminal_with_the_error_body(status: int, code: str) -> None:
    exc = capture_error(lambda r: error_body(status, code, "first", "second"))
    assert type(exc) is TerminalError
    assert (exc.http_status, exc.error_code, exc.error_messages, exc.correlation_id) == (
        status, code, ("first", "second"), "corr-9")
    assert code in str(exc) and "ord-1" in str(exc)
    assert_no_secret(exc)


def test_a_non_json_error_body_is_tolerated() -> None:
    exc = capture_error(lambda r: httpx.Response(400, text="<html>Bad gateway thing</html>"))
    assert isinstance(exc, TerminalError)
    assert (exc.http_status, exc.error_code, exc.correlation_id) == (400, None, None)
    assert exc.error_messages == ("<html>Bad gateway thing</html>",)
    exc = capture_error(lambda r: httpx.Response(502, content=b"\xff\xfe"))
    assert isinstance(exc, TransientError) and exc.http_status == 502


def test_an_echoed_secret_in_an_error_body_is_redacted() -> None:
    exc = capture_error(
        lambda r: httpx.Response(400, text=f"bad auth {r.headers['Authorization']}"))
    assert_no_secret(exc)


def test_401_is_an_authentication_error_without_secrets() -> None:
    exc = capture_error(lambda r: httpx.Response(401, text=f"nope {USER}"))
    assert isinstance(exc, AuthenticationError)
    assert_no_secret(exc)


def test_429_retry_after_wins_over_ratelimit_reset() -> None:
    exc = capture_error(lambda r: error_body(429, "TOO_MANY_REQUESTS", headers={
        "Retry-After": "3", "X-Ratelimit-Reset": "0.5"}))
    assert isinstance(exc, TransientError)
    assert (exc.http_status, exc.retry_after, exc.outcome_unknown) == (429, 3.0, False)


def test_429_falls_back_to_ratelimit_reset() -> None:
    exc = capture_error(lambda r: error_body(429, "TOO_MANY_REQUESTS", headers={
        "X-Ratelimit-Reset": "0.25", "X-Ratelimit-Remaining": "0"}))
    assert isinstance(exc, TransientError) and exc.retry_after == 0.25


@pytest.mark.parametrize(("status", "unknown"), [(500, True), (502, True), (503, False),
                                                 (504, True)])
def test_5xx_is_transient(status: int, unknown: bool) -> None:
    exc = capture_error(lambda r: error_body(status, "TEMPORARILY_UNAVAILABLE"))
    assert isinstance(exc, TransientError)
    assert (exc.http_status, exc.error_code, exc.outcome_unknown) == (
        status, "TEMPORARILY_UNAVAILABLE", unknown)


def raiser(exc_type: type[httpx.TransportError]) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type(f"boom {request.headers['Authorization']}", request=request)
    return handler


@pytest.mark.parametrize(("exc_type", "unknown", "code"), [
    (httpx.ReadTimeout, True, "TIMEOUT"),
    (httpx.WriteTimeout, True, "TIMEOUT"),
    (httpx.RemoteProtocolError, True, "CONNECTION_ERROR"),
    (httpx.ReadError, True, "CONNECTION_ERROR"),
    (httpx.ConnectError, False, "CONNECTION_ERROR"),
    (httpx.ConnectTimeout, False, "TIMEOUT"),
    (httpx.PoolTimeout, False, "TIMEOUT")])
def test_transport_errors_are_transient_and_unknown_once_possibly_sent(
        exc_type: type[httpx.TransportError], unknown: bool, code: str) -> None:
    exc = capture_error(raiser(exc_type))
    assert isinstance(exc, TransientError)
    assert (exc.outcome_unknown, exc.error_code, exc.http_status) == (unknown, code, None)
    assert isinstance(exc.__cause__, exc_type)
    assert_no_secret(exc)


@pytest.mark.parametrize(("aio_exc", "unknown"), [
    (aiohttp.ServerDisconnectedError(), True),
    (aiohttp.ClientConnectorError(aiohttp.client_reqrep.ConnectionKey(
        "h", 443, True, True, None, None, None), OSError(111, "refused")), False)])
def test_the_aiohttp_transport_s_disconnects_are_judged_by_their_cause(
        aio_exc: aiohttp.ClientError, unknown: bool) -> None:
    # httpx_aiohttp maps both to httpx.ConnectTimeout, chaining the aiohttp original.
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("mapped") from aio_exc

    exc = capture_error(handler)
    assert isinstance(exc, TransientError) and exc.outcome_unknown is unknown


def test_get_json_and_get_text_and_get_order() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/ordermanagement/v1/orders/ord-1":
            return httpx.Response(200, json={"status": "AUTHORIZED", "captures": []})
        if request.url.path == "/settlements/v1/transactions":
            assert request.url.params["order_id"] == "ord-1"
            return httpx.Response(200, json={"transactions": [], "pagination": {}})
        if request.url.path == "/settlements/v1/reports/payout-with-transactions":
            return httpx.Response(200, text="a;b\n1;2\n")
        return error_body(404, "NOT_FOUND")

    async def go() -> None:
        async with ApiClient(BASE, CREDS, transport=httpx.MockTransport(handler)) as client:
            assert (await client.get_order("ord-1"))["status"] == "AUTHORIZED"
            data = await client.get_json("/settlements/v1/transactions", {"order_id": "ord-1"})
            assert data["transactions"] == []
            assert await client.get_text(
                "/settlements/v1/reports/payout-with-transactions",
                {"payment_reference": "p"}) == "a;b\n1;2\n"
            with pytest.raises(TerminalError) as info:
                await client.get_order("nope")
            assert info.value.http_status == 404

    asyncio.run(go())


def test_repr_shows_no_secret() -> None:
    client = ApiClient(BASE, CREDS, transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    try:
        for text in (repr(client), repr(vars(client))):
            assert TOKEN not in text and PASSWORD not in text and USER not in text
    finally:
        asyncio.run(client.aclose())

