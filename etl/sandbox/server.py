"""Starting and stopping the sandbox: its settings (``SandboxConfig``), a server in a background
thread (``run_sandbox_in_thread``), one in a subprocess (``run_sandbox_subprocess``), and the
foreground loop of ``bulkcapture sandbox`` (``serve_forever``).

Credentials: ``username``/``password`` and/or ``api_key`` (sent as the Basic username with an
empty password). With none configured the sandbox takes ``DEFAULT_USERNAME``/``DEFAULT_PASSWORD``
(throwaway, printed by the CLI). ``SandboxConfig.from_env()`` reads the same ``BULKCAPTURE_API_*``
variables as a run, so a run and a sandbox started from one shell agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from etl.config import ENV_API_KEY, ENV_PASSWORD, ENV_USERNAME
from etl.errors import ConfigError
from etl.sandbox.app import build_app
from etl.sandbox.orders import load_orders
from etl.sandbox.state import Clock, Faults, SandboxState

DEFAULT_USERNAME = "sandbox"
DEFAULT_PASSWORD = "sandbox"
READY_LINE = "Sandbox listening on "  # the subprocess runner waits for this line on stdout
_READY = re.compile(re.escape(READY_LINE) + r"(http://\S+)")


@dataclass(frozen=True)
class SandboxConfig:
    """Everything that shapes one sandbox; every field has a default. ``port=0``: any free port."""

    host: str = "127.0.0.1"
    port: int = 0
    username: str | None = None
    password: str | None = None
    api_key: str | None = None
    orders_file: Path | None = None
    orders: tuple[Mapping[str, Any], ...] = ()  # add_order keywords, for in-process use
    auto_authorize: bool = False
    authorize_factor: float = 1.0
    currency: str = "EUR"  # of auto-authorised orders and order book rows without one
    country: str = "DE"
    expiry_days: float = 28.0
    check_line_sum: bool = True
    rate_limit: int = 0
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    spike_rate: float = 0.0
    spike_ms: float = 0.0
    storm_every: float = 0.0
    storm_seconds: float = 0.0
    seed: int | None = None
    fee_bps: int = 249
    fee_fixed: int = 25
    signed_csv_amounts: bool = False
    clock: Clock | None = field(default=None, compare=False)  # None: time.time
    use_uvloop: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **kw: Any) -> SandboxConfig:
        """A config whose credentials are the ``BULKCAPTURE_API_*`` variables, where set."""
        env = os.environ if env is None else env
        kw.setdefault("username", env.get(ENV_USERNAME) or None)
        kw.setdefault("password", env.get(ENV_PASSWORD) or None)
        kw.setdefault("api_key", env.get(ENV_API_KEY) or None)
        return cls(**kw)

    @property
    def uses_default_credentials(self) -> bool:
        return self.username is None and self.password is None and self.api_key is None

    def credential_pairs(self) -> list[tuple[str, str]]:
        """The accepted ``(username, password)`` pairs; the first is the primary one."""
        if self.uses_default_credentials:
            return [(DEFAULT_USERNAME, DEFAULT_PASSWORD)]
        if (self.username is None) != (self.password is None):
            raise ConfigError("set both a sandbox username and password (--username/--password "
                              f"or {ENV_USERNAME}/{ENV_PASSWORD}), or an API key alone.")
        pairs = []
        if self.username is not None and self.password is not None:
            pairs.append((self.username, self.password))
        if self.api_key:
            pairs.append((self.api_key, ""))
        return pairs

    def build_state(self) -> SandboxState:
        """A fresh state holding this config's order book and faults."""
        state = SandboxState(
            clock=self.clock or time.time, auto_authorize=self.auto_authorize,
            authorize_factor=self.authorize_factor, default_currency=self.currency,
            default_country=self.country, expiry_days=self.expiry_days,
            check_line_sum=self.check_line_sum, seed=self.seed, fee_bps=self.fee_bps,
            fee_fixed=self.fee_fixed, signed_csv_amounts=self.signed_csv_amounts,
            faults=Faults(fail_rate=self.fail_rate, drop_rate=self.drop_rate,
                          latency_ms=self.latency_ms, jitter_ms=self.jitter_ms,
                          spike_rate=self.spike_rate, spike_ms=self.spike_ms,
                          rate_limit=self.rate_limit, storm_every=self.storm_every,
                          storm_seconds=self.storm_seconds),
        )
        if self.orders_file is not None:
            state.add_orders(load_orders(self.orders_file))
        state.add_orders(dict(o) for o in self.orders)
        return state


@dataclass
class SandboxHandle:
    """A running sandbox: where it listens and how to log in. ``state`` is the live state for an
    in-thread sandbox (``None`` for a subprocess: use ``/_sandbox/*`` there)."""

    url: str
    username: str
    password: str
    config: SandboxConfig
    state: SandboxState | None = None
    process: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)  # a subprocess's stdout+stderr lines so far

    @property
    def auth(self) -> tuple[str, str]:
        return self.username, self.password


