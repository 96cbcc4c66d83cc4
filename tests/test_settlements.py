"""etl/settlements.py: CSV payout reports and Settlements API JSON → one frame in minor units."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.errors import InputError
from etl.settlements import (
    fetch_settlements,
    parse_csv_report,
    parse_transactions_json,
    read_settlements,
    sniff_delimiter,
)
from schemas.settlements import SettlementTransactions

DATA = Path(__file__).parent / "data" / "settlements"
HEADER = "payment_reference,payout_date,type,amount,posting_currency,capture_id,order_id\n"


def csv_rows(*rows: str, header: str = HEADER) -> bytes:
    return (header + "\n".join(rows) + "\n").encode()


def test_semicolon_report_with_bom_blank_lines_and_odd_headers() -> None:
    frame = read_settlements([DATA / "payout_eur.csv"])
    SettlementTransactions.validate(frame)
    assert frame.height == 8
    assert frame["source_row"].to_list() == [1, 2, 4, 5, 6, 7, 8, 9]  # the blank line is row 3
    sale = frame.row(0, named=True)
    assert (sale["type"], sale["amount"], sale["payout_amount"], sale["currency"]) == (
        "SALE", 10000, 10000, "EUR")
    assert sale["payout_date"] == date(2024, 5, 3)
    assert sale["total_settlement_amount"] == 16377  # decimal comma in a ';' report
    assert frame.filter(pl.col("type") == "FEE")["amount"].to_list() == [250, 30, 20]
    ret = frame.filter(pl.col("type") == "RETURN").row(0, named=True)
    assert (ret["amount"], ret["payout_amount"], ret["capture_id"]) == (1000, -1000, None)
    # the payout equation holds on the normalised rows
    assert frame["payout_amount"].sum() == 16377


def test_comma_report_zero_and_three_decimal_currencies() -> None:
    frame = read_settlements([DATA / "payout_jpy_kwd.csv"])
    assert frame.select("currency", "type", "amount", "payout_amount").rows() == [
        ("JPY", "SALE", 1500, 1500), ("KWD", "SALE", 12345, 12345),
        ("KWD", "REVERSAL", 2000, -2000)]
    assert frame["total_settlement_amount"].to_list() == [1500, 10345, 10345]


def test_json_pages_concatenated_with_payouts_document() -> None:
    frame = read_settlements([DATA / "transactions_eur.json"])
    SettlementTransactions.validate(frame)
    assert frame.height == 8
    assert frame["payout_date"].unique().to_list() == [date(2024, 5, 3)]
    assert frame["total_settlement_amount"].unique().to_list() == [16377]
    # a signed input amount is taken as a magnitude, the direction from the type
    ret = frame.filter(pl.col("type") == "RETURN").row(0, named=True)
    assert (ret["amount"], ret["payout_amount"]) == (1000, -1000)


def test_the_same_payout_as_csv_and_json_counts_once() -> None:
    both = read_settlements([DATA / "payout_eur.csv", DATA / "transactions_eur.json"])
    assert both.height == 8
    assert both["source_file"].unique().to_list() == [str(DATA / "payout_eur.csv")]


def test_identical_fees_in_one_file_are_kept() -> None:
    data = csv_rows("P,2024-05-03,FEE,1.00,EUR,c1,o1", "P,2024-05-03,FEE,1.00,EUR,c1,o1")
    path_frame = parse_csv_report(data, "f.csv")
    assert path_frame.height == 2


def test_bare_list_and_ndjson() -> None:
    bare = parse_transactions_json(
        b'[{"amount": 5, "type": "sale", "currency_code": "eur", "order_id": "o"}]', "b.json")
    assert bare.select("type", "amount", "currency").row(0) == ("SALE", 5, "EUR")
    lines = parse_transactions_json(
        b'{"amount": 5, "type": "FEE", "currency_code": "EUR"}\n'
        b'{"amount": 7, "type": "CORRECTION", "currency_code": "EUR"}\n'
        b'{"amount": -3, "type": "CORRECTION", "currency_code": "EUR"}\n', "l.ndjson")
    # CORRECTION has no fixed direction: the input's sign is kept
    assert lines["payout_amount"].to_list() == [-5, 7, -3]


def test_tab_and_semicolon_sniffed() -> None:
    assert sniff_delimiter("a;b;c") == ";"
    assert sniff_delimiter("a,b,c") == ","
    assert sniff_delimiter("a\tb\tc") == "\t"
    assert sniff_delimiter("single") == ","


@pytest.mark.parametrize(("row", "message"), [
    ("P,2024-05-03,SALE,10.005,EUR,c1,o1",
     "f.csv row 1, column amount: '10.005' has 3 decimal(s) but EUR has 2"),
    ("P,2024-05-03,SALE,10.5,JPY,c1,o1",
     "f.csv row 1, column amount: '10.5' has 1 decimal(s) but JPY has 0"),
    ("P,2024-05-03,SALE,1.2345,KWD,c1,o1",
     "f.csv row 1, column amount: '1.2345' has 4 decimal(s) but KWD has 3"),
    ("P,2024-05-03,SALE,ten,EUR,c1,o1",
     "f.csv row 1, column amount: 'ten' is not a decimal amount"),
    ("P,2024-05-03,SALE,,EUR,c1,o1", "f.csv row 1, column amount: empty"),
    ("P,2024-05-03,SALE,1.00,,c1,o1", "f.csv row 1, column posting_currency: empty"),
    ("P,2024-05-03,SALE,1.00,euro,c1,o1", "f.csv row 1, column posting_currency: 'EURO'"),
    ("P,03/05/2024,SALE,1.00,EUR,c1,o1", "f.csv row 1, column payout_date: '03/05/2024'"),
])
def test_bad_values_name_file_row_and_column(row: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        parse_csv_report(csv_rows("P,2024-05-03,SALE,1.00,EUR,c0,o0", row), "f.csv")
    assert message.replace("row 1", "row 2") in str(info.value)  # after one good row


def test_missing_required_column() -> None:
    with pytest.raises(InputError, match="has no column posting_currency"):
        parse_csv_report(b"type,amount\nSALE,1.00\n", "f.csv")


def test_json_amount_with_decimals_is_an_error() -> None:
    with pytest.raises(InputError, match=r"j.json transaction 2, column amount: '1.5'"):
        parse_transactions_json(b'[{"amount": 1, "type": "SALE", "currency_code": "EUR"},'
                                b' {"amount": 1.5, "type": "SALE", "currency_code": "EUR"}]',
                                "j.json")


def test_unreadable_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read settlement file"):
        read_settlements([tmp_path / "missing.csv"])
    (tmp_path / "s.xml").write_text("<x/>")
    with pytest.raises(InputError, match=r"unknown format '\.xml'"):
        read_settlements([tmp_path / "s.xml"])
    (tmp_path / "bad.json").write_text('{"transactions": [')
    with pytest.raises(InputError, match=r"bad\.json is not valid JSON"):
        read_settlements([tmp_path / "bad.json"])
    (tmp_path / "other.json").write_text('{"orders": []}')
    with pytest.raises(InputError, match="neither a transactions page"):
        read_settlements([tmp_path / "other.json"])


@given(minor=st.integers(min_value=-(10**15) + 1, max_value=10**15 - 1),  # 15 digits: the cap
       currency=st.sampled_from(["EUR", "JPY", "KWD", "CLF", "USD"]))
def test_major_to_minor_round_trips_exactly(minor: int, currency: str) -> None:
    from etl.currency import exponent

    text = f"{Decimal(minor).scaleb(-exponent(currency)):f}"  # "-12.345", "1500"
    frame = parse_csv_report(csv_rows(f"P,2024-05-03,SALE,{text},{currency},c,o"), "p.csv")
    assert frame["amount"][0] == abs(minor)
    assert frame["payout_amount"][0] == abs(minor)


class FakeApi:
    """Pages like the Settlements API: ``size``/``offset``, ``pagination.next`` until the end."""

    def __init__(self) -> None:
        self.payouts = [{"payment_reference": f"P{i}", "payout_date": "2024-05-03T00:00:00Z",
                         "currency_code": "EUR", "totals": {"settlement_amount": 100}}
                        for i in range(3)]
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def get_json(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        params = params or {}
        self.calls.append((path, params))
        if path.endswith("/payouts"):
            rows: list[dict[str, Any]] = self.payouts
        else:
            ref = params["payment_reference"]
            rows = [{"amount": 100, "type": "SALE", "currency_code": "EUR",
                     "payment_reference": ref, "capture_id": f"{ref}-{n}"} for n in range(3)]
        size, offset = 2, params["offset"]  # the fake pages by 2 whatever is asked
        page = rows[offset:offset + size]
        pagination: dict[str, Any] = {"count": len(page), "total": len(rows), "offset": offset}
        if offset + size < len(rows):
            pagination["next"] = f"https://x{path}?offset={offset + size}"
        key = "payouts" if path.endswith("/payouts") else "transactions"
        return {key: page, "pagination": pagination}


async def _fetch(api: FakeApi) -> dict[str, list[dict[str, Any]]]:
    return await fetch_settlements(api, date(2024, 5, 1), date(2024, 5, 31))


def test_fetch_follows_pages_and_reads_back(tmp_path: Path) -> None:
    import asyncio
    import json

    api = FakeApi()
    doc = asyncio.run(_fetch(api))
    assert len(doc["payouts"]) == 3
    assert len(doc["transactions"]) == 9
    assert api.calls[0] == ("/settlements/v1/payouts", {
        "start_date": "2024-05-01", "end_date": "2024-05-31", "size": 500, "offset": 0})
    path = tmp_path / "s.json"
    path.write_text(json.dumps(doc))
    frame = read_settlements([path])
    assert frame.height == 9
    assert frame["total_settlement_amount"].unique().to_list() == [100]


def test_schema_failure_names_file_and_row(tmp_path: Path) -> None:
    path = tmp_path / "odd.csv"
    path.write_text("type,amount,posting_currency\nSALE,1.00,EUR\nSA LE,2.00,EUR\n")
    with pytest.raises(InputError, match=r"odd\.csv row 2, column type: 'SA LE' fails"):
        read_settlements([path])
