"""The sandbox's HTTP face: aiohttp.web handlers over ``SandboxState``.

Why aiohttp.web rather than uvicorn + raw ASGI: a dropped connection (the fault that tests a
client's idempotency) must close the socket *after* the capture is made and *without* a response.
ASGI has no way to say that (an app that raises gets a 500 from uvicorn); aiohttp hands the handler
``request.transport``, and ``abort()`` does it. aiohttp is already a dependency, and its C parser
on uvloop keeps it well above the 2,000 captures/s target. Every answer carries a
``Klarna-Correlation-Id`` header; error bodies repeat it as ``correlation_id``.

Order of checks on a capture, as the provider appears to apply them: Basic auth (401) → rate limit
and 429 storms → injected 5xx → body size (413, before reading or parsing) → idempotency replay
→ contract (400/422) → order (404) → business rules (403) → capture (201) → injected latency →
injected drop. Only what is decided after the replay lookup is remembered under the key.

Sandbox-only endpoints (no auth, never on the real API): ``GET /_sandbox/captures`` (every capture
made), ``GET /_sandbox/stats`` (counters), ``POST /_sandbox/storm`` (``{"seconds": N}``: 429 to
every Order Management call for N seconds).
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from etl.sandbox import settlements
from etl.sandbox.state import Outcome, RateDecision, SandboxState, error_outcome
from schemas.limits import MAX_BODY_BYTES

OM = "/ordermanagement/v1/orders"
STATE_KEY: web.AppKey[SandboxState] = web.AppKey("state", SandboxState)
_JSON = "application/json"


def basic_header(username: str, password: str) -> str:
    """The ``Authorization`` value a client sends for ``username:password``."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return f"Basic {token}"


def accepted_headers(pairs: Iterable[tuple[str, str]]) -> frozenset[str]:
    """Every ``Authorization`` value to accept. An API key travels as the Basic username with
    an empty password, or alone (api.md § Hosts and authentication): accept both spellings."""
    out: set[str] = set()
    for user, pw in pairs:
        out.add(basic_header(user, pw))
        if not pw:
            out.add("Basic " + base64.b64encode(user.encode()).decode())
    return frozenset(out)


def _json_response(state: SandboxState, status: int, payload: Any,
                   headers: dict[str, str] | None = None) -> web.Response:
    state.count(status)
    hdrs = {"Klarna-Correlation-Id": str(uuid.uuid4())}
    if headers:
        hdrs.update(headers)  # an error's own correlation id wins
    return web.Response(status=status, body=json.dumps(payload).encode(), content_type=_JSON,
                        headers=hdrs)


def _error(state: SandboxState, outcome: Outcome,
           headers: dict[str, str] | None = None) -> web.Response:
    hdrs = {"Klarna-Correlation-Id": outcome.correlation_id}
    if headers:
        hdrs.update(headers)
    return _json_response(state, outcome.status, outcome.error_body(), hdrs)


def _rate_headers(rate: RateDecision) -> dict[str, str]:
    return {"X-Ratelimit-Limit": f"{rate.limit}, {rate.limit};w=1",
            "X-Ratelimit-Remaining": str(rate.remaining),
            "X-Ratelimit-Reset": str(rate.reset)}


