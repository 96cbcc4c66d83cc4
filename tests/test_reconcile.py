"""etl/reconcile.py: captures × settlements → buckets and totals, on hand-built files."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pytest

from etl.errors import InputError
from etl.reconcile import Reconciliation, read_captures, reconcile, select_captures
from etl.settlements import read_settlements
from schemas.settlements import ReconcileDetail

DATA = Path(__file__).parent / "data" / "settlements"
AS_OF = date(2024, 5, 10)


@pytest.fixture(scope="module")
def rec() -> Reconciliation:
    return reconcile(read_captures([DATA / "results_night.csv"]),
                     read_settlements([DATA / "payout_eur.csv", DATA / "payout_jpy_kwd.csv"]),
                     AS_OF)


def by_order(rec: Reconciliation) -> dict[str, dict[str, object]]:
    return {row["order_id"]: row for row in rec.detail.iter_rows(named=True)}


def test_every_bucket(rec: Reconciliation) -> None:
    ReconcileDetail.validate(rec.detail)
    status = {o: r["match_status"] for o, r in by_order(rec).items()}
    assert status == {
        "o-100": "matched",  # SALE by capture_id
        "o-200": "amount_mismatch",  # settled 49.00 of 50.00
        "o-300": "matched",  # SALE without capture_id: by (order_id, merchant_capture_reference)
        "o-400": "not_settled",
        "o-600": "matched",  # JPY, 0 decimals
        "o-700": "matched",  # KWD, 3 decimals
        "o-999": "not_ours",
    }  # o-500 failed: not a capture of ours
    assert rec.counts == {"matched": 4, "amount_mismatch": 1, "not_settled": 1, "not_ours": 1}
    assert rec.has_exceptions and rec.exit_code == 3


def test_amounts_fees_returns_reversals(rec: Reconciliation) -> None:
    rows = by_order(rec)
    assert rows["o-100"]["fee_amount"] == 280  # two FEE rows on one sale
    assert rows["o-100"]["return_amount"] == 1000  # by order_id: the RETURN has no capture_id
    assert rows["o-700"]["reversal_amount"] == 2000
    assert rows["o-700"]["settled_amount"] == 12345
    assert rows["o-200"]["difference"] == -100
    assert rows["o-999"]["settled_amount"] == 777 and rows["o-999"]["fee_amount"] == 20
    assert rows["o-999"]["captured_amount"] is None
    assert rows["o-300"]["capture_id"] == "cap-3"
    assert rows["o-100"]["payment_reference"] == "P-EUR-1"
    assert rows["o-100"]["payout_date"] == date(2024, 5, 3)


def test_age_of_open_items(rec: Reconciliation) -> None:
    rows = by_order(rec)
    assert rows["o-400"]["age_days"] == 9  # completed 2024-05-01, as of 2024-05-10
    assert rows["o-200"]["age_days"] == 9
    assert rows["o-100"]["age_days"] is None
    later = reconcile(read_captures([DATA / "results_night.csv"]), pl.DataFrame(
        schema=rec.unlinked.schema), date(2024, 6, 1))
    assert by_order(later)["o-400"]["age_days"] == 31


def test_totals_per_currency(rec: Reconciliation) -> None:
    eur, jpy, kwd = rec.by_currency.iter_rows(named=True)
    assert eur["currency"] == "EUR"
    assert (eur["captures"], eur["captured"], eur["settled"], eur["fees"], eur["returns"],
            eur["net"]) == (4, 20000, 17677, 300, 1000, 16377)
    assert (eur["open_count"], eur["open_amount"]) == (2, 3000 + 100)
    assert (eur["not_ours_count"], eur["not_ours_amount"]) == (1, 777)
    assert (jpy["captured"], jpy["settled"], jpy["net"], jpy["open_count"]) == (1500, 1500, 1500, 0)
    assert (kwd["settled"], kwd["reversals"], kwd["net"]) == (12345, 2000, 10345)


def test_totals_per_payout_agree_with_the_reported_total(rec: Reconciliation) -> None:
    payouts = {r["payment_reference"]: r for r in rec.by_payout.iter_rows(named=True)}
    assert set(payouts) == {"P-EUR-1", "P-JPY-1", "P-KWD-1"}
    eur = payouts["P-EUR-1"]
    assert (eur["net"], eur["reported_total"], eur["payout_difference"]) == (16377, 16377, 0)
    assert eur["captured"] == 10000 + 5000 + 2000
    assert (eur["matched_count"], eur["open_count"], eur["open_amount"]) == (2, 1, 100)
    assert eur["not_ours_count"] == 1
    assert payouts["P-KWD-1"]["payout_difference"] == 0


def test_daily_series(rec: Reconciliation) -> None:
    eur = rec.daily.filter(pl.col("currency") == "EUR")
    assert eur.rows() == [("EUR", date(2024, 5, 1), 20000, 0), ("EUR", date(2024, 5, 3), 0, 17677)]


def test_everything_matched_exits_0() -> None:
    caps = pl.DataFrame({"order_id": ["o1"], "capture_reference": ["r1"], "capture_id": ["c1"],
                         "captured_amount": [500], "currency": ["EUR"], "status": ["captured"]})
    sett = read_settlements([DATA / "payout_eur.csv"]).head(1).with_columns(
        capture_id=pl.lit("c1"), amount=pl.lit(500, pl.Int64))
    result = reconcile(caps, sett, AS_OF)
    assert result.counts["matched"] == 1 and not result.has_exceptions
    assert result.exit_code == 0


def test_currency_mismatch_is_not_a_match() -> None:
    caps = pl.DataFrame({"order_id": ["o1"], "capture_reference": ["r1"], "capture_id": ["c1"],
                         "captured_amount": [500], "currency": ["SEK"], "status": ["captured"]})
    sett = read_settlements([DATA / "payout_eur.csv"]).head(1).with_columns(
        capture_id=pl.lit("c1"), amount=pl.lit(500, pl.Int64))
    assert reconcile(caps, sett, AS_OF).detail["match_status"].to_list() == ["amount_mismatch"]


def test_order_level_rows_count_once_for_an_order_with_two_captures() -> None:
    caps = pl.DataFrame({"order_id": ["o1", "o1"], "capture_reference": ["a", "b"],
                         "capture_id": ["c1", "c2"], "captured_amount": [100, 200],
                         "currency": ["EUR", "EUR"], "status": ["captured", "captured"]})
    sett = pl.concat([read_settlements([DATA / "payout_eur.csv"]).filter(
        pl.col("type") == "RETURN").with_columns(order_id=pl.lit("o1"))])
    result = reconcile(caps, sett, AS_OF)
    assert result.detail["return_amount"].to_list() == [1000, 0]
    assert result.unlinked.height == 0


def test_unlinked_rows_are_kept() -> None:
    caps = pl.DataFrame({"order_id": ["o1"], "capture_reference": ["a"], "capture_id": ["c1"],
                         "captured_amount": [100], "currency": ["EUR"], "status": ["captured"]})
    sett = read_settlements([DATA / "payout_eur.csv"]).filter(pl.col("type") == "RETURN")
    result = reconcile(caps, sett, AS_OF)
    assert result.unlinked["order_id"].to_list() == ["o-100"]
    assert result.by_currency["returns"].to_list() == [1000]


def test_select_captures_latest_wins(tmp_path: Path) -> None:
    night = pl.read_csv(DATA / "results_night.csv", infer_schema=False)
    rerun = night.filter(pl.col("order_id") == "o-200").with_columns(
        status=pl.lit("already_captured"), captured_amount=pl.lit("4900"),
        completed_at=pl.lit("2024-05-02T08:00:00Z"), run_id=pl.lit("run-2"))
    # the retried o-500 succeeded in the second run
    retried = night.filter(pl.col("order_id") == "o-500").with_columns(
        status=pl.lit("captured"), capture_id=pl.lit("cap-5"), run_id=pl.lit("run-2"),
        completed_at=pl.lit("2024-05-02T08:00:00Z"))
    path = tmp_path / "rerun.parquet"
    pl.concat([rerun, retried]).with_columns(
        pl.col("captured_amount").cast(pl.Int64),
        pl.col("completed_at").str.to_datetime(time_zone="UTC")).write_parquet(path)
    caps = read_captures([path, DATA / "results_night.csv"])  # order of files does not matter
    assert caps.height == 7
    row = caps.filter(pl.col("order_id") == "o-200").row(0, named=True)
    assert (row["run_id"], row["captured_amount"]) == ("run-2", 4900)
    assert caps.filter(pl.col("order_id") == "o-500")["capture_id"].to_list() == ["cap-5"]
    assert caps["completed_at"].dtype == pl.Datetime("us", "UTC")


def test_select_captures_dedupes_on_capture_id_too() -> None:
    frame = pl.DataFrame({
        "order_id": ["o1", "o1"], "capture_reference": ["r1", "R1"], "capture_id": ["c1", "c1"],
        "captured_amount": [1, 2], "status": ["captured", "captured"],
        "completed_at": [datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 5, 2, tzinfo=UTC)]})
    assert select_captures(frame)["captured_amount"].to_list() == [2]


def test_results_file_errors_name_row_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("order_id,capture_reference,status,captured_amount,capture_id,completed_at\n"
                   "o1,r1,captured,100,c1,2024-05-01T00:00:00Z\n"
                   "o2,r2,captured,1.5,c2,2024-05-01T00:00:00Z\n")
    with pytest.raises(InputError, match=r"bad\.csv row 2, column captured_amount: '1\.5'"):
        read_captures([bad])
    bad.write_text("order_id,capture_reference,status,captured_amount,capture_id,completed_at\n"
                   "o1,r1,captured,100,c1,yesterday\n")
    with pytest.raises(InputError, match=r"row 1, column completed_at: 'yesterday'"):
        read_captures([bad])
    bad.write_text("order_id,status\no1,captured\n")
    with pytest.raises(InputError, match="has no column capture_reference, captured_amount"):
        read_captures([bad])
    with pytest.raises(InputError, match="cannot read results file"):
        read_captures([tmp_path / "missing.parquet"])
    with pytest.raises(InputError, match="unknown format"):
        read_captures([tmp_path / "r.xlsx"])


def test_ndjson_results(tmp_path: Path) -> None:
    path = tmp_path / "r.ndjson"
    pl.read_csv(DATA / "results_night.csv").write_ndjson(path)
    assert read_captures([path]).height == 6
