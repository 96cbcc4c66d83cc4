"""Plan captures: group validated lines into captures, build each exact JSON body, derive keys.

Third stage (read → validate → **plan** → send → …). Pure: no I/O. Bodies are built in polars
(one vectorised expression per field, no Python dict per row), with the API's field names,
``product_identifiers`` nested, and ``shipping_info`` de-duplicated per capture. Nulls are left
out of the body rather than sent as ``null``.

Two checks need the body and so live here: the serialised size (≤ 1 MB, else the API answers
413) and duplicate identities across files (the same capture twice with *different* content is
invalid; twice with the same content is one capture).

The idempotency key is ``uuid5(KEY_NAMESPACE, json.dumps([order_id, capture_reference]))`` —
the same for every retry and every re-run. After a definitive 4xx the ledger may move a capture
to generation ``g > 0``, keyed on ``[order_id, capture_reference, g]``. JSON keeps the identity
unambiguous whatever characters the reference holds.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from operator import methodcaller

import pandera.errors as pa_errors
import polars as pl

from etl.errors import ContractError
from etl.model import CaptureRequest
from etl.read import SHIPPING_ROW
from etl.validate import BODY_BOUND, CAPTURE_ID, LINE, Validation, format_failure
from schemas.limits import MAX_BODY_BYTES
from schemas.shipments import (
    IDENTITY_COLUMNS,
    PRODUCT_IDENTIFIER_COLUMNS,
    SHIPMENT_LINES,
    SHIPPING_COLUMNS,
    SOURCE_FILE,
    SOURCE_ROW,
)

# Fixed forever: changing it would change every key and break idempotency across versions.
KEY_NAMESPACE = uuid.UUID("4550dc2d-f0f6-5a7a-b41a-9822f38670f6")  # uuid5(URL, "bulkcapture:…")

LINE_FIELDS = (
    "type", "reference", "name", "quantity", "quantity_unit", "unit_price", "tax_rate",
    "total_amount", "total_discount_amount", "total_tax_amount", "merchant_data", "product_url",
    "image_url",
)
CAPTURE_ORDER = ("order_id", "capture_reference", SOURCE_FILE)
PLAN_COLUMNS = (
    "order_id", "capture_reference", "idempotency_key", "status", "captured_amount", "currency",
    "order_line_count", "error_code", "error_messages", "source_file", "source_rows", "body",
)


def idempotency_key(order_id: str, capture_reference: str, generation: int = 0) -> str:
    """The capture's ``Klarna-Idempotency-Key``: a UUIDv5 of its identity (and generation)."""
    ident: list[str | int] = [order_id, capture_reference]
    if generation:
        ident.append(generation)
    return str(uuid.uuid5(KEY_NAMESPACE, json.dumps(ident, ensure_ascii=False)))


def _json_string(col: str) -> pl.Expr:
    """A string column as a JSON string literal, escaped exactly as ``json.dumps(…,
    ensure_ascii=False)`` escapes it (serde_json and CPython agree on every code point)."""
    return pl.struct(pl.col(col).alias("s")).struct.json_encode().str.slice(5).str.strip_suffix(
        "}")


# A character JSON must escape: without one, the literal is the text in quotes.
_NEEDS_ESCAPE = r'["\\\x00-\x1f]'
_VARIANT = {f"{n:x}": "89ab"[n & 3] for n in range(16)}  # RFC 4122 variant: 10xx


