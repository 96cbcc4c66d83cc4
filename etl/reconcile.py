"""Reconcile: our captures × the provider's settlement transactions → buckets and totals.

Where it sits: the last stage. ``read_captures`` reads results files (the one piece of I/O here);
``select_captures`` turns any results-shaped frame into the captures frame (the seam where the
ledger will plug in); ``reconcile`` is pure: two frames and a date in, a ``Reconciliation`` out.
``etl.settlements`` reads the settlement side, ``etl.report`` writes what this computes.

Matching (api.md § Settlements, Joining), all joins, no per-row Python:

* a SALE row belongs to the capture with its ``capture_id``; failing that, to the capture whose
  ``(order_id, capture_reference)`` equals its ``(order_id, merchant_capture_reference)``;
* every other row (FEE, RETURN, REVERSAL, …) is tied by ``capture_id`` when it has one that a
  detail row carries (FEEs do), else by ``order_id`` (RETURN and REVERSAL rows have no capture id).
  An order-level row is shown on the order's first capture, so an order with several captures does
  not count its return twice. Rows tied to nothing are kept in ``unlinked``.

Buckets (``match_status``): ``matched`` (settled == captured, same currency), ``amount_mismatch``,
``not_settled`` (no SALE yet; ``age_days`` since the capture completed), and ``not_ours`` (a SALE
with no capture of ours). All amounts are integer minor units; fees, returns and reversals are
magnitudes, ``other_amount`` and ``net`` are signed contributions to the payout.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

import pandera.polars as pa
import polars as pl

from etl.errors import InputError
from schemas.settlements import MATCH_STATUSES, ReconcileDetail

MatchStatus = Literal["matched", "amount_mismatch", "not_settled", "not_ours"]
EXCEPTION_MATCH_STATUSES: frozenset[str] = frozenset({"amount_mismatch", "not_settled",
                                                      "not_ours"})
CAPTURED_STATUSES = ("captured", "already_captured")

CAPTURE_COLUMNS: dict[str, pl.DataType] = {
    "order_id": pl.String(),
    "capture_reference": pl.String(),
    "capture_id": pl.String(),
    "captured_amount": pl.Int64(),
    "currency": pl.String(),
    "completed_at": pl.Datetime("us", "UTC"),
    "run_id": pl.String(),
    "source_file": pl.String(),
}
REQUIRED_RESULT_COLUMNS = ("order_id", "capture_reference", "status", "captured_amount",
                           "capture_id")
DETAIL_COLUMNS = (
    "order_id", "capture_id", "capture_reference", "match_status", "captured_amount",
    "settled_amount", "difference", "fee_amount", "return_amount", "reversal_amount",
    "other_amount", "currency", "payment_reference", "payout_date", "completed_at", "age_days",
    "sale_count", "run_id",
)
# Settlement types with a column of their own; every other non-SALE type goes to "other".
AMOUNT_KINDS = {"FEE": "fee_amount", "RETURN": "return_amount", "REVERSAL": "reversal_amount"}
TOTAL_KINDS = {"FEE": "fees", "RETURN": "returns", "REVERSAL": "reversals"}


@dataclass(frozen=True)
class Reconciliation:
    """What reconcile found. Every frame's amounts are integer minor units."""

    detail: pl.DataFrame  # one row per capture of ours and per SALE not ours (DETAIL_COLUMNS)
    by_currency: pl.DataFrame
    by_payout: pl.DataFrame
    daily: pl.DataFrame  # currency, day, captured, settled: the report's chart
    unlinked: pl.DataFrame  # non-SALE settlement rows tied to no detail row
    as_of: date

    @property
    def counts(self) -> dict[str, int]:
        """Detail rows per match status; every status present."""
        got = dict(self.detail.group_by("match_status").len().iter_rows())
        return {status: int(got.get(status, 0)) for status in MATCH_STATUSES}

    @property
    def exceptions(self) -> pl.DataFrame:
        return self.detail.filter(pl.col("match_status") != "matched")

    @property
    def has_exceptions(self) -> bool:
        return self.exceptions.height > 0

    @property
    def exit_code(self) -> int:
        """0 when everything matched, 3 when there are exceptions (product.md § Exit codes)."""
        return 3 if self.has_exceptions else 0


