"""Read shipment exports: files and globs → one lazy polars frame in the long layout.

First stage of the flow (read → validate → plan → …). It owns file formats, globs, the
``--columns`` mapping and the nested layout; every row keeps its ``source_file`` and 1-based data
row number ``source_row`` (header excluded) so that every later message can point at it.

Cells are not judged here: CSV/TSV are read as text so that "abc" in ``quantity`` becomes a
per-capture verdict in validate, never an unreadable file. What stops the run is only what
makes the whole input unusable: a missing or unreadable file, an unknown format, a missing
required column (``InputError``).
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import polars as pl

from etl.config import read_toml_table
from etl.errors import InputError
from schemas.shipments import (
    ALL_LINE_COLUMNS,
    IDENTITY_COLUMNS,
    INTEGER_COLUMNS,
    KNOWN_COLUMNS,
    REQUIRED_LINE_COLUMNS,
    SOURCE_FILE,
    SOURCE_ROW,
)

FORMATS = {
    ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet",
    ".ndjson": "ndjson", ".jsonl": "ndjson", ".arrow": "ipc", ".ipc": "ipc", ".feather": "ipc",
}
NESTED_LINES = "order_lines"
NESTED_SHIPPING = "shipping_info"
NESTED_PRODUCT_IDS = "product_identifiers"
# Shipping rows of the nested layout carry this marker so that validate and plan can tell them
# from order lines; long-layout rows never set it.
SHIPPING_ROW = "__shipping_row"
NESTED_FILE = "__nested_file"  # true on rows from a nested-layout file: each row is one capture
# Index of the row's file in ``Shipments.files``: grouping and hashing a small integer is far
# cheaper than the file name, which is a string on every row.
FILE_INDEX = "__file"


@dataclass(frozen=True)
class Shipments:
    """The input, read lazily: one frame of rows, and the files it came from."""

    rows: pl.LazyFrame
    files: tuple[str, ...]
    nested: bool  # some file had the nested layout: each of its rows is one capture

    def partition(self, index: int, count: int) -> Shipments:
        """Only the rows of the captures whose identity hashes to partition ``index`` of
        ``count``: validate holds per-capture state for one partition at a time.

        The identity alone is hashed (as text, as validate compares it), so every copy of a
        capture, in another file or another nested row, lands in the same partition and the
        duplicate-identity check still sees them all. The filter is a predicate on the scan:
        polars reads the identity columns first and the rest only for the matching rows.
        """
        ident = pl.struct([pl.col(c).cast(pl.String) for c in IDENTITY_COLUMNS])
        return replace(self, rows=self.rows.filter(ident.hash(PARTITION_SEED) % count == index))


PARTITION_SEED = 0x9E3779B9  # any fixed seed; independent of validate's capture-key seeds
_SAMPLE_BYTES = 1 << 20


def estimate_lines(files: Sequence[str | Path]) -> int:
    """About how many rows the files hold, without reading them: Parquet and Arrow from their
    footers, text formats from the newlines in their first MiB scaled to the file's size.

    A file that cannot be read counts 0 here: reading it for real reports the problem.
    """
    total = 0
    for name in files:
        path = Path(name)
        try:
            fmt = _format_of(path)
            if fmt in ("parquet", "ipc"):
                scan = pl.scan_parquet(path) if fmt == "parquet" else pl.scan_ipc(path)
                total += int(scan.select(pl.len()).collect().item())
                continue
            size = path.stat().st_size
            with path.open("rb") as fh:
                sample = fh.read(_SAMPLE_BYTES)
            if sample:
                total += round(sample.count(b"\n") * size / len(sample))
        except (InputError, pl.exceptions.PolarsError, OSError, ValueError):
            continue
    return total


def expand_inputs(patterns: Sequence[str]) -> list[Path]:
    """Files and globs → existing files, in the order given, each once."""
    paths: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            found = sorted(glob.glob(pattern, recursive=True))
            if not found:
                raise InputError(f"no file matches {pattern!r}: check the path and the pattern.")
            paths += [Path(p) for p in found]
        else:
            path = Path(pattern)
            if not path.is_file():
                raise InputError(f"input file {pattern} does not exist or is not a file.")
            paths.append(path)
    unique: dict[Path, Path] = {}
    for p in paths:
        unique.setdefault(p.resolve(), p)
    return list(unique.values())


def load_column_map(path: Path | None) -> dict[str, str]:
    """``--columns FILE``: TOML ``export_name = "api_name"`` pairs, flat or under ``[columns]``."""
    if path is None:
        return {}
    data = read_toml_table(path, "columns", "column map", InputError)
    unknown = {v for v in data.values() if v not in KNOWN_COLUMNS}
    bad = [k for k, v in data.items() if not isinstance(v, str)]
    if bad or unknown:
        names = ", ".join(sorted(map(str, unknown))) or ", ".join(bad)
        raise InputError(f"column map {path} maps onto unknown column(s) {names}: map each export "
                         "column to one of the documented input columns.")
    return {str(k): str(v) for k, v in data.items()}


def _format_of(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise InputError(f"{path}: unknown file format {path.suffix or '(no suffix)'!r}; "
                         f"use one of {known}.")
    return fmt


def _scan(path: Path) -> pl.LazyFrame:
    fmt = _format_of(path)
    row, first = SOURCE_ROW, 1  # 1-based data rows: the header is not a row
    if fmt in ("csv", "tsv"):
        # Text in, judged later: a bad cell must not make the whole file unreadable.
        return pl.scan_csv(path, separator="\t" if fmt == "tsv" else ",", infer_schema=False,
                           row_index_name=row, row_index_offset=first)
    if fmt == "parquet":
        return pl.scan_parquet(path, row_index_name=row, row_index_offset=first)
    if fmt == "ndjson":
        return pl.scan_ndjson(path, infer_schema_length=None, row_index_name=row,
                              row_index_offset=first)
    return pl.scan_ipc(path, row_index_name=row, row_index_offset=first)


def _schema(lf: pl.LazyFrame, path: Path) -> pl.Schema:
    try:
        return lf.collect_schema()
    except (pl.exceptions.PolarsError, OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {first_line(exc)}. Check that the file is a "
                         f"valid {path.suffix.lstrip('.')} file.") from exc


def first_line(exc: BaseException) -> str:
    """An engine error's first line, for an ``Error:`` sentence (its detail stays chained)."""
    text = str(exc).strip().splitlines()
    return text[0].rstrip(".") if text else type(exc).__name__


