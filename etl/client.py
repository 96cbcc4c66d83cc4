"""The provider's HTTP API, and the only module that imports httpx.

Sits inside the send stage (read → validate → plan → **send** → record → report): ``etl.send``
calls ``ApiClient.capture`` once per attempt; ``settlements fetch`` and the ledger's past-24-h check
use ``get_json`` / ``get_text`` / ``get_order``.

Everything the wire can do is translated here, at one boundary, into the ``etl.errors`` tree:

    2xx                         → ``CaptureSuccess`` (capture id, location, rate-limit headers)
    401                         → ``AuthenticationError`` (the run stops)
    429, 5xx                    → ``TransientError`` (``retry_after`` from the headers)
    timeout, dropped connection → ``TransientError``; ``outcome_unknown`` unless surely unsent
    any other status            → ``TerminalError`` with the parsed error body

In production the transport is aiohttp's (``httpx_aiohttp.AiohttpTransport``): httpx's own
connection pool contends badly with many requests in flight (encode/httpx#3215), costing ~10x the
CPU per request at 100 in flight. Tests inject ``httpx.MockTransport``.

No secret leaves this module: the Authorization header is built once, httpx masks it in
``Headers`` reprs, and no message carries a header, a body we sent, or an exception's text
unredacted. No redirect is followed: the provider never answers one to these calls.
"""

from __future__ import annotations

import base64
import json
import ssl
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import httpx
import yarl
from httpx_aiohttp import AiohttpTransport
from httpx_aiohttp.transport import map_aiohttp_exceptions

from etl.config import DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT, Credentials, Secret
from etl.errors import AuthenticationError, TerminalError, TlsError, TransientError
from etl.model import CaptureRequest

USER_AGENT = "bulkcapture/0.1"
CAPTURES_PATH = "/ordermanagement/v1/orders/{}/captures"
ORDER_PATH = "/ordermanagement/v1/orders/{}"
IDEMPOTENCY_HEADER = "Klarna-Idempotency-Key"
# The provider's docs do not name the response header; the error body always carries the id.
CORRELATION_HEADERS = ("klarna-correlation-id", "correlation-id", "x-correlation-id")
# 5xx answers after which the provider may already have acted (a gateway gave up waiting, or the
# service failed midway): the capture may exist. 503 and 429 are refusals at the door.
_UNKNOWN_AFTER_STATUS = frozenset({500, 502, 504})
_MAX_TEXT = 300  # characters of a non-JSON error body kept as its message


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The provider's ``X-Ratelimit-*`` headers of one response (api.md § Rate limits)."""

    remaining: int | None
    reset: float | None  # seconds until the window resets
    limit: int | None


@dataclass(frozen=True, slots=True)
class CaptureSuccess:
    """A 201: the capture exists."""

    http_status: int
    capture_id: str | None
    location: str | None
    correlation_id: str | None
    ratelimit: RateLimit | None


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    # X-Ratelimit-Limit looks like "200, 200;w=1": the first number is the quota.
    head = value.split(",", 1)[0].split(";", 1)[0].strip()
    try:
        return int(float(head))
    except ValueError:
        return None


