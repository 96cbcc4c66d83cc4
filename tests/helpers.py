"""Small builders shared by the tests: write a shipment file from rows, run the planner."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from etl.plan import Plan, plan_captures
from etl.read import read_shipments
from etl.validate import validate_shipments

LINE = {"order_id": "o1", "capture_reference": "s1", "name": "Shirt", "quantity": 2,
        "unit_price": 1000, "total_amount": 2000, "currency": "EUR"}


def line(**kw: Any) -> dict[str, Any]:
    return {**LINE, **kw}


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows as text, as an export would write them (None → empty cell)."""
    cols: list[str] = []
    for r in rows:
        cols += [c for c in r if c not in cols]
    df = pl.DataFrame([{c: (None if r.get(c) is None else str(r[c])) for c in cols}
                       for r in rows], schema={c: pl.String for c in cols})
    df.write_csv(path)
    return path


def plan_rows(tmp_path: Path, rows: list[dict[str, Any]], amounts: str = "minor",
              name: str = "in.csv") -> Plan:
    path = write_csv(tmp_path / name, rows)
    return plan_captures(validate_shipments(read_shipments([str(path)]), amounts))  # type: ignore[arg-type]


def status_of(plan: Plan, order_id: str = "o1", ref: str = "s1") -> str:
    row = plan.captures.filter((pl.col("order_id") == order_id)
                               & (pl.col("capture_reference") == ref))
    assert row.height == 1, row
    return str(row["status"][0])


def rules_of(plan: Plan, order_id: str = "o1", ref: str = "s1") -> set[str]:
    f = plan.failures.filter((pl.col("order_id") == order_id)
                             & (pl.col("capture_reference") == ref))
    return set(f["rule"].to_list())
