"""Settings: named defaults, provider hosts, environment variables, and secrets masked in repr.

Every setting but a secret may come from a TOML file (``--config``); options override the file,
the file overrides the defaults. Secrets come only from the environment (or a 0600 file).
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from etl.errors import BulkCaptureError, ConfigError

Provider = Literal["klarna", "kustom"]
Region = Literal["eu", "na", "oc"]

# api.md § Hosts. Kustom serves one region.
HOSTS: dict[tuple[str, str, bool], str] = {
    ("klarna", "eu", False): "https://api.klarna.com",
    ("klarna", "na", False): "https://api-na.klarna.com",
    ("klarna", "oc", False): "https://api-oc.klarna.com",
    ("klarna", "eu", True): "https://api.playground.klarna.com",
    ("klarna", "na", True): "https://api-na.playground.klarna.com",
    ("klarna", "oc", True): "https://api-oc.playground.klarna.com",
    ("kustom", "eu", False): "https://api.kustom.co",
    ("kustom", "eu", True): "https://api.playground.kustom.co",
}

ENV_BASE_URL = "BULKCAPTURE_BASE_URL"
ENV_USERNAME = "BULKCAPTURE_API_USERNAME"
ENV_PASSWORD = "BULKCAPTURE_API_PASSWORD"
ENV_API_KEY = "BULKCAPTURE_API_KEY"
ENV_CREDENTIALS_FILE = "BULKCAPTURE_CREDENTIALS_FILE"
ENV_LEDGER = "BULKCAPTURE_LEDGER"
# Capture partitions for validate and the dry run (a whole number >= 1; unset: from the input's
# size). Tests set it to exercise the partitioned path on small inputs.
ENV_PARTITIONS = "BULKCAPTURE_PARTITIONS"

DEFAULT_RATE = 50.0  # requests/s: the provider's test-environment limit (api.md § Rate limits)
DEFAULT_CONCURRENCY = 32  # 200 req/s x 100 ms = 20 in flight, with headroom for p99 latency
DEFAULT_TIMEOUT = 30.0  # seconds per request
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_BREAKER = 50  # consecutive transient failures that stop the run
# Re-send an unknown outcome with the same key only while the first attempt is this young; the
# provider honours keys for 24 h, the hour of margin covers clock skew and a long run.
IDEMPOTENCY_WINDOW_SECONDS = 23 * 3600
MAX_BODY_BYTES = 1_000_000  # the provider answers 413 above 1 MB


def default_ledger_path() -> Path:
    """The ledger's fixed home: ``$XDG_STATE_HOME/bulkcapture/ledger.sqlite``."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "bulkcapture" / "ledger.sqlite"


class Secret(str):
    """A string that never shows itself in repr, str formatting of containers, or logs."""

    def __repr__(self) -> str:
        return "Secret('***')"

    def reveal(self) -> str:
        return str.__str__(self)


@dataclass(frozen=True)
class Credentials:
    """HTTP Basic credentials: username + password, or an API key sent alone (api.md)."""

    username: Secret
    password: Secret = field(default=Secret(""))

    def __repr__(self) -> str:
        return "Credentials(***)"

    def basic_pair(self) -> tuple[str, str]:
        return self.username.reveal(), self.password.reveal()

    def secrets(self) -> tuple[str, ...]:
        """The literal secret strings, for redaction."""
        return tuple(s.reveal() for s in (self.username, self.password) if s)


def credentials_from_env(env: dict[str, str] | None = None) -> Credentials | None:
    """Username + password, else an API key, else a 0600 credentials file; else None."""
    env = dict(os.environ) if env is None else env
    user, pw, key = env.get(ENV_USERNAME), env.get(ENV_PASSWORD), env.get(ENV_API_KEY)
    if user and pw:
        return Credentials(Secret(user), Secret(pw))
    if user or pw:
        missing = ENV_PASSWORD if user else ENV_USERNAME
        raise ConfigError(f"{missing} is not set: set both {ENV_USERNAME} and {ENV_PASSWORD}, "
                          f"or {ENV_API_KEY} alone.")
    if key:
        return Credentials(Secret(key))
    path = env.get(ENV_CREDENTIALS_FILE)
    if path:
        return credentials_from_file(Path(path))
    return None


