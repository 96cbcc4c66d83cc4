"""Settlement transactions: the provider's CSV payout report and Settlements API JSON, read and
normalised into one polars frame in integer minor units (``schemas.settlements``).

Where it sits: reconcile reads two things, the capture results (``etl.reconcile.read_captures``)
and these settlement transactions; ``etl.reconcile`` matches them.

Formats (api.md § Settlements):

* CSV payout report: payout summary columns first (``payment_reference``, ``payout_date``,
  ``total_settlement_amount``), then the transaction's columns. Amounts are decimals in *major*
  units (``100.00``) and the currency column is ``posting_currency``. The delimiter (``;``, ``,``
  or tab) is sniffed from the header; headers are matched case-insensitively; a BOM, blank lines
  and extra columns are tolerated. With ``;`` a decimal comma (``100,00``) is accepted too.
  Amounts are converted exactly (string arithmetic, never float) with the currency's ISO 4217
  exponent; a value with more decimals than that is an error, never rounded.
* JSON from ``/settlements/v1/transactions``: amounts already in minor units. A file may hold a
  page (``{"transactions": [...], "pagination": {...}}``), a bare list, several such documents
  concatenated, or one transaction per line. A ``{"payouts": [...]}`` document (as
  ``bulkcapture settlements fetch`` writes) supplies ``payout_date`` and
  ``total_settlement_amount`` per ``payment_reference``.

Sign convention: ``amount`` is taken as a magnitude (``abs()``, so signed input is tolerated) and
the direction comes from ``type``: the payout is ``+sale −return −reversal −fee +commission −tax
−charge +credit −holdback +release +fee_refund +reversal_merchant_protection``. ``payout_amount``
carries that signed contribution. ``CORRECTION`` and unknown types have no fixed direction: they
keep the sign of the input (a bare magnitude counts as positive).

Row numbers in messages are 1-based data rows (the header excluded) for CSV, and the position of
the transaction in the file for JSON.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import date
from pathlib import Path
from typing import Any, Protocol

import pandera.polars as pa
import polars as pl

from etl.currency import EXPONENTS, exponent
from etl.errors import InputError
from schemas.settlements import SettlementTransactions

# The payout equation's sign per transaction type (api.md § Settlements, Payout).
DIRECTION: dict[str, int] = {
    "SALE": 1, "RETURN": -1, "REVERSAL": -1, "FEE": -1, "COMMISSION": 1, "TAX": -1,
    "CHARGE": -1, "CREDIT": 1, "HOLDBACK": -1, "RELEASE": 1, "FEE_REFUND": 1,
    "REVERSAL_MERCHANT_PROTECTION": 1,
}
TRANSACTION_TYPES: tuple[str, ...] = (*DIRECTION, "CORRECTION")

STRING_FIELDS: tuple[str, ...] = (
    "payment_reference", "type", "detailed_type", "currency", "capture_id", "order_id",
    "merchant_capture_reference", "merchant_reference1", "merchant_reference2", "capture_date",
    "sale_date", "short_order_id", "purchase_country", "refund_id", "vat_rate",
)
# The normalised frame, column by column (schemas.settlements.SettlementTransactions checks it).
SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.String(),
    "source_row": pl.Int64(),
    "payment_reference": pl.String(),
    "payout_date": pl.Date(),
    "total_settlement_amount": pl.Int64(),
    "type": pl.String(),
    "detailed_type": pl.String(),
    "amount": pl.Int64(),  # magnitude, minor units
    "payout_amount": pl.Int64(),  # signed contribution to the payout, minor units
    "currency": pl.String(),
    "capture_id": pl.String(),
    "order_id": pl.String(),
    "merchant_capture_reference": pl.String(),
    "merchant_reference1": pl.String(),
    "merchant_reference2": pl.String(),
    "capture_date": pl.String(),
    "sale_date": pl.String(),
    "short_order_id": pl.String(),
    "purchase_country": pl.String(),
    "refund_id": pl.String(),
    "vat_rate": pl.String(),
    "vat_amount": pl.Int64(),
}
# Other names the same field goes by: the CSV's posting_currency, the API's currency_code.
ALIASES: dict[str, str] = {
    "posting_currency": "currency", "currency_code": "currency",
    "merchant_capture_ref": "merchant_capture_reference",
    "transaction_type": "type",
}
# Columns that identify one transaction when the same report is given twice (CSV and JSON, or
# overlapping fetches): a row equal on all of these in two files is one transaction.
IDENTITY: tuple[str, ...] = (
    "payment_reference", "type", "detailed_type", "amount", "currency", "capture_id", "order_id",
    "refund_id",
)
_DECIMAL = r"^([+-]?)(\d{0,15})(?:\.(\d*))?$"
CSV_SUFFIXES = (".csv", ".tsv", ".txt")
JSON_SUFFIXES = (".json", ".ndjson", ".jsonl")


def read_settlements(paths: Iterable[str | Path]) -> pl.DataFrame:
    """Read settlement files (CSV payout reports or Settlements API JSON, by suffix) into one
    normalised frame in minor units; a transaction given in two files counts once."""
    frames = [read_settlement_file(Path(p)) for p in paths]
    if not frames:
        raise InputError("no settlement file given: pass --settlement FILE (CSV or JSON).")
    return _validated(dedupe_transactions(pl.concat(frames, how="vertical")))


def _validated(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame against ``SettlementTransactions``; a failure names its file and row."""
    try:
        return SettlementTransactions.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        case = exc.failure_cases.row(0, named=True)
        index = case.get("index")
        where = (f"{frame['source_file'][index]} row {frame['source_row'][index]}"
                 if isinstance(index, int) else "the settlements")
        raise InputError(f"{where}, column {case['column']}: {case['failure_case']!r} fails "
                         f"{case['check']}: correct the settlement file.") from exc


