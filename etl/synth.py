"""Synthetic shipment exports for the sample data, the tests and the benchmarks.

Deterministic and vectorised: every "random" choice is a polars hash of the row index and a
salt, so 10 million lines take seconds and the same seed gives the same file. A chosen share of
captures is broken in exactly one way, and the generator says which rule each broken capture
breaks, so tests can check that validation finds exactly those.

    python -m etl.synth --captures 1000000 --invalid-pct 1 --out bench/out/1m.parquet
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import polars as pl

PRODUCTS = (
    "Merino wool sweater", "Trail running shoes", "Rain jacket", "Canvas tote bag",
    "Stainless water bottle", "Organic cotton T-shirt", "Leather belt", "Wool socks (3-pack)",
    "Down vest", "Linen shirt", "Denim jeans", "Beanie", "Sunglasses", "Yoga mat",
    "Headphones", "Phone case", "Notebook A5", "Espresso cups (2)", "Scented candle",
    "Cast iron pan",
)
CURRENCIES = ("EUR", "EUR", "EUR", "SEK", "NOK", "DKK", "GBP", "USD")
TAX = {"EUR": 1900, "SEK": 2500, "NOK": 2500, "DKK": 2500, "GBP": 2000, "USD": 0}
CARRIERS = ("DHL SE", "PostNord", "UPS", "DPD", "Bring", "GLS")
METHODS = ("Home", "PickUpPoint", "PickUpStore", "BoxReg", "Postal")

# Each breakage breaks exactly one rule; the value is the rule code validation reports.
BREAKAGES = {
    "negative_quantity": "range",
    "line_total": "line_total",
    "shipping_method": "pattern",
    "line_type": "enum",
    "long_name": "max_length",
    "missing_name": "required",
    "currency": "currency",
    "amount_sum": "captured_amount_sum",
    "inconsistent_description": "inconsistent",
    "discount_too_large": "range",
}


@dataclass(frozen=True)
class Synthetic:
    lines: pl.DataFrame  # the export, long layout
    broken: pl.DataFrame  # order_id, capture_reference, breakage, rule


def _rand(idx: pl.Expr, salt: int, modulo: int) -> pl.Expr:
    return (idx.hash(seed=salt) % modulo).cast(pl.Int64)


def _pick(options: tuple[str, ...], idx: pl.Expr, salt: int) -> pl.Expr:
    return pl.lit(pl.Series(options)).get(_rand(idx, salt, len(options)))


def generate(captures: int, *, invalid_pct: float = 0.0, seed: int = 0,
             max_lines: int = 4) -> Synthetic:
    """``captures`` captures of 1..max_lines lines; ``invalid_pct`` % of them broken once."""
    c = pl.int_range(captures, dtype=pl.UInt64, eager=True).alias("cap").to_frame()
    c = c.with_columns(
        (_rand(pl.col("cap"), seed + 1, max_lines) + 1).alias("n_lines"),
        _pick(CURRENCIES, pl.col("cap"), seed + 2).alias("currency"),
        _pick(CARRIERS, pl.col("cap"), seed + 3).alias("shipping_company"),
        _pick(METHODS, pl.col("cap"), seed + 4).alias("shipping_method"),
        pl.when(_rand(pl.col("cap"), seed + 5, 1_000_000) < invalid_pct * 10_000)
        .then(pl.lit(pl.Series(list(BREAKAGES))).get(_rand(pl.col("cap"), seed + 6,
                                                           len(BREAKAGES))))
        .alias("breakage"),
    )
    # An inconsistent description needs two rows to disagree.
    c = c.with_columns(pl.when(pl.col("breakage") == "inconsistent_description")
                       .then(pl.max_horizontal("n_lines", 2)).otherwise(pl.col("n_lines"))
                       .alias("n_lines"))
    lines = c.with_columns(pl.int_ranges(0, pl.col("n_lines")).alias("line")).explode("line")
    li = pl.col("cap") * 1000 + pl.col("line").cast(pl.UInt64)
    first = pl.col("line") == 0
    brk = pl.col("breakage")
    df = lines.with_columns(
        pl.format("ORD-{}-{}", pl.lit(seed), pl.col("cap").cast(pl.String).str.zfill(9))
        .alias("order_id"),
        pl.format("SHP-{}", pl.col("cap").cast(pl.String).str.zfill(9))
        .alias("capture_reference"),
        _pick(PRODUCTS, li, seed + 7).alias("name"),
        (_rand(li, seed + 8, 3) + 1).alias("quantity"),
        ((_rand(li, seed + 9, 500) + 2) * 100 - 1).alias("unit_price"),
        _rand(li, seed + 10, 10).alias("__discount_roll"),
        pl.format("SKU-{}", _rand(li, seed + 11, 100_000)).alias("reference"),
        pl.lit("physical").alias("type"),
        pl.format("JJD{}", (pl.col("cap") * 7919 + seed).cast(pl.String).str.zfill(12))
        .alias("tracking_number"),
    )
    # One line in ten gets a discount, never more than the line is worth: a valid capture
    # must not sum below zero.
    df = df.with_columns(
        pl.when((pl.col("__discount_roll") == 0)
                & (pl.col("quantity") * pl.col("unit_price") > 500))
        .then(pl.lit(500, pl.Int64)).otherwise(pl.lit(0, pl.Int64))
        .alias("total_discount_amount")).drop("__discount_roll")
    df = df.with_columns(
        (pl.col("quantity") * pl.col("unit_price") - pl.col("total_discount_amount"))
        .alias("total_amount"),
        pl.col("currency").replace_strict(TAX, return_dtype=pl.Int64).alias("tax_rate"),
        pl.lit(None, pl.Int64).alias("captured_amount"),
        pl.lit(None, pl.String).alias("description"),
    )
    df = df.with_columns(
        (pl.col("total_amount") * pl.col("tax_rate") // (10_000 + pl.col("tax_rate")))
        .alias("total_tax_amount"))
    df = _break(df, brk, first)
    cols = ["order_id", "capture_reference", "currency", "captured_amount", "description",
            "name", "quantity", "unit_price", "total_discount_amount", "total_amount",
            "tax_rate", "total_tax_amount", "type", "reference", "shipping_company",
            "shipping_method", "tracking_number"]
    broken = (df.filter(brk.is_not_null() & first)
              .select("order_id", "capture_reference", "breakage",
                      pl.col("breakage").replace_strict(BREAKAGES).alias("rule")))
    return Synthetic(lines=df.select(cols), broken=broken)


def _break(df: pl.DataFrame, brk: pl.Expr, first: pl.Expr) -> pl.DataFrame:
    """Apply each capture's one breakage (on its first line, or capture-wide)."""
    def on(kind: str) -> pl.Expr:
        return (brk == kind) & first

    return df.with_columns(
        # -1 x -price keeps the line total and the capture sum valid: only quantity breaks.
        pl.when(on("negative_quantity")).then(pl.lit(-1, pl.Int64))
        .when(on("discount_too_large")).then(pl.lit(3, pl.Int64))
        .otherwise(pl.col("quantity")).alias("quantity"),
        pl.when(on("negative_quantity")).then(-pl.col("unit_price"))
        .when(on("discount_too_large")).then(pl.lit(100_000_000, pl.Int64))
        .otherwise(pl.col("unit_price")).alias("unit_price"),
        pl.when(on("negative_quantity"))
        .then(pl.col("unit_price") - pl.col("total_discount_amount"))
        .when(on("line_total")).then(pl.col("total_amount") + 1)
        .when(on("discount_too_large")).then(pl.lit(0, pl.Int64))
        .otherwise(pl.col("total_amount")).alias("total_amount"),
        pl.when(on("discount_too_large")).then(pl.lit(300_000_000, pl.Int64))
        .otherwise(pl.col("total_discount_amount")).alias("total_discount_amount"),
        pl.when(on("shipping_method")).then(pl.lit("Teleport"))
        .otherwise(pl.col("shipping_method")).alias("shipping_method"),
        pl.when(on("line_type")).then(pl.lit("hardware")).otherwise(pl.col("type")).alias("type"),
        pl.when(on("long_name")).then(pl.lit("N" * 300))
        .when(on("missing_name")).then(None).otherwise(pl.col("name")).alias("name"),
        pl.when(brk == "currency").then(pl.lit("EURO")).otherwise(pl.col("currency"))
        .alias("currency"),
        pl.when(brk == "amount_sum").then(pl.lit(1, pl.Int64))
        .otherwise(pl.col("captured_amount")).alias("captured_amount"),
        pl.when(brk == "inconsistent_description")
        .then(pl.format("Shipment part {}", pl.col("line")))
        .otherwise(pl.col("description")).alias("description"),
    )


def write(df: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        df.write_parquet(path, row_group_size=256_000)
    elif suffix in (".csv", ".tsv"):
        df.write_csv(path, separator="\t" if suffix == ".tsv" else ",")
    elif suffix in (".ndjson", ".jsonl"):
        df.write_ndjson(path)
    else:
        df.write_ipc(path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m etl.synth", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captures", type=int, required=True)
    ap.add_argument("--invalid-pct", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-lines", type=int, default=4)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    syn = generate(args.captures, invalid_pct=args.invalid_pct, seed=args.seed,
                   max_lines=args.max_lines)
    write(syn.lines, args.out)
    print(f"{args.out}: {syn.lines.height} lines, {args.captures} captures, "
          f"{syn.broken.height} broken")


if __name__ == "__main__":
    main()
