"""etl/report.py: the xlsx / html / csv / parquet report, read back and checked."""

from __future__ import annotations

import os
from datetime import date
from decimal import Decimal
from pathlib import Path

import openpyxl
import polars as pl
import pytest

from etl.errors import ConfigError, ResultsError
from etl.reconcile import Reconciliation, read_captures, reconcile
from etl.report import (
    check_report_path,
    format_amount,
    neutralise,
    render_html,
    summary_text,
    write_report,
)
from etl.settlements import read_settlements

DATA = Path(__file__).parent / "data" / "settlements"


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Reconciliation:
    # One hostile order id: a finance person opening the report must not run it.
    results = pl.read_csv(DATA / "results_night.csv", infer_schema=False).with_columns(
        order_id=pl.when(pl.col("order_id") == "o-400").then(pl.lit("=cmd|' /C calc'!A0"))
        .otherwise(pl.col("order_id")))
    path = tmp_path_factory.mktemp("results") / "results.csv"
    results.write_csv(path)
    return reconcile(read_captures([path]),
                     read_settlements([DATA / "payout_eur.csv", DATA / "payout_jpy_kwd.csv"]),
                     date(2024, 5, 10))


def test_xlsx_sheets_numbers_formats_and_no_formulas(rec: Reconciliation, tmp_path: Path) -> None:
    path = write_report(rec, tmp_path / "r.xlsx")
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Summary", "Exceptions", "Detail"]
    detail = book["Detail"]
    header = [c.value for c in detail[1]]
    assert header[:4] == ["order_id", "capture_id", "capture_reference", "match_status"]
    assert detail.freeze_panes == "A2"
    assert detail.auto_filter.ref is not None and detail.auto_filter.ref.startswith("A1:")
    rows = {r[0].value: {h: c for h, c in zip(header, r, strict=True)}
            for r in detail.iter_rows(min_row=2) if r[0].value is not None}
    captured = rows["o-100"]["captured_amount"]
    assert captured.value == 100 and captured.data_type == "n"  # major units, a number
    assert captured.number_format.startswith("#,##0.00")
    assert rows["o-600"]["captured_amount"].value == 1500
    assert rows["o-600"]["captured_amount"].number_format.startswith("#,##0;")  # JPY
    assert Decimal(str(rows["o-700"]["captured_amount"].value)) == Decimal("12.345")
    assert rows["o-700"]["captured_amount"].number_format.startswith("#,##0.000")  # KWD
    assert rows["o-100"]["fee_amount"].value == pytest.approx(2.8)
    # the formula is text, neutralised, never a formula
    hostile = rows["'=cmd|' /C calc'!A0"]["order_id"]
    assert hostile.data_type == "s"
    for sheet in book:
        for row in sheet.iter_rows():
            for cell in row:
                assert cell.data_type != "f", f"{sheet.title}!{cell.coordinate} is a formula"
    exceptions = book["Exceptions"]
    assert exceptions.freeze_panes == "A2"
    statuses = {r[3] for r in exceptions.iter_rows(min_row=2, values_only=True) if r[0]}
    assert statuses == {"amount_mismatch", "not_settled", "not_ours"}
    summary = [r for r in book["Summary"].iter_rows(values_only=True)]
    assert any(r[0] == "EUR" and r[2] == 200 for r in summary)  # captured 200.00 EUR


def test_csv_and_parquet_are_the_detail_in_minor_units(rec: Reconciliation,
                                                       tmp_path: Path) -> None:
    csv = pl.read_csv(write_report(rec, tmp_path / "r.csv"))
    parquet = pl.read_parquet(write_report(rec, tmp_path / "r.parquet"))
    assert csv.height == parquet.height == rec.detail.height == 7
    assert parquet.equals(rec.detail)
    assert "match_status" in csv.columns and csv["captured_amount"].dtype == pl.Int64


def test_html_is_self_contained_and_escaped(rec: Reconciliation, tmp_path: Path) -> None:
    text = write_report(rec, tmp_path / "r.html").read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert "<svg" in text and "captured" in text and "settled" in text
    assert "<script" not in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in text
    assert "12.345" in text and "1,500" in text  # major units per currency exponent
    assert "=cmd|&#x27; /C calc&#x27;!A0" in text  # escaped
    assert render_html(rec) == text


def test_atomic_write_leaves_no_temp_and_an_ordinary_mode(rec: Reconciliation,
                                                          tmp_path: Path) -> None:
    path = write_report(rec, tmp_path / "r.xlsx")
    assert os.listdir(tmp_path) == ["r.xlsx"]
    assert path.stat().st_mode & 0o044  # readable by group/others under the usual umask


def test_report_path_errors(rec: Reconciliation, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown report format '\.pdf'"):
        check_report_path(tmp_path / "r.pdf")
    with pytest.raises(ResultsError, match="cannot write"):
        write_report(rec, tmp_path / "missing-dir" / "r.csv")


def test_amount_formatting_is_exact() -> None:
    assert format_amount(123456, "EUR") == "1,234.56"
    assert format_amount(-5, "EUR") == "-0.05"
    assert format_amount(1500, "JPY") == "1,500"
    assert format_amount(12345, "KWD") == "12.345"
    assert format_amount(None, "EUR") == ""
    assert format_amount(10**17 + 1, "EUR") == "1,000,000,000,000,000.01"


@pytest.mark.parametrize("text", ["=1+1", "+1", "-1", "@SUM(A1)", "\t=x"])
def test_neutralise(text: str) -> None:
    assert neutralise(text) == "'" + text
    assert neutralise("o-100") == "o-100"


def test_summary_text(rec: Reconciliation) -> None:
    text = summary_text(rec)
    assert "matched 4, amount_mismatch 1, not_settled 1, not_ours 1" in text
    assert "12.345" in text and "200.00" in text
