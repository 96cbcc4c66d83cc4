"""``bulkcapture run`` end to end: CLI → real loopback HTTP → sandbox, with a real SQLite ledger.

Every status, retries under faults with no capture made twice, the 401 stop, the circuit
breaker, re-runs (already_captured, conflict, the next key generation after a refusal), the
run lock, and the results file's contents.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner, Result

from etl.cli import main
from etl.ledger import RunLock
from etl.synth import generate, write
from schemas.results import RESULT_COLUMNS
from tests.helpers import line, write_csv


def run_cli(sb: Any, tmp: Path, inputs: list[Path], *extra: str, results: str = "r.parquet",
            password: str | None = None) -> tuple[Result, pl.DataFrame | None]:
    out = tmp / results
    env = {"BULKCAPTURE_API_USERNAME": sb.username,
           "BULKCAPTURE_API_PASSWORD": password or sb.password}
    res = CliRunner().invoke(main, ["run", *map(str, inputs), "--base-url", sb.url,
                                    "--ledger", str(tmp / "ledger.sqlite"), "--results",
                                    str(out), "--overwrite", "--rate", "1000",
                                    "--no-progress", *extra], env=env)
    assert "Traceback" not in res.output
    return res, (pl.read_parquet(out) if out.exists() else None)


def captures_at(sb: Any) -> Counter[tuple[str, str | None]]:
    return Counter((c.order_id, c.reference) for c in sb.state.list_captures())


def by_ref(df: pl.DataFrame) -> dict[str, dict[str, Any]]:
    return {r["capture_reference"]: r for r in df.iter_rows(named=True)}


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "night.csv", [
        line(order_id="ok-1", capture_reference="a"),
        line(order_id="ok-1", capture_reference="a", name="Hat"),
        line(order_id="ok-2", capture_reference="b"),
        line(order_id="cancelled", capture_reference="c"),
        line(order_id="pending", capture_reference="d"),
        line(order_id="over", capture_reference="e"),
        line(order_id="missing", capture_reference="f"),
        line(order_id="bad", capture_reference="g", quantity="abc"),
    ])


def book(sb: Any) -> None:
    for oid in ("ok-1", "ok-2"):
        sb.state.add_order(oid, 10_000)
    sb.state.add_order("cancelled", 10_000, status="CANCELLED")
    sb.state.add_order("pending", 10_000, fraud_status="PENDING")
    sb.state.add_order("over", 100)


def test_mixed_export_end_to_end(sandbox: Callable[..., Any], tmp_path: Path,
                                 mixed: Path) -> None:
    sb = sandbox()
    book(sb)
    res, df = run_cli(sb, tmp_path, [mixed], "--summary-json", str(tmp_path / "s.json"))
    assert res.exit_code == 3, res.output
    assert df is not None and tuple(df.columns) == RESULT_COLUMNS and df.height == 7
    rows = by_ref(df)
    assert {k: v["status"] for k, v in rows.items()} == {
        "a": "captured", "b": "captured", "c": "rejected", "d": "rejected", "e": "rejected",
        "f": "rejected", "g": "invalid"}
    a = rows["a"]
    assert a["http_status"] == 201 and a["capture_id"] and a["correlation_id"]
    assert a["capture_location"].endswith(f"/captures/{a['capture_id']}")
    assert a["captured_amount"] == 4000 and a["order_line_count"] == 2 and a["attempts"] == 1
    assert a["first_attempt_at"] <= a["completed_at"]
    assert (rows["c"]["http_status"], rows["c"]["error_code"]) == (403, "CAPTURE_NOT_ALLOWED")
    assert rows["c"]["correlation_id"] and rows["c"]["error_messages"]
    assert (rows["f"]["http_status"], rows["f"]["error_code"]) == (404, "NO_SUCH_ORDER")
    assert rows["g"]["error_code"] == "INVALID_INPUT" and rows["g"]["attempts"] == 0
    # Money moved exactly for what the results say, and the invalid row never left.
    assert captures_at(sb) == Counter({("ok-1", "a"): 1, ("ok-2", "b"): 1})
    assert "captured 2" in res.output and "ledger:" in res.output


def test_rerun_is_already_captured_and_a_refused_capture_gets_a_new_key(
        sandbox: Callable[..., Any], tmp_path: Path, mixed: Path) -> None:
    sb = sandbox()
    book(sb)
    _, first = run_cli(sb, tmp_path, [mixed])
    assert first is not None
    # The merchant sorts out the cancelled order; the next night's re-run tries it again.
    sb.state.add_order("cancelled", 10_000)
    res, again = run_cli(sb, tmp_path, [mixed])
    assert again is not None
    rows, before = by_ref(again), by_ref(first)
    assert rows["a"]["status"] == "already_captured"
    assert rows["a"]["capture_id"] == before["a"]["capture_id"]
    assert rows["c"]["status"] == "captured"
    assert rows["c"]["idempotency_key"] != before["c"]["idempotency_key"]  # generation 1
    assert rows["d"]["status"] == "rejected"
    assert captures_at(sb)[("ok-1", "a")] == 1 and captures_at(sb)[("cancelled", "c")] == 1
    assert "already_captured 2" in res.output


def test_changed_content_after_capture_is_a_conflict(sandbox: Callable[..., Any],
                                                     tmp_path: Path) -> None:
    sb = sandbox(auto_authorize=True, authorize_factor=2.0)
    night = write_csv(tmp_path / "n.csv", [line()])
    run_cli(sb, tmp_path, [night])
    changed = write_csv(tmp_path / "n2.csv", [line(quantity=3, total_amount=3000)])
    res, df = run_cli(sb, tmp_path, [changed])
    assert df is not None and res.exit_code == 3
    row = df.row(0, named=True)
    assert row["status"] == "conflict" and row["capture_id"]
    assert "different content" in row["error_messages"]
    assert captures_at(sb) == Counter({("o1", "s1"): 1})


def test_transient_faults_never_capture_twice(sandbox: Callable[..., Any],
                                              tmp_path: Path) -> None:
    """5xx before processing, drops after the capture, a low rate limit (429s): all retried
    with the same key until captured, each exactly once."""
    sb = sandbox(auto_authorize=True, fail_rate=0.25, drop_rate=0.2, rate_limit=40, seed=7)
    syn = generate(60, seed=5)
    path = tmp_path / "n.parquet"
    write(syn.lines, path)
    res, df = run_cli(sb, tmp_path, [path], "--max-attempts", "12", "--timeout", "2",
                      "--breaker", "1000")
    assert df is not None
    assert res.exit_code == 0, res.output
    assert set(df["status"]) == {"captured"}
    made = captures_at(sb)
    assert len(made) == 60 and set(made.values()) == {1}
    stats = sb.state.stats_snapshot()
    assert df["attempts"].max() > 1  # the faults really happened ...
    assert stats  # ... and the sandbox counted them
    # Every capture id in the results is the one the sandbox made for that key.
    ids = {(c.order_id, c.reference): c.capture_id for c in sb.state.list_captures()}
    for r in df.iter_rows(named=True):
        assert ids[(r["order_id"], r["capture_reference"])] == r["capture_id"]


def test_wrong_credentials_stop_the_run_with_results_written(sandbox: Callable[..., Any],
                                                             tmp_path: Path) -> None:
    sb = sandbox(auto_authorize=True)
    syn = generate(30, seed=8)
    path = tmp_path / "n.parquet"
    write(syn.lines, path)
    res, df = run_cli(sb, tmp_path, [path], "--concurrency", "1", password="wrong-pw-1234")
    assert res.exit_code == 1
    assert res.stderr.startswith("Error: ") and "credentials" in res.stderr
    assert "wrong-pw-1234" not in res.output + res.stderr
    assert df is not None and df.height == 30
    assert Counter(df["status"]) == Counter({"not_sent": 29, "failed": 1})
    assert not sb.state.list_captures()


def test_circuit_breaker_stops_the_run(sandbox: Callable[..., Any], tmp_path: Path) -> None:
    sb = sandbox(auto_authorize=True, fail_rate=1.0, seed=1)
    syn = generate(40, seed=9)
    path = tmp_path / "n.parquet"
    write(syn.lines, path)
    res, df = run_cli(sb, tmp_path, [path], "--breaker", "5", "--max-attempts", "2",
                      "--concurrency", "2")
    assert res.exit_code == 1 and "Error: " in res.stderr
    assert df is not None and df.height == 40
    assert "not_sent" in set(df["status"]) and not sb.state.list_captures()


def test_a_second_run_on_a_held_ledger_refuses_before_sending(sandbox: Callable[..., Any],
                                                              tmp_path: Path) -> None:
    sb = sandbox(auto_authorize=True)
    night = write_csv(tmp_path / "n.csv", [line()])
    lock = RunLock(tmp_path / "ledger.sqlite")
    lock.acquire(run_id="nightly-1")
    try:
        res, df = run_cli(sb, tmp_path, [night])
    finally:
        lock.release()
    assert res.exit_code == 1 and "another bulkcapture run holds the ledger" in res.stderr
    assert "nightly-1" in res.stderr and "--lock-wait" in res.stderr
    assert df is None and not sb.state.list_captures()


def test_preflight_unwritable_results_captures_nothing(sandbox: Callable[..., Any],
                                                       tmp_path: Path) -> None:
    sb = sandbox(auto_authorize=True)
    night = write_csv(tmp_path / "n.csv", [line()])
    env = {"BULKCAPTURE_API_USERNAME": sb.username, "BULKCAPTURE_API_PASSWORD": sb.password}
    res = CliRunner().invoke(main, ["run", str(night), "--base-url", sb.url, "--results",
                                    str(tmp_path / "no" / "such" / "dir" / "r.parquet")],
                             env=env)
    assert res.exit_code == 1 and "does not exist" in res.stderr
    assert not sb.state.list_captures()


def test_missing_credentials_is_a_config_error(sandbox: Callable[..., Any],
                                               tmp_path: Path) -> None:
    sb = sandbox(auto_authorize=True)
    night = write_csv(tmp_path / "n.csv", [line()])
    res = CliRunner().invoke(main, ["run", str(night), "--base-url", sb.url])
    assert res.exit_code == 1 and "no credentials" in res.stderr


def test_plain_http_to_a_remote_host_is_refused(tmp_path: Path) -> None:
    night = write_csv(tmp_path / "n.csv", [line()])
    res = CliRunner().invoke(main, ["run", str(night), "--base-url", "http://api.klarna.com"],
                             env={"BULKCAPTURE_API_KEY": "k"})
    assert res.exit_code == 1 and "plain http" in res.stderr


def test_run_sandbox_flag_runs_the_whole_job_in_process(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    night = write_csv(tmp_path / "n.csv", [line(), line(order_id="o2")])
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["run", str(night), "--sandbox", "--results", "r.csv",
                                    "--no-progress"])
    assert res.exit_code == 0, res.output
    assert set(pl.read_csv(tmp_path / "r.csv")["status"]) == {"captured"}


def test_an_unwritable_summary_json_stops_before_any_capture(sandbox: Callable[..., Any],
                                                             tmp_path: Path) -> None:
    sb = sandbox(auto_authorize=True)
    night = write_csv(tmp_path / "n.csv", [line()])
    res, _ = run_cli(sb, tmp_path, [night], "--summary-json", str(tmp_path / "no" / "s.json"))
    assert res.exit_code == 1 and "--summary-json" in res.stderr
    assert not sb.state.list_captures()


def test_a_ledger_that_fails_mid_run_still_leaves_a_complete_results_file(
        sandbox: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    from etl.ledger import Ledger

    sb = sandbox(auto_authorize=True, latency_ms=5)
    syn = generate(150, seed=21)
    path = tmp_path / "n.parquet"
    write(syn.lines, path)
    real = Ledger.outcomes
    calls = {"n": 0}

    def failing(self: Ledger, done: Any) -> None:
        calls["n"] += 1
        if calls["n"] > 1:  # the disk fills up after the first batch of outcomes
            with self._tx():  # the failure comes from inside a ledger transaction
                raise sqlite3.OperationalError("database or disk is full")
        real(self, done)

    monkeypatch.setattr(Ledger, "outcomes", failing)
    res, df = run_cli(sb, tmp_path, [path], "--concurrency", "4")
    assert res.exit_code == 1 and res.stderr.startswith("Error: cannot write the ledger")
    assert "Traceback" not in res.stderr
    assert df is not None and df.height == 150
    statuses = set(df["status"])
    assert "captured" in statuses and statuses <= {"captured", "failed", "not_sent"}
    # Whatever the results call captured was captured, once; nothing else was.
    made = captures_at(sb)
    assert set(made.values()) == {1}
    captured = set(df.filter(pl.col("status") == "captured")
                   .select("order_id", "capture_reference").iter_rows())
    assert captured <= set(made)