def read_settlement_file(path: Path) -> pl.DataFrame:
    """One settlement file, by suffix: ``.csv``/``.tsv``/``.txt`` or ``.json``/``.ndjson``."""
    suffix = path.suffix.lower()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read settlement file {path}: {exc.strerror}.") from exc
    if suffix in CSV_SUFFIXES:
        return parse_csv_report(data, str(path))
    if suffix in JSON_SUFFIXES:
        return parse_transactions_json(data, str(path))
    raise InputError(f"settlement file {path} has an unknown format {suffix or '(no suffix)'!r}: "
                     f"give a CSV payout report (.csv) or Settlements API JSON (.json).")


def dedupe_transactions(frame: pl.DataFrame) -> pl.DataFrame:
    """Drop transactions repeated across files, keeping repeats within one file.

    Several identical FEE rows in one report are several fees; the same report read twice (as CSV
    and as JSON) is one. So rows are numbered per identity within each file and deduplicated on
    (identity, that number).
    """
    occurrence = pl.int_range(pl.len()).over(["source_file", *IDENTITY]).alias("_occurrence")
    return (frame.with_columns(occurrence)
            .unique(subset=[*IDENTITY, "_occurrence"], keep="first", maintain_order=True)
            .drop("_occurrence"))


# --- CSV payout report -------------------------------------------------------------------------

def sniff_delimiter(header: str) -> str:
    """The delimiter of a header line: whichever of ``;``, tab, ``,`` occurs most."""
    counts = {sep: header.count(sep) for sep in (";", "\t", ",")}
    best = max(counts, key=lambda sep: counts[sep])
    return best if counts[best] else ","


def _normalise_header(name: str) -> str:
    key = name.strip().strip('"').strip().lower().replace(" ", "_").replace("-", "_")
    return ALIASES.get(key, key)


def parse_csv_report(data: bytes, source: str) -> pl.DataFrame:
    """A CSV payout report (major units) → the normalised frame."""
    text = data.decode("utf-8-sig", errors="replace")
    header = next((line for line in text.splitlines() if line.strip()), None)
    if header is None:
        return _empty()
    sep = sniff_delimiter(header)
    try:
        raw = pl.read_csv(text.encode(), separator=sep, infer_schema=False,
                          truncate_ragged_lines=True)
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"{source} is not a readable CSV payout report ({exc}): export it again "
                         f"from the merchant portal as CSV.") from exc
    names = [_normalise_header(c) for c in raw.columns]
    dupes = [n for n, count in Counter(names).items() if count > 1]
    if dupes:
        raise InputError(f"{source}: column {dupes[0]!r} appears twice in the header: remove one.")
    raw = raw.rename(dict(zip(raw.columns, names, strict=True)))
    # polars reads a blank line as a row of nulls: number rows first, then drop those.
    raw = (raw.with_row_index("source_row", offset=1)
           .with_columns(pl.col("source_row").cast(pl.Int64))
           .filter(~pl.all_horizontal(pl.exclude("source_row").is_null())))
    _require(raw, source, "CSV payout report")
    strings = raw.select(
        "source_row",
        *[_text(raw, name) for name in STRING_FIELDS],
        _text(raw, "amount"), _text(raw, "vat_amount"), _text(raw, "total_settlement_amount"),
        _text(raw, "payout_date"),
    ).with_columns(pl.col("currency").str.to_uppercase())
    _check_filled(strings, source)
    exp = _exponents(pl.col("currency"))
    decimal_comma = sep == ";"
    amount = to_minor(strings, "amount", exp, source, decimal_comma=decimal_comma)
    vat = to_minor(strings, "vat_amount", exp, source, decimal_comma=decimal_comma)
    total = to_minor(strings, "total_settlement_amount", exp, source, decimal_comma=decimal_comma)
    frame = strings.with_columns(amount=amount, vat_amount=vat, total_settlement_amount=total)
    return _finish(frame, source, "row")


