"""Reconcile's outputs: the report file (by suffix) and the terminal summary.

Where it sits: after ``etl.reconcile``; reads a ``Reconciliation``, computes nothing new.

* ``.csv`` / ``.parquet``: the detail table, amounts in integer minor units (machine-readable,
  like the results file; the CSV is written as data, not neutralised for spreadsheets).
* ``.xlsx``: Summary, Exceptions and Detail sheets for a finance person: amounts as numbers in
  major units with a number format per the currency's exponent, frozen header, autofilter.
  Every string is written with ``write_string`` and a text that starts with ``= + - @`` (or a
  tab / carriage return) is prefixed with ``'`` so no cell is ever a formula.
* ``.html``: one self-contained page (inline CSS and SVG, no scripts, no external assets).

Every file is written atomically: a temporary file in the target's directory, then
``os.replace``.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import xlsxwriter

from etl.currency import exponent
from etl.errors import ConfigError, ResultsError
from etl.reconcile import Reconciliation
from etl.results import write_atomic

REPORT_SUFFIXES = (".xlsx", ".csv", ".parquet", ".html")
AMOUNT_COLUMNS = frozenset({
    "captured_amount", "settled_amount", "difference", "fee_amount", "return_amount",
    "reversal_amount", "other_amount", "captured", "settled", "fees", "returns", "reversals",
    "other", "net", "open_amount", "not_ours_amount", "reported_total", "payout_difference",
})
SUMMARY_COLUMNS = ("currency", "captures", "captured", "settled", "fees", "returns", "reversals",
                   "net", "open_count", "open_amount", "not_ours_count", "not_ours_amount")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
XLSX_MAX_ROWS = 1_048_576
HTML_MAX_ROWS = 1000  # exceptions listed on the page; the full list is in .xlsx/.csv


def check_report_path(path: str | Path) -> Path:
    """The report path, if its suffix names a format we write; else ``ConfigError``."""
    path = Path(path)
    if path.suffix.lower() not in REPORT_SUFFIXES:
        raise ConfigError(f"--out {path}: unknown report format {path.suffix or '(no suffix)'!r};"
                          f" use one of {', '.join(REPORT_SUFFIXES)}.")
    return path


def write_report(rec: Reconciliation, path: str | Path) -> Path:
    """Write the report in the format its suffix names, atomically. Returns the path."""
    path = check_report_path(path)
    writers: dict[str, Callable[[Reconciliation, Path], None]] = {
        ".csv": lambda r, p: r.detail.write_csv(p),
        ".parquet": lambda r, p: r.detail.write_parquet(p),
        ".xlsx": _write_xlsx,
        ".html": _write_html,
    }
    write_atomic(path, lambda tmp: writers[path.suffix.lower()](rec, tmp))
    return path


# --- amounts -----------------------------------------------------------------------------------

def major(minor: int, currency: str | None) -> Decimal:
    """Minor units → an exact Decimal in major units (``1234, 'KWD'`` → ``1.234``)."""
    return Decimal(minor).scaleb(-exponent(currency))


def format_amount(minor: int | None, currency: str | None) -> str:
    """``123456, 'EUR'`` → ``'1,234.56'``; ``None`` → ``''``. Exact, never through float."""
    if minor is None:
        return ""
    return f"{major(minor, currency):,.{exponent(currency)}f}"


def neutralise(text: str) -> str:
    """A text that a spreadsheet would read as a formula gets a leading apostrophe."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


# --- terminal summary --------------------------------------------------------------------------

def summary_rows(rec: Reconciliation) -> tuple[list[str], list[list[str]]]:
    """The per-currency summary as header + text rows, amounts in major units."""
    rows = []
    for row in rec.by_currency.iter_rows(named=True):
        cur = row["currency"]
        rows.append([
            format_amount(row[c], cur) if c in AMOUNT_COLUMNS
            else str(row[c] if row[c] is not None else "—")
            for c in SUMMARY_COLUMNS])
    return list(SUMMARY_COLUMNS), rows


def summary_headline(rec: Reconciliation) -> str:
    counts = rec.counts
    parts = ", ".join(f"{status} {n}" for status, n in counts.items())
    return f"Reconcile as of {rec.as_of.isoformat()}: {parts}."


def summary_text(rec: Reconciliation) -> str:
    """A plain-text summary: the counts line and an aligned per-currency table."""
    header, rows = summary_rows(rec)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [summary_headline(rec), ""]
    lines.append("  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                           for i, (h, w) in enumerate(zip(header, widths, strict=True))))
    for r in rows:
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                               for i, (v, w) in enumerate(zip(r, widths, strict=True))))
    unlinked = rec.unlinked.height
    if unlinked:
        lines.append(f"\n{unlinked} settlement row(s) tied to no capture or sale (payout-level "
                     f"charges, returns of other orders): see the by-payout totals.")
    return "\n".join(lines)


# --- xlsx --------------------------------------------------------------------------------------

