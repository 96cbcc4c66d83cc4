"""Regenerate the sample data: ``python sample_data/generate.py`` (deterministic).

Writes a realistic night's export in CSV and Parquet (312 captures, some invalid for different
reasons), a nested-layout example, a column-mapping example, and an order book for the sandbox.
Large synthetic exports for tests and benchmarks come from ``python -m etl.synth``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from etl.synth import generate  # noqa: E402


def main() -> None:
    syn = generate(312, invalid_pct=6, seed=2026)
    night = syn.lines
    night.write_parquet(HERE / "shipments.parquet")
    # The CSV export also carries the kind of cell only text can: a typo and a decimal amount.
    text = night.with_columns(pl.all().cast(pl.String))
    text = text.with_columns(
        pl.when(pl.col("capture_reference") == "SHP-000000007").then(pl.lit("two"))
        .otherwise(pl.col("quantity")).alias("quantity"),
        pl.when(pl.col("capture_reference") == "SHP-000000011").then(pl.lit("49.90"))
        .otherwise(pl.col("unit_price")).alias("unit_price"),
    )
    text.write_csv(HERE / "shipments.csv")

    # Nested layout: one row per capture, order_lines and shipping_info as lists of structs.
    valid = night.join(syn.broken, on=["order_id", "capture_reference"], how="anti").head(40)
    pid = pl.struct(pl.lit("Acme").alias("brand"), pl.lit("Apparel > Outdoor").alias(
        "category_path"))
    nested = (valid.with_columns(pid.alias("product_identifiers"))
              .group_by("order_id", "capture_reference", "currency", maintain_order=True)
              .agg(pl.struct("name", "quantity", "unit_price", "total_discount_amount",
                             "total_amount", "tax_rate", "total_tax_amount", "type", "reference",
                             "product_identifiers").alias("order_lines"),
                   pl.struct("shipping_company", "shipping_method", "tracking_number").first()
                   .alias("shipping_info"))
              .with_columns(pl.concat_list("shipping_info").alias("shipping_info")))
    nested.write_ndjson(HERE / "nested.ndjson")
    nested.write_parquet(HERE / "nested.parquet")

    # An export with its own column names, and the map that fixes them.
    mapped = valid.head(20).rename({"order_id": "klarna_order_id",
                                    "capture_reference": "shipment_id",
                                    "name": "article", "quantity": "qty"})
    mapped.write_csv(HERE / "mapped_export.csv")
    (HERE / "columns.toml").write_text(
        "# --columns FILE: the export's own column names → bulkcapture's\n"
        "[columns]\n"
        'klarna_order_id = "order_id"\n'
        'shipment_id = "capture_reference"\n'
        'article = "name"\n'
        'qty = "quantity"\n', encoding="utf-8")

    # An order book for the sandbox: most orders authorised for what ships, a few that the
    # provider would refuse (cancelled, pending fraud review, authorised for less).
    orders = (night.group_by("order_id", maintain_order=True)
              .agg(pl.col("total_amount").sum().alias("order_amount"),
                   pl.col("currency").first().alias("purchase_currency")))
    # Far-future expiry: the demo must keep working after the real 28 days have passed.
    orders = orders.with_columns(pl.lit("AUTHORIZED").alias("status"),
                                 pl.lit("ACCEPTED").alias("fraud_status"),
                                 pl.lit("2099-12-31T00:00:00Z").alias("expires_at"))
    special = {3: ("CANCELLED", "ACCEPTED"), 5: ("AUTHORIZED", "PENDING")}
    rows = orders.to_dicts()
    for i, (status, fraud) in special.items():
        rows[i]["status"], rows[i]["fraud_status"] = status, fraud
    rows[8]["order_amount"] = 100  # authorised for less than ships: 403 on capture
    pl.DataFrame(rows).write_csv(HERE / "orders.csv")
    print(json.dumps({"captures": 312, "lines": night.height, "broken": syn.broken.height}))


if __name__ == "__main__":
    main()
