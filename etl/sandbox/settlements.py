"""Settlements the sandbox pays out for the captures it made: transactions, payouts and the CSV
payout report (api.md § Settlements), so reconciliation can be shown end to end. Pure: computed
from a snapshot of ``SandboxState`` on every call.

What is generated
    Per capture: one SALE row (``detailed_type`` PURCHASE) and FEE rows, one per fee component:
    ``PURCHASE_FEE_PERCENTAGE`` (``fee_bps`` of the sale, rounded half up) and
    ``PURCHASE_FEE_FIXED`` (``fee_fixed``). A component that comes to 0 has no row.
    Payouts: one per currency per UTC capture day; ``payout_date`` is the next day at 00:00 UTC;
    ``payment_reference`` is deterministic: ``SBX-<capture day YYYYMMDD>-<currency>``. Every payout
    is visible at once (the sandbox does not wait for the payout date).

Sign convention (the provider's, as far as its docs show it: Klarna's "calculation of settlement
amount" table lists ``+ sale``, ``− fee``, ``− return``, ``− reversal``, ``+ commission`` ... i.e.
amounts are reported as magnitudes and the transaction type carries the direction):
    JSON ``transactions[].amount``   positive magnitude, integer minor units; ``type`` tells the
                                     direction (SALE adds, FEE/RETURN/REVERSAL subtract).
    JSON ``totals.*_amount``         positive magnitudes, minor units; ``settlement_amount`` is the
                                     signed net: sale − fee − return − reversal (+ commission ...).
    CSV ``amount``                   positive magnitude, major units with the currency's exponent
                                     (``12.50``), the same convention as JSON. With
                                     ``signed_csv_amounts`` (off by default) debit types get a
                                     leading ``-`` instead, for testing a parser against both.
    CSV ``total_settlement_amount``  the signed net payout in major units (= settlement_amount).

CSV report: delimiter ``;`` (``,`` on request), a header row, then one row per transaction, with
the payout summary columns repeated first; columns in ``CSV_COLUMNS`` order.
"""

from __future__ import annotations

import calendar
import csv
import io
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from etl.currency import exponent

if TYPE_CHECKING:
    from etl.sandbox.state import Capture, Order, SandboxState

CSV_COLUMNS = (
    "payment_reference", "payout_date", "total_settlement_amount",
    "type", "detailed_type", "amount", "posting_currency", "capture_id", "order_id",
    "merchant_capture_reference", "merchant_reference1", "merchant_reference2", "capture_date",
    "sale_date", "short_order_id", "purchase_country", "refund_id", "vat_rate", "vat_amount",
)
# Types booked against the merchant: subtracted from the payout (api.md § Settlements).
DEBIT_TYPES = frozenset({"FEE", "RETURN", "REVERSAL", "TAX", "CHARGE", "HOLDBACK"})
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 500


class BadQuery(ValueError):
    """A query parameter the provider would refuse with 400."""


def major(amount: int, currency: str) -> str:
    """Minor units as a major-unit decimal string: ``1250, EUR`` → ``12.50``."""
    exp = exponent(currency)
    sign = "-" if amount < 0 else ""
    whole, frac = divmod(abs(amount), 10**exp)
    return f"{sign}{whole}.{frac:0{exp}d}" if exp else f"{sign}{whole}"