# --- the captures side -------------------------------------------------------------------------

def read_captures(paths: Iterable[str | Path]) -> pl.DataFrame:
    """Results files (``.parquet``, ``.csv``, ``.ndjson``/``.jsonl``) → the captures frame:
    only ``captured`` / ``already_captured`` rows, one per capture, the latest winning."""
    frames = [_read_results_file(Path(p), i) for i, p in enumerate(paths)]
    if not frames:
        raise InputError("no results file given: pass --captures RESULTS (the run's results).")
    return select_captures(pl.concat(frames, how="diagonal_relaxed"))


def read_ledger_captures(path: Path) -> pl.DataFrame:
    """The ledger's captured captures → the captures frame (the run's own record, no file)."""
    from etl.ledger import Ledger  # the one sqlite3 user; only needed for this input

    if not path.exists():
        raise InputError(f"no ledger at {path}: pass the --ledger the runs used.")
    with Ledger(path) as ledger:
        rows = ledger.captured_rows()
    frame = pl.DataFrame(rows, schema={**CAPTURE_COLUMNS, "status": pl.String()})
    return select_captures(frame)


def _read_results_file(path: Path, index: int) -> pl.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pl.read_parquet(path)
        elif suffix == ".csv":
            frame = pl.read_csv(path, infer_schema=False)
        elif suffix in (".ndjson", ".jsonl"):
            frame = pl.read_ndjson(path, infer_schema_length=None)
        else:
            raise InputError(f"results file {path} has an unknown format "
                             f"{suffix or '(no suffix)'!r}: give .parquet, .csv or .ndjson.")
    except OSError as exc:
        raise InputError(f"cannot read results file {path}: {exc.strerror or exc}.") from exc
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"results file {path} is not a readable {suffix[1:]} file ({exc}): "
                         f"give the results file bulkcapture run wrote.") from exc
    missing = [c for c in REQUIRED_RESULT_COLUMNS if c not in frame.columns]
    if missing:
        raise InputError(f"results file {path} has no column {', '.join(missing)}: give a "
                         f"results file written by bulkcapture run.")
    frame = frame.with_row_index("source_row", offset=1).with_columns(
        pl.col("source_row").cast(pl.Int64), _file_index=pl.lit(index, pl.Int64))
    if "source_file" in frame.columns:  # the run's own column names its shipment input
        frame = frame.drop("source_file")
    frame = frame.with_columns(source_file=pl.lit(str(path)))
    return _typed_results(frame, str(path))


def _typed_results(frame: pl.DataFrame, source: str) -> pl.DataFrame:
    """Cast a results file's columns; a value that does not cast names its row."""
    out = frame.with_columns(
        pl.col(c).cast(pl.String) for c in ("order_id", "capture_reference", "status",
                                            "capture_id", "currency", "run_id")
        if c in frame.columns)
    amount = out["captured_amount"]
    if amount.dtype != pl.Int64:
        cast = amount.cast(pl.String).str.strip_chars().cast(pl.Int64, strict=False)
        bad = out.filter(amount.is_not_null() & cast.is_null())
        if bad.height:
            raise InputError(f"results file {source} row {bad['source_row'][0]}, column "
                             f"captured_amount: {bad['captured_amount'][0]!r} is not an integer "
                             f"in minor units: give the results file bulkcapture run wrote.")
        out = out.with_columns(captured_amount=cast)
    if "completed_at" in out.columns:
        out = out.with_columns(completed_at=_utc(out, "completed_at", source))
    return out


