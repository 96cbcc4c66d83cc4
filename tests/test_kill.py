"""Crash safety over real processes: SIGKILL at random moments, and SIGTERM mid-run.

The CLI runs as a subprocess against a sandbox subprocess (latency, dropped connections after
the capture), so nothing is shared but the wire and the ledger file.
"""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from bench.killsoak import _env, _run_cmd, run_scenario, sandbox_captures, soak_config
from etl.sandbox.server import SandboxConfig, SandboxHandle, run_sandbox_subprocess
from etl.synth import generate, write


@pytest.fixture(scope="module")
def soak_sandbox() -> Iterator[SandboxHandle]:
    with run_sandbox_subprocess(soak_config(seed=99)) as sb:
        yield sb


@pytest.mark.parametrize("scenario", range(4))
def test_sigkill_at_random_moments_then_rerun_captures_exactly_once(
        soak_sandbox: SandboxHandle, tmp_path: Path, scenario: int) -> None:
    """4 scenarios x 5 kill points = 20 random kill points in the suite."""
    rng = random.Random(1000 + scenario)
    sc = run_scenario(soak_sandbox, tmp_path, seed=500 + scenario, captures=100, kills=5,
                      rng=rng, max_delay=2.2)
    assert sc.kills == 5 and sc.killed_mid_send >= 1  # the kills did land while sending
    assert sc.duplicates == [], "a capture was made twice"
    assert sc.missing == [], "a valid capture was never made"
    assert sc.bad_results == []


def test_sigterm_finishes_in_flight_writes_results_and_exits_1(tmp_path: Path) -> None:
    config = SandboxConfig(auto_authorize=True, latency_ms=150, seed=3)
    with run_sandbox_subprocess(config) as sb:
        syn = generate(200, seed=77)
        export, ledger, results = (tmp_path / "n.parquet", tmp_path / "l.sqlite",
                                   tmp_path / "r.parquet")
        write(syn.lines, export)
        cmd = _run_cmd(sb, export, ledger, results, rate=40)
        proc = subprocess.Popen(cmd, env=_env(sb), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        # Wait until captures are flowing, then ask it to stop.
        deadline = time.monotonic() + 30
        while not sandbox_captures(sb) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, out + err
        assert err.startswith("Error: ") and "Traceback" not in err
        df = pl.read_parquet(results)
        assert df.height == 200  # every capture of the input, also when stopped
        counts = Counter(df["status"])
        assert counts["not_sent"] > 0 and counts["captured"] > 0
        assert set(counts) <= {"captured", "not_sent", "failed"}
        made = Counter((c["order_id"], c["reference"]) for c in sandbox_captures(sb))
        captured = df.filter(pl.col("status") == "captured")
        assert set(made) == set(captured.select("order_id", "capture_reference").iter_rows())
        # The next run captures the rest, each exactly once.
        done = subprocess.run(_run_cmd(sb, export, ledger, results), env=_env(sb),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        made = Counter((c["order_id"], c["reference"]) for c in sandbox_captures(sb))
        assert len(made) == 200 and set(made.values()) == {1}
        assert set(pl.read_parquet(results)["status"]) == {"captured", "already_captured"}


def test_two_concurrent_runs_on_one_ledger_never_send_the_same_capture(
        soak_sandbox: SandboxHandle, tmp_path: Path) -> None:
    syn = generate(80, seed=4242)
    export, ledger = tmp_path / "n.parquet", tmp_path / "l.sqlite"
    write(syn.lines, export)
    env = _env(soak_sandbox)
    procs = [subprocess.Popen([*_run_cmd(soak_sandbox, export, ledger,
                                         tmp_path / f"r{i}.parquet", rate=100),
                               "--lock-wait", "60"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = [p.returncode for p in procs]
    ours = set(syn.lines.select("order_id", "capture_reference").iter_rows())
    made = Counter((c["order_id"], c["reference"]) for c in sandbox_captures(soak_sandbox)
                   if (c["order_id"], c["reference"]) in ours)
    assert len(made) == 80 and set(made.values()) == {1}, (codes, outs)
    # One ran first; the other waited for the lock and then found everything captured.
    assert codes == [0, 0], outs
    statuses = sorted(sorted(set(pl.read_parquet(tmp_path / f"r{i}.parquet")["status"]))
                      for i in range(2))
    assert statuses == [["already_captured"], ["captured"]], statuses
