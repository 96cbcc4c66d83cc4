"""Benchmark of the read → validate → plan stages against a plain-polars floor, per export file.

Every measured step runs in its own subprocess, so its peak RSS (``wait4``'s ``ru_maxrss``) and
CPU time are its own. The *floor* is what plain polars needs to check the same file: a streaming
scan that evaluates every row rule of ``schemas.shipments.ROW_RULES`` (the integer columns cast
from text for CSV) and sums the failures. The targets speak of ratios to that floor measured in
the same run, because the machine is shared and absolute times drift.

Steps:

* ``floor``     plain polars streaming scan + every row rule (no grouping, no reasons)
* ``validate``  ``bulkcapture validate FILE --rejects …`` (``etl.pipeline.check_inputs``)
* ``dry_run``   ``bulkcapture run FILE --dry-run`` (``etl.pipeline.run_dry``): bodies, keys,
                results file

    .venv/bin/python -m bench.bench_read --lines 1000000 --formats parquet,csv
    .venv/bin/python -m bench.bench_read --step validate bench/out/l1000000_valid.parquet
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
LINES_PER_CAPTURE = 2.5  # etl.synth draws 1..4 lines per capture, uniformly
VARIANTS = {"valid": 0.0, "p1": 1.0, "all": 100.0}  # share of captures broken, in %
STEPS = ("floor", "validate", "dry_run")


@dataclass(frozen=True)
class Measure:
    """One step on one file, measured from outside its process."""

    step: str
    file: Path
    seconds: float  # wall time of the work itself, timed inside the child (imports excluded)
    peak_rss_mb: float  # the child's peak resident set
    cpu_s: float  # the child's user + system time, imports included
    lines: int
    captures: int
    invalid: int
    extra: dict[str, float]

    @property
    def rows_per_s(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0


# --- the exports --------------------------------------------------------------------------------
def export_path(lines: int, variant: str, fmt: str) -> Path:
    return OUT / f"l{lines}_{variant}.{fmt}"


def ensure_export(lines: int, variant: str, fmt: str) -> Path:
    """Generate (once) a synthetic export of about ``lines`` lines, in its own process."""
    path = export_path(lines, variant, fmt)
    if not path.exists():
        captures = int(lines / LINES_PER_CAPTURE)
        subprocess.run([sys.executable, "-m", "etl.synth", "--captures", str(captures),
                        "--invalid-pct", str(VARIANTS[variant]), "--out", str(path)],
                       check=True, stdout=subprocess.DEVNULL)
    return path


# --- the child: one step, timed from inside -------------------------------------------------------
def floor(path: Path) -> dict[str, float]:
    """Plain polars: stream the file, evaluate every row rule, count failures per rule."""
    import polars as pl

    from schemas.shipments import INTEGER_COLUMNS, KNOWN_COLUMNS, ROW_RULES

    if path.suffix == ".csv":
        lf = pl.scan_csv(path, infer_schema=False)
        names = lf.collect_schema().names()
        lf = lf.with_columns(pl.col(c).cast(pl.Int64, strict=False)
                             for c in INTEGER_COLUMNS if c in names)
    else:
        lf = pl.scan_parquet(path)
        names = lf.collect_schema().names()
    lf = lf.with_columns(pl.lit(None, pl.Int64 if c in INTEGER_COLUMNS else pl.String).alias(c)
                         for c in KNOWN_COLUMNS if c not in names)
    counts = lf.select(
        pl.len().alias("lines"),
        *[r.fails.fill_null(False).sum().alias(f"{i}") for i, r in enumerate(ROW_RULES)],
    ).collect(engine="streaming")
    row = counts.row(0)
    return {"lines": row[0], "captures": 0, "invalid": sum(row[1:])}


def validate(path: Path) -> dict[str, float]:
    from etl.config import Settings
    from etl.pipeline import check_inputs

    s = check_inputs([str(path)], Settings(), OUT / f"rejects_{path.stem}.csv")
    return {"lines": 0, "captures": s.captures, "invalid": s.counts.get("invalid", 0)}


def dry_run(path: Path) -> dict[str, float]:
    from etl.config import Settings
    from etl.pipeline import run_dry

    s = run_dry([str(path)], Settings(), OUT / f"results_{path.stem}.parquet", overwrite=True)
    return {"lines": 0, "captures": s.captures, "invalid": s.counts.get("invalid", 0)}


def child(step: str, path: Path) -> None:
    work = {"floor": floor, "validate": validate, "dry_run": dry_run}[step]
    start = time.perf_counter()
    out = work(path)
    out["seconds"] = time.perf_counter() - start
    print(json.dumps(out), flush=True)


# --- the parent: one subprocess per step ----------------------------------------------------------
def measure(step: str, path: Path, lines: int) -> Measure:
    proc = subprocess.Popen([sys.executable, "-m", "bench.bench_read", "--step", step,
                             str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    text = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{step} on {path} failed with exit code {proc.returncode}")
    data = json.loads(text.strip().splitlines()[-1])
    seconds = float(data.pop("seconds"))
    return Measure(step=step, file=path, seconds=seconds,
                   peak_rss_mb=usage.ru_maxrss / 1024, cpu_s=usage.ru_utime + usage.ru_stime,
                   lines=int(data.pop("lines")) or lines, captures=int(data.pop("captures")),
                   invalid=int(data.pop("invalid")), extra=data)


def default_repeat(lines: int) -> int:
    """Short steps are repeated (the best of 3): on a shared machine one run can be 1.5x off."""
    return 3 if lines <= 2_000_000 else 1


def run_file(path: Path, lines: int, steps: tuple[str, ...] = STEPS,
             repeat: int = 1) -> dict[str, Measure]:
    """Every step on one file, the floor first; each the fastest of ``repeat`` runs, with the
    highest peak RSS of them."""
    out: dict[str, Measure] = {}
    for step in steps:
        runs = [measure(step, path, lines) for _ in range(repeat)]
        best = min(runs, key=lambda m: m.seconds)
        out[step] = replace(best, peak_rss_mb=max(m.peak_rss_mb for m in runs))
    return out


HEADER = (f"{'file':24s} {'step':9s} {'wall s':>7s} {'lines/s':>11s} {'captures/s':>11s} "
          f"{'peak RSS':>9s} {'CPU s':>6s} {'× floor':>7s} {'invalid':>9s}")


def row(m: Measure, floor_s: float | None) -> str:
    caps = f"{m.captures / m.seconds:11,.0f}" if m.captures else f"{'':11s}"
    ratio = f"{m.seconds / floor_s:7.2f}" if floor_s else f"{'':7s}"
    return (f"{m.file.name:24s} {m.step:9s} {m.seconds:7.2f} {m.rows_per_s:11,.0f} {caps} "
            f"{m.peak_rss_mb:7,.0f}MB {m.cpu_s:6.1f} {ratio} {m.invalid:9,d}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_read", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step", choices=STEPS, help="(child) run one step on FILE and print JSON")
    ap.add_argument("file", nargs="?", type=Path)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--formats", default="parquet")
    ap.add_argument("--variants", default="valid,p1,all")
    args = ap.parse_args(argv)
    if args.step:
        child(args.step, args.file)
        return
    print(HEADER)
    for fmt in args.formats.split(","):
        for variant in args.variants.split(","):
            path = ensure_export(args.lines, variant, fmt)
            res = run_file(path, args.lines, repeat=default_repeat(args.lines))
            for m in res.values():
                print(row(m, res["floor"].seconds if m.step != "floor" else None), flush=True)


if __name__ == "__main__":
    main()
