"""etl/plan.py: exact bodies, keys, size limit and duplicate identities."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from etl.plan import KEY_NAMESPACE, idempotency_key
from tests.helpers import line, plan_rows, rules_of, status_of


def test_body_is_exactly_the_api_shape(tmp_path: Path) -> None:
    rows = [
        line(description="Parcel 1", shipping_delay=0, type="physical", reference="SKU-1",
             tax_rate=2500, total_tax_amount=400, brand="Acme", color="Red",
             shipping_company="DHL SE", shipping_method="Home", tracking_number="T1"),
        line(name="Hat", quantity=1, unit_price=500, total_amount=400, total_discount_amount=100,
             description="Parcel 1", shipping_company="DHL SE", shipping_method="Home",
             tracking_number="T1"),
        line(name="Fee", quantity=1, unit_price=0, total_amount=0, type="shipping_fee",
             description="Parcel 1", shipping_company="DHL SE", shipping_method="Home",
             tracking_number="T2"),
    ]
    plan = plan_rows(tmp_path, rows)
    assert status_of(plan) == "planned", plan.failures
    body = json.loads(next(plan.requests()).body)
    assert body == {
        "captured_amount": 2400,
        "description": "Parcel 1",
        "reference": "s1",
        "shipping_delay": 0,
        "order_lines": [
            {"type": "physical", "reference": "SKU-1", "name": "Shirt", "quantity": 2,
             "unit_price": 1000, "tax_rate": 2500, "total_amount": 2000,
             "total_tax_amount": 400, "product_identifiers": {"brand": "Acme", "color": "Red"}},
            {"name": "Hat", "quantity": 1, "unit_price": 500, "total_amount": 400,
             "total_discount_amount": 100},
            {"type": "shipping_fee", "name": "Fee", "quantity": 1, "unit_price": 0,
             "total_amount": 0},
        ],
        "shipping_info": [
            {"shipping_company": "DHL SE", "shipping_method": "Home", "tracking_number": "T1"},
            {"shipping_company": "DHL SE", "shipping_method": "Home", "tracking_number": "T2"},
        ],
    }


def test_strings_are_json_escaped(tmp_path: Path) -> None:
    plan = plan_rows(tmp_path, [line(name='Quote " and \\ and ünïcödé\ttab')])
    body = json.loads(next(plan.requests()).body)
    assert body["order_lines"][0]["name"] == 'Quote " and \\ and ünïcödé\ttab'


def test_amount_only_capture_has_no_order_lines(tmp_path: Path) -> None:
    plan = plan_rows(tmp_path, [{"order_id": "o1", "capture_reference": "s1",
                                 "captured_amount": 4200, "currency": "SEK"}])
    req = next(plan.requests())
    assert json.loads(req.body) == {"captured_amount": 4200, "reference": "s1"}
    assert (req.captured_amount, req.currency) == (4200, "SEK")


def test_key_is_uuid5_of_the_identity_under_the_fixed_namespace() -> None:
    assert idempotency_key("o1", "s1") == str(
        uuid.uuid5(KEY_NAMESPACE, json.dumps(["o1", "s1"])))
    assert str(KEY_NAMESPACE) == "4550dc2d-f0f6-5a7a-b41a-9822f38670f6"
    assert uuid.UUID(idempotency_key("o1", "s1")).version == 5


@given(st.text(), st.text(), st.text(), st.text())
def test_same_identity_same_key_different_identity_different_key(a: str, b: str, c: str,
                                                                 d: str) -> None:
    assert idempotency_key(a, b) == idempotency_key(a, b)
    if (a, b) != (c, d):
        assert idempotency_key(a, b) != idempotency_key(c, d)
    assert idempotency_key(a, b, 1) != idempotency_key(a, b)
    assert idempotency_key(a, b, 1) != idempotency_key(a, b, 2)


def test_plan_keys_match_the_function(tmp_path: Path) -> None:
    plan = plan_rows(tmp_path, [line(), line(order_id="o2", capture_reference="x\ny")])
    for oid, ref, key in plan.captures.select("order_id", "capture_reference",
                                              "idempotency_key").iter_rows():
        assert key == idempotency_key(oid, ref)


def test_body_over_one_megabyte_is_invalid(tmp_path: Path) -> None:
    url = "https://shop.example/" + "p" * 1000
    rows = [line(name=f"n{i}", quantity=1, unit_price=1, total_amount=1, product_url=url,
                 image_url=url) for i in range(600)]
    plan = plan_rows(tmp_path, rows)
    assert rules_of(plan) == {"body_too_large"}
    assert plan.captures["body"][0] is None  # nothing to send


def test_duplicate_identity_across_files(tmp_path: Path) -> None:
    from etl.plan import plan_captures
    from etl.read import read_shipments
    from etl.validate import validate_shipments
    from tests.helpers import write_csv

    a = write_csv(tmp_path / "a.csv", [line(), line(order_id="o2", capture_reference="s2")])
    b = write_csv(tmp_path / "b.csv", [line(), line(order_id="o2", capture_reference="s2",
                                                    quantity=3, total_amount=3000)])
    plan = plan_captures(validate_shipments(read_shipments([str(a), str(b)])))
    assert plan.captures.height == 2
    same = plan.captures.filter(pl.col("order_id") == "o1").row(0, named=True)
    assert same["status"] == "planned"  # the same capture exported twice is one capture
    assert same["source_file"] == f"{a}; {b}"
    assert status_of(plan, "o2", "s2") == "invalid"
    assert rules_of(plan, "o2", "s2") == {"duplicate_identity"}


def test_a_line_the_fast_path_passed_but_pandera_refuses_stops_the_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: Any) -> None:
    """Defence in depth: if the two views of the contract ever disagree, nothing is sent."""
    import pandera.polars as pa
    from click.testing import CliRunner

    import etl.plan
    from etl.cli import main
    from etl.errors import ContractError
    from tests.helpers import write_csv

    stricter = etl.plan.SHIPMENT_LINES.update_column(
        "quantity", checks=[pa.Check.le(1)])  # pretend the contract said at most 1
    monkeypatch.setattr(etl.plan, "SHIPMENT_LINES", stricter)
    with pytest.raises(ContractError, match=r"in\.csv row 1: .*quantity"):
        plan_rows(tmp_path, [line()])
    sb = sandbox(auto_authorize=True)
    night = write_csv(tmp_path / "n.csv", [line()])
    res = CliRunner().invoke(main, ["run", str(night), "--base-url", sb.url, "--ledger",
                                    str(tmp_path / "l.sqlite"), "--results",
                                    str(tmp_path / "r.csv")],
                             env={"BULKCAPTURE_API_USERNAME": sb.username,
                                  "BULKCAPTURE_API_PASSWORD": sb.password})
    assert res.exit_code == 1 and "nothing was sent" in res.stderr
    assert not sb.state.list_captures()
