"""etl/progress.py and etl/summary.py: what a person watching the night sees."""

from __future__ import annotations

import io
import json

import polars as pl

from etl.model import CaptureOutcome
from etl.progress import BarProgress, LogProgress
from etl.summary import format_amount, render_text, summarize


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_log_progress_writes_a_line_every_interval_with_rate_failures_and_eta() -> None:
    out, clock = io.StringIO(), Clock()
    p = LogProgress(out, every=10.0, clock=clock)
    p.start(100)
    for i in range(40):
        clock.t += 0.25  # 4 captures a second
        p.advance(CaptureOutcome("captured" if i % 10 else "failed"))
    lines = out.getvalue().splitlines()
    assert lines == ["progress: 40/100 captures, 4.0/s, 4 not captured, ETA 15 s"]
    p.stop()
    assert out.getvalue().splitlines()[-1].startswith("progress: 40/100")


def test_bar_progress_counts_failures() -> None:
    bar = BarProgress()
    bar.bar.console.file = io.StringIO()  # keep the test's own output clean
    bar.start(3)
    for status in ("captured", "rejected", "captured"):
        bar.advance(CaptureOutcome(status))  # type: ignore[arg-type]
    bar.stop()
    task = bar.bar.tasks[0]
    assert (task.completed, task.fields["bad"]) == (3, 1)


def test_summary_counts_amounts_per_currency_and_exit_code() -> None:
    results = pl.DataFrame({
        "status": ["captured", "captured", "already_captured", "invalid", "captured"],
        "currency": ["EUR", "EUR", "EUR", "EUR", "JPY"],
        "captured_amount": [1000, 250, 5, 99, 1500],
    })
    s = summarize(results, command="run", run_id="r1", dry_run=False, elapsed_s=2.0, sent=3,
                  send_seconds=1.5, results_path="r.parquet", ledger_path="l.sqlite")
    assert s.counts == {"captured": 3, "already_captured": 1, "invalid": 1}
    assert s.amounts == {"captured": {"EUR": 1250, "JPY": 1500},
                         "already_captured": {"EUR": 5}}
    assert s.exit_code == 3 and s.rate_per_s == 2.0
    text = render_text(s)
    assert "amount captured: EUR 12.50, JPY 1,500" in text and "ledger: l.sqlite" in text
    assert json.loads(s.to_json())["exit_code"] == 3


def test_amounts_are_formatted_exactly_by_the_currency_exponent() -> None:
    assert format_amount(123456789, "EUR") == "EUR 1,234,567.89"
    assert format_amount(-5, "EUR") == "EUR -0.05"
    assert format_amount(1234, "KWD") == "KWD 1.234"
    assert format_amount(1234, "JPY") == "JPY 1,234"