def _text(raw: pl.DataFrame, name: str) -> pl.Expr:
    """A column as stripped text, empty → null; a missing optional column is all null."""
    if name not in raw.columns:
        return pl.lit(None, pl.String).alias(name)
    col = pl.col(name).cast(pl.String).str.strip_chars()
    return pl.when(col == "").then(None).otherwise(col).alias(name)


def _require(raw: pl.DataFrame, source: str, kind: str) -> None:
    missing = [c for c in ("type", "amount", "currency") if c not in raw.columns]
    if missing:
        shown = ["posting_currency" if c == "currency" else c for c in missing]
        raise InputError(f"{source} has no column {', '.join(shown)}: a {kind} needs type, amount "
                         f"and posting_currency (or currency_code); check the file is a "
                         f"settlement report with its header row.")


def _check_filled(frame: pl.DataFrame, source: str, unit: str = "row") -> None:
    """``type``, ``amount`` and ``currency`` must be filled on every transaction."""
    for name, shown in (("type", "type"), ("amount", "amount"), ("currency", "posting_currency")):
        bad = frame.filter(pl.col(name).is_null())
        if bad.height:
            raise InputError(f"{source} {unit} {bad['source_row'][0]}, column {shown}: empty; "
                             f"every transaction needs a {shown}{_more(bad.height)}.")
    bad = frame.filter(~pl.col("currency").str.contains(r"^[A-Z]{3}$"))
    if bad.height:
        raise InputError(f"{source} {unit} {bad['source_row'][0]}, column posting_currency: "
                         f"{bad['currency'][0]!r} is not an ISO 4217 code such as EUR"
                         f"{_more(bad.height)}.")


def _more(n: int) -> str:
    return f" ({n - 1} more rows like it)" if n > 1 else ""


def _exponents(currency: pl.Expr) -> pl.Expr:
    """The ISO 4217 exponent of each row's currency (2 where the table does not know it)."""
    return currency.replace_strict(EXPONENTS, default=exponent(None), return_dtype=pl.Int64)


def to_minor(frame: pl.DataFrame, column: str, exp: pl.Expr, source: str, *,
             decimal_comma: bool = False, unit: str = "row") -> pl.Series:
    """Exact decimal → integer minor units, vectorised string arithmetic (never float).

    ``exp`` is each row's number of decimals allowed: the currency's exponent for major units,
    0 for values that already are minor units. Nulls stay null. Raises ``InputError`` naming the
    first bad row: not a number, or more decimals than allowed.
    """
    text = pl.col(column)
    if decimal_comma:  # `100,00` in a `;` report; a value with a dot keeps the dot's meaning
        text = pl.when(text.str.contains(r"\.")).then(text).otherwise(
            text.str.replace(",", ".", literal=True))
    parts = text.str.extract_groups(_DECIMAL)
    sign, whole, frac = (parts.struct.field(f) for f in ("1", "2", "3"))
    frac = frac.fill_null("")
    checked = frame.select(
        "source_row",
        value=pl.col(column),
        currency=pl.col("currency") if "currency" in frame.columns else pl.lit("", pl.String),
        exp=exp,
        decimals=frac.str.len_chars(),
        bad=text.is_not_null() & (whole.is_null() | ((whole == "") & (frac == ""))),
        minor=pl.when(text.is_null()).then(None).otherwise((
            pl.concat_str(pl.lit("0"), whole.fill_null("")).cast(pl.Int64, strict=False)
            * pl.lit(10, pl.Int64).pow(exp)
            + pl.concat_str(pl.lit("0"), frac.str.pad_end(exp, "0")).cast(pl.Int64, strict=False)
        ) * pl.when(sign == "-").then(-1).otherwise(1)),
    )
    bad = checked.filter(pl.col("bad"))
    if bad.height:
        row = bad.row(0, named=True)
        raise InputError(f"{source} {unit} {row['source_row']}, column {column}: {row['value']!r} "
                         f"is not a decimal amount (e.g. 100.00): correct the value"
                         f"{_more(bad.height)}.")
    over = checked.filter(pl.col("value").is_not_null() & (pl.col("decimals") > pl.col("exp")))
    if over.height:
        row = over.row(0, named=True)
        allowed = (f"{row['currency']} has {row['exp']}" if unit == "row"
                   else "Settlements API amounts are integer minor units")
        raise InputError(f"{source} {unit} {row['source_row']}, column {column}: "
                         f"{row['value']!r} has {row['decimals']} decimal(s) but {allowed}: "
                         f"correct the value (amounts are never rounded){_more(over.height)}.")
    return checked["minor"].alias(column)