def idempotency_keys(identities: pl.DataFrame) -> pl.Series:
    """``idempotency_key`` for every (order_id, capture_reference) row, generation 0.

    The profile of a 1M-line dry run put 3 s of 6.5 s in ``idempotency_key``: ``json.dumps``
    and ``uuid.UUID`` per row. Here polars builds every name and formats every UUID at once;
    the only per-row Python is SHA-1 itself (``map`` over C functions), as ``uuid.uuid5`` does.
    """
    ident = identities.select("order_id", "capture_reference")
    plain = not ident.select(
        pl.any_horizontal(pl.col(c).str.contains(_NEEDS_ESCAPE).any() for c in ident.columns)
    ).item()

    def literal(col: str) -> pl.Expr:
        if plain:  # the usual case, ~4x cheaper than the struct encoder
            return pl.format('"{}"', pl.col(col)).fill_null(pl.lit("null"))
        return _json_string(col)

    names = ident.select(
        pl.lit(KEY_NAMESPACE.bytes)
        + (pl.lit("[") + literal("order_id") + pl.lit(", ") + literal("capture_reference")
           + pl.lit("]")).cast(pl.Binary)).to_series()
    digests = list(map(methodcaller("digest"), map(hashlib.sha1, names.to_list())))
    hexes = pl.Series("h", digests, dtype=pl.Binary).bin.encode("hex")
    h = pl.col("h")
    return hexes.to_frame().select(pl.concat_str([
        h.str.slice(0, 8), pl.lit("-"), h.str.slice(8, 4), pl.lit("-5"), h.str.slice(13, 3),
        pl.lit("-"), h.str.slice(16, 1).replace_strict(_VARIANT), h.str.slice(17, 3),
        pl.lit("-"), h.str.slice(20, 12)]).alias("idempotency_key")).to_series()


def content_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True)
class Plan:
    """Every capture of the input: ``planned`` with its body, or ``invalid`` with reasons."""

    captures: pl.DataFrame  # PLAN_COLUMNS
    failures: pl.DataFrame  # one row per failed check (validate's, plus size and duplicates)
    has_bodies: bool = True  # False: planned with bodies=False, only the verdicts are known

    @property
    def valid(self) -> pl.DataFrame:
        return self.captures.filter(pl.col("status") == "planned")

    def requests(self) -> Iterator[CaptureRequest]:
        """The planned captures as ready-to-send requests, in input order."""
        if not self.has_bodies:
            raise ValueError("this plan was made without bodies (plan_captures(bodies=False))")
        cols = ("order_id", "capture_reference", "idempotency_key", "captured_amount",
                "currency", "body")
        for oid, ref, key, amount, cur, body in self.valid.select(cols).iter_rows():
            data = body.encode()
            yield CaptureRequest(oid, ref, key, content_hash(data), amount, cur, data)


# --- body building ----------------------------------------------------------------------------
def _pair(col: str, key: str | None = None) -> pl.Expr:
    """``"key":<json value>`` for a non-null cell, else null (so the field is left out)."""
    encoded = (pl.struct(pl.col(col).alias(key or col)).struct.json_encode()
               .str.strip_prefix("{").str.strip_suffix("}"))
    return pl.when(pl.col(col).is_not_null()).then(encoded)


def _object(pairs: list[pl.Expr]) -> pl.Expr:
    return pl.lit("{") + pl.concat_str(pairs, separator=",", ignore_nulls=True) + pl.lit("}")


def _line_json() -> pl.Expr:
    has_pid = pl.any_horizontal([pl.col(c).is_not_null() for c in PRODUCT_IDENTIFIER_COLUMNS])
    pid = pl.when(has_pid).then(
        pl.lit('"product_identifiers":')
        + _object([_pair(c) for c in PRODUCT_IDENTIFIER_COLUMNS]))
    return _object([*(_pair(c) for c in LINE_FIELDS), pid])


