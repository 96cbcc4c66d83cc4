"""The run's summary: counts per status, amounts per currency, time and rate; text and JSON.

Built from the results frame, so what the summary says and what the results file holds can
never disagree.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl

from etl.currency import exponent
from etl.model import EXCEPTION_STATUSES, STATUSES

# Amounts that moved (or would move, in a dry run) are summed per currency.
MONEY_STATUSES = ("captured", "already_captured", "planned")


@dataclass(frozen=True)
class RunSummary:
    """What a command did, for stdout and ``--summary-json``."""

    command: str
    run_id: str
    dry_run: bool
    captures: int
    counts: dict[str, int]
    amounts: dict[str, dict[str, int]]  # status → currency → minor units
    elapsed_s: float
    rate_per_s: float  # captures sent per second of sending
    results_path: str | None = None
    ledger_path: str | None = None
    rejects_path: str | None = None
    aborted: str | None = None
    failures_by_rule: dict[str, int] = field(default_factory=dict)
    # The first few failures of each rule, as sentences: what the screen shows. The full list
    # is the rejects file; the screen stays a few lines long whatever the number of failures.
    failure_examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        if self.aborted:
            return 1
        return 3 if any(self.counts.get(s, 0) for s in EXCEPTION_STATUSES) else 0

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "exit_code": self.exit_code}, indent=2)

    def write_json(self, path: Path) -> None:
        from etl.results import write_atomic

        def dump(tmp: Path) -> None:
            tmp.write_text(self.to_json() + "\n", encoding="utf-8")

        write_atomic(path, dump)


def tally(results: pl.DataFrame) -> pl.DataFrame:
    """Captures and amount per (status, currency): all a summary needs of a results frame.

    Tallies of the parts of a run (its capture partitions) concatenate into the run's tally,
    so a partitioned run never holds every result row to summarise them.
    """
    return results.group_by("status", "currency").agg(
        pl.len().cast(pl.Int64).alias("n"), pl.col("captured_amount").sum().alias("amount"))


def summarize(results: pl.DataFrame, *, command: str, run_id: str, dry_run: bool,
              elapsed_s: float, sent: int = 0, send_seconds: float = 0.0,
              **extra: object) -> RunSummary:
    return summarize_tally(tally(results), command=command, run_id=run_id, dry_run=dry_run,
                           elapsed_s=elapsed_s, sent=sent, send_seconds=send_seconds, **extra)


def summarize_tally(tallies: pl.DataFrame, *, command: str, run_id: str, dry_run: bool,
                    elapsed_s: float, sent: int = 0, send_seconds: float = 0.0,
                    **extra: object) -> RunSummary:
    """The summary from ``tally`` frames (one, or the parts' concatenated)."""
    counts = {s: int(n) for s, n in tallies.group_by("status").agg(pl.col("n").sum())
              .iter_rows()}
    money = (tallies.filter(pl.col("status").is_in(MONEY_STATUSES))
             .group_by("status", "currency").agg(pl.col("amount").sum()))
    amounts: dict[str, dict[str, int]] = {}
    for status, currency, total in money.iter_rows():
        amounts.setdefault(status, {})[currency or "unknown"] = int(total or 0)
    return RunSummary(
        command=command, run_id=run_id, dry_run=dry_run, captures=sum(counts.values()),
        counts={s: counts[s] for s in STATUSES if s in counts}, amounts=amounts,
        elapsed_s=round(elapsed_s, 3),
        rate_per_s=round(sent / send_seconds, 1) if send_seconds > 0 else 0.0,
        **extra)  # type: ignore[arg-type]


def format_amount(minor: int, currency: str) -> str:
    """12345 EUR → 'EUR 123.45', exactly (integer arithmetic, no float)."""
    exp = exponent(currency)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**exp)
    return f"{currency} {sign}{whole:,}" + (f".{frac:0{exp}d}" if exp else "")


def render_text(s: RunSummary) -> str:
    dry = " (dry run)" if s.dry_run and s.command == "run" else ""
    lines = [f"bulkcapture {s.command}{dry}: run {s.run_id}"]
    lines.append(f"  captures: {s.captures}  "
                 + "  ".join(f"{k} {v}" for k, v in s.counts.items()))
    for status, per in s.amounts.items():
        lines.append(f"  amount {status}: "
                     + ", ".join(format_amount(v, c) for c, v in sorted(per.items())))
    if s.failures_by_rule:
        lines.append("  failed checks: "
                     + ", ".join(f"{k} {v}" for k, v in s.failures_by_rule.items()))
    for rule, examples in s.failure_examples.items():
        lines += [f"    {rule}: {e}" for e in examples]
    lines.append(f"  elapsed {s.elapsed_s:.1f} s" + (f", {s.rate_per_s} captures/s"
                                                     if s.rate_per_s else ""))
    for label, path in (("results", s.results_path), ("rejects", s.rejects_path),
                        ("ledger", s.ledger_path)):
        if path:
            lines.append(f"  {label}: {path}")
    if s.aborted:
        lines.append(f"  stopped: {s.aborted}")
    return "\n".join(lines)
