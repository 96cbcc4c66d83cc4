"""The two views of the shipment contract agree: the fast rule table and the pandera schema."""

from __future__ import annotations

from typing import Any

import pandera.errors
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.shipments import (
    INTEGER_COLUMNS,
    IS_LINE_ROW,
    KNOWN_COLUMNS,
    ROW_RULES,
    SHIPMENT_LINES,
)

VALID: dict[str, list[Any]] = {
    "order_id": ["o1", "7f0c2a9e-1b2c"], "capture_reference": ["s1", "SHP 1"],
    "name": ["Shirt", "n" * 255], "quantity": [0, 2], "unit_price": [0, 1500, -300],
    "total_discount_amount": [None, 0, 100], "total_off": [0], "tax_rate": [None, 0, 2500],
    "type": [None, "physical", "discount"], "shipping_method": [None, "Home"],
    "currency": [None, "EUR", "JPY"], "brand": [None, "Acme"],
    "tracking_uri": [None, "https://t.example/1"],
}
BROKEN: list[tuple[str, Any]] = [
    ("order_id", "a/b"), ("order_id", "o\x1f1"), ("order_id", "o" * 256), ("order_id", None),
    ("capture_reference", " "), ("capture_reference", "r" * 256), ("name", " "),
    ("name", "n" * 256), ("name", None), ("quantity", -1), ("unit_price", 200_000_001),
    ("total_discount_amount", 300_000_000), ("total_off", 1), ("tax_rate", -1),
    ("tax_rate", 10_001), ("type", "bogus"), ("shipping_method", "Sled"),
    ("currency", "EURO"), ("brand", "b" * 71), ("tracking_uri", "u" * 1025),
]
# A valid line with at most one field broken: each rule is compared on its own.
row = st.tuples(st.fixed_dictionaries({k: st.sampled_from(v) for k, v in VALID.items()}),
                st.none() | st.sampled_from(BROKEN)).map(
    lambda t: t[0] if t[1] is None else {**t[0], t[1][0]: t[1][1]})


def frame(r: dict[str, Any]) -> pl.DataFrame:
    values = dict(r)
    off = values.pop("total_off")
    values["total_amount"] = (values["quantity"] * values["unit_price"]
                              - (values["total_discount_amount"] or 0) + off)
    data = {c: [values.get(c)] for c in KNOWN_COLUMNS}
    schema = {c: (pl.Int64 if c in INTEGER_COLUMNS else pl.String) for c in KNOWN_COLUMNS}
    return pl.DataFrame(data, schema=schema)


def fast_fails(df: pl.DataFrame) -> bool:
    assert df.select(IS_LINE_ROW).item()
    return bool(df.select(pl.any_horizontal([r.fails for r in ROW_RULES])).item())


def pandera_fails(df: pl.DataFrame) -> bool:
    try:
        SHIPMENT_LINES.validate(df, lazy=True)
    except pandera.errors.SchemaErrors:
        return True
    return False


@settings(max_examples=150, deadline=None)
@given(row)
def test_rule_table_and_pandera_schema_agree_on_every_line(r: dict[str, Any]) -> None:
    df = frame(r)
    assert fast_fails(df) == pandera_fails(df), r


def test_every_single_breakage_is_caught_by_both() -> None:
    base = {k: v[-1] for k, v in VALID.items()}
    for field, bad in BROKEN:
        df = frame({**base, field: bad})
        assert fast_fails(df) and pandera_fails(df), (field, bad)


def test_a_valid_line_passes_both() -> None:
    df = frame({"order_id": "o1", "capture_reference": "s1", "name": "Shirt", "quantity": 2,
                "unit_price": 1500, "total_discount_amount": 100, "total_off": 0,
                "tax_rate": 2500, "type": "physical", "shipping_method": "Home",
                "currency": "EUR", "brand": "Acme", "tracking_uri": None})
    assert not fast_fails(df) and not pandera_fails(df)