def _bodies(validation: Validation, ids: pl.Series) -> pl.DataFrame:
    """``__capture`` → body text, for the captures ``ids``, from their rows in input order."""
    rows = (validation.lines.filter(pl.col(CAPTURE_ID).is_in(ids.implode()))
            .select(CAPTURE_ID, LINE, SHIPPING_ROW, SOURCE_ROW, SOURCE_FILE,
                    *dict.fromkeys([*SHIPMENT_LINES.columns, "description", "shipping_delay",
                                    *LINE_FIELDS, *PRODUCT_IDENTIFIER_COLUMNS,
                                    *SHIPPING_COLUMNS]))
            .collect())
    check_lines_to_send(rows.filter(pl.col(LINE)))
    # The rows of a capture may be scattered over the file: order them as they were read.
    rows = rows.sort(SOURCE_ROW, maintain_order=True)
    lines = (rows.filter(pl.col(LINE))
             .group_by(CAPTURE_ID, maintain_order=True)
             .agg(_line_json().str.join(",").alias("lines_json")))
    has_ship = pl.any_horizontal([pl.col(c).is_not_null() for c in SHIPPING_COLUMNS])
    ship = (rows.filter(has_ship | pl.col(SHIPPING_ROW).fill_null(False))
            .select(CAPTURE_ID, _object([_pair(c) for c in SHIPPING_COLUMNS]).alias("item"))
            .unique(maintain_order=True)
            .group_by(CAPTURE_ID, maintain_order=True)
            .agg(pl.col("item").str.join(",").alias("ship_json")))
    # Capture-level fields are consistent on a valid capture: the first non-null is the value.
    fields = rows.group_by(CAPTURE_ID).agg(
        pl.col("description", "shipping_delay").drop_nulls().first())
    caps = (validation.captures.filter(pl.col(CAPTURE_ID).is_in(ids.implode()))
            .join(fields, on=CAPTURE_ID, how="left")
            .join(lines, on=CAPTURE_ID, how="left")
            .join(ship, on=CAPTURE_ID, how="left"))
    body = _object([
        _pair("captured_amount"),
        _pair("description"),
        _pair("capture_reference", "reference"),
        _pair("shipping_delay"),
        pl.when(pl.col("lines_json").is_not_null())
        .then(pl.lit('"order_lines":[') + pl.col("lines_json") + pl.lit("]")),
        pl.when(pl.col("ship_json").is_not_null())
        .then(pl.lit('"shipping_info":[') + pl.col("ship_json") + pl.lit("]")),
    ])
    return caps.select(CAPTURE_ID, body.alias("body"))


def check_lines_to_send(lines: pl.DataFrame) -> None:
    """Every order line about to be sent, checked once more against the pandera schema.

    Defence in depth: the verdicts come from the fast rule table, and the two views are shown
    to agree by tests; if they ever disagree on real data, no money moves on the faster one's
    word. Costs one pandera pass over the lines that will be sent (run only, never validate or
    the dry run), small next to sending them at the provider's rate.
    """
    try:
        SHIPMENT_LINES.validate(lines, lazy=True)
    except pa_errors.SchemaErrors as exc:
        cases = exc.failure_cases.head(3)
        where = "; ".join(f"{c['column']} {c['check']} (got {c['failure_case']!r})"
                          for c in cases.iter_rows(named=True))
        first = lines.row(int(cases["index"][0] or 0), named=True) if cases.height else {}
        raise ContractError(
            f"{first.get(SOURCE_FILE, 'the input')} row {first.get(SOURCE_ROW, '?')}: a line "
            f"that passed validation breaks the capture contract ({where}); nothing was sent. "
            "This is a bulkcapture bug: please report it with the row.") from exc


def _failure_rows(caps: pl.DataFrame, rule: str, column: str, message: str,
                  value: pl.Expr) -> pl.DataFrame:
    return caps.select(
        pl.col(SOURCE_FILE).alias("source_file"), pl.col("first_row").alias("source_row"),
        *IDENTITY_COLUMNS, pl.lit(column).alias("column"), pl.lit(rule).alias("rule"),
        value.cast(pl.String).alias("value"), pl.lit(message).alias("message"))


