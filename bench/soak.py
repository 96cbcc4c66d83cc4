"""Fault soak: ``bulkcapture run`` against a hostile sandbox, re-run until done, exactly once.

The sandbox (a subprocess, real loopback HTTP) answers 20 % of calls with a 5xx, drops 10 % of
the connections *after* making the capture, adds latency with spikes longer than the client's
timeout, and has a 429 storm every few seconds. ``bulkcapture run`` runs as a subprocess, again
and again on one ledger, until every capture has an outcome (or ``--max-runs``). Then, checked
from the outside:

- the sandbox (``GET /_sandbox/captures``) made each valid (order_id, reference) exactly once
  and no invalid one;
- the last results file has every capture of the input: ``captured``/``already_captured``
  with the sandbox's capture id for the valid ones, ``invalid`` for the others;
- the ledger's ``captures`` table has each valid identity ``captured`` with that capture id.

The test suite runs a short version (``tests/test_soak.py``); the long one::

    .venv/bin/python -m bench.soak --captures 10000 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from bench.killsoak import _env, sandbox_captures
from etl.sandbox.server import SandboxConfig, SandboxHandle, run_sandbox_subprocess
from etl.synth import generate, write

ROOT = Path(__file__).resolve().parent.parent


def fault_config(seed: int, *, storm_every: float = 8.0) -> SandboxConfig:
    """20 % 5xx, 10 % drops after the capture, latency with spikes past the 1 s timeout,
    and a 1 s 429 storm every ``storm_every`` seconds."""
    return SandboxConfig(auto_authorize=True, fail_rate=0.2, drop_rate=0.1, latency_ms=5,
                         jitter_ms=20, spike_rate=0.01, spike_ms=1500, storm_every=storm_every,
                         storm_seconds=1.0, seed=seed)


@dataclass
class Soak:
    """What one soak found; ``ok`` when nothing is duplicated, missing or wrong."""

    captures: int
    valid: int
    runs: list[tuple[int, float, dict[str, int]]] = field(default_factory=list)  # rc, s, statuses
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.missing or self.problems)

    def figures(self) -> str:
        lines = [f"{self.captures} captures ({self.valid} valid), {len(self.runs)} run(s):"]
        for i, (rc, secs, counts) in enumerate(self.runs, 1):
            done = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            lines.append(f"  run {i}: exit {rc} in {secs:.1f} s: {done}")
        lines.append(f"  sandbox: {json.dumps(self.stats, sort_keys=True)}")
        lines.append(f"  duplicates {len(self.duplicates)}, missing {len(self.missing)}, "
                     f"problems {len(self.problems)}: {'OK' if self.ok else 'FAILED'}")
        return "\n".join(lines)


def run_cmd(sb: SandboxHandle, export: Path, ledger: Path, results: Path,
            max_attempts: int) -> list[str]:
    # A 1 s timeout resolves drops and spikes fast; a high breaker rides out the 429 storms
    # (a run stopped by the breaker is simply run again, as cron would the next night).
    return [sys.executable, "-m", "etl", "run", str(export), "--base-url", sb.url,
            "--ledger", str(ledger), "--results", str(results), "--overwrite",
            "--rate", "1000", "--concurrency", "32", "--timeout", "1",
            "--max-attempts", str(max_attempts), "--breaker", "400", "--no-progress"]


def soak(sb: SandboxHandle, workdir: Path, *, captures: int, seed: int, invalid_pct: float = 2,
         max_runs: int = 8, max_attempts: int = 6) -> Soak:
    """Generate an export, run until every capture has an outcome, check the three records."""
    workdir.mkdir(parents=True, exist_ok=True)
    syn = generate(captures, invalid_pct=invalid_pct, seed=seed)
    export, ledger, results = (workdir / "export.parquet", workdir / "ledger.sqlite",
                               workdir / "results.parquet")
    write(syn.lines, export)
    ours = set(syn.lines.select("order_id", "capture_reference").unique().iter_rows())
    invalid = set(syn.broken.select("order_id", "capture_reference").iter_rows())
    # etl.synth can draw a discount larger than a one-line capture's price: the capture sums
    # below 0 and is rightly invalid, though not in ``broken``.
    negative = (syn.lines.group_by("order_id", "capture_reference")
                .agg(pl.col("total_amount").sum()).filter(pl.col("total_amount") < 0))
    invalid |= set(negative.select("order_id", "capture_reference").iter_rows())
    report = Soak(len(ours), len(ours - invalid))
    for _ in range(max_runs):
        t0 = time.monotonic()
        done = subprocess.run(run_cmd(sb, export, ledger, results, max_attempts), env=_env(sb),
                              capture_output=True, text=True, timeout=1800)
        counts: dict[str, int] = {}
        if results.exists():
            counts = dict(pl.read_parquet(results)["status"].value_counts().iter_rows())
        report.runs.append((done.returncode, time.monotonic() - t0, counts))
        if done.returncode not in (0, 1, 3):
            report.problems.append(f"exit {done.returncode}: {done.stderr[-500:]}")
            break
        if "Traceback" in done.stderr:
            report.problems.append(f"traceback: {done.stderr[-500:]}")
        if done.returncode in (0, 3) and not (counts.get("failed") or counts.get("not_sent")):
            break
    check(report, sb, ours, invalid, results, ledger)
    return report


def check(report: Soak, sb: SandboxHandle, ours: set[tuple[str, str]],
          invalid: set[tuple[str, str]], results: Path, ledger: Path) -> None:
    """Sandbox, results file and ledger agree: every valid capture exactly once."""
    valid = ours - invalid
    made = [c for c in sandbox_captures(sb) if (c["order_id"], c["reference"]) in ours]
    count = Counter((c["order_id"], c["reference"]) for c in made)
    ids = {(c["order_id"], c["reference"]): c["capture_id"] for c in made}
    report.duplicates = sorted(k for k, n in count.items() if n > 1)
    report.missing = sorted(valid - set(count))
    if set(count) & invalid:
        report.problems.append(f"invalid captures were sent: {sorted(set(count) & invalid)[:5]}")
    with urllib.request.urlopen(f"{sb.url}/_sandbox/stats", timeout=10) as resp:
        report.stats = json.load(resp)

    if not results.exists():
        report.problems.append("no results file")
    else:
        rows = {(r["order_id"], r["capture_reference"]): r
                for r in pl.read_parquet(results).iter_rows(named=True)}
        if set(rows) != ours:
            report.problems.append(f"results hold {len(rows)} captures, the input {len(ours)}")
        for ident, row in rows.items():
            want = ("invalid",) if ident in invalid else ("captured", "already_captured")
            if row["status"] not in want:
                report.problems.append(f"results {ident}: {row['status']}")
            elif ident in valid and row["capture_id"] != ids.get(ident):
                report.problems.append(f"results {ident}: capture id {row['capture_id']} != "
                                       f"{ids.get(ident)}")

    with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as db:
        led = {(o, r): (s, cid) for o, r, s, cid in db.execute(
            "SELECT order_id, capture_reference, state, capture_id FROM captures")}
    for ident in valid:
        state, cid = led.get(ident, (None, None))
        if state != "captured" or cid != ids.get(ident):
            report.problems.append(f"ledger {ident}: {state} {cid} (sandbox {ids.get(ident)})")
    if set(led) & invalid:
        report.problems.append("the ledger holds an invalid capture")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captures", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=2, help="soaks, each a fresh export + ledger")
    ap.add_argument("--invalid-pct", type=float, default=2.0)
    ap.add_argument("--max-runs", type=int, default=8)
    ap.add_argument("--max-attempts", type=int, default=6)
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out" / "soak")
    args = ap.parse_args(argv)
    ok = True
    with run_sandbox_subprocess(fault_config(args.seed)) as sb:
        for i in range(args.repeats):
            t0 = time.monotonic()
            rep = soak(sb, args.workdir / f"s{i}", captures=args.captures,
                       seed=args.seed * 1000 + i, invalid_pct=args.invalid_pct,
                       max_runs=args.max_runs, max_attempts=args.max_attempts)
            print(f"soak {i + 1}: {time.monotonic() - t0:.0f} s\n{rep.figures()}", flush=True)
            for what in (rep.duplicates[:5], rep.missing[:5], rep.problems[:5]):
                if what:
                    print(f"  {what}")
            ok &= rep.ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
