"""``bulkcapture reconcile`` and ``bulkcapture settlements fetch`` through click's CliRunner:
exit codes, output, files written; fetch end to end against the sandbox over loopback."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import polars as pl
import pytest
from click.testing import CliRunner

from etl.cli import main
from etl.cli.reconcile_cmd import expand_greedy

DATA = Path(__file__).parent / "data" / "settlements"
RESULTS = str(DATA / "results_night.csv")
EUR = str(DATA / "payout_eur.csv")
JPY_KWD = str(DATA / "payout_jpy_kwd.csv")


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(main, list(args), env=env)


def test_exceptions_exit_3_and_write_the_xlsx(tmp_path: Path) -> None:
    out = tmp_path / "reconcile.xlsx"
    summary = tmp_path / "summary.json"
    result = invoke("reconcile", "--captures", RESULTS, "--settlement", EUR, JPY_KWD,
                    "--out", str(out), "--as-of", "2024-05-10", "--summary-json", str(summary))
    assert result.exit_code == 3, result.output
    assert "matched 4, amount_mismatch 1, not_settled 1, not_ours 1" in result.output
    assert "EUR" in result.output and "12.345" in result.output
    assert f"Report: {out}" in result.output
    assert openpyxl.load_workbook(out).sheetnames == ["Summary", "Exceptions", "Detail"]
    doc = json.loads(summary.read_text())
    assert doc["counts"]["not_ours"] == 1 and doc["exit_code"] == 3


def test_everything_matched_exits_0(tmp_path: Path) -> None:
    results = tmp_path / "results.csv"
    pl.read_csv(RESULTS, infer_schema=False).filter(
        pl.col("order_id").is_in(["o-600", "o-700"])).write_csv(results)
    result = invoke("reconcile", "--captures", str(results), "--settlement", JPY_KWD,
                    "--out", str(tmp_path / "r.html"))
    assert result.exit_code == 0, result.output
    assert "matched 2, amount_mismatch 0, not_settled 0, not_ours 0" in result.output
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


def test_several_files_after_one_option_and_globs(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    result = invoke("reconcile", "--captures", RESULTS, RESULTS,
                    "--settlement", str(DATA / "payout_*.csv"), str(DATA / "*.json"),
                    "--out", str(out), "--as-of", "2024-05-10")
    assert result.exit_code == 3, result.output
    assert pl.read_csv(out).height == 7  # the same captures twice and the same payout twice


def test_expand_greedy() -> None:
    assert expand_greedy(["--captures", "a", "b", "--out", "x", "--settlement=c", "d"]) == [
        "--captures", "a", "--captures", "b", "--out", "x", "--settlement=c", "--settlement",
        "d"]
    assert expand_greedy(["--captures", "a", "--", "b"]) == ["--captures", "a", "--", "b"]


def test_unreadable_settlement_is_exit_1_with_a_sentence(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("type;amount;posting_currency\nSALE;1.00;EUR\nSALE;1.005;EUR\n")
    out = tmp_path / "r.xlsx"
    result = invoke("reconcile", "--captures", RESULTS, "--settlement", str(bad),
                    "--out", str(out))
    assert result.exit_code == 1
    assert f"Error: {bad} row 2, column amount: '1.005'" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize(("args", "code", "text"), [
    (["--captures", RESULTS, "--settlement", EUR, "--out", "r.pdf"], 1,
     "unknown report format '.pdf'"),
    (["--captures", "nowhere/*.parquet", "--settlement", EUR], 1, "matches no file"),
    (["--captures", "missing.parquet", "--settlement", EUR], 1, "cannot read results file"),
    (["--settlement", EUR], 2, "--captures RESULTS... and/or --ledger PATH"),
])
def test_usage_and_input_errors(args: list[str], code: int, text: str) -> None:
    result = invoke("reconcile", *args)
    assert result.exit_code == code
    assert text in result.output
    assert "Traceback" not in result.output


def test_help_has_an_example() -> None:
    assert "Example:" in invoke("reconcile", "--help").output
    assert "Example:" in invoke("settlements", "fetch", "--help").output


def test_fetch_then_reconcile_against_the_sandbox(sandbox: Any, tmp_path: Path) -> None:
    from etl.sandbox import FakeClock

    sb = sandbox(auto_authorize=True, clock=FakeClock(1_714_557_600.0),  # 2024-05-01T10:00Z
                 fee_bps=250, fee_fixed=30)
    rows = []
    with httpx.Client(base_url=sb.url, auth=sb.auth) as client:
        for i, amount in enumerate((1000, 2001, 3999)):
            resp = client.post(f"/ordermanagement/v1/orders/o-{i}/captures",
                               json={"captured_amount": amount, "reference": f"ref-{i}"})
            assert resp.status_code == 201
            rows.append({"order_id": f"o-{i}", "capture_reference": f"ref-{i}",
                         "status": "captured", "captured_amount": amount, "currency": "EUR",
                         "capture_id": resp.headers["Capture-Id"],
                         "completed_at": datetime(2024, 5, 1, 10, tzinfo=UTC)})
        report = client.get("/settlements/v1/reports/payout-with-transactions",
                            params={"payment_reference": "SBX-20240501-EUR"}).text
    rows.append({**rows[0], "order_id": "o-late", "capture_reference": "late",
                 "capture_id": "never-settled"})
    results = tmp_path / "results.parquet"
    pl.DataFrame(rows).write_parquet(results)
    fetched = tmp_path / "settlements.json"
    env = {"BULKCAPTURE_API_USERNAME": sb.username, "BULKCAPTURE_API_PASSWORD": sb.password}
    result = invoke("settlements", "fetch", "--since", "2024-05-01", "--until", "2024-05-31",
                    "--base-url", sb.url, "--out", str(fetched), env=env)
    assert result.exit_code == 0, result.output
    assert "1 payouts, 9 transactions" in result.output
    assert sb.password not in result.output
    csv_report = tmp_path / "payout.csv"
    csv_report.write_text(report)
    for settlement in (fetched, csv_report):
        out = tmp_path / f"r-{settlement.suffix[1:]}.parquet"
        result = invoke("reconcile", "--captures", str(results), "--settlement",
                        str(settlement), "--out", str(out), "--as-of", "2024-05-10")
        assert result.exit_code == 3, result.output  # o-late is not settled
        detail = pl.read_parquet(out)
        assert detail["match_status"].to_list() == ["matched"] * 3 + ["not_settled"]
        fees = detail["fee_amount"].to_list()
        assert fees == [(a * 250 + 5000) // 10_000 + 30 for a in (1000, 2001, 3999)] + [0]


def test_fetch_errors(tmp_path: Path) -> None:
    out = str(tmp_path / "s.json")
    result = invoke("settlements", "fetch", "--since", "2024-05-01", "--out", out)
    assert result.exit_code == 1 and "no API target" in result.output
    result = invoke("settlements", "fetch", "--since", "2024-05-01", "--out", out,
                    "--base-url", "http://127.0.0.1:9")
    assert result.exit_code == 1 and "no credentials" in result.output
    result = invoke("settlements", "fetch", "--since", "2024-05-01", "--out", "s.csv")
    assert result.exit_code == 1 and "*.json" in result.output
    result = invoke("settlements", "fetch", "--since", "2024-05-02", "--until", "2024-05-01",
                    "--out", out)
    assert result.exit_code == 1 and "before --since" in result.output


def test_fetch_unauthorised_is_exit_1_without_secrets(sandbox: Any, tmp_path: Path) -> None:
    sb = sandbox(auto_authorize=True)
    env = {"BULKCAPTURE_API_USERNAME": "someone", "BULKCAPTURE_API_PASSWORD": "s3cret-pw"}
    result = invoke("settlements", "fetch", "--since", "2024-05-01", "--base-url", sb.url,
                    "--out", str(tmp_path / "s.json"), env=env)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "s3cret-pw" not in result.output and "Traceback" not in result.output
    assert not (tmp_path / "s.json").exists()