def _utc(frame: pl.DataFrame, column: str, source: str) -> pl.Series:
    col = frame[column]
    if isinstance(col.dtype, pl.Datetime):
        if col.dtype.time_zone is None:  # results are written in UTC
            return col.dt.replace_time_zone("UTC").dt.cast_time_unit("us")
        return col.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    text = col.cast(pl.String).str.strip_chars().str.replace(r"(?i)z$", "+00:00")
    parsed = pl.select(pl.coalesce(
        *[text.str.to_datetime(f"%Y-%m-%d{sep}%H:%M:%S%.f%:z", strict=False, time_zone="UTC")
          for sep in ("T", " ")],
        *[text.str.to_datetime(f"%Y-%m-%d{sep}%H:%M:%S%.f", strict=False)
          .dt.replace_time_zone("UTC") for sep in ("T", " ")],
    )).to_series()
    bad = frame.filter(text.is_not_null() & parsed.is_null())
    if bad.height:
        raise InputError(f"results file {source} row {bad['source_row'][0]}, column {column}: "
                         f"{bad[column][0]!r} is not a UTC timestamp (ISO 8601): give the "
                         f"results file bulkcapture run wrote.")
    return parsed.dt.cast_time_unit("us").alias(column)


def select_captures(results: pl.DataFrame) -> pl.DataFrame:
    """Pure: a results-shaped frame → one row per capture of ours (``CAPTURE_COLUMNS``).

    Keeps ``captured`` / ``already_captured``; a capture seen several times (re-runs, several
    results files) keeps its latest row by ``completed_at``, then by file and row order. Deduped
    on the identity ``(order_id, capture_reference)``, then on ``capture_id``.
    """
    frame = results
    for name in ("_file_index", "source_row"):
        if name not in frame.columns:
            frame = frame.with_columns(pl.lit(0, pl.Int64).alias(name))
    if "status" in frame.columns:
        frame = frame.filter(pl.col("status").is_in(CAPTURED_STATUSES))
    frame = frame.with_columns(
        pl.lit(None, dtype).alias(name) for name, dtype in CAPTURE_COLUMNS.items()
        if name not in frame.columns)
    frame = (frame.sort(["completed_at", "_file_index", "source_row"], nulls_last=False)
             .unique(["order_id", "capture_reference"], keep="last", maintain_order=True))
    last_of_id = pl.int_range(pl.len()).over("capture_id") == pl.len().over("capture_id") - 1
    frame = frame.filter(pl.col("capture_id").is_null() | last_of_id)
    return frame.select(pl.col(name).cast(dtype) for name, dtype in CAPTURE_COLUMNS.items())


# --- matching ----------------------------------------------------------------------------------

def reconcile(captures: pl.DataFrame, settlements: pl.DataFrame,
              as_of: date | None = None) -> Reconciliation:
    """Match captures (``select_captures``'s shape) with settlement transactions
    (``etl.settlements``' shape). ``as_of`` dates the age of open captures; default today, UTC."""
    as_of = as_of or datetime.now(UTC).date()
    caps = select_captures(captures).with_row_index("_cap")
    sett = settlements.with_row_index("_tx")
    sales = sett.filter(pl.col("type") == "SALE")
    links = _link_sales(caps, sales)

    settled = (links.join(sales, on="_tx")
               .sort(["payout_date", "_tx"], nulls_last=True)
               .group_by("_cap")
               .agg(settled_amount=pl.col("amount").sum(),
                    sale_count=pl.len().cast(pl.Int64),
                    sale_currency=pl.col("currency").first(),
                    sale_capture_id=pl.col("capture_id").drop_nulls().first(),
                    payment_reference=pl.col("payment_reference").first(),
                    payout_date=pl.col("payout_date").first()))
    ours = caps.join(settled, on="_cap", how="left").with_columns(
        capture_id=pl.coalesce("capture_id", "sale_capture_id"),
        currency=pl.coalesce("currency", "sale_currency"),
        difference=pl.col("settled_amount") - pl.col("captured_amount"),
        match_status=pl.when(pl.col("settled_amount").is_null()).then(pl.lit("not_settled"))
        .when((pl.col("settled_amount") == pl.col("captured_amount"))
              & (pl.col("sale_currency") == pl.col("currency")))
        .then(pl.lit("matched")).otherwise(pl.lit("amount_mismatch")),
    )
    not_ours = sales.join(links, on="_tx", how="anti").select(
        "order_id", "capture_id", "payment_reference", "payout_date", "currency",
        capture_reference="merchant_capture_reference",
        settled_amount="amount",
        sale_count=pl.lit(1, pl.Int64),
        match_status=pl.lit("not_ours"),
    )
    detail = pl.concat([ours, not_ours], how="diagonal_relaxed").with_row_index("_row")
    tied, unlinked = _tie_other_rows(detail, sett.filter(pl.col("type") != "SALE"))
    open_ = pl.col("match_status").is_in(["not_settled", "amount_mismatch"])
    detail = (detail.join(tied, on="_row", how="left")
              .with_columns(pl.col("fee_amount", "return_amount", "reversal_amount",
                                   "other_amount").fill_null(0),
                            age_days=pl.when(open_).then(
                                (pl.lit(as_of) - pl.col("completed_at").dt.date()).dt.total_days()
                            ).cast(pl.Int64))
              .sort("_row")
              .select(pl.col(c) for c in DETAIL_COLUMNS))
    detail = _validated(detail)
    return Reconciliation(
        detail=detail,
        by_currency=_by_currency(detail, caps, sett),
        by_payout=_by_payout(detail, sett),
        daily=_daily(caps, sales),
        unlinked=unlinked.drop("_tx"),
        as_of=as_of,
    )


