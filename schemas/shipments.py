"""The shipment export's contract: its columns, their levels and types, and every row rule.

Two views of one contract, both built from ``schemas/limits.py``:

* ``ROW_RULES``: each rule a named, vectorised polars expression that is true where a row
  *fails*. ``etl/validate.py`` evaluates them all in one fused pass and keeps a reason per
  failure. This is the hot path: pandera runs one pass per check and builds failure cases row by
  row in Python for cross-column checks, which on 10M lines costs twice the time and memory.
* ``ShipmentLines``: a pandera ``DataFrameModel`` of the typed line frame (types, nullability,
  ranges, lengths, enums, patterns). It is the declared shape of what may be sent; tests check
  that it and the rule table agree, and ``plan`` checks the lines it sends against it.

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
             _c("order_id").str.contains(r"[\s\x00-\x1f\x7f/?#]").fill_null(False)),
        # A row with no line field must at least carry the amount to capture.
        Rule("required", "captured_amount", "is required on a row without order line fields",
             (~IS_LINE_ROW) & _c("captured_amount").is_null()),
    ]
    rules += [_required(c, when=IS_LINE_ROW) for c in REQUIRED_LINE_COLUMNS]
    rules += [
        _range("captured_amount", 0, MAX_AMOUNT),
        _range("shipping_delay", 0, None),
        _range("quantity", 0, None),
        _range("unit_price", -MAX_AMOUNT, MAX_AMOUNT),
        _range("total_amount", -MAX_AMOUNT, MAX_AMOUNT),
        _range("total_discount_amount", 0, MAX_AMOUNT),
        _range("tax_rate", 0, 10_000),
        _range("total_tax_amount", -MAX_AMOUNT, MAX_AMOUNT),
        Rule("line_total", "total_amount",
             "must equal quantity * unit_price - total_discount_amount",
             (_c("total_amount")
              != _c("quantity") * _c("unit_price") - _c("total_discount_amount").fill_null(0)
              ).fill_null(False)),
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


class ShipmentLines(pa.DataFrameModel):
    """The typed line frame that planning turns into request bodies (one row per order line)."""

    order_id: str = pa.Field(nullable=False, str_length={"min_value": 1, "max_value": 255})
    capture_reference: str = pa.Field(nullable=False, str_length={"min_value": 1,
                                                                 "max_value": 255})
    captured_amount: pl.Int64 = pa.Field(nullable=True, ge=0, le=MAX_AMOUNT)
    description: str = pa.Field(nullable=True, str_length={"max_value": 255})
    shipping_delay: pl.Int64 = pa.Field(nullable=True, ge=0)
    currency: str = pa.Field(nullable=True, str_length={"min_value": 3, "max_value": 3})
    name: str = pa.Field(nullable=True, str_length={"max_value": 255})
    quantity: pl.Int64 = pa.Field(nullable=True, ge=0)
    unit_price: pl.Int64 = pa.Field(nullable=True, ge=-MAX_AMOUNT, le=MAX_AMOUNT)
    total_amount: pl.Int64 = pa.Field(nullable=True, ge=-MAX_AMOUNT, le=MAX_AMOUNT)
    total_discount_amount: pl.Int64 = pa.Field(nullable=True, ge=0, le=MAX_AMOUNT)
    tax_rate: pl.Int64 = pa.Field(nullable=True, ge=0, le=10_000)
    total_tax_amount: pl.Int64 = pa.Field(nullable=True, ge=-MAX_AMOUNT, le=MAX_AMOUNT)
    type: str = pa.Field(nullable=True, isin=list(LINE_TYPES))
    reference: str = pa.Field(nullable=True, str_length={"max_value": 255})
    quantity_unit: str = pa.Field(nullable=True, str_length={"max_value": 10})
    merchant_data: str = pa.Field(nullable=True, str_length={"max_value": 1024})
    image_url: str = pa.Field(nullable=True, str_length={"max_value": 1024})
    product_url: str = pa.Field(nullable=True, str_length={"max_value": 1024})
    brand: str = pa.Field(nullable=True, str_length={"max_value": 70})
    category_path: str = pa.Field(nullable=True, str_length={"max_value": 750})
    global_trade_item_number: str = pa.Field(nullable=True, str_length={"max_value": 50})
    manufacturer_part_number: str = pa.Field(nullable=True, str_length={"max_value": 70})
    color: str = pa.Field(nullable=True, str_length={"max_value": 64})
    size: str = pa.Field(nullable=True, str_length={"max_value": 64})
    shipping_company: str = pa.Field(nullable=True, str_length={"max_value": 100})
    shipping_method: str = pa.Field(nullable=True, str_matches=SHIPPING_METHOD_PATTERN)
    tracking_number: str = pa.Field(nullable=True, str_length={"max_value": 100})
    tracking_uri: str = pa.Field(nullable=True, str_length={"max_value": 1024})
    return_shipping_company: str = pa.Field(nullable=True, str_length={"max_value": 100})
    return_tracking_number: str = pa.Field(nullable=True, str_length={"max_value": 100})
    return_tracking_uri: str = pa.Field(nullable=True, str_length={"max_value": 1024})
    source_file: str = pa.Field(nullable=False)
    source_row: pl.UInt32 = pa.Field(nullable=False, ge=1)

    @pa.dataframe_check
    @classmethod
    def line_total(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """total_amount == quantity * unit_price - total_discount_amount, on line rows."""
        return data.lazyframe.select(
            (pl.col("total_amount") == pl.col("quantity") * pl.col("unit_price")
             - pl.col("total_discount_amount").fill_null(0)).fill_null(True))

    class Config:
        strict = False  # planning adds its own helper columns
        coerce = False
