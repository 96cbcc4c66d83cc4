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

row = st.fixed_dictionaries({
    "order_id": st.sampled_from(["o1", "a/b", "o\x1f1", "o" * 256]),
    "capture_reference": st.sampled_from(["s1", " ", "r" * 256]),
    "name": st.sampled_from(["Shirt", " ", "n" * 255, "n" * 256]),
    "quantity": st.sampled_from([-1, 0, 2]),
    "unit_price": st.sampled_from([0, 1500, -300, 200_000_001]),
    "total_discount_amount": st.sampled_from([None, 0, 100, 300_000_000]),
    "total_off": st.sampled_from([0, 0, 0, 1]),
    "tax_rate": st.sampled_from([None, 2500, -1, 10_001]),
    "type": st.sampled_from([None, "physical", "discount", "bogus"]),
    "shipping_method": st.sampled_from([None, "Home", "Sled"]),
    "currency": st.sampled_from([None, "EUR", "JPY", "EURO"]),
    "brand": st.sampled_from([None, "Acme", "b" * 71]),
    "tracking_uri": st.sampled_from([None, "https://t.example/1", "u" * 1025]),
})


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


def test_a_valid_line_passes_both() -> None:
    df = frame({"order_id": "o1", "capture_reference": "s1", "name": "Shirt", "quantity": 2,
                "unit_price": 1500, "total_discount_amount": 100, "total_off": 0,
                "tax_rate": 2500, "type": "physical", "shipping_method": "Home",
                "currency": "EUR", "brand": "Acme", "tracking_uri": None})
    assert not fast_fails(df) and not pandera_fails(df)
