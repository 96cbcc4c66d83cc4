"""Benchmark of ``bulkcapture run`` end to end against the sandbox: throughput and client CPU.

Unlike ``bench_send`` (the send stage alone, recorder in memory), this drives the real CLI in a
subprocess: read, validate, plan, the SQLite ledger with its write-ahead intents, the results
file. The sandbox (``etl.sandbox``, auto-authorising every order) runs in its own subprocess,
so the client's CPU, taken from ``wait4`` on the ``bulkcapture run`` process, is its own.

The CPU figure per 1000 captures is reported twice: *gross*, the whole process (imports,
reading and planning included), and *send*, gross minus a ``--dry-run`` of the same file in
the same run (the part that sending adds).

    .venv/bin/python -m bench.bench_run                      # both scenarios
    .venv/bin/python -m bench.bench_run --fast 20000 --paced 4000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from etl.config import ENV_PASSWORD, ENV_USERNAME
from etl.sandbox import SandboxConfig, run_sandbox_subprocess

OUT = Path(__file__).resolve().parent / "out"
BULKCAPTURE = [str(Path(sys.executable).parent / "bulkcapture")]


@dataclass(frozen=True)
class RunMeasure:
    """One ``bulkcapture run`` process, measured from outside."""

    scenario: str
    captures: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    send_rate: float  # captures/s over the sending phase (the summary's rate_per_s)
    counts: dict[str, int]
    rate: float | None = None  # the --rate asked for
    dry_cpu_s: float = 0.0  # CPU of a dry run of the same file: what sending does not add

    @property
    def cpu_per_1000(self) -> float:
        return self.cpu_s / self.captures * 1000

    @property
    def send_cpu_per_1000(self) -> float:
        return (self.cpu_s - self.dry_cpu_s) / self.captures * 1000


def export(captures: int) -> Path:
    path = OUT / f"run_{captures}.csv"
    if not path.exists():
        subprocess.run([sys.executable, "-m", "etl.synth", "--captures", str(captures),
                        "--out", str(path)], check=True, stdout=subprocess.DEVNULL)
    return path


def cli(args: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Run ``bulkcapture ARGS``; (wall s, user+sys CPU s, peak RSS MB) of that process."""
    start = time.perf_counter()
    proc = subprocess.Popen([*BULKCAPTURE, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 3):
        raise SystemExit(f"bulkcapture {' '.join(args[:2])} exited {code}: {err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def scenario(name: str, captures: int, *, rate: float | None, concurrency: int,
             latency_ms: float, jitter_ms: float) -> RunMeasure:
    path = export(captures)
    config = SandboxConfig(auto_authorize=True, latency_ms=latency_ms, jitter_ms=jitter_ms)
    with run_sandbox_subprocess(config) as sb, tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, ENV_USERNAME: sb.username, ENV_PASSWORD: sb.password}
        summary = Path(tmp) / "summary.json"
        common = [str(path), "--overwrite", "--no-progress", "--summary-json", str(summary)]
        _, dry_cpu, _ = cli(["run", *common, "--dry-run", "--results",
                             str(Path(tmp) / "dry.parquet")], env)
        wall, cpu, rss = cli(["run", *common, "--base-url", sb.url,
                              "--rate", str(rate or 1_000_000), "--concurrency",
                              str(concurrency), "--ledger", str(Path(tmp) / "ledger.sqlite"),
                              "--results", str(Path(tmp) / "results.parquet")], env)
        data = json.loads(summary.read_text())
    return RunMeasure(name, captures, wall, cpu, rss, float(data["rate_per_s"]),
                      data["counts"], rate, dry_cpu)


def report(m: RunMeasure) -> str:
    pct = f"{m.send_rate / m.rate * 100:5.1f} %" if m.rate else f"{'':7s}"
    return (f"{m.scenario:26s} {m.captures:7,d} {m.wall_s:7.1f} {m.send_rate:9,.0f} {pct:>7s} "
            f"{m.cpu_per_1000:6.2f} {m.send_cpu_per_1000:6.2f} {m.peak_rss_mb:6,.0f}MB "
            f"{m.counts}")


HEADER = (f"{'scenario':26s} {'captures':>7s} {'wall s':>7s} {'sent/s':>9s} {'of rate':>7s} "
          f"{'CPU/1k':>6s} {'send':>6s} {'peak RSS':>8s} counts")


def run_all(fast: int, paced: int, rate: float = 200.0) -> list[RunMeasure]:
    return [
        scenario("unthrottled, 0 ms, c=64", fast, rate=None, concurrency=64, latency_ms=0,
                 jitter_ms=0),
        scenario(f"rate {rate:.0f}, 50–100 ms, c=64", paced, rate=rate, concurrency=64,
                 latency_ms=50, jitter_ms=50),
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fast", type=int, default=20_000, help="captures, unthrottled")
    ap.add_argument("--paced", type=int, default=4_000, help="captures at --rate")
    ap.add_argument("--rate", type=float, default=200.0)
    args = ap.parse_args(argv)
    print(HEADER)
    for m in run_all(args.fast, args.paced, args.rate):
        print(report(m), flush=True)


if __name__ == "__main__":
    main()
