"""Secrets and transport safety, end to end.

A run with distinctive credentials goes through success, 401, 5xx and dropped connections, an
unreachable host, and refused configurations; neither secret nor its Basic encoding may appear
in stdout/stderr, the results file, the summary JSON, the ledger (and its WAL), or the repr /
traceback of any object or exception. Also: credentials only from the environment or a 0600
file, TLS verification always on, plain http only to loopback, no results file overwritten
without ``--overwrite``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import ssl
import subprocess
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from etl.cli import main
from etl.client import ApiClient
from etl.config import (
    Credentials,
    Secret,
    Settings,
    credentials_from_env,
    credentials_from_file,
)
from etl.errors import AuthenticationError, ConfigError, TransientError
from etl.model import CaptureRequest
from etl.pipeline import Target
from etl.plan import content_hash, idempotency_key
from tests.helpers import line, write_csv

USER, PASSWORD = "user-SECRET-u", "pw-SECRET-p"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
FORBIDDEN = (USER, PASSWORD, BASIC, "SECRET")


def assert_no_secret(where: str, data: str | bytes) -> None:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    for secret in FORBIDDEN:
        assert secret not in text, f"{secret!r} leaked into {where}"


@pytest.fixture
def night(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "night.csv", [
        line(order_id=f"o{i}", capture_reference=f"s{i}") for i in range(12)
    ] + [line(order_id="bad", capture_reference="x", quantity="abc")])


def run(tmp: Path, night: Path, base_url: str, *extra: str,
        env: dict[str, str] | None = None) -> Result:
    res = CliRunner().invoke(main, [
        "run", str(night), "--base-url", base_url, "--ledger", str(tmp / "ledger.sqlite"),
        "--results", str(tmp / "r.csv"), "--overwrite", "--summary-json", str(tmp / "s.json"),
        "--rate", "1000", "--timeout", "0.5", "--max-attempts", "2", *extra],
        env={"BULKCAPTURE_API_USERNAME": USER, "BULKCAPTURE_API_PASSWORD": PASSWORD,
             **(env or {})})
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res


def assert_nothing_leaked(tmp: Path, res: Result) -> None:
    assert_no_secret("stdout", res.stdout)
    assert_no_secret("stderr", res.stderr)
    if res.exception is not None:
        assert_no_secret("exception", "".join(traceback.format_exception(res.exception)))
    for name in ("r.csv", "s.json", "ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"):
        path = tmp / name
        if path.exists():
            assert_no_secret(name, path.read_bytes())


@pytest.mark.parametrize("faults", [
    {},  # success
    {"fail_rate": 0.5, "drop_rate": 0.3, "seed": 3},  # 5xx and connections dropped
    {"fail_rate": 1.0},  # every call 5xx: the breaker or the attempts run out
])
def test_no_secret_in_any_output_of_a_run(sandbox: Callable[..., Any], tmp_path: Path,
                                          night: Path, faults: dict[str, Any]) -> None:
    sb = sandbox(auto_authorize=True, username=USER, password=PASSWORD, **faults)
    res = run(tmp_path, night, sb.url, "--breaker", "3")
    assert res.exit_code in (0, 1, 3)
    assert (tmp_path / "r.csv").exists()
    assert_nothing_leaked(tmp_path, res)


def test_no_secret_after_a_401(sandbox: Callable[..., Any], tmp_path: Path,
                               night: Path) -> None:
    sb = sandbox(auto_authorize=True, username=USER, password="the-right-one")
    res = run(tmp_path, night, sb.url)
    assert res.exit_code == 1 and "401" in res.stderr
    assert_nothing_leaked(tmp_path, res)


def test_no_secret_when_the_host_is_unreachable(tmp_path: Path, night: Path) -> None:
    res = run(tmp_path, night, "http://127.0.0.1:9", "--breaker", "2")  # discard port: closed
    assert res.exit_code in (1, 3)
    assert_nothing_leaked(tmp_path, res)


@pytest.mark.parametrize("url", ["http://api.klarna.com", "http://10.0.0.8:8080",
                                 "http://localhost.example.com", "ftp://127.0.0.1",
                                 f"https://{USER}:{PASSWORD}@api.klarna.com"])
def test_unsafe_base_urls_are_refused_without_echoing_secrets(tmp_path: Path, night: Path,
                                                              url: str) -> None:
    res = run(tmp_path, night, url)
    assert res.exit_code == 1 and res.stderr.startswith("Error: ")
    assert not (tmp_path / "r.csv").exists()
    assert_nothing_leaked(tmp_path, res)


def test_unsafe_base_url_from_the_environment_is_refused(tmp_path: Path, night: Path) -> None:
    res = CliRunner().invoke(main, ["run", str(night), "--results", str(tmp_path / "r.csv")],
                             env={"BULKCAPTURE_BASE_URL": "http://api.klarna.com",
                                  "BULKCAPTURE_API_KEY": PASSWORD})
    assert res.exit_code == 1 and "plain http" in res.stderr
    assert_no_secret("stderr", res.stderr)


# --- reprs and exceptions ----------------------------------------------------------------------
def _request() -> CaptureRequest:
    body = b'{"captured_amount":100,"reference":"s1"}'
    return CaptureRequest("o1", "s1", idempotency_key("o1", "s1"), content_hash(body), 100,
                          "EUR", body)


def _exception_text(exc: BaseException) -> str:
    return repr(exc) + str(exc) + "".join(traceback.format_exception(exc))


def test_reprs_and_raised_exceptions_hide_the_secrets(sandbox: Callable[..., Any]) -> None:
    creds = Credentials(Secret(USER), Secret(PASSWORD))
    sb = sandbox(auto_authorize=True, username=USER, password="the-right-one")
    for obj in (creds, creds.username, Target(sb.url, creds), Settings(),
                ApiClient(sb.url, creds), credentials_from_env(
                    {"BULKCAPTURE_API_USERNAME": USER, "BULKCAPTURE_API_PASSWORD": PASSWORD})):
        assert_no_secret(f"repr of {type(obj).__name__}", repr(obj))

    async def capture(url: str) -> BaseException:
        async with ApiClient(url, creds, timeout=0.5) as client:
            try:
                await client.capture(_request())
            except Exception as exc:
                return exc
        raise AssertionError("expected a failure")

    auth = asyncio.run(capture(sb.url))
    assert isinstance(auth, AuthenticationError)
    down = asyncio.run(capture("http://127.0.0.1:9"))
    assert isinstance(down, TransientError)
    for exc in (auth, down):
        assert_no_secret(f"{type(exc).__name__}", _exception_text(exc))


def test_api_error_bodies_echoing_the_credential_are_redacted(
        sandbox: Callable[..., Any]) -> None:
    """A (hostile or buggy) server that echoes the Authorization header back in its error."""
    import httpx

    def echo(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error_code": "BAD_VALUE", "error_messages": [
            f"bad header {request.headers['authorization']}"], "correlation_id": "c"})

    creds = Credentials(Secret(USER), Secret(PASSWORD))

    async def capture() -> BaseException:
        async with ApiClient("https://api.klarna.com", creds,
                             transport=httpx.MockTransport(echo)) as client:
            try:
                await client.capture(_request())
            except Exception as exc:
                return exc
        raise AssertionError("expected a failure")

    exc = asyncio.run(capture())
    assert_no_secret("echoed error", _exception_text(exc) + repr(vars(exc)))


# --- credentials file ---------------------------------------------------------------------------
@pytest.fixture
def creds_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "creds"
    path.write_text(f"{USER}:{PASSWORD}\n")
    yield path


def test_credentials_file_with_0600_is_read(creds_file: Path) -> None:
    creds_file.chmod(0o600)
    creds = credentials_from_env({"BULKCAPTURE_CREDENTIALS_FILE": str(creds_file)})
    assert creds is not None and creds.basic_pair() == (USER, PASSWORD)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_credentials_file_readable_by_others_is_refused(creds_file: Path, mode: int) -> None:
    creds_file.chmod(mode)
    with pytest.raises(ConfigError, match="chmod 600") as info:
        credentials_from_file(creds_file)
    assert_no_secret("error", _exception_text(info.value))


@pytest.mark.parametrize("content", [b"", b"\n", b"user:\n", b":pw\n", b"\xff\xfe" + b"x" * 8])
def test_unusable_credentials_file_is_a_config_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "creds"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError) as info:
        credentials_from_file(path)
    # Nothing chained: a decode error would quote the file's bytes.
    exc = info.value
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)


def test_credentials_file_through_the_cli(sandbox: Callable[..., Any], tmp_path: Path,
                                          night: Path, creds_file: Path) -> None:
    sb = sandbox(auto_authorize=True, username=USER, password=PASSWORD)
    creds_file.chmod(0o644)
    args = ["run", str(night), "--base-url", sb.url, "--ledger", str(tmp_path / "l.sqlite"),
            "--results", str(tmp_path / "r.csv"), "--no-progress"]
    env = {"BULKCAPTURE_CREDENTIALS_FILE": str(creds_file)}
    res = CliRunner().invoke(main, args, env=env)
    assert res.exit_code == 1 and "chmod 600" in res.stderr
    assert not sb.state.list_captures()
    creds_file.chmod(0o600)
    res = CliRunner().invoke(main, args, env=env)
    assert res.exit_code == 3, res.output  # one invalid row
    assert len(sb.state.list_captures()) == 12
    assert_nothing_leaked(tmp_path, res)


def test_config_file_may_not_hold_a_secret(tmp_path: Path, night: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'password = "{PASSWORD}"\n')
    res = CliRunner().invoke(main, ["run", str(night), "--config", str(cfg), "--dry-run",
                                    "--results", str(tmp_path / "r.csv")])
    assert res.exit_code == 1 and "holds a secret" in res.stderr
    assert_no_secret("stderr", res.stderr)


# --- TLS ---------------------------------------------------------------------------------------
def test_tls_verification_is_on_by_default() -> None:
    client = ApiClient("https://api.klarna.com", Credentials(Secret(USER), Secret(PASSWORD)))
    ctx = client._transport.ssl_context  # type: ignore[attr-defined]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    asyncio.run(client.aclose())


def test_no_code_turns_tls_verification_off() -> None:
    root = Path(__file__).resolve().parent.parent / "etl"
    for path in root.rglob("*.py"):
        text = path.read_text()
        for needle in ("verify=False", "CERT_NONE", "check_hostname = False", "ssl=False",
                       "_create_unverified_context"):
            assert needle not in text, f"{path}: {needle}"


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return key, cert


def test_a_certificate_that_does_not_verify_sends_nothing(self_signed: tuple[Path, Path],
                                                          night: Path, tmp_path: Path) -> None:
    """An https server with a self-signed certificate: no capture reaches it."""
    from aiohttp import web

    from etl.sandbox.server import SandboxConfig

    key, cert = self_signed
    hits: list[str] = []
    state = SandboxConfig(auto_authorize=True).build_state()

    async def serve_once() -> Result:
        from etl.sandbox.app import build_app

        app = build_app(state, [(USER, PASSWORD)])

        @web.middleware
        async def count(request: web.Request, handler: Any) -> web.StreamResponse:
            hits.append(request.path)
            return await handler(request)  # type: ignore[no-any-return]

        app.middlewares.append(count)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        port = runner.addresses[0][1]
        try:
            return await asyncio.to_thread(
                run, tmp_path, night, f"https://127.0.0.1:{port}", "--breaker", "2")
        finally:
            await runner.cleanup()

    res = asyncio.run(serve_once())
    # Stopped at the first certificate failure, not retried until the breaker trips.
    assert res.exit_code == 1 and "TLS certificate" in res.stderr, res.output
    assert hits == [] and state.list_captures() == []
    attempts = sqlite3.connect(tmp_path / "ledger.sqlite").execute(
        "SELECT count(*) FROM attempts").fetchone()[0]
    assert attempts <= 32  # at most the requests already in flight, each tried once
    assert_nothing_leaked(tmp_path, res)


# --- results are never clobbered ---------------------------------------------------------------
def test_a_real_run_never_overwrites_results_without_overwrite(sandbox: Callable[..., Any],
                                                               tmp_path: Path,
                                                               night: Path) -> None:
    sb = sandbox(auto_authorize=True, username=USER, password=PASSWORD)
    out = tmp_path / "r.csv"
    out.write_text("last night's results\n")
    args = ["run", str(night), "--base-url", sb.url, "--ledger", str(tmp_path / "l.sqlite"),
            "--results", str(out), "--no-progress"]
    env = {"BULKCAPTURE_API_USERNAME": USER, "BULKCAPTURE_API_PASSWORD": PASSWORD}
    res = CliRunner().invoke(main, args, env=env)
    assert res.exit_code == 1 and "--overwrite" in res.stderr
    assert out.read_text() == "last night's results\n"
    assert not sb.state.list_captures(), "pre-flight must refuse before anything is sent"
    res = CliRunner().invoke(main, [*args, "--overwrite"], env=env)
    assert res.exit_code == 3 and out.read_text() != "last night's results\n"


def test_env_is_clean_in_tests() -> None:
    """The autouse fixture keeps the caller's credentials out of every test."""
    assert not [k for k in os.environ if k.startswith("BULKCAPTURE_")]
