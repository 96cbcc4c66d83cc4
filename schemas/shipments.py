"""The shipment export's contract: its columns, their levels and types, and every row rule.

Two views of one contract, both built from ``schemas/limits.py``:

* ``ROW_RULES``: each rule a named, vectorised polars expression that is true where a row
  *fails*. ``etl/validate.py`` evaluates them all in one fused pass and keeps a reason per
  failure. This is the hot path: pandera runs one pass per check and builds failure cases row by
  row in Python for cross-column checks, which on 10M lines costs twice the time and memory.
* ``SHIPMENT_LINES``: a pandera schema of an order line that may be sent (types, nullability,
  ranges, lengths, enums, patterns, the line total), built from the same tables. Tests check
  that it and the rule table agree; ``run`` checks every line it is about to send against it.

Capture-level rules (sums, consistency, counts, body size, duplicates) need a group-by and live
in ``etl/validate.py``; their codes are listed here in ``CAPTURE_RULES`` for the documentation.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandera.polars as pa
import polars as pl

from schemas.limits import (
    CAPTURE_STRING_LIMITS,
    LINE_STRING_LIMITS,
    LINE_TYPES,
    MAX_AMOUNT,
    PRODUCT_IDENTIFIER_LIMITS,
    SHIPPING_INFO_LIMITS,
    SHIPPING_METHOD_PATTERN,
)

# --- columns ---------------------------------------------------------------------------------
IDENTITY_COLUMNS = ("order_id", "capture_reference")
CAPTURE_COLUMNS = ("captured_amount", "description", "shipping_delay", "currency")
REQUIRED_LINE_COLUMNS = ("name", "quantity", "unit_price", "total_amount")
OPTIONAL_LINE_COLUMNS = (
    "total_discount_amount", "tax_rate", "total_tax_amount", "type", "reference", "quantity_unit",
    "merchant_data", "image_url", "product_url",
)
LINE_COLUMNS = REQUIRED_LINE_COLUMNS + OPTIONAL_LINE_COLUMNS
PRODUCT_IDENTIFIER_COLUMNS = tuple(PRODUCT_IDENTIFIER_LIMITS)
SHIPPING_COLUMNS = tuple(SHIPPING_INFO_LIMITS)
ALL_LINE_COLUMNS = LINE_COLUMNS + PRODUCT_IDENTIFIER_COLUMNS
KNOWN_COLUMNS = IDENTITY_COLUMNS + CAPTURE_COLUMNS + ALL_LINE_COLUMNS + SHIPPING_COLUMNS

INTEGER_COLUMNS = (
    "captured_amount", "shipping_delay", "quantity", "unit_price", "total_amount",
    "total_discount_amount", "tax_rate", "total_tax_amount",
)
# Integer columns that hold money: these are the ones --amounts major converts.
AMOUNT_COLUMNS = (
    "captured_amount", "unit_price", "total_amount", "total_discount_amount", "total_tax_amount",
)
STRING_COLUMNS = tuple(c for c in KNOWN_COLUMNS if c not in INTEGER_COLUMNS)

# The source's own bookkeeping, added by etl/read.py.
SOURCE_FILE = "source_file"
SOURCE_ROW = "source_row"

# Length limits per input column (capture_reference is sent as the capture's `reference`).
STRING_LIMITS: dict[str, int] = {
    "order_id": 255,
    "capture_reference": CAPTURE_STRING_LIMITS["reference"],
    "description": CAPTURE_STRING_LIMITS["description"],
    **LINE_STRING_LIMITS,
    **PRODUCT_IDENTIFIER_LIMITS,
    **SHIPPING_INFO_LIMITS,
}


@dataclass(frozen=True)
class Rule:
    """A row rule: ``fails`` is a polars expression, true on the rows that break it."""

    code: str
    column: str
    message: str
    fails: pl.Expr


def _c(name: str) -> pl.Expr:
    return pl.col(name)


# A row that carries any line field is a line row; one that carries none is an amount-only row.
IS_LINE_ROW = pl.any_horizontal([_c(c).is_not_null() for c in ALL_LINE_COLUMNS])


def _required(column: str, when: pl.Expr | None = None) -> Rule:
    missing = _c(column).is_null() | (_c(column).cast(pl.String).str.strip_chars() == "")
    return Rule("required", column, "is required", missing if when is None else when & missing)


# Integer ranges per column, (min, max), None for no bound: one table for both views.
RANGES: dict[str, tuple[int | None, int | None]] = {
    "captured_amount": (0, MAX_AMOUNT),
    "shipping_delay": (0, None),
    "quantity": (0, None),
    "unit_price": (-MAX_AMOUNT, MAX_AMOUNT),
    "total_amount": (-MAX_AMOUNT, MAX_AMOUNT),
    "total_discount_amount": (0, MAX_AMOUNT),
    "tax_rate": (0, 10_000),  # percent with two implicit decimals: 0 % .. 100 %
    "total_tax_amount": (-MAX_AMOUNT, MAX_AMOUNT),
}
LINE_TOTAL_HOLDS = (
    _c("total_amount")
    == _c("quantity") * _c("unit_price") - _c("total_discount_amount").fill_null(0)
).fill_null(True)
ORDER_ID_BAD_CHARS = r"[\s\x00-\x1f\x7f/?#]"


def _range(column: str, lo: int | None, hi: int | None) -> Rule:
    text = {
        (True, True): f"must be between {lo} and {hi}",
        (True, False): f"must be at least {lo}",
        (False, True): f"must be at most {hi}",
    }[(lo is not None, hi is not None)]
    cond = pl.lit(False)
    if lo is not None:
        cond = cond | (_c(column) < lo)
    if hi is not None:
        cond = cond | (_c(column) > hi)
    return Rule("range", column, text, cond.fill_null(False))


def _max_length(column: str, limit: int) -> Rule:
    return Rule("max_length", column, f"is longer than {limit} characters",
                (_c(column).str.len_chars() > limit).fill_null(False))


def _build_row_rules() -> tuple[Rule, ...]:
    rules: list[Rule] = [
        _required("order_id"),
        _required("capture_reference"),
        # Control characters too: Rust's \s does not cover e.g. \x1f, and the id is a URL path.
        Rule("order_id_chars", "order_id",
             "must not contain whitespace, control characters, '/', '?' or '#'",
             _c("order_id").str.contains(ORDER_ID_BAD_CHARS).fill_null(False)),
        # A row with no line field must at least carry the amount to capture.
        Rule("required", "captured_amount", "is required on a row without order line fields",
             (~IS_LINE_ROW) & _c("captured_amount").is_null()),
    ]
    rules += [_required(c, when=IS_LINE_ROW) for c in REQUIRED_LINE_COLUMNS]
    rules += [_range(col, lo, hi) for col, (lo, hi) in RANGES.items()]
    rules += [
        Rule("line_total", "total_amount",
             "must equal quantity * unit_price - total_discount_amount", ~LINE_TOTAL_HOLDS),
        Rule("enum", "type", "must be one of " + ", ".join(LINE_TYPES),
             (~_c("type").is_in(LINE_TYPES)).fill_null(False)),
        Rule("pattern", "shipping_method", "must match " + SHIPPING_METHOD_PATTERN,
             (~_c("shipping_method").str.contains(SHIPPING_METHOD_PATTERN)).fill_null(False)),
        Rule("currency", "currency", "must be an ISO 4217 code such as EUR",
             (~_c("currency").is_in(list(_currency_codes()))).fill_null(False)),
    ]
    rules += [_max_length(col, limit) for col, limit in STRING_LIMITS.items()]
    return tuple(rules)


def _currency_codes() -> tuple[str, ...]:
    from etl.currency import EXPONENTS  # the table lives with the conversion code

    return tuple(EXPONENTS)


ROW_RULES: tuple[Rule, ...] = _build_row_rules()

# Rules on a whole capture (etl/validate.py), and on cells that do not parse (etl/read.py).
CAPTURE_RULES = {
    "not_integer": "a cell that must be an integer in minor units is not one",
    "not_decimal": "a --amounts major cell is not a decimal with at most the currency's decimals",
    "captured_amount_sum": "captured_amount differs from the sum of the lines' total_amount",
    "inconsistent": "a capture-level field differs between the rows of one capture",
    "too_many_lines": "more than 1000 order lines in one capture",
    "too_many_shipping_info": "more than 500 distinct shipping_info items in one capture",
    "body_too_large": "the serialised request body exceeds 1 MB",
    "duplicate_identity": "the same (order_id, capture_reference) with different content",
}


def shipment_lines_schema() -> pa.DataFrameSchema:
    """The pandera view of the contract, built from the same tables as ``ROW_RULES``.

    It describes an order line that may be sent (typed, after ``etl/validate.py`` coerced it):
    ``plan`` checks every line it is about to send against it, so a gap in the fast path can
    never put money on the wire. Each check is attached to a column (the cross-column line total
    too): pandera's dataframe-level checks build failure cases row by row in Python.
    """
    def length(col: str, least: int = 0) -> list[pa.Check]:
        checks = [pa.Check.str_length(least or None, STRING_LIMITS[col])]
        if least:  # required text: blank counts as missing, as in the rule table
            checks.append(pa.Check(lambda d: d.lazyframe.select(
                pl.col(d.key).str.strip_chars() != ""), name="not_blank"))
        return checks

    columns: dict[str, pa.Column] = {
        "order_id": pa.Column(pl.String, nullable=False, checks=[
            *length("order_id", 1),
            pa.Check(lambda d: d.lazyframe.select(
                ~pl.col(d.key).str.contains(ORDER_ID_BAD_CHARS)), name="order_id_chars")]),
        "capture_reference": pa.Column(pl.String, nullable=False,
                                       checks=length("capture_reference", 1)),
        "name": pa.Column(pl.String, nullable=False, checks=length("name", 1)),
        "type": pa.Column(pl.String, nullable=True, checks=[pa.Check.isin(LINE_TYPES)]),
        "shipping_method": pa.Column(pl.String, nullable=True,
                                     checks=[pa.Check.str_matches(SHIPPING_METHOD_PATTERN)]),
        "currency": pa.Column(pl.String, nullable=True,
                              checks=[pa.Check.isin(_currency_codes())]),
    }
    for col in STRING_LIMITS:
        columns.setdefault(col, pa.Column(pl.String, nullable=True, checks=length(col)))
    for col, (lo, hi) in RANGES.items():
        checks = [pa.Check.in_range(lo if lo is not None else -(2**62),
                                    hi if hi is not None else 2**62)]
        if col == "total_amount":
            checks.append(pa.Check(lambda d: d.lazyframe.select(LINE_TOTAL_HOLDS),
                                   name="line_total"))
        required = col in REQUIRED_LINE_COLUMNS
        columns[col] = pa.Column(pl.Int64, nullable=not required, checks=checks)
    return pa.DataFrameSchema(columns, name="ShipmentLines", strict=False)


SHIPMENT_LINES = shipment_lines_schema()