async def serve(config: SandboxConfig, state: SandboxState, stop: asyncio.Event,
                on_ready: Callable[[str], None], shutdown_timeout: float = 2.0) -> None:
    """Serve ``state`` on ``config.host:config.port`` until ``stop`` is set."""
    app = build_app(state, config.credential_pairs())
    runner = web.AppRunner(app, access_log=None, handle_signals=False,
                           shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
        await site.start()
        host, port = runner.addresses[0][:2]
        on_ready(f"http://{'[' + host + ']' if ':' in host else host}:{port}")
        await stop.wait()
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def run_sandbox_in_thread(config: SandboxConfig | None = None,
                          **overrides: Any) -> Iterator[SandboxHandle]:
    """A sandbox on its own event loop in a background thread, for as long as the block runs.

    ``with run_sandbox_in_thread(SandboxConfig(auto_authorize=True)) as sb: sb.url, sb.state``
    """
    config = replace(config or SandboxConfig(), **overrides)
    pairs = config.credential_pairs()
    state = config.build_state()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()
    box: dict[str, Any] = {}

    def on_ready(url: str) -> None:
        box["url"] = url
        ready.set()

    def target() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve(config, state, stop, on_ready, shutdown_timeout=0.5))
        except BaseException as exc:  # handed over to the caller's thread
            box["error"] = exc
            ready.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=target, name="bulkcapture-sandbox", daemon=True)
    thread.start()
    ready.wait()
    if "error" in box:
        thread.join()
        raise ConfigError(f"the sandbox could not start on {config.host}:{config.port}: "
                          f"{box['error']}.") from box["error"]
    try:
        yield SandboxHandle(box["url"], *pairs[0], config=config, state=state)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join()


def config_to_args(config: SandboxConfig) -> list[str]:
    """The ``bulkcapture sandbox`` options that reproduce ``config`` (credentials excepted:
    they travel in the environment, never on a command line)."""
    if config.orders or config.clock is not None:
        raise ConfigError("a subprocess sandbox takes its orders from orders_file and runs on "
                          "the wall clock: drop orders= and clock=, or use run_sandbox_in_thread.")
    d = SandboxConfig()
    args = ["--host", config.host, "--port", str(config.port)]
    if config.orders_file is not None:
        args += ["--orders", str(config.orders_file)]
    if config.auto_authorize:
        args.append("--auto-authorize")
    if not config.check_line_sum:
        args.append("--no-check-line-sum")
    if config.signed_csv_amounts:
        args.append("--signed-csv-amounts")
    if config.seed is not None:
        args += ["--seed", str(config.seed)]
    for name in ("authorize_factor", "currency", "country", "expiry_days", "rate_limit",
                 "fail_rate", "drop_rate", "latency_ms", "jitter_ms", "spike_rate", "spike_ms",
                 "storm_every", "storm_seconds", "fee_bps", "fee_fixed"):
        value = getattr(config, name)
        if value != getattr(d, name):
            args += ["--" + name.replace("_", "-"), str(value)]
    return args


@contextlib.contextmanager
def run_sandbox_subprocess(config: SandboxConfig | None = None, *,
                           extra_args: Sequence[str] = (), env: Mapping[str, str] | None = None,
                           startup_timeout: float = 20.0) -> Iterator[SandboxHandle]:
    """``python -m etl.sandbox`` in a subprocess; yields once it printed its URL, stops it
    (SIGTERM, then kill) after the block. Its output is drained in a thread."""
    config = config or SandboxConfig()
    pairs = config.credential_pairs()
    child_env = {k: v for k, v in (os.environ if env is None else env).items()
                 if k not in (ENV_USERNAME, ENV_PASSWORD, ENV_API_KEY)}
    if config.username is not None and config.password is not None:
        child_env[ENV_USERNAME], child_env[ENV_PASSWORD] = config.username, config.password
    if config.api_key:
        child_env[ENV_API_KEY] = config.api_key
    cmd = [sys.executable, "-m", "etl.sandbox", *config_to_args(config), *extra_args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=child_env)
    lines: queue.Queue[str | None] = queue.Queue()
    output: list[str] = []

    def drain() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=drain, name="sandbox-output", daemon=True)
    reader.start()
    try:
        url = _wait_for_url(lines, startup_timeout, output)
        yield SandboxHandle(url, *pairs[0], config=config, process=proc, output=output)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_for_url(lines: queue.Queue[str | None], timeout: float, output: list[str]) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            raise ConfigError("the sandbox subprocess did not start: "
                              + ("".join(output).strip() or "no output") + ".")
        match = _READY.search(line)
        if match:
            return match.group(1)


def serve_forever(config: SandboxConfig, echo: Callable[[str], None]) -> None:
    """Serve in the foreground until SIGINT/SIGTERM; ``echo`` prints the URL when ready."""
    state = config.build_state()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(config, state, stop, lambda url: echo(READY_LINE + url))

    runner: Callable[[Any], None] = asyncio.run
    if config.use_uvloop:
        with contextlib.suppress(ImportError):  # optional: the stock loop is slower, not wrong
            import uvloop

            runner = uvloop.run
    try:
        runner(main())
    except OSError as exc:
        raise ConfigError(f"cannot listen on {config.host}:{config.port}: {exc.strerror}: "
                          "choose another --port (0 picks a free one).") from exc