class _Sheet:
    """Writes typed cells with xlsxwriter: numbers as numbers, strings never as formulas."""

    def __init__(self, book: xlsxwriter.Workbook, ws: Any) -> None:
        self.book, self.ws = book, ws
        self.bold = book.add_format({"bold": True, "bg_color": "#DDE4EE", "border": 1})
        self.title = book.add_format({"bold": True, "font_size": 14})
        self.date = book.add_format({"num_format": "yyyy-mm-dd"})
        self.datetime = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        self.amount: dict[int, Any] = {}

    def amount_format(self, exp: int) -> Any:
        if exp not in self.amount:
            pattern = "#,##0" + ("." + "0" * exp if exp else "")
            self.amount[exp] = self.book.add_format({"num_format": f"{pattern};-{pattern}"})
        return self.amount[exp]

    def cell(self, r: int, c: int, value: Any, *, amount_of: str | None = None,
             is_amount: bool = False) -> None:
        ws = self.ws
        if value is None:
            ws.write_blank(r, c, None)
        elif is_amount:
            ws.write_number(r, c, float(major(value, amount_of)),
                            self.amount_format(exponent(amount_of)))
        elif isinstance(value, bool):
            ws.write_boolean(r, c, value)
        elif isinstance(value, int | float):
            ws.write_number(r, c, value)
        elif isinstance(value, datetime):
            ws.write_datetime(r, c, value.replace(tzinfo=None), self.datetime)
        elif isinstance(value, date):
            ws.write_datetime(r, c, datetime(value.year, value.month, value.day), self.date)
        else:
            ws.write_string(r, c, neutralise(str(value)))

    def table(self, frame: pl.DataFrame, first_row: int = 0, *, filter_: bool = True) -> int:
        """Header + rows from ``first_row``; returns the next free row."""
        columns = frame.columns
        headers = [c + " (UTC)" if c == "completed_at" else c for c in columns]
        for c, name in enumerate(headers):
            self.ws.write_string(first_row, c, name, self.bold)
        amount_cols = {i for i, name in enumerate(columns) if name in AMOUNT_COLUMNS}
        cur_col = columns.index("currency") if "currency" in columns else None
        r = first_row
        for r, row in enumerate(frame.iter_rows(), start=first_row + 1):
            cur = row[cur_col] if cur_col is not None else None
            for c, value in enumerate(row):
                self.cell(r, c, value, amount_of=cur, is_amount=c in amount_cols)
        if filter_:
            self.ws.autofilter(first_row, 0, max(r, first_row + 1), len(columns) - 1)
        return r + 2

    def widths(self, frames: Iterable[pl.DataFrame]) -> None:
        best: dict[int, int] = {}
        for frame in frames:
            sample = frame.head(500)
            for i, name in enumerate(frame.columns):
                longest = max((len(str(v)) for v in sample[name].to_list() if v is not None),
                              default=0)
                best[i] = max(best.get(i, 0), len(name) + 2, longest + 2)
        for i, width in best.items():
            self.ws.set_column(i, i, min(max(width, 10), 50))


def _write_xlsx(rec: Reconciliation, path: Path) -> None:
    if rec.detail.height + 1 > XLSX_MAX_ROWS:
        raise ResultsError(f"{rec.detail.height} detail rows do not fit in one Excel sheet "
                           f"(max {XLSX_MAX_ROWS - 1}): write --out report.parquet or .csv.")
    book = xlsxwriter.Workbook(str(path), {
        "constant_memory": True,  # rows stream to disk: a night of 700k captures fits
        "strings_to_formulas": False, "strings_to_urls": False, "strings_to_numbers": False,
    })
    try:
        summary = _Sheet(book, book.add_worksheet("Summary"))
        summary.ws.write_string(0, 0, "bulkcapture reconcile", summary.title)
        summary.ws.write_string(1, 0, neutralise(summary_headline(rec)))
        counts = pl.DataFrame({"match_status": list(rec.counts),
                               "count": list(rec.counts.values())})
        summary.ws.write_string(3, 0, "Totals per currency (major units)", summary.title)
        row = summary.table(rec.by_currency, 4, filter_=False)
        summary.ws.write_string(row, 0, "Totals per payout (major units)", summary.title)
        row = summary.table(rec.by_payout, row + 1, filter_=False)
        summary.ws.write_string(row, 0, "Rows per match status", summary.title)
        summary.table(counts, row + 1, filter_=False)
        summary.widths([rec.by_currency, rec.by_payout, counts])
        summary.ws.freeze_panes(3, 0)
        for name, frame in (("Exceptions", rec.exceptions), ("Detail", rec.detail)):
            sheet = _Sheet(book, book.add_worksheet(name))
            sheet.widths([frame])
            sheet.ws.freeze_panes(1, 0)
            sheet.table(frame)
    finally:
        book.close()


# --- html ---------------------------------------------------------------------------------------