def _finish(frame: pl.DataFrame, source: str, unit: str) -> pl.DataFrame:
    """Common tail of both formats: dates, type, magnitude and signed payout contribution."""
    type_ = pl.col("type").str.to_uppercase()
    direction = type_.replace_strict(DIRECTION, default=None, return_dtype=pl.Int64)
    # CORRECTION and unknown types keep the input's sign; the rest take the type's direction.
    signed = pl.when(direction.is_null()).then(pl.col("amount")).otherwise(
        direction * pl.col("amount").abs())
    frame = frame.with_columns(
        type=type_,
        payout_amount=signed,
        amount=pl.col("amount").abs(),
        payout_date=_date(frame, "payout_date", source, unit),
        source_file=pl.lit(source),
    )
    return frame.select([pl.col(c).cast(t) for c, t in SCHEMA.items()])


def _date(frame: pl.DataFrame, column: str, source: str, unit: str) -> pl.Series:
    """An ISO date or datetime string → Date; anything else names its row."""
    text = frame[column].cast(pl.String)
    parsed = text.str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
    bad = frame.filter(text.is_not_null() & parsed.is_null())
    if bad.height:
        raise InputError(f"{source} {unit} {bad['source_row'][0]}, column {column}: "
                         f"{bad[column][0]!r} is not a date: write it as YYYY-MM-DD"
                         f"{_more(bad.height)}.")
    return parsed


def _empty() -> pl.DataFrame:
    return pl.DataFrame(schema=SCHEMA)


# --- Settlements API JSON ----------------------------------------------------------------------

def parse_transactions_json(data: bytes, source: str) -> pl.DataFrame:
    """Settlements API JSON (minor units) → the normalised frame."""
    try:
        docs = list(_json_documents(data.decode("utf-8-sig")))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{source} is not valid JSON ({exc}): give the body of "
                         f"/settlements/v1/transactions as saved, or a CSV payout report.") from exc
    transactions: list[dict[str, Any]] = []
    payouts: list[dict[str, Any]] = []
    for doc in docs:
        items, found = _transactions_of(doc)
        transactions.extend(items)
        if isinstance(doc, dict):
            payouts.extend(p for p in doc.get("payouts") or () if isinstance(p, dict))
            if "payment_reference" in doc and "totals" in doc:  # one /payouts/{ref} body
                payouts.append(doc)
        if not found and not (isinstance(doc, dict) and ("payouts" in doc or "totals" in doc)):
            raise InputError(f"{source} holds a JSON document that is neither a transactions "
                             f"page, a list of transactions nor payouts: give the body of "
                             f"/settlements/v1/transactions.")
    fields = {ALIASES.get(k, k) for t in transactions for k in t}
    text_schema = {name: pl.String for name in (*STRING_FIELDS, "amount", "vat_amount",
                                                 "payout_date", "total_settlement_amount")}
    # Every field as text first: the API's integers, and any string a proxy turned them into,
    # then go through the same exact conversion as the CSV's decimals (with 0 decimals allowed).
    frame = pl.from_dicts([{ALIASES.get(k, k): v for k, v in t.items()} for t in transactions],
                          schema=text_schema)
    frame = (frame.with_row_index("source_row", offset=1)
             .with_columns(pl.col("source_row").cast(pl.Int64),
                           pl.col(STRING_FIELDS).str.strip_chars())
             .with_columns(pl.col("currency").str.to_uppercase()))
    if transactions and not {"amount", "type"} <= fields:
        raise InputError(f"{source}: transactions have no 'amount' or 'type' field: is this "
                         f"the body of /settlements/v1/transactions?")
    _check_filled(frame, source, "transaction")
    zero = pl.lit(0, pl.Int64)
    frame = frame.with_columns(
        amount=to_minor(frame, "amount", zero, source, unit="transaction"),
        vat_amount=to_minor(frame, "vat_amount", zero, source, unit="transaction"),
        total_settlement_amount=to_minor(frame, "total_settlement_amount", zero, source,
                                         unit="transaction"),
    )
    frame = _finish(frame, source, "transaction")
    return _with_payouts(frame, payouts, source)


