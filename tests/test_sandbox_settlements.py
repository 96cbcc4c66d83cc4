"""The sandbox's settlement endpoints: transactions, payouts and the CSV report, generated from the
captures it made, add up (sale − fee = settlement) and join back by capture_id."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from etl.sandbox import FakeClock
from etl.sandbox.settlements import CSV_COLUMNS, major

OM = "/ordermanagement/v1/orders"


@pytest.fixture
def settled(sandbox: Any) -> Iterator[tuple[Any, httpx.Client, FakeClock]]:
    """Three EUR captures on day 1, one SEK capture on day 1, one EUR capture on day 2."""
    clock = FakeClock(1_714_557_600.0)  # 2024-05-01T10:00:00Z
    sb = sandbox(auto_authorize=True, clock=clock, fee_bps=250, fee_fixed=30, orders=(
        {"order_id": "sek", "order_amount": 5000, "purchase_currency": "SEK",
         "merchant_reference1": "M-1"},))
    with httpx.Client(base_url=sb.url, auth=sb.auth) as client:
        for i, amount in enumerate((1000, 2001, 3999)):
            client.post(f"{OM}/eur-{i}/captures", json={"captured_amount": amount,
                                                        "reference": f"ref-{i}"})
        client.post(f"{OM}/sek/captures", json={"captured_amount": 5000, "reference": "s"})
        clock.advance(86_400)
        client.post(f"{OM}/eur-9/captures", json={"captured_amount": 700, "reference": "late"})
        yield sb, client, clock


def _fee(amount: int) -> int:
    return (amount * 250 + 5000) // 10_000 + 30


def test_transactions_sale_and_fee_rows(settled: tuple[Any, httpx.Client, FakeClock]) -> None:
    sb, client, _ = settled
    body = client.get("/settlements/v1/transactions", params={"size": 500}).json()
    txs = body["transactions"]
    assert body["pagination"] == {"count": 15, "total": 15, "offset": 0}
    captures = {c.capture_id: c for c in sb.state.list_captures()}
    for cap_id, cap in captures.items():
        rows = [t for t in txs if t["capture_id"] == cap_id]
        assert [(t["type"], t["detailed_type"]) for t in rows] == [
            ("SALE", "PURCHASE"), ("FEE", "PURCHASE_FEE_PERCENTAGE"), ("FEE", "PURCHASE_FEE_FIXED")]
        assert rows[0]["amount"] == cap.captured_amount
        assert rows[1]["amount"] + rows[2]["amount"] == _fee(cap.captured_amount)
        assert all(t["amount"] > 0 for t in rows)  # magnitudes: the type gives the direction
        assert {t["merchant_capture_reference"] for t in rows} == {cap.reference}
        assert {t["order_id"] for t in rows} == {cap.order_id}
    sek = next(t for t in txs if t["order_id"] == "sek")
    assert (sek["currency_code"], sek["merchant_reference1"]) == ("SEK", "M-1")
    assert sek["payment_reference"] == "SBX-20240501-SEK"
    assert sek["capture_date"] == "2024-05-01T10:00:00Z"
    for field in ("sale_date", "short_order_id", "purchase_country", "refund_id", "vat_rate",
                  "vat_amount"):
        assert field in sek


def test_transaction_filters_and_paging(settled: tuple[Any, httpx.Client, FakeClock]) -> None:
    _, client, _ = settled
    get = client.get

    by_order = get("/settlements/v1/transactions", params={"order_id": "eur-1"}).json()
    assert {t["order_id"] for t in by_order["transactions"]} == {"eur-1"}
    assert by_order["pagination"]["total"] == 3
    day2 = get("/settlements/v1/transactions", params={"start_date": "2024-05-02"}).json()
    assert {t["order_id"] for t in day2["transactions"]} == {"eur-9"}
    day1 = get("/settlements/v1/transactions", params={"end_date": "2024-05-01"}).json()
    assert day1["pagination"]["total"] == 12
    by_ref = get("/settlements/v1/transactions",
                 params={"payment_reference": "SBX-20240501-EUR"}).json()
    assert by_ref["pagination"]["total"] == 9

    seen, url = [], "/settlements/v1/transactions?size=4"
    while url:
        page = get(url).json()
        seen += page["transactions"]
        assert page["pagination"]["count"] == len(page["transactions"]) <= 4
        url = page["pagination"].get("next")
    assert len(seen) == 15 and seen == get("/settlements/v1/transactions?size=500").json()[
        "transactions"]
    assert get("/settlements/v1/transactions?size=501").status_code == 400
    assert get("/settlements/v1/transactions?offset=-1").status_code == 400
    assert get("/settlements/v1/transactions?start_date=yesterday").status_code == 400


def test_payouts_group_by_currency_and_day(settled: tuple[Any, httpx.Client, FakeClock]) -> None:
    _, client, _ = settled
    body = client.get("/settlements/v1/payouts").json()
    payouts = {p["payment_reference"]: p for p in body["payouts"]}
    assert set(payouts) == {"SBX-20240501-EUR", "SBX-20240501-SEK", "SBX-20240502-EUR"}
    eur = payouts["SBX-20240501-EUR"]
    assert (eur["currency_code"], eur["payout_date"]) == ("EUR", "2024-05-02T00:00:00Z")
    sales = 1000 + 2001 + 3999
    fees = sum(_fee(a) for a in (1000, 2001, 3999))
    totals = eur["totals"]
    assert (totals["sale_amount"], totals["fee_amount"]) == (sales, fees)
    assert totals["settlement_amount"] == sales - fees
    for key in ("return_amount", "reversal_amount"):
        assert totals[key] == 0
    assert client.get("/settlements/v1/payouts/SBX-20240501-EUR").json() == eur
    assert client.get("/settlements/v1/payouts/nope").status_code == 404
    sek_only = client.get("/settlements/v1/payouts", params={"currency_code": "SEK"}).json()
    assert [p["payment_reference"] for p in sek_only["payouts"]] == ["SBX-20240501-SEK"]
    later = client.get("/settlements/v1/payouts", params={"start_date": "2024-05-03"}).json()
    assert [p["payment_reference"] for p in later["payouts"]] == ["SBX-20240502-EUR"]
    paged = client.get("/settlements/v1/payouts", params={"size": 1}).json()
    assert paged["pagination"]["total"] == 3 and "next" in paged["pagination"]


@pytest.mark.parametrize("delimiter", [";", ","])
def test_csv_report(settled: tuple[Any, httpx.Client, FakeClock], delimiter: str) -> None:
    _, client, _ = settled
    params = {"payment_reference": "SBX-20240501-EUR"}
    if delimiter == ",":
        params["delimiter"] = ","
    resp = client.get("/settlements/v1/reports/payout-with-transactions", params=params)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(resp.text), delimiter=delimiter))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 9
    payout = client.get("/settlements/v1/payouts/SBX-20240501-EUR").json()
    net = Decimal(payout["totals"]["settlement_amount"]) / 100
    assert {Decimal(r["total_settlement_amount"]) for r in rows} == {net}
    signed = sum(Decimal(r["amount"]) * (-1 if r["type"] == "FEE" else 1) for r in rows)
    assert signed == net
    sale = next(r for r in rows if r["type"] == "SALE" and r["order_id"] == "eur-1")
    assert (sale["amount"], sale["posting_currency"], sale["merchant_capture_reference"]) == \
        ("20.01", "EUR", "ref-1")
    txs = client.get("/settlements/v1/transactions", params={"order_id": "eur-1"}).json()
    assert sale["capture_id"] == txs["transactions"][0]["capture_id"]


def test_csv_report_errors_and_signed_option(sandbox: Any) -> None:
    clock = FakeClock(1_714_557_600.0)
    sb = sandbox(auto_authorize=True, clock=clock, signed_csv_amounts=True)
    with httpx.Client(base_url=sb.url, auth=sb.auth) as client:
        client.post(f"{OM}/o/captures", json={"captured_amount": 10_000})
        url = "/settlements/v1/reports/payout-with-transactions"
        assert client.get(url).status_code == 400
        assert client.get(url, params={"payment_reference": "nope"}).status_code == 404
        assert client.get(url, params={"payment_reference": "SBX-20240501-EUR",
                                       "delimiter": "|"}).status_code == 400
        text = client.get(url, params={"payment_reference": "SBX-20240501-EUR"}).text
        amounts = [r["amount"] for r in csv.DictReader(io.StringIO(text), delimiter=";")]
        assert amounts == ["100.00", "-2.49", "-0.25"]


@pytest.mark.parametrize(("amount", "currency", "text"), [
    (1250, "EUR", "12.50"), (5, "EUR", "0.05"), (-249, "EUR", "-2.49"), (1250, "JPY", "1250"),
    (1250, "KWD", "1.250"), (0, "SEK", "0.00"),
])
def test_major_units(amount: int, currency: str, text: str) -> None:
    assert major(amount, currency) == text