def _flatten_nested(lf: pl.LazyFrame, schema: pl.Schema, path: Path) -> pl.LazyFrame:
    """Nested layout → long: one row per order line, plus one marked row per shipping_info item.

    A capture with an empty or missing ``order_lines`` list keeps one row with no line fields:
    an amount-only capture, as in the long layout.
    """
    capture_cols = [c for c in schema if c not in (NESTED_LINES, NESTED_SHIPPING)]
    parts: list[pl.LazyFrame] = []
    if NESTED_LINES in schema:
        lines = lf.select(*capture_cols, NESTED_LINES).explode(NESTED_LINES, empty_as_null=True)
        dtype = schema[NESTED_LINES]
        inner = getattr(dtype, "inner", None)
        if not isinstance(inner, pl.Struct):
            raise InputError(f"{path}: column {NESTED_LINES} must be a list of structs with the "
                             "API's order line fields; use the long layout otherwise.")
        lines = lines.unnest(NESTED_LINES)
        fields = {f.name: f.dtype for f in inner.fields}
        if NESTED_PRODUCT_IDS in fields and isinstance(fields[NESTED_PRODUCT_IDS], pl.Struct):
            lines = lines.unnest(NESTED_PRODUCT_IDS)
        parts.append(lines)
    else:
        parts.append(lf.select(capture_cols))
    if NESTED_SHIPPING in schema:
        ship = (lf.select(*IDENTITY_COLUMNS, SOURCE_ROW, NESTED_SHIPPING)
                .explode(NESTED_SHIPPING).drop_nulls(NESTED_SHIPPING)
                .unnest(NESTED_SHIPPING)
                .with_columns(pl.lit(True).alias(SHIPPING_ROW)))
        parts.append(ship)
    return pl.concat(parts, how="diagonal_relaxed")