def credentials_from_file(path: Path) -> Credentials:
    """A file holding ``username:password`` or an API key, readable by its owner only."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as exc:
        raise ConfigError(f"cannot read credentials file {path}: {exc.strerror}.") from exc
    if mode & 0o077:
        raise ConfigError(f"credentials file {path} is readable by others (mode {mode:o}): "
                          f"run 'chmod 600 {path}'.")
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        # Never the exception's text: a decode error quotes the bytes it choked on.
        raise ConfigError(f"cannot read credentials file {path}: it must be a readable UTF-8 "
                          "text file holding 'username:password' or an API key.") from None
    user, sep, pw = text.partition(":")
    if not user or (sep and not pw):
        raise ConfigError(f"credentials file {path} holds no complete credential: write "
                          "'username:password' or an API key on one line.")
    return Credentials(Secret(user), Secret(pw)) if sep else Credentials(Secret(text))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_base_url(url: str) -> str:
    """https anywhere; plain http only to loopback (the sandbox). Returns it without a slash."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"base URL {url!r} is not an http(s) URL: use e.g. https://api.klarna.com.")
    if parts.username or parts.password:
        raise ConfigError("the base URL must not carry credentials: set them in the environment.")
    if parts.scheme == "http" and not is_loopback(parts.hostname):
        raise ConfigError(f"plain http to {parts.hostname} is refused: use https (http is only "
                          "allowed to loopback, for the sandbox).")
    return url.rstrip("/")


def resolve_base_url(base_url: str | None, provider: str | None, region: str | None,
                     playground: bool, env: dict[str, str] | None = None) -> str | None:
    """``--base-url`` wins, then ``--provider/--region/--playground``, then the environment."""
    env = dict(os.environ) if env is None else env
    if base_url:
        return check_base_url(base_url)
    if provider:
        key = (provider, region or "eu", playground)
        if key not in HOSTS:
            raise ConfigError(f"provider {provider} has no region {region}: Kustom serves 'eu' "
                              "only.")
        return HOSTS[key]
    if env.get(ENV_BASE_URL):
        return check_base_url(env[ENV_BASE_URL])
    return None


@dataclass(frozen=True)
class Settings:
    """Every non-secret setting of a run, with its default. Frozen: passed down, never mutated."""

    amounts: Literal["minor", "major"] = "minor"
    columns: Path | None = None
    base_url: str | None = None
    rate: float = DEFAULT_RATE
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float = DEFAULT_TIMEOUT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    breaker: int = DEFAULT_BREAKER
    ledger: Path | None = None
    partitions: int | None = None  # None: BULKCAPTURE_PARTITIONS, else chosen from input size

    def with_overrides(self, **kw: Any) -> Settings:
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


SECRET_KEYS = {"password", "api_key", "username", "credentials"}


def read_toml_table(path: Path, table: str, what: str,
                    error: type[BulkCaptureError]) -> dict[str, Any]:
    """A TOML file's ``[table]``, or the whole file when it has no such table (flat layout).

    Unreadable or invalid files raise ``error`` naming ``what`` and the path.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}.") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path} is not valid TOML: {exc}.") from exc
    found = data.get(table, data)
    return dict(found) if isinstance(found, dict) else data


def load_config(path: Path | None) -> dict[str, Any]:
    """Read a TOML config file (flat, or under a ``[bulkcapture]`` table); refuse secrets in it."""
    if path is None:
        return {}
    data = read_toml_table(path, "bulkcapture", "config file", ConfigError)
    bad = SECRET_KEYS & set(data)
    if bad:
        raise ConfigError(f"config file {path} holds a secret ({', '.join(sorted(bad))}): "
                          "credentials come only from the environment.")
    known = {f.name for f in fields(Settings)} | {"provider", "region", "playground", "results"}
    unknown = set(data) - known
    if unknown:
        names = ", ".join(sorted(unknown))
        raise ConfigError(f"config file {path} has unknown setting(s) {names}: "
                          f"known are {', '.join(sorted(known))}.")
    return dict(data)
