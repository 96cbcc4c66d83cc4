"""Validate shipment rows: coerce cells, run every rule, and give each capture a verdict.

Second stage (read → **validate** → plan → …). Input: the lazy frame from ``etl/read.py``.
Output: ``Validation`` with the typed rows (a lazy recipe, never held whole), one row per capture
with its verdict, and one row per failed check (the rejects), each naming file, 1-based data
row, column, rule and value.

All rules are vectorised polars expressions (``schemas/shipments.py``) evaluated in one
streaming pass; every row rule sets one bit of a per-row mask, so a clean row costs a few
integer operations. The pass keeps only fixed-size aggregates per capture (grouped on a 64-bit
hash of its identity, with a collision check) and, from the same scan, the failing rows, which
are explained afterwards. Memory grows with captures and failures, not with lines.
A capture with any failing row is invalid as a whole and is never sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import polars as pl

from etl.currency import EXPONENTS
from etl.read import FILE_INDEX, NESTED_FILE, SHIPPING_ROW, Shipments
from schemas.limits import MAX_AMOUNT, MAX_ORDER_LINES, MAX_SHIPPING_INFO
from schemas.shipments import (
    AMOUNT_COLUMNS,
    IDENTITY_COLUMNS,
    INTEGER_COLUMNS,
    IS_LINE_ROW,
    KNOWN_COLUMNS,
    ROW_RULES,
    SHIPPING_COLUMNS,
    SOURCE_FILE,
    SOURCE_ROW,
    STRING_COLUMNS,
    Rule,
)

Amounts = Literal["minor", "major"]

MASK = "__mask"
RAW = "__raw_"  # + an integer column: the cell as read, to quote it when it did not parse
TEXT = "__text_"  # + an integer column read as text: the cell stripped of blanks
INSTANCE = "__instance"  # nested layout: the capture's own row; long layout: 0
CAPTURE_ID = "__capture"  # 64-bit hash of a capture instance (identity, file, instance)
LINE = "__is_line"
FAILURE_COLUMNS = ("source_file", "source_row", "order_id", "capture_reference", "column", "rule",
                   "value", "message")
MAX_MESSAGES_PER_CAPTURE = 20


@dataclass(frozen=True)
class Validation:
    """What validate found. ``captures`` has one row per capture instance (see ``INSTANCE``)."""

    # The typed rows with CAPTURE_ID, shipping rows of the nested layout too: a lazy recipe
    # over the input, scanned again by whoever needs lines (plan's bodies), never held whole.
    lines: pl.LazyFrame
    captures: pl.DataFrame  # identity, amounts, currency, counts, sources, valid, error_messages
    failures: pl.DataFrame  # one row per failed check, columns FAILURE_COLUMNS


# --- coercion --------------------------------------------------------------------------------
def _parse_rules(amounts: Amounts) -> tuple[Rule, ...]:
    code = "not_decimal" if amounts == "major" else "not_integer"
    rules = []
    for col in INTEGER_COLUMNS:
        major = amounts == "major" and col in AMOUNT_COLUMNS
        msg = ("is not a decimal amount with at most the currency's decimals (never rounded)"
               if major else "is not an integer" + (" in minor units" if col in AMOUNT_COLUMNS
                                                    else ""))
        rules.append(Rule(code if major else "not_integer", col, msg, pl.col(f"__bad_{col}")))
    return tuple(rules)


def _integer_text(text: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """Stripped text → Int64: an optional sign and 1 to 18 ASCII digits; blank is null.

    polars' own cast accepts exactly ``[+-]?[0-9]+`` within Int64, so it does the parsing and
    only the digit count is checked apart: a regex per cell made CSV validation 1.4x slower.
    (The regex's ``\\d`` also matched non-ASCII digits, which then became null unflagged.)
    ``text`` must be a column (``coerce`` strips each once): an expression used five times
    here was evaluated five times, 3.5x the cost.
    """
    value = text.cast(pl.Int64, strict=False)
    n = text.str.len_bytes()
    signed = text.str.starts_with("+") | text.str.starts_with("-")
    ok = value.is_not_null() & ((n <= 18) | ((n == 19) & signed))
    return pl.when(ok).then(value), text.is_not_null() & (n > 0) & ~ok


def _coerce_integer(name: str, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """(typed Int64 value, bad flag) for a minor-unit or count column of any source dtype."""
    raw = pl.col(name)
    if dtype.is_integer():
        value = raw.cast(pl.Int64, strict=False)
        return value, raw.is_not_null() & value.is_null()
    if dtype.is_float():
        # A float cell is accepted only when it holds an exact integer (Parquet exports do that).
        good = raw.is_finite() & (raw == raw.round(0)) & (raw.abs() < 2**53)
        return pl.when(good).then(raw.cast(pl.Int64)), raw.is_not_null() & ~good.fill_null(False)
    if dtype == pl.String or dtype == pl.Null:
        return _integer_text(pl.col(TEXT + name))
    return pl.lit(None, dtype=pl.Int64), raw.is_not_null()


def _exponent_of_currency() -> pl.Expr:
    return pl.col("currency").cast(pl.String).str.to_uppercase().replace_strict(
        EXPONENTS, default=None, return_dtype=pl.Int64)


_POW10 = {e: 10**e for e in range(0, 10)}


def _coerce_major(name: str, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """A decimal in major units → exact minor units by the row's currency exponent."""
    raw = pl.col(name)
    if dtype.is_integer():
        text = raw.cast(pl.String)
    elif dtype.is_float():
        # Shortest round-trip text of the float: 12.3 stays "12.3"; 0.1+0.2 shows its noise
        # and is rejected below rather than rounded.
        text = pl.when(raw.is_finite()).then(raw.cast(pl.String)).otherwise(pl.lit("bad"))
        text = text.str.replace(r"\.0$", "")
    else:
        text = raw.cast(pl.String)
    text = text.str.strip_chars()
    text = pl.when(text == "").then(None).otherwise(text)
    parts = text.str.extract_groups(r"^([+-]?)(\d{1,15})(?:\.(\d{0,9}))?$")
    sign, whole, frac = (parts.struct.field(f) for f in ("1", "2", "3"))
    frac = frac.fill_null("")
    exp = _exponent_of_currency()
    frac_len = frac.str.len_chars().cast(pl.Int64)
    ok = whole.is_not_null() & exp.is_not_null() & (frac_len <= exp)
    scale = exp.replace_strict(_POW10, default=None, return_dtype=pl.Int64)
    pad = (exp - frac_len).replace_strict(_POW10, default=None, return_dtype=pl.Int64)
    magnitude = (whole.cast(pl.Int64, strict=False) * scale
                 + (pl.when(frac == "").then(pl.lit("0")).otherwise(frac))
                 .cast(pl.Int64, strict=False) * pad)
    value = pl.when(ok).then(pl.when(sign == "-").then(-magnitude).otherwise(magnitude))
    return value, text.is_not_null() & ~ok.fill_null(False)


def coerce(rows: pl.LazyFrame, amounts: Amounts = "minor") -> pl.LazyFrame:
    """Every known column to its type; integer cells that do not parse become null plus a flag.

    The cell as read stays beside each integer column (``RAW`` + name, no copy) so that a
    failure can quote it; a per-row string of the bad cells cost every clean row a concat.
    """
    schema = rows.collect_schema()
    texts = [col for col in INTEGER_COLUMNS if schema[col] in (pl.String, pl.Null)
             and not (amounts == "major" and col in AMOUNT_COLUMNS)]
    rows = rows.with_columns(pl.col(c).cast(pl.String).str.strip_chars().alias(TEXT + c)
                             for c in texts)
    exprs: list[pl.Expr] = []
    for col in INTEGER_COLUMNS:
        major = amounts == "major" and col in AMOUNT_COLUMNS
        value, bad = (_coerce_major if major else _coerce_integer)(col, schema[col])
        exprs += [value.alias(col), bad.alias(f"__bad_{col}"), pl.col(col).alias(RAW + col)]
    exprs += [pl.col(c).cast(pl.String).alias(c) for c in STRING_COLUMNS]
    return rows.with_columns(exprs).drop(TEXT + c for c in texts)


def all_row_rules(amounts: Amounts) -> tuple[Rule, ...]:
    """Every row rule, in mask-bit order: parse failures first, then the contract."""
    extra: tuple[Rule, ...] = ()
    if amounts == "major":
        extra = (Rule("required", "currency", "is required with --amounts major (it fixes the "
                      "number of decimals)", pl.col("currency").is_null()),)
    return _parse_rules(amounts) + extra + ROW_RULES


def _mask(rules: tuple[Rule, ...]) -> list[pl.Expr]:
    """Row rules packed into UInt64 words, one bit per rule."""
    words = []
    for start in range(0, len(rules), 64):
        chunk = rules[start:start + 64]
        words.append(pl.sum_horizontal(
            [r.fails.fill_null(False).cast(pl.UInt64) * (1 << i) for i, r in enumerate(chunk)]
        ).cast(pl.UInt64).alias(f"{MASK}{start // 64}"))
    return words


# --- the pass ---------------------------------------------------------------------------------
# Seeds for the capture key: a 64-bit hash to group on and an independent one to detect a
# collision. A group whose second hash is not constant holds two identities: the pass is redone
# with the next pair of seeds.
KEY_SEEDS = ((0x243F6A88, 0x85A308D3), (0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0))
KEY_CHECK = "__key_check"
# Per-capture columns the row pass yields beyond the verdict inputs: an upper bound of the
# body's serialised size and the number of rows that carry shipping fields. Plan builds the exact
# body only where the bound reaches the limit, and counts distinct shipping items only where
# the rows could hold more than the limit.
BODY_BOUND = "__body_bound"
SHIP_ROWS = "__ship_rows"
ANY_FAILED = "__any_failed"  # some row rule failed on the row (on some row, per capture)
_HAS_SHIP = pl.any_horizontal([pl.col(c).is_not_null() for c in SHIPPING_COLUMNS])


def validate_shipments(shipments: Shipments, amounts: Amounts = "minor") -> Validation:
    """Coerce, run every row and capture rule, and return the verdicts.

    One streaming pass over the input keeps only per-capture aggregates (grouped on a 64-bit
    hash of the capture's identity) and, from the same scan, the failing rows: memory grows
    with the number of captures and failures, not with the input's size.
    """
    rules = all_row_rules(amounts)
    rows, n_words = _rule_rows(shipments, amounts, rules)
    masks = [f"{MASK}{i}" for i in range(n_words)]
    for seed, check in KEY_SEEDS:
        keyed = rows.with_columns(_capture_key(seed).alias(CAPTURE_ID),
                                  _capture_key(check).alias(KEY_CHECK))
        tap = _FailingRows(rules, n_words)
        caps = (keyed.map_batches(tap, streamable=True, schema=keyed.collect_schema())
                .group_by(CAPTURE_ID).agg(_aggregates(shipments.nested))
                .collect(engine="streaming"))
        if (caps["__check_lo"] == caps["__check_hi"]).all():
            break
    else:  # three colliding seed pairs: never seen, but never silently merge two captures
        raise RuntimeError("capture key hash collided under every seed")
    lines = keyed.drop([*masks, ANY_FAILED, *(RAW + c for c in INTEGER_COLUMNS), KEY_CHECK])
    caps = caps.with_columns(
        pl.col(FILE_INDEX).replace_strict(dict(enumerate(shipments.files)),
                                          return_dtype=pl.String).alias(SOURCE_FILE))
    row_failures = tap.failures()
    caps = _with_currency(caps, row_failures)
    caps = _with_source_rows(caps, lines)
    captures, capture_failures = _capture_rules(caps, lines)
    failures = pl.concat([row_failures, capture_failures], how="vertical_relaxed")
    captures = _attach_verdicts(captures, failures, by_id=not shipments.nested)
    return Validation(lines=lines, captures=captures, failures=_sorted_failures(failures))


class _FailingRows:
    """A pass-through on the streaming pass that explains each morsel's failing rows.

    The failures come out of the same scan as the aggregates: a second pass parsed a CSV twice
    (1M all-invalid lines: 4.4 s → 2.2 s), and ``collect_all`` with two sinks buffered the
    whole input between them (5.5 GB on 10M lines). Only the failure rows are kept, not the
    failing input rows with their forty columns (10M all-invalid lines: 6.3 GB).
    """

    def __init__(self, rules: tuple[Rule, ...], n_words: int) -> None:
        self.rules, self.n_words = rules, n_words
        self.parts: list[pl.DataFrame] = []

    def __call__(self, df: pl.DataFrame) -> pl.DataFrame:
        failing = df.filter(pl.col(ANY_FAILED))
        if failing.height:
            self.parts.append(_explain_rows(failing, self.rules, self.n_words))
        return df

    def failures(self) -> pl.DataFrame:
        return (pl.concat(self.parts, how="vertical_relaxed") if self.parts
                else _empty_row_failures())


def _rule_rows(shipments: Shipments, amounts: Amounts,
               rules: tuple[Rule, ...]) -> tuple[pl.LazyFrame, int]:
    """The typed rows with their rule mask words, capture instance and body-size bound."""
    typed = coerce(shipments.rows, amounts)
    is_ship = pl.col(SHIPPING_ROW).fill_null(False)
    # Shipping rows of the nested layout carry no line fields but are not amount-only rows.
    rule_rows = typed.with_columns(
        (IS_LINE_ROW & ~is_ship).alias(LINE),
        pl.when(is_ship).then(None).otherwise(pl.col("captured_amount")).alias("captured_amount"),
        # A capture instance: its identity within one file (and, nested, within one row).
        pl.when(pl.col(NESTED_FILE)).then(pl.col(SOURCE_ROW)).otherwise(pl.lit(0, pl.UInt32))
        .alias(INSTANCE),
        # Computed per row, not inside the aggregation: there it took the streaming group-by
        # off its fast path (10M lines: 14.5 s instead of 5.8 s).
        pl.col("currency").replace_strict(_CURRENCY_INDEX, default=None, return_dtype=pl.UInt16)
        .alias(CURRENCY_CODE),
    )
    words = _mask(_for_rows(rules))
    return (rule_rows.with_columns(*words, body_bound())
            .with_columns(pl.any_horizontal(pl.col(w) != 0 for w in
                                            (f"{MASK}{i}" for i in range(len(words))))
                          .alias(ANY_FAILED))
            .drop([f"__bad_{c}" for c in INTEGER_COLUMNS]), len(words))


def _capture_key(seed: int) -> pl.Expr:
    return pl.struct([*IDENTITY_COLUMNS, FILE_INDEX, INSTANCE]).hash(seed)


def body_bound() -> pl.Expr:
    """An upper bound of the bytes a row adds to its capture's body, from cell lengths alone.

    JSON escaping writes a UTF-8 byte as at most 6 bytes (``\\u00XX``); a key, its quotes,
    colon and comma, or an integer, fit in 64 bytes; braces and the nested object in 128 per
    row. ``len_bytes`` reads the string view's length: no pass over the text.
    """
    text = pl.sum_horizontal([pl.col(c).str.len_bytes() for c in STRING_COLUMNS])
    return (6 * text.cast(pl.Int64) + 64 * len(KNOWN_COLUMNS) + 128).alias(BODY_BOUND)


CONSISTENT_COLUMNS = ("captured_amount", "description", "shipping_delay", "currency")
CONSISTENT_INTEGERS = ("captured_amount", "shipping_delay")
CONSISTENT_TEXT = ("description", "currency")
TEXT_SEEDS = (0x3C6EF372, 0xA54FF53A)
# Known currencies as small integers: a capture's currency is carried through the group-by as
# a UInt16, and an unknown one (which fails the currency rule) is taken from its failing row.
_CURRENCIES = tuple(sorted(EXPONENTS))
_CURRENCY_INDEX = {c: i for i, c in enumerate(_CURRENCIES)}
CURRENCY_CODE = "__currency_code"


def _text_hash(column: str, seed: int) -> pl.Expr:
    return pl.when(pl.col(column).is_not_null()).then(pl.col(column).hash(seed))


def _inconsistent(column: str) -> pl.Expr:
    if column in CONSISTENT_INTEGERS:
        return pl.col(column) != pl.col(f"__max_{column}")
    return pl.any_horizontal([pl.col(f"__lo{s}_{column}") != pl.col(f"__hi{s}_{column}")
                              for s in TEXT_SEEDS])


def _with_currency(caps: pl.DataFrame, row_failures: pl.DataFrame) -> pl.DataFrame:
    """The capture's currency as text: from the code, or, unknown, from its currency failure."""
    caps = caps.with_columns(pl.col("__currency_code").replace_strict(
        dict(enumerate(_CURRENCIES)), default=None, return_dtype=pl.String).alias("currency"))
    unknown = (row_failures.filter((pl.col("rule") == "currency")
                                   & pl.col("value").is_not_null())
               .group_by(CAPTURE_ID).agg(pl.col("value").min().alias("__raw_currency")))
    if unknown.height:
        caps = (caps.join(unknown, on=CAPTURE_ID, how="left")
                .with_columns(pl.coalesce("currency", "__raw_currency").alias("currency"))
                .drop("__raw_currency"))
    return caps.drop("__currency_code")


def _aggregates(nested: bool) -> list[pl.Expr]:
    """Per-capture aggregates that the streaming engine keeps as fixed-size state."""
    line = pl.col(LINE)
    return [
        pl.col(*IDENTITY_COLUMNS, FILE_INDEX).first(),
        # Nested layout only: whether the capture's file is nested (else: false, no state).
        pl.col(NESTED_FILE).first() if nested else pl.lit(False).alias(NESTED_FILE),
        pl.col(KEY_CHECK).min().alias("__check_lo"), pl.col(KEY_CHECK).max().alias("__check_hi"),
        pl.col(SOURCE_ROW).min().alias("first_row"),
        pl.col(SOURCE_ROW).max().alias("last_row"),
        pl.len().alias("__len"),
        line.sum().cast(pl.Int64).alias("order_line_count"),
        pl.when(line).then(pl.col("total_amount")).sum().alias("lines_total"),
        # min ≠ max over the non-null values ⟺ more than one distinct value. Text is compared
        # by two independent 64-bit hashes: a string min/max per capture doubled the pass's
        # time and added 0.9 GB on 10M lines (profile in bench/RESULTS.md).
        *[pl.col(c).min().alias(c) for c in CONSISTENT_INTEGERS],
        *[pl.col(c).max().alias(f"__max_{c}") for c in CONSISTENT_INTEGERS],
        *[_text_hash(c, seed).min().alias(f"__lo{seed}_{c}")
          for c in CONSISTENT_TEXT for seed in TEXT_SEEDS],
        *[_text_hash(c, seed).max().alias(f"__hi{seed}_{c}")
          for c in CONSISTENT_TEXT for seed in TEXT_SEEDS],
        pl.col(CURRENCY_CODE).min(),
        pl.col(ANY_FAILED).any(),  # one flag per capture, not the mask words
        _HAS_SHIP.sum().cast(pl.Int64).alias(SHIP_ROWS),
        (pl.col(BODY_BOUND).sum() + 256).alias(BODY_BOUND),
    ]


def _with_source_rows(caps: pl.DataFrame, lines: pl.LazyFrame) -> pl.DataFrame:
    """``n_rows`` and, for the (rare) captures whose rows are not one block, the row list."""
    # Long layout: one source row per row. Nested: the capture is one row, exploded.
    caps = caps.with_columns(
        pl.when(pl.col(NESTED_FILE)).then(pl.lit(1, pl.UInt32)).otherwise(pl.col("__len"))
        .cast(pl.UInt32).alias("n_rows"))
    is_scattered = pl.col("n_rows") != pl.col("last_row") - pl.col("first_row") + 1
    if caps.select(is_scattered.any()).item():
        scattered = caps.filter(is_scattered)
        rows = (lines.filter(pl.col(CAPTURE_ID).is_in(scattered[CAPTURE_ID].implode()))
                .group_by(CAPTURE_ID).agg(pl.col(SOURCE_ROW).unique().sort().alias("rows"))
                .collect(engine="streaming"))
        return caps.join(rows, on=CAPTURE_ID, how="left")
    return caps.with_columns(pl.lit(None, pl.List(pl.UInt32)).alias("rows"))


def _for_rows(rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
    # Shipping rows (nested layout) carry only identity and shipping fields: line-row and
    # amount rules do not apply to them, so each rule's condition is masked for them.
    # A cell that did not parse is reported as such, not again as missing.
    not_ship = ~pl.col(SHIPPING_ROW).fill_null(False)

    def scoped(r: Rule) -> pl.Expr:
        fails = r.fails
        if r.code == "required" and r.column in INTEGER_COLUMNS:
            fails = fails & ~pl.col(f"__bad_{r.column}")
        return fails if r.column in (*IDENTITY_COLUMNS, *SHIPPING_COLUMNS) else fails & not_ship

    return tuple(Rule(r.code, r.column, r.message, scoped(r)) for r in rules)


def _explain_rows(df: pl.DataFrame, rules: tuple[Rule, ...], n_words: int) -> pl.DataFrame:
    """One failure row per (row, broken rule), with the offending value as text (and the
    row's ``CAPTURE_ID``)."""
    masks = [f"{MASK}{i}" for i in range(n_words)]
    bad = df.filter(pl.any_horizontal([pl.col(m) != 0 for m in masks]))
    if bad.is_empty():
        return _empty_row_failures()
    parts = []
    for i, rule in enumerate(rules):
        word, bit = divmod(i, 64)
        hit = bad.filter((pl.col(f"{MASK}{word}") & (1 << bit)) != 0)
        if hit.is_empty():
            continue
        if rule.code in ("not_integer", "not_decimal"):
            value = pl.col(RAW + rule.column).cast(pl.String)
        else:
            value = pl.col(rule.column).cast(pl.String)
        parts.append(hit.select(
            pl.col(SOURCE_FILE).alias("source_file"), pl.col(SOURCE_ROW).alias("source_row"),
            *IDENTITY_COLUMNS, pl.lit(rule.column).alias("column"),
            pl.lit(rule.code).alias("rule"), value.alias("value"),
            pl.lit(rule.message).alias("message"), pl.col(CAPTURE_ID)))
    return pl.concat(parts, how="vertical_relaxed") if parts else _empty_row_failures()


def _empty_row_failures() -> pl.DataFrame:
    return _empty_failures().with_columns(pl.lit(None, pl.UInt64).alias(CAPTURE_ID))


# The rejects' columns and types: every partition of a partitioned run writes its part so.
FAILURE_SCHEMA = pl.Schema({
    "source_file": pl.String, "source_row": pl.UInt32, "order_id": pl.String,
    "capture_reference": pl.String, "column": pl.String, "rule": pl.String,
    "value": pl.String, "message": pl.String})


def _empty_failures() -> pl.DataFrame:
    return pl.DataFrame(schema=FAILURE_SCHEMA)


def _shipping_counts(caps: pl.DataFrame, lines: pl.LazyFrame) -> pl.DataFrame:
    """Distinct shipping_info items, counted exactly only where they could exceed the limit.

    Distinct items are at most the rows that carry shipping fields; a capture with no more such
    rows than the limit cannot break it, so its count is not needed (and not computed).
    """
    # Check before filtering or joining: either copies every column of millions of captures.
    if not (caps[SHIP_ROWS] > MAX_SHIPPING_INFO).any():
        return caps.with_columns(pl.lit(None, pl.UInt32).alias("shipping_info_count"))
    many = caps.filter(pl.col(SHIP_ROWS) > MAX_SHIPPING_INFO)
    counts = (lines.filter(pl.col(CAPTURE_ID).is_in(many[CAPTURE_ID].implode()) & _HAS_SHIP)
              .group_by(CAPTURE_ID)
              .agg(pl.struct(list(SHIPPING_COLUMNS)).n_unique().cast(pl.UInt32)
                   .alias("shipping_info_count"))
              .collect(engine="streaming"))
    return caps.join(counts, on=CAPTURE_ID, how="left")


def _capture_rules(caps: pl.DataFrame,
                   lines: pl.LazyFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Apply the capture-level rules to the per-capture aggregates."""
    caps = _shipping_counts(caps, lines)
    caps = caps.with_columns(
        pl.when(pl.col("order_line_count") > 0)
        .then(pl.col("captured_amount").fill_null(pl.col("lines_total")))
        .otherwise(pl.col("captured_amount")).alias("captured_amount"),
        pl.col("captured_amount").alias("__given_amount"),
    )
    checks: list[tuple[str, str, str, pl.Expr, pl.Expr]] = [
        (c, "inconsistent", "differs between the rows of this capture; use one value",
         _inconsistent(c), pl.lit(None, pl.String)) for c in CONSISTENT_COLUMNS
    ]
    checks += [
        ("captured_amount", "captured_amount_sum",
         "differs from the sum of the lines' total_amount",
         (pl.col("order_line_count") > 0) & pl.col("__given_amount").is_not_null()
         & (pl.col("__given_amount") != pl.col("lines_total")),
         pl.format("{} (lines sum to {})", pl.col("__given_amount"), pl.col("lines_total"))),
        ("captured_amount", "range", f"must be between 0 and {MAX_AMOUNT}",
         (pl.col("captured_amount") < 0) | (pl.col("captured_amount") > MAX_AMOUNT),
         pl.col("captured_amount").cast(pl.String)),
        ("order_lines", "too_many_lines", f"a capture has at most {MAX_ORDER_LINES} order lines",
         pl.col("order_line_count") > MAX_ORDER_LINES, pl.col("order_line_count").cast(pl.String)),
        ("shipping_info", "too_many_shipping_info",
         f"a capture has at most {MAX_SHIPPING_INFO} distinct shipping_info items",
         pl.col("shipping_info_count") > MAX_SHIPPING_INFO,
         pl.col("shipping_info_count").cast(pl.String)),
    ]
    parts = []
    for column, code, message, cond, value in checks:
        hit = caps.filter(cond.fill_null(False))
        if hit.height:
            parts.append(hit.select(
                pl.col(SOURCE_FILE).alias("source_file"), pl.col("first_row").alias("source_row"),
                *IDENTITY_COLUMNS, pl.lit(column).alias("column"), pl.lit(code).alias("rule"),
                value.cast(pl.String).alias("value"), pl.lit(message).alias("message"),
                pl.col(CAPTURE_ID)))
    failures = (pl.concat(parts, how="vertical_relaxed") if parts
                else _empty_failures().with_columns(pl.lit(None, pl.UInt64).alias(CAPTURE_ID)))
    caps = caps.with_columns(source_rows_expr()).drop(
        [f"__max_{c}" for c in CONSISTENT_INTEGERS]
        + [f"__{b}{s}_{c}" for c in CONSISTENT_TEXT for s in TEXT_SEEDS for b in ("lo", "hi")]
        + ["__given_amount", "rows", "__len", "__check_lo", "__check_hi", "shipping_info_count",
           "shipping_delay"])
    return caps, failures


def source_rows_expr() -> pl.Expr:
    """"12-14" for a contiguous block of rows, else "3,7,9": where a capture's rows came from."""
    contiguous = pl.col("n_rows") == pl.col("last_row") - pl.col("first_row") + 1
    return (pl.when(pl.col("n_rows") == 1).then(pl.col("first_row").cast(pl.String))
            .when(contiguous).then(pl.format("{}-{}", pl.col("first_row"), pl.col("last_row")))
            .otherwise(pl.col("rows").cast(pl.List(pl.String)).list.join(","))
            .alias("source_rows"))


def format_failure() -> pl.Expr:
    """One human sentence per failure: where, what, and the value."""
    value = pl.when(pl.col("value").is_null()).then(pl.lit("")).otherwise(
        pl.lit(" (got '") + pl.col("value").str.slice(0, 60) + pl.lit("')"))
    return pl.format("{} row {}, column {}: {} [{}]{}", pl.col("source_file"),
                     pl.col("source_row"), pl.col("column"), pl.col("message"), pl.col("rule"),
                     value)


def _attach_verdicts(captures: pl.DataFrame, failures: pl.DataFrame,
                     by_id: bool) -> pl.DataFrame:
    """valid / error_messages per capture instance, joined on identity + file.

    ``by_id``: no nested file, so a capture instance *is* its identity + file and the 64-bit
    ``CAPTURE_ID`` (collision-checked) stands for the three strings: grouping and joining on it
    took a third of the time of 4M failures.
    """
    keys = [CAPTURE_ID] if by_id else [*IDENTITY_COLUMNS, SOURCE_FILE]
    if failures.is_empty():
        return captures.with_columns(pl.lit(True).alias("valid"),
                                     pl.lit(None, pl.String).alias("error_messages"))
    # A total order (row, then column and rule): the same input always gives the same text,
    # whatever order the streaming pass produced the failures in.
    per = (failures.rename({"source_file": SOURCE_FILE})
           .sort(["source_row", "column", "rule"])
           .group_by(keys).agg(
               format_failure().head(MAX_MESSAGES_PER_CAPTURE).alias("msgs"),
               pl.len().alias("n_fail")))
    per = per.with_columns(
        (pl.col("msgs").list.join("; ")
         + pl.when(pl.col("n_fail") > MAX_MESSAGES_PER_CAPTURE)
         .then(pl.format("; … and {} more", pl.col("n_fail") - MAX_MESSAGES_PER_CAPTURE))
         .otherwise(pl.lit(""))).alias("error_messages")).select(*keys, "error_messages")
    out = captures.join(per, on=keys, how="left", nulls_equal=True)
    return out.with_columns(pl.col("error_messages").is_null().alias("valid"))


def _sorted_failures(failures: pl.DataFrame) -> pl.DataFrame:
    return failures.select(FAILURE_COLUMNS).sort(["source_file", "source_row", "column"])
