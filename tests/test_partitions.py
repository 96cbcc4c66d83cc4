"""Capture partitions (etl/pipeline.py): validate and the dry run give the same verdicts, rejects,
results and summary whatever the number of partitions; outputs stay atomic."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from etl.cli import main
from etl.config import Settings
from etl.errors import ConfigError
from etl.pipeline import SINGLE_PASS_LINES, check_inputs, partition_count, run_dry
from etl.read import estimate_lines
from etl.summary import RunSummary
from etl.synth import generate, write


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Two files: a mixed export (every breakage), and a second one that repeats some of its
    captures identically (one capture) and some with other content (duplicate_identity)."""
    tmp = tmp_path_factory.mktemp("parts")
    gen = generate(1500, invalid_pct=12, seed=5)
    syn = gen.lines
    refs = syn.filter(~pl.col("capture_reference").is_in(gen.broken["capture_reference"]
                                                          .implode()))["capture_reference"]
    refs = refs.unique(maintain_order=True)  # valid captures: only the changed one is a dup
    # One changed capture: its two copies fail, both within the screen's three examples.
    same, changed = refs[:20], refs[20:21]
    again = pl.concat([
        syn.filter(pl.col("capture_reference").is_in(same.implode())),
        syn.filter(pl.col("capture_reference").is_in(changed.implode()))
        .with_columns(pl.lit("other parcel").alias("description")),
    ])
    a, b = tmp / "a.csv", tmp / "b.parquet"
    write(syn, a)
    write(again, b)
    return [str(a), str(b)]


def _summary(s: RunSummary) -> dict[str, object]:
    # Examples as sets: the single pass lists plan's own checks (duplicate_identity) in no
    # particular order, the partitioned run in file and row order.
    return {"captures": s.captures, "counts": s.counts, "amounts": s.amounts,
            "failures_by_rule": s.failures_by_rule,
            "failure_examples": {r: sorted(e) for r, e in s.failure_examples.items()}}


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    return df.sort(df.columns, nulls_last=True)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_validate_is_the_same_for_any_number_of_partitions(exports: list[str], tmp_path: Path,
                                                           suffix: str) -> None:
    read = pl.read_csv if suffix == ".csv" else pl.read_parquet
    base = check_inputs(exports, Settings(partitions=1), tmp_path / f"r1{suffix}")
    one = read(tmp_path / f"r1{suffix}")
    assert {"duplicate_identity", "captured_amount_sum", "currency"} <= set(one["rule"])
    for k in (3, 5, 7):
        got = check_inputs(exports, Settings(partitions=k), tmp_path / f"r{k}{suffix}")
        assert _summary(got) == _summary(base), k
        rejects = read(tmp_path / f"r{k}{suffix}")
        assert rejects.schema == one.schema
        assert _sorted(rejects).equals(_sorted(one)), k


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".ndjson"])
def test_dry_run_results_are_the_same_for_any_number_of_partitions(
        exports: list[str], tmp_path: Path, suffix: str) -> None:
    read = {".csv": pl.read_csv, ".parquet": pl.read_parquet, ".ndjson": pl.read_ndjson}[suffix]
    base = run_dry(exports, Settings(partitions=1), tmp_path / f"d1{suffix}", overwrite=False)
    one = read(tmp_path / f"d1{suffix}").drop("run_id")
    assert set(one["status"]) == {"planned", "invalid"}
    for k in (3, 6):
        got = run_dry(exports, Settings(partitions=k), tmp_path / f"d{k}{suffix}",
                      overwrite=False)
        assert _summary(got) == _summary(base), k
        results = read(tmp_path / f"d{k}{suffix}").drop("run_id")
        assert results.schema == one.schema
        assert _sorted(results).equals(_sorted(one)), k
    # Only the published files are left: no part directory, no temp file.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"d{k}{suffix}" for k in (1, 3, 6))


def test_the_cli_takes_the_partitions_from_the_environment(exports: list[str],
                                                           tmp_path: Path) -> None:
    runs = {}
    for k in ("1", "4"):
        out = tmp_path / f"s{k}.json"
        res = CliRunner().invoke(main, ["validate", *exports, "--summary-json", str(out)],
                                 env={"BULKCAPTURE_PARTITIONS": k})
        assert res.exit_code == 3, res.output
        runs[k] = json.loads(out.read_text())
    for data in runs.values():
        for key in ("run_id", "elapsed_s"):
            data.pop(key)
        data["failure_examples"] = {r: sorted(e) for r, e in data["failure_examples"].items()}
    assert runs["1"] == runs["4"]
    res = CliRunner().invoke(main, ["validate", *exports], env={"BULKCAPTURE_PARTITIONS": "0"})
    assert res.exit_code == 1 and "partitions" in res.stderr


def test_a_failed_partitioned_run_leaves_the_old_file(exports: list[str], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import etl.pipeline

    out = tmp_path / "results.csv"
    out.write_text("keep me")
    real = etl.pipeline.build_results
    calls = []

    def fail_on_third(*args: object, **kw: object) -> pl.DataFrame:
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(etl.pipeline, "build_results", fail_on_third)
    with pytest.raises(OSError):
        run_dry(exports, Settings(partitions=4), out, overwrite=True)
    assert out.read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]


def test_partitions_come_from_the_setting_the_environment_or_the_size(
        exports: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert partition_count(exports, Settings(partitions=2)) == 2
    assert partition_count(exports, Settings()) == 1  # small: today's single pass
    monkeypatch.setenv("BULKCAPTURE_PARTITIONS", "5")
    assert partition_count(exports, Settings()) == 5
    assert partition_count(exports, Settings(partitions=3)) == 3  # the setting wins
    monkeypatch.setenv("BULKCAPTURE_PARTITIONS", "many")
    with pytest.raises(ConfigError, match="partitions"):
        partition_count(exports, Settings())
    monkeypatch.delenv("BULKCAPTURE_PARTITIONS")
    import etl.pipeline
    monkeypatch.setattr(etl.pipeline, "estimate_lines", lambda files: 10 * SINGLE_PASS_LINES)
    assert partition_count(exports, Settings()) > 1


def test_estimated_lines_are_close(exports: list[str]) -> None:
    csv, parquet = exports
    exact = pl.read_csv(csv).height
    assert abs(estimate_lines([csv]) - exact) <= exact * 0.05 + 2
    assert estimate_lines([parquet]) == pl.read_parquet(parquet).height
    assert estimate_lines(["missing.csv"]) == 0
