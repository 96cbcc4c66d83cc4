"""Kill soak: SIGKILL ``bulkcapture run`` at random moments, re-run, and prove exactly-once.

The harness the test suite uses for its short version (``tests/test_kill.py``, 20 kill points)
and this script uses for the long one (200 kill points by default)::

    .venv/bin/python -m bench.killsoak --kills 200 --scenarios 50 --captures 150

Each scenario: a fresh export and ledger; ``kills`` runs of ``python -m etl run`` against a
sandbox subprocess (latency, dropped connections after the capture) each killed with SIGKILL
after a random delay; then runs without a kill until one finishes. Checked at the end, over
HTTP at the sandbox (``/_sandbox/captures``): every valid capture of the export was captured
exactly once, and the last results file holds every capture of the input as captured or
already_captured, with the sandbox's capture id.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from etl.config import ENV_PASSWORD, ENV_USERNAME
from etl.sandbox.server import SandboxConfig, SandboxHandle, run_sandbox_subprocess
from etl.synth import generate, write

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Scenario:
    name: str
    kills: int = 0
    killed_mid_send: int = 0  # kills of a still-running process that had begun sending
    final_runs: int = 0
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    bad_results: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.missing or self.bad_results)


def sandbox_captures(sb: SandboxHandle) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{sb.url}/_sandbox/captures", timeout=10) as resp:
        data = json.load(resp)
    return list(data["captures"] if isinstance(data, dict) else data)


def _run_cmd(sb: SandboxHandle, export: Path, ledger: Path, results: Path,
             rate: int = 400) -> list[str]:
    return [sys.executable, "-m", "etl", "run", str(export), "--base-url", sb.url,
            "--ledger", str(ledger), "--results", str(results), "--overwrite",
            "--rate", str(rate), "--concurrency", "16", "--timeout", "1", "--max-attempts", "6",
            "--no-progress"]


def _env(sb: SandboxHandle) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKCAPTURE_")}
    env[ENV_USERNAME], env[ENV_PASSWORD] = sb.username, sb.password
    env["PYTHONPATH"] = str(ROOT)
    return env


def _count(ledger: Path, table: str) -> int:
    """Rows in a ledger table, read by a separate connection (0 before the file exists)."""
    import sqlite3

    if not ledger.exists():
        return 0
    db = sqlite3.connect(ledger, timeout=5)
    try:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        db.close()


def run_scenario(sb: SandboxHandle, workdir: Path, *, seed: int, captures: int, kills: int,
                 rng: random.Random, max_delay: float = 2.5, kill_rate: int = 60,
                 max_final_runs: int = 6) -> Scenario:
    """One export, ``kills`` SIGKILLed runs, then runs to completion; returns what was found."""
    workdir.mkdir(parents=True, exist_ok=True)
    syn = generate(captures, invalid_pct=5, seed=seed)
    export, ledger = workdir / "export.parquet", workdir / "ledger.sqlite"
    write(syn.lines, export)
    sc = Scenario(f"seed {seed}")
    env = _env(sb)
    for k in range(kills):
        runs_before = _count(ledger, "runs")
        # Killed runs send slowly (start-up takes ~0.8 s) so that most kills land mid-send.
        proc = subprocess.Popen(_run_cmd(sb, export, ledger, workdir / f"killed-{k}.parquet",
                                         rate=kill_rate),
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if rng.random() < 0.15:
            time.sleep(rng.uniform(0.1, 1.5))  # sometimes early: during start-up or reading
        else:
            # Most kills land mid-send: once this run has begun (its row in `runs` is written
            # right before sending starts), at a random moment.
            deadline = time.monotonic() + 30
            while (proc.poll() is None and _count(ledger, "runs") == runs_before
                   and time.monotonic() < deadline):
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, max_delay))
        running = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        sc.kills += 1
        sc.killed_mid_send += running and _count(ledger, "runs") > runs_before
    results = workdir / "final.parquet"
    for _ in range(max_final_runs):
        sc.final_runs += 1
        done = subprocess.run(_run_cmd(sb, export, ledger, results), env=env,
                              capture_output=True, text=True, timeout=300)
        # Done when the run finished and nothing is left failed (a drop can exhaust retries).
        if done.returncode in (0, 3) and results.exists() and not pl.read_parquet(
                results).filter(pl.col("status").is_in(["failed", "not_sent"])).height:
            break
    _check(sc, sb, syn.lines, syn.broken, results)
    return sc


def _check(sc: Scenario, sb: SandboxHandle, lines: pl.DataFrame, broken: pl.DataFrame,
           results: Path) -> None:
    ours = set(lines.select("order_id", "capture_reference").unique().iter_rows())
    invalid = set(broken.select("order_id", "capture_reference").iter_rows())
    valid = ours - invalid
    made = Counter((c["order_id"], c["reference"]) for c in sandbox_captures(sb)
                   if (c["order_id"], c["reference"]) in ours)
    sc.duplicates = sorted(k for k, n in made.items() if n > 1)
    sc.missing = sorted(valid - set(made))
    if set(made) & invalid:
        sc.bad_results.append(f"invalid captures were sent: {sorted(set(made) & invalid)}")
    if not results.exists():
        sc.bad_results.append("no results file from the final run")
        return
    df = pl.read_parquet(results)
    got = {(r["order_id"], r["capture_reference"]): r for r in df.iter_rows(named=True)}
    if set(got) != ours:
        sc.bad_results.append(f"results hold {len(got)} captures, the input {len(ours)}")
    ids = {(c["order_id"], c["reference"]): c["capture_id"] for c in sandbox_captures(sb)}
    for ident, row in got.items():
        want = "invalid" if ident in invalid else ("captured", "already_captured")
        if row["status"] not in want:
            sc.bad_results.append(f"{ident}: {row['status']}")
        elif ident in valid and row["capture_id"] != ids.get(ident):
            sc.bad_results.append(f"{ident}: capture id {row['capture_id']} != {ids.get(ident)}")


def soak_config(seed: int) -> SandboxConfig:
    return SandboxConfig(auto_authorize=True, drop_rate=0.05, latency_ms=30, jitter_ms=30,
                         seed=seed)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.killsoak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=200, help="kill points in all")
    ap.add_argument("--scenarios", type=int, default=50,
                    help="each a fresh export and ledger; later kills of a scenario have less "
                         "left to send, so a few kills per scenario keeps them mid-send")
    ap.add_argument("--captures", type=int, default=150)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--workdir", type=Path, default=ROOT / "bench" / "out" / "killsoak")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    per = max(1, args.kills // args.scenarios)
    t0 = time.monotonic()
    scenarios: list[Scenario] = []
    with run_sandbox_subprocess(soak_config(args.seed)) as sb:
        for i in range(args.scenarios):
            sc = run_scenario(sb, args.workdir / f"s{i}", seed=args.seed + i,
                              captures=args.captures, kills=per, rng=rng)
            scenarios.append(sc)
            print(f"{sc.name}: {sc.kills} kills ({sc.killed_mid_send} mid-send), "
                  f"{sc.final_runs} final run(s), {'OK' if sc.ok else 'FAILED'}", flush=True)
            if not sc.ok:
                print(f"  duplicates {sc.duplicates[:5]} missing {sc.missing[:5]} "
                      f"results {sc.bad_results[:5]}")
    kills = sum(s.kills for s in scenarios)
    print(f"\n{kills} kill points in {len(scenarios)} scenarios of {args.captures} captures, "
          f"{sum(s.killed_mid_send for s in scenarios)} of them mid-send; "
          f"{sum(not s.ok for s in scenarios)} scenario(s) failed; "
          f"{time.monotonic() - t0:.0f} s")
    return 0 if all(s.ok for s in scenarios) else 1


if __name__ == "__main__":
    raise SystemExit(main())