def _seconds_or_none(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None  # an HTTP-date Retry-After: not used by this provider; fall back to back-off
    return seconds if seconds >= 0 else None


def parse_ratelimit(headers: httpx.Headers) -> RateLimit | None:
    remaining = headers.get("x-ratelimit-remaining")
    reset = headers.get("x-ratelimit-reset")
    limit = headers.get("x-ratelimit-limit")
    if remaining is None and reset is None and limit is None:
        return None
    return RateLimit(_int_or_none(remaining), _seconds_or_none(reset), _int_or_none(limit))


def _correlation_header(headers: httpx.Headers) -> str | None:
    for name in CORRELATION_HEADERS:
        value = headers.get(name)
        if value:
            return value
    return None


def _certificate_failed(exc: BaseException) -> bool:
    """Anywhere in the chain: a certificate that did not verify."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError
                      | aiohttp.ClientConnectorCertificateError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _unsent(exc: httpx.TransportError) -> bool:
    """True when the request surely never reached the provider (no connection was made)."""
    # httpx_aiohttp maps every aiohttp connection error, a server disconnect included, to
    # ConnectTimeout; the original is chained, so judge by it.
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ClientError):
        return isinstance(cause, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError)
    return isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


class LeanAiohttpTransport(AiohttpTransport):
    """``AiohttpTransport`` minus the per-request work this client never needs.

    At 200 requests/s every request wakes a cold event loop, so each microsecond of Python per
    request costs several (bench/RESULTS.md, 2026-11-28 CPU section). Same connection pool and
    the same aiohttp → httpx error mapping as the parent; what differs:

    * the body is read here in one ``read()``, not through an async-generator stream
      (``AiohttpResponseStream`` + ``aiter_bytes``), and the connection released at once;
    * the ``ClientTimeout`` is built once per distinct timeout, not per request;
    * the URL goes to aiohttp as an already-encoded ``yarl.URL`` (httpx has encoded it), and the
      headers as a list of pairs, so neither is parsed or re-quoted a second time.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}

    def _client_timeout(self, timeout: dict[str, float | None]) -> aiohttp.ClientTimeout:
        key = (timeout.get("connect"), timeout.get("read"), timeout.get("pool"))
        found = self._timeouts.get(key)
        if found is None:
            found = self._timeouts[key] = aiohttp.ClientTimeout(
                sock_connect=key[0], sock_read=key[1], connect=key[2])
        return found

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.proxy is not None:  # pragma: no cover - this client never sets a proxy
            return await super().handle_async_request(request)
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        session = self.client
        data = request.content or None  # this client only sends bodies it holds in memory
        with map_aiohttp_exceptions():
            response = await session.request(
                request.method, yarl.URL(str(request.url), encoded=True),
                headers=request.headers.multi_items(), data=data, allow_redirects=False,
                auto_decompress=False, compress=False,
                timeout=self._client_timeout(request.extensions.get("timeout", {})),
                server_hostname=request.extensions.get("sni_hostname"))
            try:
                body = await response.read()
            finally:
                response.release()
        extensions: dict[str, Any] = {"http_version": b"HTTP/1.1"}
        if response.reason:
            extensions["reason_phrase"] = response.reason.encode()
        return httpx.Response(response.status, headers=response.raw_headers, content=body,
                              request=request, extensions=extensions)


