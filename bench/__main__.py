"""``make bench``: every benchmark of issue 7 in one table, with each target and its verdict.

Read side (``bench_read``): exports of ``--lines`` lines (valid, 1 % invalid, all invalid; Parquet
and CSV) → the plain-polars floor, ``validate`` and ``run --dry-run``, each step in its own
process. Send side (``bench_run``): ``bulkcapture run`` against the sandbox, unthrottled and at
``--rate 200`` with 50–100 ms latency. Targets are ratios to the floor of the same run.

    make bench                                         # 1M lines, ~5 min
    .venv/bin/python -m bench --lines 10000000         # the 10M targets
    .venv/bin/python -m bench --lines 50000000 --formats parquet --variants valid --no-send
    .venv/bin/python -m bench --record                 # also append the table to RESULTS.md
"""

from __future__ import annotations

import argparse
import io
import platform
import sys
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path

from bench.bench_read import HEADER, Measure, default_repeat, ensure_export, row, run_file
from bench.bench_run import HEADER as RUN_HEADER
from bench.bench_run import RunMeasure, report, run_all

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
GB = 1024.0  # MB


def verdicts(read: dict[tuple[str, str], dict[str, Measure]], sends: list[RunMeasure],
             lines: int) -> list[str]:
    """One line per target of the issue that this run measured: the figure and ok / MISSED."""
    out: list[str] = []

    def check(label: str, value: str, ok: bool) -> None:
        out.append(f"  {label:58s} {value:>16s}  {'ok' if ok else 'MISSED'}")

    pq = read.get(("parquet", "valid"))
    if pq:
        v = pq["validate"]
        ratio = v.seconds / pq["floor"].seconds
        check(f"validate {lines:,} Parquet ≤ 1.5 × floor", f"{ratio:.2f} ×",
              v.seconds <= 1.5 * pq["floor"].seconds)
        check(f"validate {lines:,} Parquet ≤ 2 GB peak RSS", f"{v.peak_rss_mb / GB:.2f} GB",
              v.peak_rss_mb <= 2 * GB)
        d = pq["dry_run"]
        rate = d.captures / d.seconds
        check("dry run (read+validate+plan+keys+results) ≥ 500k captures/s",
              f"{rate:,.0f}/s", rate >= 500_000)
        plan_s = d.seconds - v.seconds
        if plan_s > 0:
            check("  of which planning alone (dry run − validate)",
                  f"{d.captures / plan_s:,.0f}/s", d.captures / plan_s >= 500_000)
    for fmt in ("parquet", "csv"):
        ok_file, bad_file = read.get((fmt, "valid")), read.get((fmt, "all"))
        if ok_file and bad_file:
            r = bad_file["validate"].seconds / ok_file["validate"].seconds
            check(f"all-invalid {fmt} ≤ 2 × valid", f"{r:.2f} ×", r <= 2)
    csv, pq = read.get(("csv", "valid")), read.get(("parquet", "valid"))
    if csv and pq:
        r = csv["validate"].seconds / pq["validate"].seconds
        check("CSV validate ≤ 2 × Parquet validate", f"{r:.2f} ×", r <= 2)
    for m in sends:
        if m.rate is None:
            check("send unthrottled ≥ 2,000 captures/s", f"{m.send_rate:,.0f}/s",
                  m.send_rate >= 2000)
        else:
            pct = m.send_rate / m.rate * 100
            check(f"send at --rate {m.rate:.0f} ≥ 95 % of the rate", f"{pct:.1f} %", pct >= 95)
            check("  ≤ 0.3 CPU-s per 1000 captures (send part)",
                  f"{m.send_cpu_per_1000:.2f}", m.send_cpu_per_1000 <= 0.3)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--formats", default="parquet,csv")
    ap.add_argument("--variants", default="valid,p1,all")
    ap.add_argument("--repeat", type=int, default=0,
                    help="runs per step, the fastest kept (default: 3 up to 2M lines, else 1)")
    ap.add_argument("--no-send", action="store_true", help="skip the sandbox runs")
    ap.add_argument("--fast", type=int, default=20_000, help="captures, unthrottled run")
    ap.add_argument("--paced", type=int, default=4_000, help="captures, --rate 200 run")
    ap.add_argument("--record", action="store_true", help=f"append the output to {RESULTS.name}")
    args = ap.parse_args(argv)

    buf = io.StringIO()

    class Tee(io.TextIOBase):
        def write(self, s: str) -> int:
            sys.__stdout__.write(s)  # type: ignore[union-attr]
            sys.__stdout__.flush()  # type: ignore[union-attr]
            return buf.write(s)

    with redirect_stdout(Tee()):
        cmd = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
        print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}: `{cmd.strip()}`\n")
        print(HEADER)
        read: dict[tuple[str, str], dict[str, Measure]] = {}
        for fmt in args.formats.split(","):
            for variant in args.variants.split(","):
                path = ensure_export(args.lines, variant, fmt)
                res = run_file(path, args.lines, repeat=args.repeat or default_repeat(args.lines))
                read[(fmt, variant)] = res
                for m in res.values():
                    print(row(m, res["floor"].seconds if m.step != "floor" else None))
        sends: list[RunMeasure] = []
        if not args.no_send:
            print("\n" + RUN_HEADER)
            for m in run_all(args.fast, args.paced):
                sends.append(m)
                print(report(m))
        print("\ntargets:")
        print("\n".join(verdicts(read, sends, args.lines)))
    if args.record:
        with RESULTS.open("a", encoding="utf-8") as fh:
            fh.write("\n```\n" + buf.getvalue() + "```\n")


if __name__ == "__main__":
    main()
