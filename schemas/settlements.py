"""Pandera models (polars backend) for reconcile's two frames.

``SettlementTransactions`` is what ``etl.settlements`` hands on: one row per settlement
transaction, amounts in integer minor units. ``ReconcileDetail`` is ``etl.reconcile``'s detail
table: one row per capture of ours, plus one per SALE that is not ours. Declarations only; the
modules that build the frames run them.
"""

from __future__ import annotations

from datetime import date

import pandera.polars as pa

MATCH_STATUSES = ("matched", "amount_mismatch", "not_settled", "not_ours")
CURRENCY_PATTERN = r"^[A-Z]{3}$"


class SettlementTransactions(pa.DataFrameModel):
    """The normalised settlement frame: CSV payout reports and API JSON alike."""

    source_file: str
    source_row: int = pa.Field(ge=1)
    payment_reference: str | None = pa.Field(nullable=True)
    payout_date: date | None = pa.Field(nullable=True)
    total_settlement_amount: int | None = pa.Field(nullable=True)
    type: str = pa.Field(str_matches=r"^[A-Z_]+$")
    detailed_type: str | None = pa.Field(nullable=True)
    amount: int = pa.Field(ge=0)  # magnitude; the direction is in payout_amount
    payout_amount: int
    currency: str = pa.Field(str_matches=CURRENCY_PATTERN)
    capture_id: str | None = pa.Field(nullable=True)
    order_id: str | None = pa.Field(nullable=True)
    merchant_capture_reference: str | None = pa.Field(nullable=True)
    vat_amount: int | None = pa.Field(nullable=True)

    class Config:
        strict = False  # the descriptive columns (short_order_id, vat_rate, …) ride along


class ReconcileDetail(pa.DataFrameModel):
    """One row per capture of ours and per SALE without one; amounts in minor units."""

    order_id: str | None = pa.Field(nullable=True)
    capture_id: str | None = pa.Field(nullable=True)
    capture_reference: str | None = pa.Field(nullable=True)
    match_status: str = pa.Field(isin=MATCH_STATUSES)
    captured_amount: int | None = pa.Field(nullable=True, ge=0)
    settled_amount: int | None = pa.Field(nullable=True, ge=0)
    difference: int | None = pa.Field(nullable=True)
    fee_amount: int = pa.Field(ge=0)
    return_amount: int = pa.Field(ge=0)
    reversal_amount: int = pa.Field(ge=0)
    other_amount: int
    currency: str | None = pa.Field(nullable=True)
    payment_reference: str | None = pa.Field(nullable=True)
    payout_date: date | None = pa.Field(nullable=True)
    age_days: int | None = pa.Field(nullable=True)

    class Config:
        strict = False
