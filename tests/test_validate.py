"""etl/validate.py: every rule, per-capture verdicts, exact major-unit conversion."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl.synth import BREAKAGES, generate, write
from tests.helpers import line, plan_rows, rules_of, status_of

GOOD = line()

CASES: list[tuple[str, list[dict[str, Any]], str, str]] = [
    ("quantity not an integer", [line(quantity="abc")], "quantity", "not_integer"),
    ("decimal in a minor-unit amount", [line(unit_price="12.5")], "unit_price", "not_integer"),
    ("name missing", [line(name=None)], "name", "required"),
    ("order_id missing", [line(order_id=None)], "order_id", "required"),
    ("reference missing", [line(capture_reference="")], "capture_reference", "required"),
    ("negative quantity", [line(quantity=-1, unit_price=-1000)], "quantity", "range"),
    ("line total", [line(total_amount=1999)], "total_amount", "line_total"),
    ("discount too large", [line(quantity=3, unit_price=100_000_000, total_amount=0,
                                 total_discount_amount=300_000_000)],
     "total_discount_amount", "range"),
    ("unit price too large", [line(quantity=0, unit_price=200_000_001, total_amount=0)],
     "unit_price", "range"),
    ("negative tax rate", [line(tax_rate=-1)], "tax_rate", "range"),
    ("line type", [line(type="hardware")], "type", "enum"),
    ("shipping method", [line(shipping_method="Teleport")], "shipping_method", "pattern"),
    ("currency", [line(currency="EURO")], "currency", "currency"),
    ("name too long", [line(name="x" * 256)], "name", "max_length"),
    ("quantity_unit too long", [line(quantity_unit="x" * 11)], "quantity_unit", "max_length"),
    ("brand too long", [line(brand="b" * 71)], "brand", "max_length"),
    ("tracking uri too long", [line(tracking_uri="u" * 1025)], "tracking_uri", "max_length"),
    ("reference too long", [line(capture_reference="r" * 256)], "capture_reference",
     "max_length"),
    ("description too long", [line(description="d" * 256)], "description", "max_length"),
    ("order id with a slash", [line(order_id="a/b")], "order_id", "order_id_chars"),
    ("captured_amount differs from lines", [line(captured_amount=1999)], "captured_amount",
     "captured_amount_sum"),
    ("description inconsistent", [line(description="a"), line(name="Hat", description="b")],
     "description", "inconsistent"),
    ("currency inconsistent", [line(), line(currency="SEK")], "currency", "inconsistent"),
    ("amount-only without amount", [{"order_id": "o1", "capture_reference": "s1",
                                     "name": None, "captured_amount": None}],
     "captured_amount", "required"),
    ("captured_amount over the max", [{"order_id": "o1", "capture_reference": "s1",
                                       "captured_amount": 200_000_001}],
     "captured_amount", "range"),
    ("shipping_delay negative", [line(shipping_delay=-1)], "shipping_delay", "range"),
]


@pytest.mark.parametrize(("why", "rows", "column", "rule"), CASES, ids=[c[0] for c in CASES])
def test_each_rule_makes_only_its_capture_invalid(tmp_path: Path, why: str,
                                                  rows: list[dict[str, Any]], column: str,
                                                  rule: str) -> None:
    other = line(order_id="o2", capture_reference="s2")
    plan = plan_rows(tmp_path, [*rows, other])
    assert status_of(plan, "o2", "s2") == "planned"
    broken = plan.captures.filter(pl.col("order_id").ne_missing("o2"))
    assert broken["status"].to_list() == ["invalid"], why
    f = plan.failures.filter(pl.col("rule") == rule)
    assert f.height >= 1 and column in f["column"].to_list(), plan.failures
    msg = broken["error_messages"][0]
    assert "in.csv row" in msg and column in msg and f"[{rule}]" in msg


def test_every_failure_names_file_row_column_rule_and_value(tmp_path: Path) -> None:
    plan = plan_rows(tmp_path, [GOOD, line(name="Hat", quantity="abc")])
    row = plan.failures.row(0, named=True)
    assert row["source_file"].endswith("in.csv")
    assert (row["source_row"], row["column"], row["rule"], row["value"]) == (
        2, "quantity", "not_integer", "abc")


def test_a_bad_cell_does_not_also_count_as_missing(tmp_path: Path) -> None:
    plan = plan_rows(tmp_path, [line(quantity="abc")])
    assert rules_of(plan) == {"not_integer"}


def test_too_many_lines_and_shipping_items(tmp_path: Path) -> None:
    rows = [line(name=f"n{i}", quantity=1, unit_price=1, total_amount=1,
                 tracking_number=f"T{i % 501}") for i in range(1001)]
    plan = plan_rows(tmp_path, rows)
    assert rules_of(plan) == {"too_many_lines", "too_many_shipping_info"}


def test_null_capture_fields_on_some_rows_are_not_inconsistent(tmp_path: Path) -> None:
    plan = plan_rows(tmp_path, [line(description="First"), line(name="Hat", description=None)])
    assert status_of(plan) == "planned"


@pytest.mark.parametrize(("currency", "text", "minor"), [
    ("EUR", "12.30", 1230), ("EUR", "12.3", 1230), ("EUR", " 0.05 ", 5), ("JPY", "1500", 1500),
    ("KWD", "1.234", 1234), ("EUR", "7", 700), ("CLF", "1.0001", 10001),
])
def test_major_units_convert_exactly(tmp_path: Path, currency: str, text: str,
                                     minor: int) -> None:
    rows = [{"order_id": "o1", "capture_reference": "s1", "currency": currency,
             "name": "x", "quantity": 1, "unit_price": text, "total_amount": text}]
    plan = plan_rows(tmp_path, rows, amounts="major")
    assert status_of(plan) == "planned", plan.failures
    assert plan.captures["captured_amount"][0] == minor


def test_major_units_keep_the_sign_of_discount_lines(tmp_path: Path) -> None:
    rows = [{"order_id": "o1", "capture_reference": "s1", "currency": "EUR", "name": "x",
             "quantity": 1, "unit_price": "10.00", "total_amount": "10.00"},
            {"order_id": "o1", "capture_reference": "s1", "currency": "EUR", "name": "rebate",
             "type": "discount", "quantity": 1, "unit_price": "-0.05", "total_amount": "-0.05"}]
    plan = plan_rows(tmp_path, rows, amounts="major")
    assert plan.captures["captured_amount"][0] == 995
    assert b'"unit_price":-5' in next(plan.requests()).body


@pytest.mark.parametrize(("currency", "text"), [("EUR", "12.345"), ("JPY", "1.5"),
                                                ("KWD", "1.2345"), ("EUR", "1e3"),
                                                ("EUR", "12,50")])
def test_major_units_with_too_many_decimals_are_invalid_never_rounded(
        tmp_path: Path, currency: str, text: str) -> None:
    rows = [{"order_id": "o1", "capture_reference": "s1", "currency": currency,
             "captured_amount": text}]
    plan = plan_rows(tmp_path, rows, amounts="major")
    assert rules_of(plan) == {"not_decimal"}


def test_major_units_need_a_currency(tmp_path: Path) -> None:
    rows = [{"order_id": "o1", "capture_reference": "s1", "currency": None,
             "captured_amount": "1.00"}]
    assert "required" in rules_of(plan_rows(tmp_path, rows, amounts="major"))


def test_floats_in_parquet_minor_columns_must_be_whole(tmp_path: Path) -> None:
    df = pl.DataFrame({"order_id": ["o1", "o2"], "capture_reference": ["s1", "s2"],
                       "captured_amount": [100.0, 100.5]})
    p = tmp_path / "f.parquet"
    df.write_parquet(p)
    from etl.plan import plan_captures
    from etl.read import read_shipments
    from etl.validate import validate_shipments
    plan = plan_captures(validate_shipments(read_shipments([str(p)])))
    assert status_of(plan, "o1", "s1") == "planned"
    assert rules_of(plan, "o2", "s2") == {"not_integer"}


def test_mixed_export_is_classified_exactly(tmp_path: Path) -> None:
    """A dry run over a mixed export: exactly the broken captures are invalid, each for its
    own rule, in CSV and Parquet alike."""
    syn = generate(2000, invalid_pct=12, seed=11)
    assert set(syn.broken["breakage"]) == set(BREAKAGES)  # every kind is exercised
    for suffix in (".csv", ".parquet"):
        path = tmp_path / f"mixed{suffix}"
        write(syn.lines, path)
        from etl.plan import plan_captures
        from etl.read import read_shipments
        from etl.validate import validate_shipments
        plan = plan_captures(validate_shipments(read_shipments([str(path)])))
        invalid = plan.captures.filter(pl.col("status") == "invalid")
        assert sorted(invalid["capture_reference"]) == sorted(syn.broken["capture_reference"])
        found = (plan.failures.group_by("capture_reference").agg(pl.col("rule").unique())
                 .join(syn.broken, on="capture_reference"))
        for rules, expected in found.select("rule", "rule_right").iter_rows():
            assert rules == [expected]


# --- properties -------------------------------------------------------------------------------
names = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1,
                max_size=40).filter(lambda s: s.strip() != "")
valid_line = st.fixed_dictionaries({
    "name": names,
    "quantity": st.integers(0, 50),
    "unit_price": st.integers(0, 1_000_000),
    "discount": st.integers(0, 1000),
    "type": st.sampled_from(["physical", "digital", "shipping_fee", None]),
    "shipping_method": st.sampled_from(["Home", "PickUpPoint", None]),
})


def _rows(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, ln in enumerate(lines):
        # A discount never exceeds the line: the capture's sum must stay >= 0 to be valid.
        discount = min(ln["discount"], ln["quantity"] * ln["unit_price"])
        total = ln["quantity"] * ln["unit_price"] - discount
        out.append(line(name=ln["name"].replace("\n", " "), quantity=ln["quantity"],
                        unit_price=ln["unit_price"], total_discount_amount=discount,
                        total_amount=total, type=ln["type"],
                        shipping_method=ln["shipping_method"], reference=f"sku{i}"))
    return out


BREAKS: dict[str, tuple[dict[str, Any], str]] = {
    "not_integer": ({"quantity": "x1"}, "quantity"),
    "line_total": ({"total_amount": "999999999"}, "total_amount"),
    "enum": ({"type": "nonsense"}, "type"),
    "pattern": ({"shipping_method": "Sled"}, "shipping_method"),
    "max_length": ({"name": "n" * 256}, "name"),
    "required": ({"name": None}, "name"),
    "currency": ({"currency": "XYZ1"}, "currency"),
}


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(valid_line, min_size=1, max_size=5),
       broken=st.sampled_from(sorted(BREAKS)), which=st.integers(0, 4))
def test_generated_capture_validates_and_one_broken_rule_is_caught(
        tmp_path_factory: pytest.TempPathFactory, lines: list[dict[str, Any]], broken: str,
        which: int) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    good = _rows(lines)
    clean = plan_rows(tmp, good, name="clean.csv")
    assert status_of(clean) == "planned", clean.failures
    change, column = BREAKS[broken]
    bad = [dict(r) for r in good]
    i = which % len(bad)
    bad[i].update(change)
    if broken == "currency":  # capture-level: on every row, or it is also inconsistent
        for r in bad:
            r.update(change)
    other = line(order_id="o2", capture_reference="s2")
    plan = plan_rows(tmp, [*bad, other], name="bad.csv")
    assert status_of(plan) == "invalid"
    assert status_of(plan, "o2", "s2") == "planned"
    assert broken in rules_of(plan)
    assert column in set(plan.failures["column"])