def _write_html(rec: Reconciliation, path: Path) -> None:
    path.write_text(render_html(rec), encoding="utf-8")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1d2733}
h1{font-size:1.5rem}h2{font-size:1.15rem;margin-top:2rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #ccd3dc;padding:.25rem .5rem}th{background:#e8edf3;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:.2rem .6rem;margin-right:.4rem;border-radius:.8rem;
background:#e8edf3}.bad{background:#fde2e1}.good{background:#dff3e3}
svg text{font-size:11px;fill:#1d2733}.note{color:#5b6775;font-size:.85rem}
"""


def render_html(rec: Reconciliation) -> str:
    """The report as one self-contained HTML page."""
    esc = html.escape
    badges = "".join(
        f'<span class="badge {"good" if s == "matched" else ("bad" if n else "")}">'
        f"{esc(s)}: {n}</span>" for s, n in rec.counts.items())
    exceptions = rec.exceptions
    shown = exceptions.head(HTML_MAX_ROWS)
    more = (f'<p class="note">Showing {HTML_MAX_ROWS} of {exceptions.height} exceptions; the '
            f"full list is in the .xlsx or .csv report.</p>" if exceptions.height > shown.height
            else "")
    charts = "".join(_chart(rec.daily.filter(pl.col("currency").eq_missing(cur)), cur)
                     for cur in rec.daily["currency"].unique(maintain_order=True).to_list())
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>Reconcile {esc(rec.as_of.isoformat())}</title><style>{_CSS}</style></head><body>"
        f"<h1>bulkcapture reconcile</h1><p>As of {esc(rec.as_of.isoformat())}. "
        f"Amounts in major units.</p><p>{badges}</p>"
        f"<h2>Totals per currency</h2>{_html_table(rec.by_currency)}"
        f"<h2>Captured and settled per day</h2>{charts or '<p class=note>No dated rows.</p>'}"
        f"<h2>Totals per payout</h2>{_html_table(rec.by_payout)}"
        f"<h2>Exceptions</h2>{_html_table(shown) if shown.height else '<p>None.</p>'}{more}"
        "</body></html>\n"
    )


def _html_table(frame: pl.DataFrame) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in frame.columns)
    cur_col = frame.columns.index("currency") if "currency" in frame.columns else None
    body = []
    for row in frame.iter_rows():
        cur = row[cur_col] if cur_col is not None else None
        cells = []
        for name, value in zip(frame.columns, row, strict=True):
            if name in AMOUNT_COLUMNS:
                cells.append(f'<td class="n">{esc(format_amount(value, cur))}</td>')
            elif isinstance(value, int | float):
                cells.append(f'<td class="n">{value}</td>')
            else:
                cells.append(f"<td>{esc('' if value is None else str(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _chart(daily: pl.DataFrame, currency: str | None) -> str:
    """Grouped bars per day, captured against settled, as inline SVG."""
    esc = html.escape
    days: Sequence[date] = daily["day"].to_list()
    captured, settled = daily["captured"].to_list(), daily["settled"].to_list()
    top = max([*captured, *settled, 1])
    left, bar, gap, plot_h = 70, 14, 12, 160
    width = left + len(days) * (2 * bar + gap) + 20
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{max(width, 320)}" '
             f'height="{plot_h + 70}" role="img" aria-label="captured and settled per day, '
             f'{esc(str(currency))}">',
             f'<text x="0" y="14">{esc(str(currency))}</text>',
             f'<text x="{left - 6}" y="30" text-anchor="end">{esc(format_amount(top, currency))}'
             f'</text>',
             f'<line x1="{left}" y1="{plot_h + 20}" x2="{width}" y2="{plot_h + 20}" '
             f'stroke="#8795a8"/>']
    for i, (day, cap, sett) in enumerate(zip(days, captured, settled, strict=True)):
        x = left + i * (2 * bar + gap)
        for j, (value, colour, label) in enumerate(((cap, "#3c6fb4", "captured"),
                                                    (sett, "#3f9b5a", "settled"))):
            h = round(plot_h * value / top)
            parts.append(
                f'<rect x="{x + j * bar}" y="{plot_h + 20 - h}" width="{bar - 1}" height="{h}" '
                f'fill="{colour}"><title>{esc(day.isoformat())} {label} '
                f'{esc(format_amount(value, currency))}</title></rect>')
        parts.append(f'<text x="{x}" y="{plot_h + 34}">{esc(day.strftime("%m-%d"))}</text>')
    parts.append(f'<rect x="{left}" y="{plot_h + 44}" width="10" height="10" fill="#3c6fb4"/>'
                 f'<text x="{left + 14}" y="{plot_h + 53}">captured</text>'
                 f'<rect x="{left + 90}" y="{plot_h + 44}" width="10" height="10" '
                 f'fill="#3f9b5a"/><text x="{left + 104}" y="{plot_h + 53}">settled</text>')
    return "".join(parts) + "</svg>"
