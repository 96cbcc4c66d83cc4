"""``bulkcapture validate`` and ``bulkcapture run --dry-run`` through click: exit codes,
messages, and the files written."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from etl.cli import main
from schemas.results import RESULT_COLUMNS
from tests.helpers import line, write_csv

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_validate_all_valid_exits_0(runner: CliRunner, tmp_path: Path) -> None:
    p = write_csv(tmp_path / "ok.csv", [line()])
    res = runner.invoke(main, ["validate", str(p)])
    assert res.exit_code == 0, res.output
    assert "planned 1" in res.output


def test_validate_some_invalid_exits_3_and_writes_rejects(runner: CliRunner,
                                                          tmp_path: Path) -> None:
    p = write_csv(tmp_path / "mixed.csv", [line(), line(order_id="o2", quantity="abc")])
    rejects = tmp_path / "rejects.csv"
    res = runner.invoke(main, ["validate", str(p), "--rejects", str(rejects)])
    assert res.exit_code == 3, res.output
    assert "invalid 1" in res.output and "not_integer 1" in res.output
    rej = pl.read_csv(rejects)
    assert rej.row(0, named=True) | {"source_file": None} == {
        "source_file": None, "source_row": 2, "order_id": "o2", "capture_reference": "s1",
        "column": "quantity", "rule": "not_integer", "value": "abc",
        "message": "is not an integer"}


@pytest.mark.parametrize(("args", "needle"), [
    (["missing.csv"], "missing.csv does not exist"),
    (["{tmp}/nocol.csv"], "required column 'order_id' is missing"),
    (["{tmp}/x.xls"], "unknown file format"),
])
def test_unreadable_input_exits_1_with_an_error_sentence(runner: CliRunner, tmp_path: Path,
                                                         args: list[str], needle: str) -> None:
    (tmp_path / "nocol.csv").write_text("capture_reference,captured_amount\ns,1\n")
    (tmp_path / "x.xls").write_text("")
    res = runner.invoke(main, ["validate", *[a.format(tmp=tmp_path) for a in args]])
    assert res.exit_code == 1
    assert res.stderr.startswith("Error: ") and needle in res.stderr
    assert "Traceback" not in res.output + res.stderr


def test_usage_error_exits_2(runner: CliRunner) -> None:
    res = runner.invoke(main, ["validate"])
    assert res.exit_code == 2


def test_dry_run_writes_every_column_and_status(runner: CliRunner, tmp_path: Path) -> None:
    p = write_csv(tmp_path / "mixed.csv", [line(), line(name="Hat"),
                                           line(order_id="o2", total_amount=1)])
    out = tmp_path / "results.parquet"
    summary = tmp_path / "summary.json"
    res = runner.invoke(main, ["run", str(p), "--dry-run", "--results", str(out),
                               "--summary-json", str(summary)])
    assert res.exit_code == 3, res.output
    df = pl.read_parquet(out)
    assert tuple(df.columns) == RESULT_COLUMNS
    assert out.stat().st_mode & 0o044  # an ordinary file for finance to read, not 0600
    rows = {r["order_id"]: r for r in df.iter_rows(named=True)}
    assert rows["o1"]["status"] == "planned" and rows["o1"]["captured_amount"] == 4000
    assert rows["o1"]["source_rows"] == "1-2" and rows["o1"]["order_line_count"] == 2
    assert rows["o2"]["status"] == "invalid" and rows["o2"]["error_code"] == "INVALID_INPUT"
    assert "[line_total]" in rows["o2"]["error_messages"]
    data = json.loads(summary.read_text())
    assert data["counts"] == {"invalid": 1, "planned": 1} and data["exit_code"] == 3
    assert data["amounts"] == {"planned": {"EUR": 4000}}


def test_dry_run_refuses_to_overwrite_results_without_the_flag(runner: CliRunner,
                                                               tmp_path: Path) -> None:
    p = write_csv(tmp_path / "ok.csv", [line()])
    out = tmp_path / "r.csv"
    out.write_text("keep me")
    res = runner.invoke(main, ["run", str(p), "--dry-run", "--results", str(out)])
    assert res.exit_code == 1 and "--overwrite" in res.stderr
    assert out.read_text() == "keep me"
    res = runner.invoke(main, ["run", str(p), "--dry-run", "--results", str(out),
                               "--overwrite"])
    assert res.exit_code == 0 and pl.read_csv(out).height == 1


def test_default_results_path_is_named_after_input_and_date(runner: CliRunner,
                                                            tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    p = write_csv(tmp_path / "night.csv", [line()])
    monkeypatch.chdir(tmp_path)
    for expected_suffix in ("", "-2"):
        res = runner.invoke(main, ["run", str(p), "--dry-run"])
        assert res.exit_code == 0, res.output
        found = sorted(tmp_path.glob(f"night.captures.*{expected_suffix}.parquet"))
        assert found, res.output


def test_sample_data_validates_with_the_expected_verdicts(runner: CliRunner,
                                                          tmp_path: Path) -> None:
    res = runner.invoke(main, ["validate", str(SAMPLE / "shipments.csv")])
    assert res.exit_code == 3
    assert "captures: 312" in res.output
    res = runner.invoke(main, ["validate", str(SAMPLE / "mapped_export.csv"), "--columns",
                               str(SAMPLE / "columns.toml")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["validate", str(SAMPLE / "nested.ndjson")])
    assert res.exit_code == 0, res.output


def test_config_file_sets_amounts_and_refuses_secrets(runner: CliRunner,
                                                      tmp_path: Path) -> None:
    p = write_csv(tmp_path / "major.csv", [{"order_id": "o", "capture_reference": "s",
                                            "currency": "EUR", "captured_amount": "1.50"}])
    cfg = tmp_path / "c.toml"
    cfg.write_text('amounts = "major"\n')
    out = tmp_path / "r.csv"
    res = runner.invoke(main, ["run", str(p), "--dry-run", "--config", str(cfg), "--results",
                               str(out)])
    assert res.exit_code == 0, res.output
    assert pl.read_csv(out)["captured_amount"].to_list() == [150]
    cfg.write_text('password = "hunter2"\n')
    res = runner.invoke(main, ["validate", str(p), "--config", str(cfg)])
    assert res.exit_code == 1 and "secret" in res.stderr and "hunter2" not in res.stderr


def test_every_command_has_help_with_an_example(runner: CliRunner) -> None:
    for cmd in (["validate"], ["run"], ["ledger"], ["sandbox"], ["reconcile"],
                ["settlements", "fetch"]):
        res = runner.invoke(main, [*cmd, "--help"])
        assert res.exit_code == 0 and "Example" in res.output, cmd