def _day(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _date_param(value: str | None, name: str) -> str | None:
    if not value:
        return None
    day = value[:10]
    try:
        time.strptime(day, "%Y-%m-%d")
    except ValueError as exc:
        raise BadQuery(f"Bad value: {name} (expected an ISO 8601 date)") from exc
    return day


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[dict[str, Any]]
    total: int
    offset: int
    size: int
    next_offset: int | None


def paginate(rows: Sequence[dict[str, Any]], size: str | None, offset: str | None) -> Page:
    """One page of ``rows``: ``size`` ≤ 500 (default 20), ``offset`` ≥ 0."""
    try:
        n = DEFAULT_PAGE_SIZE if size is None else int(size)
        start = 0 if offset is None else int(offset)
    except ValueError as exc:
        raise BadQuery("Bad value: size and offset must be integers") from exc
    if not 1 <= n <= MAX_PAGE_SIZE:
        raise BadQuery(f"Bad value: size (must be between 1 and {MAX_PAGE_SIZE})")
    if start < 0:
        raise BadQuery("Bad value: offset (must be 0 or more)")
    end = start + n
    return Page(list(rows[start:end]), len(rows), start, n, end if end < len(rows) else None)


@dataclass(frozen=True)
class Ledger:
    """The settlement view of a set of captures: transactions grouped into payouts."""

    transactions_all: list[dict[str, Any]]
    payouts_all: list[dict[str, Any]]

    @classmethod
    def from_state(cls, state: SandboxState) -> Ledger:
        captures, orders = state.snapshot()
        return cls.build(captures, orders, fee_bps=state.fee_bps, fee_fixed=state.fee_fixed)

    @classmethod
    def build(cls, captures: Sequence[Capture], orders: dict[str, Order], *, fee_bps: int,
              fee_fixed: int) -> Ledger:
        txs: list[dict[str, Any]] = []
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for cap in sorted(captures, key=lambda c: c.captured_at):
            order = orders[cap.order_id]
            currency = order.purchase_currency
            day = _day(cap.captured_at)
            ref = f"SBX-{day.replace('-', '')}-{currency}"
            common = {
                "capture_id": cap.capture_id, "order_id": cap.order_id,
                "merchant_capture_reference": cap.reference,
                "merchant_reference1": order.merchant_reference1,
                "merchant_reference2": order.merchant_reference2,
                "currency_code": currency, "capture_date": _iso(cap.captured_at),
                "sale_date": _iso(order.created_at), "payment_reference": ref,
                "short_order_id": order.short_order_id,
                "purchase_country": order.purchase_country, "refund_id": None,
                "vat_rate": None, "vat_amount": None,
            }
            rows = [{"amount": cap.captured_amount, "type": "SALE", "detailed_type": "PURCHASE",
                     **common}]
            pct = (cap.captured_amount * fee_bps + 5_000) // 10_000  # half up
            for detailed, fee in (("PURCHASE_FEE_PERCENTAGE", pct),
                                  ("PURCHASE_FEE_FIXED", fee_fixed if cap.captured_amount else 0)):
                if fee:
                    rows.append({"amount": fee, "type": "FEE", "detailed_type": detailed,
                                 **common})
            txs.extend(rows)
            groups.setdefault((ref, currency), []).extend(rows)
        payouts = [cls._payout(ref, currency, rows) for (ref, currency), rows in groups.items()]
        return cls(txs, payouts)

    @staticmethod
    def _payout(ref: str, currency: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        by_type: dict[str, int] = {}
        for row in rows:
            by_type[row["type"]] = by_type.get(row["type"], 0) + row["amount"]
        net = sum(-v if t in DEBIT_TYPES else v for t, v in by_type.items())
        capture_day = time.strptime(ref.split("-")[1], "%Y%m%d")
        payout_ts = calendar.timegm(capture_day) + 86_400
        return {
            "payment_reference": ref,
            "payout_date": _iso(payout_ts),
            "currency_code": currency,
            "merchant_settlement_type": "NET",
            "totals": {
                "sale_amount": by_type.get("SALE", 0),
                "fee_amount": by_type.get("FEE", 0),
                "return_amount": by_type.get("RETURN", 0),
                "reversal_amount": by_type.get("REVERSAL", 0),
                "commission_amount": 0, "tax_amount": 0, "charge_amount": 0,
                "credit_amount": 0, "holdback_amount": 0, "release_amount": 0,
                "repay_amount": 0, "fee_correction_amount": 0, "fee_refund_amount": 0,
                "deposit_amount": 0,
                "settlement_amount": net,
            },
            "transactions": f"/settlements/v1/transactions?payment_reference={ref}",
        }

    def transactions(self, *, payment_reference: str | None = None, order_id: str | None = None,
                     start_date: str | None = None,
                     end_date: str | None = None) -> list[dict[str, Any]]:
        """Transactions filtered like ``GET /settlements/v1/transactions``; dates inclusive,
        on the capture day."""
        start, end = _date_param(start_date, "start_date"), _date_param(end_date, "end_date")
        return [t for t in self.transactions_all
                if (payment_reference is None or t["payment_reference"] == payment_reference)
                and (order_id is None or t["order_id"] == order_id)
                and (start is None or t["capture_date"][:10] >= start)
                and (end is None or t["capture_date"][:10] <= end)]

    def payouts(self, *, start_date: str | None = None, end_date: str | None = None,
                currency_code: str | None = None) -> list[dict[str, Any]]:
        """Payouts filtered like ``GET /settlements/v1/payouts``; dates on the payout date."""
        start, end = _date_param(start_date, "start_date"), _date_param(end_date, "end_date")
        return [p for p in self.payouts_all
                if (currency_code is None or p["currency_code"] == currency_code)
                and (start is None or p["payout_date"][:10] >= start)
                and (end is None or p["payout_date"][:10] <= end)]

    def payout(self, payment_reference: str) -> dict[str, Any] | None:
        return next((p for p in self.payouts_all
                     if p["payment_reference"] == payment_reference), None)

    def report_csv(self, payment_reference: str, *, delimiter: str = ";",
                   signed: bool = False) -> str | None:
        """The payout-with-transactions CSV report, or ``None`` for an unknown payout."""
        payout = self.payout(payment_reference)
        if payout is None:
            return None
        currency = payout["currency_code"]
        buf = io.StringIO()
        out = csv.writer(buf, delimiter=delimiter, lineterminator="\n")
        out.writerow(CSV_COLUMNS)
        summary = [payment_reference, payout["payout_date"],
                   major(payout["totals"]["settlement_amount"], currency)]
        for t in self.transactions(payment_reference=payment_reference):
            amount = -t["amount"] if signed and t["type"] in DEBIT_TYPES else t["amount"]
            out.writerow([*summary, t["type"], t["detailed_type"], major(amount, currency),
                          currency, t["capture_id"], t["order_id"],
                          t["merchant_capture_reference"] or "", t["merchant_reference1"] or "",
                          t["merchant_reference2"] or "", t["capture_date"], t["sale_date"],
                          t["short_order_id"], t["purchase_country"], t["refund_id"] or "",
                          "" if t["vat_rate"] is None else t["vat_rate"],
                          "" if t["vat_amount"] is None else major(t["vat_amount"], currency)])
        return buf.getvalue()
