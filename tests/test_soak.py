"""Fault soak, short version: 300 captures through 5xx, drops after the capture, latency
spikes past the timeout and 429 storms, re-run until done; exactly once in sandbox, results and
ledger. The long version is ``python -m bench.soak`` (10,000 captures)."""

from __future__ import annotations

from pathlib import Path

from bench.soak import fault_config, soak
from etl.sandbox.server import run_sandbox_subprocess


def test_fault_soak_captures_every_valid_capture_exactly_once(tmp_path: Path) -> None:
    with run_sandbox_subprocess(fault_config(seed=7, storm_every=4.0)) as sb:
        # Few attempts per run: more captures end 'failed' and the re-runs must finish them.
        rep = soak(sb, tmp_path, captures=300, seed=77, invalid_pct=3, max_runs=6,
                   max_attempts=3)
    print(rep.figures())
    assert rep.duplicates == [], "a capture was made twice"
    assert rep.missing == [], "a valid capture was never made"
    assert rep.problems == []
    assert rep.valid < rep.captures, "the export should hold some invalid captures"
    # The faults really happened.
    assert rep.stats["drops"] > 0 and rep.stats["injected_failures"] > 0
    assert len(rep.runs) >= 2, "with 3 attempts some captures should need a re-run"