class ApiClient:
    """An async client of the Order Management and Settlements APIs over keep-alive connections.

    ``base_url`` must have passed ``config.check_base_url``. Use as ``async with``.
    """

    def __init__(
        self,
        base_url: str,
        credentials: Credentials,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_CONCURRENCY,
        transport: httpx.AsyncBaseTransport | None = None,
        user_agent: str = USER_AGENT,
    ) -> None:
        user, password = credentials.basic_pair()
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        # Everything that must never be shown: the raw secrets and their Basic encoding.
        self._secrets = tuple(Secret(s) for s in (*credentials.secrets(), token) if s)
        if transport is None:
            transport = LeanAiohttpTransport(limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections))
        # Requests go straight to the transport: httpx.AsyncClient's per-request work (URL
        # merging, cookies, auth flow, redirects) is a third of the client's CPU at 200/s and
        # none of it is needed here. The headers are built once.
        self._transport = transport
        self._base = base_url.rstrip("/")
        # The value stays a Secret (a str whose repr is masked) so no repr of this client shows it.
        self._headers: list[tuple[str, str]] = [
            ("Authorization", Secret(f"Basic {token}")),
            ("User-Agent", user_agent),
            ("Accept", "application/json"),
        ]
        # An httpx.Headers is copied without re-normalising each header (a list is not).
        self._capture_headers = httpx.Headers([*self._headers,
                                               ("Content-Type", "application/json")])
        self._extensions = {"timeout": httpx.Timeout(timeout).as_dict()}

    def __repr__(self) -> str:
        return f"ApiClient({self._base!r})"

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    # -- the calls -------------------------------------------------------------------------

    async def capture(self, req: CaptureRequest) -> CaptureSuccess:
        """POST one capture with its idempotency key. Raises a ``CaptureError`` or a 401."""
        headers = self._capture_headers.copy()
        headers[IDEMPOTENCY_HEADER] = req.idempotency_key
        request = httpx.Request(
            "POST", self._base + CAPTURES_PATH.format(quote(req.order_id, safe="")),
            headers=headers, content=req.body, extensions=self._extensions)
        response = await self._send(request, f"capture of order {req.order_id}")
        headers = response.headers
        return CaptureSuccess(
            http_status=response.status_code,
            capture_id=headers.get("capture-id"),
            location=headers.get("location"),
            correlation_id=_correlation_header(headers),
            ratelimit=parse_ratelimit(headers),
        )

    async def get_order(self, order_id: str) -> dict[str, Any]:
        """The order as the provider holds it (status, amounts, ``captures[]``)."""
        return await self.get_json(ORDER_PATH.format(quote(order_id, safe="")))

    async def get_json(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self._get(path, params)
        try:
            data = response.json()
        except ValueError as exc:
            raise TerminalError(f"GET {path}: the provider's answer is not JSON.",
                                http_status=response.status_code) from exc
        if not isinstance(data, dict):
            raise TerminalError(f"GET {path}: expected a JSON object, got {type(data).__name__}.",
                                http_status=response.status_code)
        return data

    async def get_text(self, path: str, params: dict[str, Any] | None = None) -> str:
        response = await self._get(path, params)
        return response.text

    async def _get(self, path: str, params: dict[str, Any] | None) -> httpx.Response:
        request = httpx.Request("GET", self._base + path, params=params, headers=self._headers,
                                extensions=self._extensions)
        return await self._send(request, f"GET {path}")

    # -- the one boundary ------------------------------------------------------------------

    async def _send(self, request: httpx.Request, what: str) -> httpx.Response:
        """One round trip, body read, connection released; every failure translated."""
        try:
            response = await self._transport.handle_async_request(request)
            try:
                await response.aread()
            finally:
                await response.aclose()
        except (httpx.RequestError, aiohttp.ClientError, OSError) as exc:
            if _certificate_failed(exc):
                # Not transient: retrying a target that cannot prove who it is only delays the
                # stop, and a wrong certificate may mean the wrong host.
                raise TlsError(f"{what}: the TLS certificate of {urlsplit(self._base).hostname} "
                               "did not verify; check --base-url (no request was sent).") from exc
            raise self._transport_error(exc, what) from exc
        status = response.status_code
        if 200 <= status < 300:
            return response
        raise self._error(response, what)

    def _transport_error(self, exc: BaseException, what: str) -> TransientError:
        """A timeout or connection error: transient; outcome unknown unless surely unsent."""
        if isinstance(exc, httpx.RequestError):  # timeouts, connection errors, undecodable
            unknown = not (isinstance(exc, httpx.TransportError) and _unsent(exc))
            code = "TIMEOUT" if isinstance(exc, httpx.TimeoutException) else "CONNECTION_ERROR"
            return TransientError(f"{what}: {self._describe(exc)}", outcome_unknown=unknown,
                                  error_code=code)
        # What httpx_aiohttp leaves unmapped (e.g. a bare asyncio timeout): sent, maybe.
        code = "TIMEOUT" if isinstance(exc, TimeoutError) else "CONNECTION_ERROR"
        return TransientError(f"{what}: {self._describe(exc)}", outcome_unknown=True,
                              error_code=code)

    def _error(self, response: httpx.Response, what: str) -> Exception:
        status = response.status_code
        if status == 401:
            return AuthenticationError(
                f"the provider answered 401 Unauthorized to the {what}: the credentials are "
                "wrong or belong to another merchant id; nothing more is sent.")
        code, messages, correlation = self._error_body(response)
        correlation = correlation or _correlation_header(response.headers)
        label = f"{what}: HTTP {status}" + (f" {code}" if code else "")
        if messages:
            label += f": {'; '.join(messages)}"
        fields: dict[str, Any] = {"http_status": status, "error_code": code,
                                  "error_messages": messages, "correlation_id": correlation}
        if status == 429 or status >= 500:
            headers = response.headers
            retry_after = _seconds_or_none(headers.get("retry-after"))
            if retry_after is None and status == 429:
                retry_after = _seconds_or_none(headers.get("x-ratelimit-reset"))
            return TransientError(label, outcome_unknown=status in _UNKNOWN_AFTER_STATUS,
                                  retry_after=retry_after, **fields)
        return TerminalError(label, **fields)

    def _error_body(
        self, response: httpx.Response,
    ) -> tuple[str | None, tuple[str, ...], str | None]:
        """``error_code``, ``error_messages``, ``correlation_id``; tolerant of any body."""
        raw = response.content
        if not raw:
            return None, (), None
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if isinstance(data, dict):
            code = data.get("error_code")
            msgs = data.get("error_messages")
            corr = data.get("correlation_id")
            messages = tuple(self._redact(str(m)) for m in msgs) if isinstance(msgs, list) else ()
            return (str(code) if code is not None else None, messages,
                    str(corr) if corr is not None else None)
        text = self._redact(raw.decode("utf-8", "replace").strip())[:_MAX_TEXT]
        return None, ((text,) if text else ()), None

    def _describe(self, exc: BaseException) -> str:
        text = self._redact(str(exc))[:_MAX_TEXT]
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text