def plan_captures(validation: Validation, *, bodies: bool = True, keys: bool = True) -> Plan:
    """Bodies and keys for the valid captures; size and duplicate checks; one row per capture.

    ``bodies=False`` (validate, dry run) gives the same verdicts without holding every body:
    a body is built only where a check needs it, i.e. where the size bound from validate
    reaches the limit, or where one identity has several copies whose bodies must agree.
    ``keys=False`` (validate) leaves ``idempotency_key`` null: no verdict depends on it.
    """
    caps = validation.captures
    ident = list(IDENTITY_COLUMNS)
    valid = pl.col("valid")
    # Equal identities hash equal: no repeated hash, no copies, and the window functions over
    # the identity strings (2 s on 4M captures) are skipped.
    has_copies = bool(caps.select(pl.struct(ident).hash().is_duplicated().any()).item())
    copies = pl.len().over(ident) > 1 if has_copies else pl.lit(False)
    need = valid if bodies else valid & ((pl.col(BODY_BOUND) > MAX_BODY_BYTES) | copies)
    if caps.select(need.any()).item():
        caps = caps.join(_bodies(validation, caps.filter(need)[CAPTURE_ID]), on=CAPTURE_ID,
                         how="left")
    else:  # nothing to build: do not scan the input again
        caps = caps.with_columns(pl.lit(None, pl.String).alias("body"))
    extra: list[pl.DataFrame] = []

    too_big = (pl.col("body").str.len_bytes() > MAX_BODY_BYTES).fill_null(False)
    if caps.select(too_big.any()).item():
        extra.append(_failure_rows(
            caps.filter(too_big), "body_too_large", "order_lines",
            f"the request body is over {MAX_BODY_BYTES:,} bytes (the API answers 413); split "
            "the capture", pl.col("body").str.len_bytes()))

    # The same identity in several files (or nested rows): one capture if the bodies agree.
    if has_copies:
        caps = caps.with_columns(
            pl.len().over(ident).alias("__copies"),
            pl.col("body").n_unique().over(ident).alias("__bodies"),
            (~pl.col("valid")).any().over(ident).alias("__any_invalid"))
        dup = caps.filter((pl.col("__copies") > 1)
                          & ((pl.col("__bodies") > 1) | pl.col("__any_invalid")))
        if dup.height:
            extra.append(_failure_rows(
                dup, "duplicate_identity", "capture_reference",
                "the same (order_id, capture_reference) appears again with different content; "
                "give each capture its own reference", pl.col("capture_reference")))
    else:
        caps = caps.with_columns(pl.lit(1, pl.UInt32).alias("__copies"))

    failures = pl.concat([validation.failures, *extra], how="vertical_relaxed") if extra \
        else validation.failures
    caps = _merge_copies(caps)
    caps = _with_verdicts(caps, extra)
    caps = caps.with_columns(idempotency_keys(caps.select(ident)) if keys
                             else pl.lit(None, pl.String).alias("idempotency_key"))
    return Plan(captures=caps.select(PLAN_COLUMNS), failures=failures, has_bodies=bodies)


def _merge_copies(caps: pl.DataFrame) -> pl.DataFrame:
    """Identical copies of one capture become one row, listing every file it came from."""
    ident = list(IDENTITY_COLUMNS)
    # Input order. One file (the usual night) sorts on the row number alone, not on the name.
    one_file = caps.select(pl.col(SOURCE_FILE).n_unique() <= 1).item()
    caps = caps.sort("first_row" if one_file else [SOURCE_FILE, "first_row"])
    if (caps["__copies"] == 1).all():  # nothing to merge: skip the group-by
        return caps
    files = pl.col(SOURCE_FILE).unique(maintain_order=True).str.join("; ")
    merged = (caps
              .group_by(ident, maintain_order=True)
              .agg(pl.all().first(), files.alias("__files"),
                   pl.col("source_rows").str.join("; ").alias("__rows")))
    return merged.with_columns(
        pl.when(pl.col("__copies") > 1).then(pl.col("__files")).otherwise(pl.col(SOURCE_FILE))
        .alias(SOURCE_FILE),
        pl.when(pl.col("__copies") > 1).then(pl.col("__rows")).otherwise(pl.col("source_rows"))
        .alias("source_rows"))


def _with_verdicts(caps: pl.DataFrame, extra: list[pl.DataFrame]) -> pl.DataFrame:
    if extra:
        # Sorted first: the copies of a duplicate come out of a streaming group-by in any
        # order, and the message must not change from run to run.
        more = (pl.concat(extra).sort(["source_file", "source_row", "rule"])
                .group_by(IDENTITY_COLUMNS, maintain_order=True)
                .agg(format_failure().str.join("; ").alias("__more")))
        caps = caps.join(more, on=list(IDENTITY_COLUMNS), how="left").with_columns(
            pl.concat_str(["error_messages", "__more"], separator="; ", ignore_nulls=True)
            .alias("error_messages"),
            (pl.col("valid") & pl.col("__more").is_null()).alias("valid"))
    return caps.with_columns(
        pl.when(pl.col("valid")).then(pl.lit("planned")).otherwise(pl.lit("invalid"))
        .alias("status"),
        pl.when(pl.col("valid")).then(None).otherwise(pl.lit("INVALID_INPUT")).alias("error_code"),
        pl.when(pl.col("valid")).then(pl.col("body")).alias("body"),
        pl.when(pl.col("error_messages") == "").then(None).otherwise(pl.col("error_messages"))
        .alias("error_messages"),
    )