def _read_one(path: Path, column_map: dict[str, str]) -> tuple[pl.LazyFrame, bool]:
    lf = _scan(path)
    schema = _schema(lf, path)
    duplicated = [c for c in schema if c.endswith("_duplicated_0")]
    if duplicated:
        raise InputError(f"{path}: column {duplicated[0].removesuffix('_duplicated_0')!r} appears "
                         "more than once in the header; rename or remove the duplicate.")
    renames = {src: dst for src, dst in column_map.items() if src in schema and src != dst}
    clash = [dst for dst in renames.values() if dst in schema and dst not in renames]
    if clash:
        raise InputError(f"{path}: the column map renames a column to {clash[0]!r}, which the "
                         "file already has; remove one of the two from the map or the file.")
    lf = lf.rename(renames)
    schema = pl.Schema({renames.get(k, k): v for k, v in schema.items()})
    nested = NESTED_LINES in schema or NESTED_SHIPPING in schema
    if nested:
        lf = _flatten_nested(lf, schema, path)
        schema = _schema(lf, path)
    for col in IDENTITY_COLUMNS:
        if col not in schema:
            hint = " (map it with --columns if the export names it differently)"
            raise InputError(f"{path}: required column {col!r} is missing{hint}.")
    present = {c for c in schema if c in KNOWN_COLUMNS}
    line_cols = present & set(ALL_LINE_COLUMNS)
    if line_cols:
        missing = [c for c in REQUIRED_LINE_COLUMNS if c not in present]
        if missing:
            raise InputError(f"{path}: required order line column {missing[0]!r} is missing "
                             f"(the file has line column(s) {', '.join(sorted(line_cols))}); add "
                             "it, or map it with --columns.")
    elif "captured_amount" not in present:
        raise InputError(f"{path}: has neither order line columns "
                         f"({', '.join(REQUIRED_LINE_COLUMNS)}) nor 'captured_amount'; add one "
                         "of the two.")
    _check_dtypes(schema, path)
    keep = [c for c in schema if c in KNOWN_COLUMNS or c in (SOURCE_ROW, SHIPPING_ROW)]
    lf = lf.select(keep).with_columns(pl.lit(str(path), dtype=pl.String).alias(SOURCE_FILE),
                                      pl.lit(nested).alias(NESTED_FILE))
    return lf, nested


def _check_dtypes(schema: pl.Schema, path: Path) -> None:
    """A typed file's column must hold text or numbers, never lists, structs or booleans.

    Casting those to text would send e.g. ``{1}`` as an order id; a float in a text column
    (a pandas export with a missing id) would send ``1234.0``. Text files (CSV) never get here
    with anything but text.
    """
    for col, dtype in schema.items():
        if col not in KNOWN_COLUMNS or dtype in (pl.String, pl.Null) or dtype.is_integer():
            continue
        if isinstance(dtype, pl.Categorical | pl.Enum):
            continue  # text, dictionary-encoded
        if col in INTEGER_COLUMNS and (dtype.is_float() or dtype.is_decimal()):
            continue  # judged per row by validate: whole numbers pass, the rest are invalid
        kind = "integers or text" if col in INTEGER_COLUMNS else "text"
        raise InputError(f"{path}: column {col!r} holds {dtype} values, expected {kind}; "
                         "re-export it with that type.")


def read_shipments(inputs: Sequence[str], column_map: dict[str, str] | None = None) -> Shipments:
    """Every input file, lazily, in one long frame with every known column present.

    Columns a file lacks are added as nulls; the dtype of each column is whatever the file has
    (text for CSV); ``etl/validate.py`` coerces and judges.
    """
    paths = expand_inputs(inputs)
    if not paths:
        raise InputError("no input file given: name at least one file or glob.")
    frames: list[pl.LazyFrame] = []
    nested = False
    for index, path in enumerate(paths):
        lf, is_nested = _read_one(path, column_map or {})
        nested |= is_nested
        frames.append(lf.with_columns(pl.lit(index, dtype=pl.UInt32).alias(FILE_INDEX)))
    rows = pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]
    names = rows.collect_schema().names()
    missing = [c for c in (*KNOWN_COLUMNS, SHIPPING_ROW) if c not in names]
    rows = rows.with_columns(
        [pl.lit(None, dtype=pl.Boolean if c == SHIPPING_ROW else pl.String).alias(c)
         for c in missing])
    return Shipments(rows=rows, files=tuple(str(p) for p in paths), nested=nested)