def build_app(state: SandboxState, credentials: Iterable[tuple[str, str]]) -> web.Application:
    """The aiohttp application serving ``state`` to clients holding one of ``credentials``."""
    accepted = accepted_headers(credentials)
    faults = state.faults
    # Read a little more than the limit so "over 1 MB" is seen; aiohttp refuses beyond this.
    app = web.Application(client_max_size=MAX_BODY_BYTES + 1024)
    app[STATE_KEY] = state

    def unauthorized(request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") in accepted:
            return None
        out = error_outcome(401, "UNAUTHORIZED", "Unauthorized: wrong or missing credentials")
        return _error(state, out, {"WWW-Authenticate": 'Basic realm="bulkcapture-sandbox"'})

    async def gate(request: web.Request) -> tuple[web.Response | None, dict[str, str]]:
        """Auth, rate limit, injected 5xx: what an Order Management call meets first."""
        refused = unauthorized(request)
        if refused is not None:
            return refused, {}
        headers: dict[str, str] = {}
        rate = state.take_rate()
        if rate is not None:
            headers = _rate_headers(rate)
            if not rate.allowed:
                out = error_outcome(429, "TOO_MANY_REQUESTS", "Too many requests")
                return _error(state, out, headers), headers
        if state.roll(faults.fail_rate):
            state.bump("injected_failures")
            status = 500 if state.roll(0.5) else 503
            code = "INTERNAL_SERVER_ERROR" if status == 500 else "TEMPORARILY_UNAVAILABLE"
            await delay()
            return _error(state, error_outcome(status, code, "Injected fault"), headers), headers
        return None, headers

    async def delay() -> None:
        ms = faults.latency_ms
        if faults.jitter_ms:
            ms += state.rng.uniform(0, faults.jitter_ms)
        if faults.spike_rate and state.roll(faults.spike_rate):
            ms = faults.spike_ms
        if ms > 0:
            await asyncio.sleep(ms / 1000)

    async def post_capture(request: web.Request) -> web.Response:
        refused, headers = await gate(request)
        if refused is not None:
            return refused
        size = request.content_length
        too_large = error_outcome(413, "REQUEST_TOO_LARGE",
                                  f"Request body larger than {MAX_BODY_BYTES} bytes")
        if size is not None and size > MAX_BODY_BYTES:
            return _error(state, too_large, headers)
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(state, too_large, headers)
        if len(raw) > MAX_BODY_BYTES:
            return _error(state, too_large, headers)
        order_id = request.match_info["order_id"]
        outcome = state.capture(order_id, raw, request.headers.get("Klarna-Idempotency-Key"))
        await delay()
        cap = outcome.capture
        if cap is None:
            return _error(state, outcome, headers)
        if not outcome.replayed and state.roll(faults.drop_rate):
            # The capture exists; the client never hears of it.
            state.bump("drops")
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=201)  # never written: aiohttp sees the closed socket
        headers["Capture-Id"] = cap.capture_id
        headers["Klarna-Correlation-Id"] = str(uuid.uuid4())
        headers["Location"] = f"{request.scheme}://{request.host}{OM}/{order_id}/captures/" \
                              f"{cap.capture_id}"
        state.count(201)
        return web.Response(status=201, headers=headers)

    async def get_order(request: web.Request) -> web.Response:
        refused, headers = await gate(request)
        if refused is not None:
            return refused
        order_id = request.match_info["order_id"]
        body = state.get_order(order_id)
        await delay()
        if body is None:
            return _error(state, error_outcome(404, "NO_SUCH_ORDER", f"No such order: {order_id}"),
                          headers)
        return _json_response(state, 200, body, headers)

    async def get_capture(request: web.Request) -> web.Response:
        refused, headers = await gate(request)
        if refused is not None:
            return refused
        order_id, capture_id = request.match_info["order_id"], request.match_info["capture_id"]
        await delay()
        if state.get_order(order_id) is None:
            return _error(state, error_outcome(404, "NO_SUCH_ORDER", f"No such order: {order_id}"),
                          headers)
        body = state.get_capture(order_id, capture_id)
        if body is None:
            return _error(state, error_outcome(404, "NO_SUCH_CAPTURE",
                                               f"No such capture: {capture_id}"), headers)
        return _json_response(state, 200, body, headers)

    def settlement_view(request: web.Request) -> settlements.Ledger | web.Response:
        refused = unauthorized(request)
        if refused is not None:
            return refused
        return settlements.Ledger.from_state(state)

    def paged(request: web.Request, kind: str, rows: list[dict[str, Any]]) -> web.Response:
        try:
            page = settlements.paginate(rows, request.query.get("size"),
                                        request.query.get("offset"))
        except settlements.BadQuery as exc:
            return _error(state, error_outcome(400, "BAD_VALUE", str(exc)))
        pagination: dict[str, Any] = {"count": len(page.rows), "total": page.total,
                                      "offset": page.offset}
        if page.next_offset is not None:
            pagination["next"] = str(request.url.update_query(offset=page.next_offset,
                                                              size=page.size))
        return _json_response(state, 200, {kind: page.rows, "pagination": pagination})

    def listing(kind: str, params: tuple[str, ...]) -> Callable[[web.Request],
                                                                 Awaitable[web.Response]]:
        """A paged settlements listing: ``kind`` rows filtered by the query ``params``."""
        async def handler(request: web.Request) -> web.Response:
            ledger = settlement_view(request)
            if isinstance(ledger, web.Response):
                return ledger
            query = {name: request.query.get(name) for name in params}
            try:
                rows = getattr(ledger, kind)(**query)
            except settlements.BadQuery as exc:
                return _error(state, error_outcome(400, "BAD_VALUE", str(exc)))
            return paged(request, kind, rows)

        return handler

    transactions = listing("transactions",
                           ("payment_reference", "order_id", "start_date", "end_date"))
    payouts = listing("payouts", ("start_date", "end_date", "currency_code"))

    async def payout(request: web.Request) -> web.Response:
        ledger = settlement_view(request)
        if isinstance(ledger, web.Response):
            return ledger
        ref = request.match_info["payment_reference"]
        found = ledger.payout(ref)
        if found is None:
            return _error(state, error_outcome(404, "NOT_FOUND", f"No such payout: {ref}"))
        return _json_response(state, 200, found)

    async def report(request: web.Request) -> web.Response:
        ledger = settlement_view(request)
        if isinstance(ledger, web.Response):
            return ledger
        ref = request.query.get("payment_reference")
        delimiter = request.query.get("delimiter", ";")
        if not ref:
            return _error(state, error_outcome(400, "BAD_VALUE",
                                               "Bad value: payment_reference (required)"))
        if delimiter not in (";", ","):
            return _error(state, error_outcome(400, "BAD_VALUE",
                                               "Bad value: delimiter (must be ';' or ',')"))
        text = ledger.report_csv(ref, delimiter=delimiter, signed=state.signed_csv_amounts)
        if text is None:
            return _error(state, error_outcome(404, "NOT_FOUND", f"No such payout: {ref}"))
        state.count(200)
        return web.Response(status=200, text=text, content_type="text/csv",
                            headers={"Content-Disposition":
                                     f'attachment; filename="{ref}.csv"'})

    async def sandbox_captures(request: web.Request) -> web.Response:
        return web.json_response([c.to_introspection() for c in state.list_captures()])

    async def sandbox_stats(request: web.Request) -> web.Response:
        return web.json_response(state.stats_snapshot())

    async def sandbox_storm(request: web.Request) -> web.Response:
        try:
            seconds = float((await request.json()).get("seconds", 10))
        except (ValueError, AttributeError, TypeError):
            return web.json_response({"error": 'send {"seconds": N}'}, status=400)
        state.start_storm(seconds)
        return web.json_response({"storm_seconds": seconds})

    app.add_routes([
        web.post(OM + "/{order_id}/captures", post_capture),
        web.get(OM + "/{order_id}", get_order),
        web.get(OM + "/{order_id}/captures/{capture_id}", get_capture),
        web.get("/settlements/v1/transactions", transactions),
        web.get("/settlements/v1/payouts", payouts),
        web.get("/settlements/v1/payouts/{payment_reference}", payout),
        web.get("/settlements/v1/reports/payout-with-transactions", report),
        web.get("/_sandbox/captures", sandbox_captures),
        web.get("/_sandbox/stats", sandbox_stats),
        web.post("/_sandbox/storm", sandbox_storm),
    ])
    return app