def _link_sales(caps: pl.DataFrame, sales: pl.DataFrame) -> pl.DataFrame:
    """(_cap, _tx) pairs: SALE rows to captures by capture_id, else by (order_id, reference)."""
    by_id = (caps.filter(pl.col("capture_id").is_not_null()).select("_cap", "capture_id")
             .join(sales.filter(pl.col("capture_id").is_not_null()).select("_tx", "capture_id"),
                   on="capture_id")
             .select("_cap", "_tx"))
    by_ref = (caps.join(by_id, on="_cap", how="anti")
              .select("_cap", "order_id", "capture_reference")
              .join(sales.join(by_id, on="_tx", how="anti")
                    .select("_tx", "order_id", "merchant_capture_reference"),
                    left_on=["order_id", "capture_reference"],
                    right_on=["order_id", "merchant_capture_reference"])
              .select("_cap", "_tx"))
    return pl.concat([by_id, by_ref])


def _tie_other_rows(detail: pl.DataFrame,
                    others: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Non-SALE rows → per-detail-row amounts, and the rows that belong to no detail row."""
    first_by = {
        key: detail.filter(pl.col(key).is_not_null()).group_by(key).agg(pl.col("_row").min())
        for key in ("capture_id", "order_id")
    }
    by_id = others.join(first_by["capture_id"], on="capture_id")
    by_order = (others.join(by_id, on="_tx", how="anti")
                .join(first_by["order_id"], on="order_id"))
    linked = pl.concat([by_id, by_order])
    kind = pl.col("type")
    tied = linked.group_by("_row").agg(
        *[pl.col("amount").filter(kind == k).sum().alias(name) for k, name in AMOUNT_KINDS.items()],
        other_amount=pl.col("payout_amount").filter(~kind.is_in(list(AMOUNT_KINDS))).sum(),
    )
    return tied, others.join(linked, on="_tx", how="anti")


def _validated(detail: pl.DataFrame) -> pl.DataFrame:
    try:
        return ReconcileDetail.validate(detail, lazy=True)
    except pa.errors.SchemaErrors as exc:  # a bug, or a captures frame out of contract
        cases = exc.failure_cases.head(3).to_dicts()
        raise InputError(f"the reconcile detail breaks its schema: {cases}: check the captures "
                         f"frame (negative captured_amount?).") from exc


# --- totals ------------------------------------------------------------------------------------

def _settlement_sums() -> list[pl.Expr]:
    """settled, fees, returns, reversals, other, net over a group of settlement rows."""
    kind = pl.col("type")
    return [
        pl.col("amount").filter(kind == "SALE").sum().alias("settled"),
        *[pl.col("amount").filter(kind == k).sum().alias(name) for k, name in TOTAL_KINDS.items()],
        pl.col("payout_amount").filter(~kind.is_in(["SALE", *AMOUNT_KINDS])).sum().alias("other"),
        pl.col("payout_amount").sum().alias("net"),
    ]


def _open_sums() -> list[pl.Expr]:
    status = pl.col("match_status")
    open_ = status.is_in(["not_settled", "amount_mismatch"])
    return [
        (status == "matched").sum().cast(pl.Int64).alias("matched_count"),
        open_.sum().cast(pl.Int64).alias("open_count"),
        (pl.when(status == "not_settled").then(pl.col("captured_amount"))
         .when(status == "amount_mismatch").then(pl.col("difference").abs())
         .otherwise(0)).sum().alias("open_amount"),
        (status == "not_ours").sum().cast(pl.Int64).alias("not_ours_count"),
        pl.col("settled_amount").filter(status == "not_ours").sum().alias("not_ours_amount"),
    ]


def _by_currency(detail: pl.DataFrame, caps: pl.DataFrame, sett: pl.DataFrame) -> pl.DataFrame:
    """Per currency: what we captured, what the reports settled, and what is open."""
    captured = caps.group_by("currency").agg(
        captures=pl.len().cast(pl.Int64), captured=pl.col("captured_amount").sum())
    settled = sett.group_by("currency").agg(_settlement_sums())
    open_ = detail.group_by("currency").agg(_open_sums())
    keys = pl.concat([f.select("currency") for f in (captured, settled, open_)]).unique()
    return (keys.join(captured, on="currency", how="left", nulls_equal=True)
            .join(settled, on="currency", how="left", nulls_equal=True)
            .join(open_, on="currency", how="left", nulls_equal=True)
            .with_columns(pl.exclude("currency").fill_null(0))
            .sort("currency", nulls_last=True))


def _by_payout(detail: pl.DataFrame, sett: pl.DataFrame) -> pl.DataFrame:
    """Per payout: its rows summed, the reported total, and the difference between the two."""
    keys = ["payment_reference", "currency"]
    rows = sett.group_by(keys).agg(
        pl.col("payout_date").max(),
        *_settlement_sums(),
        pl.col("total_settlement_amount").drop_nulls().first().alias("reported_total"),
    )
    ours = detail.filter(pl.col("payment_reference").is_not_null()).group_by(keys).agg(
        pl.col("captured_amount").sum().alias("captured"), *_open_sums())
    return (rows.join(ours, on=keys, how="left", nulls_equal=True)
            .with_columns(pl.col("captured", "matched_count", "open_count", "open_amount",
                                 "not_ours_count", "not_ours_amount").fill_null(0),
                          payout_difference=pl.col("net") - pl.col("reported_total"))
            .select("payment_reference", "currency", "payout_date", "captured", "settled",
                    "fees", "returns", "reversals", "other", "net", "reported_total",
                    "payout_difference", "matched_count", "open_count", "open_amount",
                    "not_ours_count", "not_ours_amount")
            .sort("payout_date", "payment_reference", nulls_last=True))


def _daily(caps: pl.DataFrame, sales: pl.DataFrame) -> pl.DataFrame:
    """Per currency and day: captured (by completion day) and settled (by payout day)."""
    captured = (caps.filter(pl.col("completed_at").is_not_null())
                .group_by("currency", day=pl.col("completed_at").dt.date())
                .agg(captured=pl.col("captured_amount").sum()))
    settled = (sales.filter(pl.col("payout_date").is_not_null())
               .group_by("currency", day=pl.col("payout_date"))
               .agg(settled=pl.col("amount").sum()))
    return (captured.join(settled, on=["currency", "day"], how="full", coalesce=True,
                          nulls_equal=True)
            .with_columns(pl.col("captured", "settled").fill_null(0))
            .sort("currency", "day", nulls_last=True))
