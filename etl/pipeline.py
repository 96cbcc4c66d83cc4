"""Wire the stages: read → validate → plan → (send → record) → results → summary.

``check_inputs`` serves ``bulkcapture validate``; ``run_batch`` serves ``bulkcapture run``. Both
return a ``RunSummary``; the CLI only renders it and picks the exit code.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from etl.config import Settings
from etl.plan import Plan, plan_captures
from etl.read import load_column_map, read_shipments
from etl.results import build_results, check_results_path, write_atomic, write_results
from etl.summary import RunSummary, summarize
from etl.validate import validate_shipments

REJECT_FORMATS = (".csv", ".parquet", ".ndjson", ".jsonl")


@dataclass(frozen=True)
class Loaded:
    plan: Plan
    seconds: float


def load_plan(inputs: list[str], settings: Settings) -> Loaded:
    """Read, validate and plan: everything that happens before any money could move."""
    start = time.perf_counter()
    shipments = read_shipments(inputs, load_column_map(settings.columns))
    validation = validate_shipments(shipments, settings.amounts)
    return Loaded(plan_captures(validation), time.perf_counter() - start)


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def failures_by_rule(failures: pl.DataFrame) -> dict[str, int]:
    counts = failures.group_by("rule").len().sort("len", descending=True)
    return {rule: n for rule, n in counts.iter_rows()}


def write_rejects(failures: pl.DataFrame, path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        write_atomic(path, failures.write_parquet)
    elif suffix in (".ndjson", ".jsonl"):
        write_atomic(path, failures.write_ndjson)
    else:
        write_atomic(path, failures.write_csv)


def check_inputs(inputs: list[str], settings: Settings, rejects: Path | None) -> RunSummary:
    """``bulkcapture validate``: read and validate; the rejects file gets one row per check."""
    loaded = load_plan(inputs, settings)
    now = datetime.now(UTC)
    results = build_results(loaded.plan, new_run_id(now))
    if rejects is not None:
        write_rejects(loaded.plan.failures, rejects)
    return summarize(results, command="validate", run_id=results["run_id"][0] if results.height
                     else new_run_id(now), dry_run=True, elapsed_s=loaded.seconds,
                     rejects_path=str(rejects) if rejects else None,
                     failures_by_rule=failures_by_rule(loaded.plan.failures))


def run_dry(inputs: list[str], settings: Settings, results_path: Path,
            overwrite: bool) -> RunSummary:
    """``bulkcapture run --dry-run``: everything but sending; every valid capture ``planned``."""
    check_results_path(results_path, overwrite)
    start = time.perf_counter()
    run_id = new_run_id(datetime.now(UTC))
    loaded = load_plan(inputs, settings)
    results = build_results(loaded.plan, run_id, unsent="planned")
    write_results(results, results_path)
    return summarize(results, command="run", run_id=run_id, dry_run=True,
                     elapsed_s=time.perf_counter() - start, results_path=str(results_path),
                     failures_by_rule=failures_by_rule(loaded.plan.failures))