def _json_documents(text: str) -> Iterable[Any]:
    """Every JSON value in ``text``: one document, several concatenated, or one per line."""
    decoder = json.JSONDecoder()
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= end:
            return
        value, pos = decoder.raw_decode(text, pos)
        yield value


def _transactions_of(doc: Any) -> tuple[list[dict[str, Any]], bool]:
    if isinstance(doc, list):
        return [t for t in doc if isinstance(t, dict)], True
    if isinstance(doc, dict):
        if isinstance(doc.get("transactions"), list):
            return [t for t in doc["transactions"] if isinstance(t, dict)], True
        if "amount" in doc and "type" in doc:  # one transaction per line (NDJSON)
            return [doc], True
    return [], False


def _with_payouts(frame: pl.DataFrame, payouts: Sequence[dict[str, Any]],
                  source: str) -> pl.DataFrame:
    """Fill ``payout_date`` and ``total_settlement_amount`` from payout documents."""
    if not payouts:
        return frame
    rows = [{
        "payment_reference": str(p.get("payment_reference") or ""),
        "p_date": str(p.get("payout_date") or "") or None,
        "p_total": (p.get("totals") or {}).get("settlement_amount",
                                               p.get("total_settlement_amount")),
    } for p in payouts]
    table = pl.from_dicts(rows, schema={"payment_reference": pl.String, "p_date": pl.String,
                                        "p_total": pl.String})
    table = table.with_row_index("source_row", offset=1).with_columns(
        pl.col("source_row").cast(pl.Int64))
    table = table.with_columns(
        p_date=_date(table, "p_date", f"{source} payouts", "payout"),
        p_total=to_minor(table, "p_total", pl.lit(0, pl.Int64), f"{source} payouts",
                         unit="payout"),
    ).unique("payment_reference", keep="last").drop("source_row")
    return (frame.join(table, on="payment_reference", how="left", nulls_equal=False)
            .with_columns(payout_date=pl.coalesce("payout_date", "p_date"),
                          total_settlement_amount=pl.coalesce("total_settlement_amount",
                                                              "p_total"))
            .drop("p_date", "p_total"))



# --- fetching from the Settlements API ---------------------------------------------------------

PAYOUTS_PATH = "/settlements/v1/payouts"
TRANSACTIONS_PATH = "/settlements/v1/transactions"
PAGE_SIZE = 500  # the API's maximum


class JsonGetter(Protocol):
    """What fetching needs of ``etl.client.ApiClient``."""

    async def get_json(self, path: str,
                       params: dict[str, Any] | None = None) -> dict[str, Any]: ...


async def fetch_settlements(client: JsonGetter, since: date,
                            until: date | None = None) -> dict[str, list[dict[str, Any]]]:
    """Every payout dated ``since``..``until`` (inclusive) and all of their transactions, as one
    document ``{"payouts": [...], "transactions": [...]}`` that ``read_settlements`` reads."""
    params: dict[str, Any] = {"start_date": since.isoformat()}
    if until is not None:
        params["end_date"] = until.isoformat()
    payouts = await _all_pages(client, PAYOUTS_PATH, "payouts", params)
    transactions: list[dict[str, Any]] = []
    for payout in payouts:
        ref = payout.get("payment_reference")
        if ref:
            transactions += await _all_pages(client, TRANSACTIONS_PATH, "transactions",
                                             {"payment_reference": ref})
    return {"payouts": payouts, "transactions": transactions}


async def _all_pages(client: JsonGetter, path: str, key: str,
                     params: dict[str, Any]) -> list[dict[str, Any]]:
    """Follow ``offset`` while ``pagination`` has a ``next`` (or ``total`` says more)."""
    rows: list[dict[str, Any]] = []
    offset = 0
    while True:
        body = await client.get_json(path, {**params, "size": PAGE_SIZE, "offset": offset})
        page = body.get(key) or []
        rows.extend(page)
        pagination = body.get("pagination") or {}
        offset += len(page)
        total = pagination.get("total")
        if pagination.get("next"):
            more = True
        elif total is not None:
            more = offset < int(total)
        else:  # no pagination block: a full page may have a successor
            more = not pagination and len(page) == PAGE_SIZE
        if not page or not more:
            return rows


def write_settlements_json(document: dict[str, Any], path: Path) -> Path:
    """Write a fetched document atomically (the report module's temp-file-and-rename)."""
    from etl.results import write_atomic  # the one atomic writer; imported only to write

    text = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path
