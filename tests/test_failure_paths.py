"""Every failure path of the CLI: its exit code and its one ``Error:`` sentence (README §
Failure paths). No path may end in a traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from etl.cli import main
from tests.helpers import line, write_csv


def cli(args: list[str], env: dict[str, str] | None = None) -> Result:
    res = CliRunner().invoke(main, args, env=env)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    return res


@pytest.fixture
def night(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "night.csv", [line()])


CREDS = {"BULKCAPTURE_API_USERNAME": "u", "BULKCAPTURE_API_PASSWORD": "p"}


@pytest.mark.parametrize(("args", "env", "message"), [
    (["validate", "{tmp}/missing.csv"], {}, "does not exist"),
    (["validate", "{tmp}/*.parquet"], {}, "no file matches"),
    (["validate", "{tmp}/night.xlsx"], {}, "unknown file format"),
    (["validate", "{night}", "--rejects", "{tmp}/no/dir/r.csv"], {}, "cannot write"),
    (["validate", "{night}", "--summary-json", "{tmp}/no/dir/s.json"], {}, "cannot write"),
    (["run", "{night}", "--dry-run", "--results", "{tmp}/r.xlsx"], {}, "unknown format"),
    (["run", "{night}", "--dry-run", "--results", "{tmp}/no/dir/r.csv"], {},
     "does not exist"),
    (["run", "{night}", "--results", "{tmp}/r.csv"], {}, "no target"),
    (["run", "{night}", "--base-url", "https://api.klarna.com", "--results", "{tmp}/r.csv"], {},
     "no credentials"),
    (["run", "{night}", "--base-url", "http://api.klarna.com", "--results", "{tmp}/r.csv"],
     CREDS, "plain http"),
    (["run", "{night}", "--results", "{tmp}/r.csv"],
     {"BULKCAPTURE_API_USERNAME": "u", "BULKCAPTURE_BASE_URL": "https://api.klarna.com"},
     "BULKCAPTURE_API_PASSWORD is not set"),
    (["run", "{night}", "--provider", "kustom", "--region", "na", "--results", "{tmp}/r.csv"],
     CREDS, "Kustom serves 'eu'"),
    (["run", "{night}", "--sandbox", "--base-url", "http://127.0.0.1:1"], {},
     "--sandbox runs against the embedded sandbox"),
    (["run", "{night}", "--base-url", "http://127.0.0.1:9", "--results", "{tmp}/r.csv",
      "--ledger", "{tmp}/night.csv"], CREDS, "ledger"),
])
def test_failure_path(tmp_path: Path, night: Path, args: list[str], env: dict[str, str],
                      message: str) -> None:
    (tmp_path / "night.xlsx").write_bytes(b"PK")
    res = cli([a.format(tmp=tmp_path, night=night) for a in args], env)
    assert res.exit_code == 1, res.output
    assert res.stderr.startswith("Error: ") and message in res.stderr, res.stderr
    assert "Traceback" not in res.output


def test_config_file_errors(tmp_path: Path, night: Path) -> None:
    for text, message in [("rate = ", "not valid TOML"), ("speed = 3", "unknown setting"),
                          ('api_key = "k"', "holds a secret")]:
        cfg = tmp_path / "c.toml"
        cfg.write_text(text)
        res = cli(["validate", str(night), "--config", str(cfg)])
        assert res.exit_code == 1 and message in res.stderr, res.stderr


def test_usage_error_is_exit_2(night: Path) -> None:
    assert cli(["run", str(night), "--rate", "0"]).exit_code == 2
    assert cli(["run"]).exit_code == 2


def test_circuit_breaker_and_401_exit_1_with_results(sandbox: Callable[..., Any],
                                                     tmp_path: Path, night: Path) -> None:
    sb = sandbox(auto_authorize=True, fail_rate=1.0)
    out = tmp_path / "r.csv"
    res = cli(["run", str(night), "--base-url", sb.url, "--ledger", str(tmp_path / "l.sqlite"),
               "--results", str(out), "--breaker", "1", "--timeout", "0.5", "--no-progress"],
              {"BULKCAPTURE_API_USERNAME": sb.username, "BULKCAPTURE_API_PASSWORD": sb.password})
    assert res.exit_code == 1 and "consecutive transient failures" in res.stderr
    assert out.exists()
