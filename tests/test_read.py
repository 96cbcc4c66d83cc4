"""etl/read.py: formats, globs, mapping, nested layout, row numbers, and the errors that stop."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from etl.errors import InputError
from etl.read import expand_inputs, load_column_map, read_shipments
from etl.synth import generate, write
from tests.helpers import line, write_csv


def _collect(inputs: list[str], **kw: object) -> pl.DataFrame:
    return read_shipments(inputs, **kw).rows.collect()  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".ndjson", ".jsonl", ".arrow",
                                    ".ipc"])
def test_every_format_reads_the_same_rows(tmp_path: Path, suffix: str) -> None:
    syn = generate(20, seed=3)
    path = tmp_path / f"x{suffix}"
    write(syn.lines, path)
    df = _collect([str(path)])
    assert df.height == syn.lines.height
    assert df["source_row"].to_list() == list(range(1, df.height + 1))
    assert set(df["source_file"]) == {str(path)}
    assert df["order_id"].to_list() == syn.lines["order_id"].to_list()
    assert [int(x) for x in df["unit_price"]] == syn.lines["unit_price"].to_list()


def test_globs_and_several_files_keep_their_own_row_numbers(tmp_path: Path) -> None:
    write_csv(tmp_path / "a.csv", [line(), line(capture_reference="s2")])
    write_csv(tmp_path / "b.csv", [line(order_id="o9")])
    df = _collect([str(tmp_path / "*.csv")])
    assert df.select("source_file", "source_row").rows() == [
        (str(tmp_path / "a.csv"), 1), (str(tmp_path / "a.csv"), 2), (str(tmp_path / "b.csv"), 1)]


def test_the_same_file_named_twice_is_read_once(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "a.csv", [line()])
    assert expand_inputs([str(p), str(tmp_path / "*.csv")]) == [p]


def test_utf8_bom_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbforder_id,capture_reference,captured_amount\no1,s1,100\n")
    assert _collect([str(p)])["order_id"].to_list() == ["o1"]


def test_column_map_renames_export_columns(tmp_path: Path) -> None:
    p = tmp_path / "e.csv"
    p.write_text("oid,shipment_id,captured_amount\no1,S-1,500\n")
    m = tmp_path / "cols.toml"
    m.write_text('[columns]\noid = "order_id"\nshipment_id = "capture_reference"\n')
    df = _collect([str(p)], column_map=load_column_map(m))
    assert df.select("order_id", "capture_reference").row(0) == ("o1", "S-1")


def test_column_map_onto_an_unknown_column_is_refused(tmp_path: Path) -> None:
    m = tmp_path / "cols.toml"
    m.write_text('oid = "orderid"\n')
    with pytest.raises(InputError, match="orderid"):
        load_column_map(m)


def test_nested_layout_becomes_one_row_per_line(tmp_path: Path) -> None:
    nested = pl.DataFrame({
        "order_id": ["o1", "o2"], "capture_reference": ["s1", "s2"],
        "order_lines": [
            [{"name": "A", "quantity": 1, "unit_price": 5, "total_amount": 5,
              "product_identifiers": {"brand": "Acme"}},
             {"name": "B", "quantity": 2, "unit_price": 5, "total_amount": 10,
              "product_identifiers": {"brand": None}}],
            [],
        ],
        "captured_amount": [None, 700],
        "shipping_info": [[{"shipping_company": "DHL SE", "tracking_number": "1"}], None],
    })
    p = tmp_path / "n.parquet"
    nested.write_parquet(p)
    df = _collect([str(p)])
    lines = df.filter(pl.col("name").is_not_null())
    assert lines["name"].to_list() == ["A", "B"]
    assert lines["brand"].to_list() == ["Acme", None]
    assert lines["source_row"].to_list() == [1, 1]
    amount_only = df.filter(pl.col("order_id") == "o2")
    assert amount_only.height == 1 and amount_only["captured_amount"][0] == 700
    ship = df.filter(pl.col("__shipping_row").fill_null(False))
    assert ship["shipping_company"].to_list() == ["DHL SE"]


@pytest.mark.parametrize(("content", "column"), [
    ("capture_reference,name,quantity,unit_price,total_amount\ns,n,1,1,1\n", "order_id"),
    ("order_id,capture_reference,name,quantity,total_amount\no,s,n,1,1\n", "unit_price"),
    ("order_id,capture_reference,description\no,s,d\n", "captured_amount"),
])
def test_missing_required_column_names_file_and_column(tmp_path: Path, content: str,
                                                        column: str) -> None:
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(InputError) as err:
        read_shipments([str(p)])
    assert str(p) in str(err.value) and column in str(err.value)


def test_unknown_format_and_missing_file_are_input_errors(tmp_path: Path) -> None:
    (tmp_path / "x.xlsx").write_text("nope")
    with pytest.raises(InputError, match="unknown file format"):
        read_shipments([str(tmp_path / "x.xlsx")])
    with pytest.raises(InputError, match="does not exist"):
        read_shipments([str(tmp_path / "missing.csv")])
    with pytest.raises(InputError, match="no file matches"):
        read_shipments([str(tmp_path / "*.parquet")])


def test_garbage_parquet_is_an_input_error(tmp_path: Path) -> None:
    p = tmp_path / "x.parquet"
    p.write_bytes(b"\x00\x01 not parquet at all")
    with pytest.raises(InputError, match=r"cannot read .*x\.parquet"):
        read_shipments([str(p)])
