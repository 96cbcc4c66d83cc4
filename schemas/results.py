"""The results file's contract: one row per capture of the input (product.md § Results file)."""

from __future__ import annotations

from typing import Annotated

import pandera.polars as pa
import polars as pl

from etl.model import STATUSES

RESULT_COLUMNS = (
    "run_id", "order_id", "capture_reference", "idempotency_key", "status", "captured_amount",
    "currency", "order_line_count", "http_status", "capture_id", "capture_location",
    "correlation_id", "error_code", "error_messages", "attempts", "first_attempt_at",
    "completed_at", "source_file", "source_rows",
)

UTC_TS = pl.Datetime("us", "UTC")

RESULT_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(), "order_id": pl.String(), "capture_reference": pl.String(),
    "idempotency_key": pl.String(), "status": pl.String(), "captured_amount": pl.Int64(),
    "currency": pl.String(), "order_line_count": pl.Int64(), "http_status": pl.Int64(),
    "capture_id": pl.String(), "capture_location": pl.String(), "correlation_id": pl.String(),
    "error_code": pl.String(), "error_messages": pl.String(), "attempts": pl.Int64(),
    "first_attempt_at": UTC_TS, "completed_at": UTC_TS, "source_file": pl.String(),
    "source_rows": pl.String(),
}


class Results(pa.DataFrameModel):
    """Checked before every write: a results file never carries an unknown status or no key."""

    run_id: str = pa.Field(nullable=False)
    # Null only on an invalid capture whose input row lacked it (checked below).
    order_id: str = pa.Field(nullable=True)
    capture_reference: str = pa.Field(nullable=True)
    idempotency_key: str = pa.Field(nullable=False, str_length={"min_value": 36, "max_value": 36})
    status: str = pa.Field(nullable=False, isin=list(STATUSES))
    captured_amount: pl.Int64 = pa.Field(nullable=True)
    currency: str = pa.Field(nullable=True)
    order_line_count: pl.Int64 = pa.Field(nullable=True, ge=0)
    http_status: pl.Int64 = pa.Field(nullable=True, ge=100, le=599)
    capture_id: str = pa.Field(nullable=True)
    capture_location: str = pa.Field(nullable=True)
    correlation_id: str = pa.Field(nullable=True)
    error_code: str = pa.Field(nullable=True)
    error_messages: str = pa.Field(nullable=True)
    attempts: pl.Int64 = pa.Field(nullable=False, ge=0)
    first_attempt_at: Annotated[pl.Datetime, "us", "UTC"] = pa.Field(nullable=True)
    completed_at: Annotated[pl.Datetime, "us", "UTC"] = pa.Field(nullable=True)
    source_file: str = pa.Field(nullable=False)
    source_rows: str = pa.Field(nullable=True)

    @pa.check("capture_id", name="captured_has_capture_id")
    @classmethod
    def captured_has_id(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """A captured row always carries the provider's capture id."""
        return data.lazyframe.select(
            pl.col("capture_id").is_not_null()
            | ~pl.col("status").is_in(["captured", "already_captured"]))

    @pa.dataframe_check(name="identity_present_unless_invalid")
    @classmethod
    def identity_present(cls, data: pa.PolarsData) -> pl.LazyFrame:
        """Only an invalid capture may lack its order_id or capture_reference."""
        return data.lazyframe.select(
            (pl.col("order_id").is_not_null() & pl.col("capture_reference").is_not_null())
            | (pl.col("status") == "invalid"))

    class Config:
        strict = "filter"
        ordered = False
