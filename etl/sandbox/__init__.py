"""The sandbox: a local simulator of the provider's capture, order and settlement endpoints
(api.md), served over real loopback HTTP to the tests, the demo and the benchmarks.

    contract.py     the capture body checks, over schemas/limits.py
    state.py        order book, captures, idempotency, rate window, counters (pure, injected clock)
    settlements.py  transactions, payouts and the CSV payout report from the captures made
    orders.py       the --orders file (CSV / JSON)
    app.py          aiohttp.web handlers: auth, faults, the endpoints, /_sandbox/* introspection
    server.py       SandboxConfig, run_sandbox_in_thread, run_sandbox_subprocess, serve_forever

Start one from Python with ``run_sandbox_in_thread(SandboxConfig(auto_authorize=True))``.
"""

from etl.sandbox.server import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    SandboxConfig,
    SandboxHandle,
    run_sandbox_in_thread,
    run_sandbox_subprocess,
)
from etl.sandbox.state import FakeClock, SandboxState

__all__ = [
    "DEFAULT_PASSWORD",
    "DEFAULT_USERNAME",
    "FakeClock",
    "SandboxConfig",
    "SandboxHandle",
    "SandboxState",
    "run_sandbox_in_thread",
    "run_sandbox_subprocess",
]
