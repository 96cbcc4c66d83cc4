"""Wire the stages: read → validate → plan → decide → send → record → results → summary.

``check_inputs`` serves ``bulkcapture validate``; ``run_batch`` serves ``bulkcapture run``. Both
return a ``RunSummary``; the CLI only renders it and picks the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import polars as pl

from etl.client import ApiClient
from etl.config import ENV_PARTITIONS, Credentials, Settings
from etl.errors import ConfigError, InputError, RunAborted
from etl.ledger import Ledger, RunLock, resolve_ledger_path
from etl.model import CaptureRequest
from etl.plan import Plan, plan_captures
from etl.progress import Progress
from etl.read import estimate_lines, expand_inputs, first_line, load_column_map, read_shipments
from etl.results import (
    OUTCOME_COLUMNS,
    RESULT_FORMATS,
    PartWriter,
    build_results,
    check_results_path,
    write_atomic,
    write_frame,
    write_results,
)
from etl.resume import check_orders, decide, ledger_result, outcome_row
from etl.send import SendPolicy, send_captures
from etl.summary import RunSummary, summarize, summarize_tally, tally
from etl.validate import FAILURE_SCHEMA, format_failure, validate_shipments
from schemas.results import RESULT_SCHEMA

T = TypeVar("T")


@dataclass(frozen=True)
class Loaded:
    plan: Plan
    seconds: float


def load_plan(inputs: list[str], settings: Settings, *, bodies: bool = True,
              keys: bool = True) -> Loaded:
    """Read, validate and plan: everything that happens before any money could move.

    ``bodies=False`` when nothing will be sent (validate, dry run): the verdicts are the same,
    but request bodies are built only where a check needs one, so memory stays bounded.
    ``keys=False`` when no results file is written (validate): no idempotency keys.

    The reader is lazy, so a file that cannot be parsed (not UTF-8, a ragged or unterminated
    CSV line) only fails when validate collects it: that failure becomes an ``InputError``
    naming the file here, never a traceback.
    """
    start = time.perf_counter()
    column_map = load_column_map(settings.columns)
    shipments = read_shipments(inputs, column_map)
    try:
        validation = validate_shipments(shipments, settings.amounts)
        plan = plan_captures(validation, bodies=bodies, keys=keys)
    except _ENGINE_ERRORS as exc:
        raise _unreadable(shipments.files, column_map, exc) from exc
    return Loaded(plan, time.perf_counter() - start)


# What polars (and pyarrow under it) raise on input they cannot parse. A panic is a
# BaseException: caught too, so that hostile input never ends in a traceback.
_ENGINE_ERRORS = (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError, ValueError)


def _unreadable(files: tuple[str, ...], column_map: dict[str, str],
                exc: BaseException) -> InputError:
    """The file that fails on its own (only this error path pays for finding it), and a hint."""
    culprit = ", ".join(files)
    if len(files) > 1:
        for name in files:
            try:
                read_shipments([name], column_map).rows.collect()
            except _ENGINE_ERRORS:
                culprit = name
                break
    reason = first_line(exc)
    low = reason.lower()
    if "utf-8" in low or "utf8" in low:
        hint = "it is not UTF-8 text: re-export it as UTF-8 (bulkcapture does not guess encodings)"
    elif "more fields" in low or "ragged" in low:
        hint = ("a line has more fields than the header: quote cells that contain the delimiter, "
                "or fix the line")
    elif "could not parse" in low:
        hint = (f"a cell could not be parsed ({reason[:80]}): look for a quote that is never "
                "closed")
    else:
        hint = f"{reason}; check that it is a complete, valid export"
    return InputError(f"cannot read {culprit}: {hint}.")


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def failures_by_rule(failures: pl.DataFrame) -> dict[str, int]:
    counts = failures.group_by("rule").len().sort("len", descending=True)
    return {rule: n for rule, n in counts.iter_rows()}


EXAMPLES_PER_RULE = 3


def failure_examples(failures: pl.DataFrame, n: int = EXAMPLES_PER_RULE,
                     order: dict[str, int] | None = None) -> dict[str, list[str]]:
    """The first ``n`` failures of each rule (in file and row order), as sentences; the most
    frequent rule first, as in ``failures_by_rule`` (or ``order``, when ``failures`` holds
    only the candidate examples of a partitioned run)."""
    order = failures_by_rule(failures) if order is None else order
    # head before formatting: a sentence for each of 4M failures took a second.
    first = (failures.group_by("rule", maintain_order=True).head(n)
             .group_by("rule", maintain_order=True).agg(format_failure().alias("examples")))
    examples = {rule: list(ex) for rule, ex in first.iter_rows()}
    return {rule: examples[rule] for rule in order}


def rejects_format(path: Path) -> str:
    """The rejects file's format by its suffix; CSV for any other."""
    return RESULT_FORMATS.get(path.suffix.lower(), "csv")


def write_rejects(failures: pl.DataFrame, path: Path) -> None:
    fmt = rejects_format(path)
    write_atomic(path, lambda tmp: write_frame(failures, tmp, fmt))


# --- capture partitions (validate and the dry run) -------------------------------------------
# Below SINGLE_PASS_LINES one streaming pass holds every capture's aggregates (≈ 650 B each,
# bench/RESULTS.md) in well under 2 GB. Above it the captures are split by a hash of their
# identity into partitions of about LINES_PER_PARTITION lines, one pass over the input each:
# peak memory follows the partition, not the input; time grows with the number of scans.
SINGLE_PASS_LINES = 3_000_000
LINES_PER_PARTITION = 2_000_000


def partition_count(inputs: list[str], settings: Settings) -> int:
    """Settings' ``partitions``, else ``BULKCAPTURE_PARTITIONS``, else from the input's size."""
    chosen: object = settings.partitions
    if chosen is None:
        chosen = os.environ.get(ENV_PARTITIONS) or None
    if chosen is not None:
        try:
            count = int(str(chosen))
        except ValueError:
            count = 0
        if count < 1:
            raise ConfigError(f"partitions must be a whole number of at least 1 (got {chosen!r}; "
                              f"setting 'partitions' or {ENV_PARTITIONS}).")
        return count
    try:
        files = expand_inputs(inputs)
    except InputError:  # reported by the read itself, with its own message
        return 1
    lines = estimate_lines(files)
    return 1 if lines < SINGLE_PASS_LINES else math.ceil(lines / LINES_PER_PARTITION)


def _partition_plans(inputs: list[str], settings: Settings, count: int, *,
                     keys: bool) -> Iterator[Plan]:
    """Validate and plan one capture partition at a time (``bodies=False``).

    A capture, and every copy of its identity, is in exactly one partition, so each plan's
    verdicts are the ones the whole input would give it.
    """
    column_map = load_column_map(settings.columns)
    shipments = read_shipments(inputs, column_map)
    for index in range(count):
        try:
            validation = validate_shipments(shipments.partition(index, count), settings.amounts)
            plan = plan_captures(validation, bodies=False, keys=keys)
        except _ENGINE_ERRORS as exc:
            raise _unreadable(shipments.files, column_map, exc) from exc
        yield plan  # outside the try: an error of the consumer is not an unreadable input


_FILE_ORDER = ["source_file", "source_row", "column"]


class _Tally:
    """What the summary needs, added up partition by partition: the status/currency tallies,
    failures per rule, and each partition's first few failures per rule (the screen's
    examples are the first of these in file and row order)."""

    def __init__(self) -> None:
        self.tallies: list[pl.DataFrame] = []
        self.rules: Counter[str] = Counter()
        self.examples: list[pl.DataFrame] = []

    def add(self, captures: pl.DataFrame, failures: pl.DataFrame) -> None:
        self.tallies.append(tally(captures))
        self.rules.update(failures_by_rule(failures))
        # Sorted first: plan appends its own checks (duplicates, size) after the sorted rest.
        self.examples.append(failures.sort(_FILE_ORDER, maintain_order=True)
                             .group_by("rule", maintain_order=True).head(EXAMPLES_PER_RULE))

    def summary(self, **kw: Any) -> RunSummary:
        order = dict(sorted(self.rules.items(), key=lambda kv: (-kv[1], kv[0])))
        firsts = pl.concat(self.examples, how="vertical_relaxed").sort(
            _FILE_ORDER, maintain_order=True)
        return summarize_tally(pl.concat(self.tallies), failures_by_rule=order,
                               failure_examples=failure_examples(firsts, order=order), **kw)


def _check_partitioned(inputs: list[str], settings: Settings, rejects: Path | None,
                       count: int) -> RunSummary:
    start = time.perf_counter()
    acc = _Tally()
    with contextlib.ExitStack() as stack:
        writer = (stack.enter_context(PartWriter(rejects, rejects_format(rejects)))
                  if rejects is not None else None)
        for plan in _partition_plans(inputs, settings, count, keys=False):
            if writer is not None:
                writer.add(plan.failures.cast(FAILURE_SCHEMA))
            acc.add(plan.captures, plan.failures)
        if writer is not None:
            writer.publish()
    return acc.summary(command="validate", run_id=new_run_id(datetime.now(UTC)), dry_run=True,
                       elapsed_s=time.perf_counter() - start,
                       rejects_path=str(rejects) if rejects else None)


def check_inputs(inputs: list[str], settings: Settings, rejects: Path | None) -> RunSummary:
    """``bulkcapture validate``: read and validate; the rejects file gets one row per check.

    A large input is validated a capture partition at a time (``partition_count``), its
    rejects file written part by part; a small one in one pass, as a whole.
    """
    count = partition_count(inputs, settings)
    if count > 1:
        return _check_partitioned(inputs, settings, rejects, count)
    loaded = load_plan(inputs, settings, bodies=False, keys=False)
    if rejects is not None:
        write_rejects(loaded.plan.failures, rejects)
    # No results file: the summary's counts and amounts come straight from the plan, whose
    # statuses (planned / invalid) are what a results file would hold.
    return summarize(loaded.plan.captures, command="validate",
                     run_id=new_run_id(datetime.now(UTC)), dry_run=True,
                     elapsed_s=loaded.seconds,
                     rejects_path=str(rejects) if rejects else None,
                     failures_by_rule=failures_by_rule(loaded.plan.failures),
                     failure_examples=failure_examples(loaded.plan.failures))


def run_dry(inputs: list[str], settings: Settings, results_path: Path,
            overwrite: bool) -> RunSummary:
    """``bulkcapture run --dry-run``: everything but sending; every valid capture ``planned``.

    Like ``check_inputs``, a large input is planned a capture partition at a time and its
    results file written part by part: rows are then in input order within each partition.
    """
    check_results_path(results_path, overwrite)
    start = time.perf_counter()
    run_id = new_run_id(datetime.now(UTC))
    count = partition_count(inputs, settings)
    if count > 1:
        acc = _Tally()
        with PartWriter(results_path, RESULT_FORMATS[results_path.suffix.lower()]) as writer:
            for plan in _partition_plans(inputs, settings, count, keys=True):
                results = build_results(plan, run_id, unsent="planned")
                writer.add(results)
                acc.add(results, plan.failures)
            writer.publish()
        return acc.summary(command="run", run_id=run_id, dry_run=True,
                           elapsed_s=time.perf_counter() - start,
                           results_path=str(results_path))
    loaded = load_plan(inputs, settings, bodies=False)
    results = build_results(loaded.plan, run_id, unsent="planned")
    write_results(results, results_path)
    return summarize(results, command="run", run_id=run_id, dry_run=True,
                     elapsed_s=time.perf_counter() - start, results_path=str(results_path),
                     failures_by_rule=failures_by_rule(loaded.plan.failures),
                     failure_examples=failure_examples(loaded.plan.failures))


# --- the real run -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """Where captures go and with which credential (secrets masked in repr)."""

    base_url: str
    credentials: Credentials


def outcomes_frame(rows: dict[tuple[str, str], dict[str, Any]]) -> pl.DataFrame:
    """Result rows keyed by identity → a frame ``build_results`` can join."""
    records = [{"order_id": o, "capture_reference": r, **v} for (o, r), v in rows.items()]
    schema: dict[str, pl.DataType] = {"order_id": pl.String(), "capture_reference": pl.String(),
                                      **{c: RESULT_SCHEMA[c] for c in OUTCOME_COLUMNS}}
    return pl.DataFrame(records, schema=schema)


@dataclass
class Sent:
    """What the decide-and-send step came to."""

    rows: dict[tuple[str, str], dict[str, Any]]  # result rows by identity
    aborted: RunAborted | None = None
    seconds: float = 0.0  # time spent sending
    sent: int = 0  # captures that went on the wire this run


async def _send_all(requests: list[CaptureRequest], ledger: Ledger, target: Target,
                    settings: Settings, stop: asyncio.Event, progress: Progress | None,
                    transport: httpx.AsyncBaseTransport | None) -> Sent:
    """Decide against the ledger, check orders where needed, send the rest."""
    decisions = decide(requests, ledger)
    policy = SendPolicy.from_settings(settings)
    async with ApiClient(target.base_url, target.credentials, timeout=settings.timeout,
                         max_connections=settings.concurrency, transport=transport) as client:
        try:
            await check_orders(decisions, client, ledger, ledger.now())
        except RunAborted as exc:  # a 401 or a TLS failure while reading orders
            return Sent(dict(decisions.done), aborted=exc)
        if progress:
            progress.start(len(decisions.send))
        try:
            report = await send_captures(
                decisions.send, client, ledger, policy, stop=stop,
                on_progress=progress.advance if progress else None)
        finally:
            if progress:
                progress.stop()
    out = Sent(dict(decisions.done), report.aborted, report.elapsed)
    by_key = {r.idempotency_key: r for r in decisions.send}
    for key, outcome in report.outcomes.items():
        req = by_key[key]
        out.rows[(req.order_id, req.capture_reference)] = outcome_row(req, outcome)
        out.sent += outcome.status != "not_sent"
    return out


def rows_from_ledger(ledger: Ledger, requests: list[CaptureRequest],
                     run_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Result rows from the ledger alone, for a run that ended without its send report."""
    status = {"captured": "captured", "rejected": "rejected", "failed": "failed",
              "unknown": "failed", "sending": "failed", "planned": "not_sent"}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    hashes = {(r.order_id, r.capture_reference): r.content_hash for r in requests}
    found = ledger.rows_for(hashes)
    for ident, row in found.items():
        state = status[row.state]
        if state == "captured" and row.content_hash != hashes[ident]:
            state = "conflict"  # captured earlier with other content; this run sent nothing
        elif state == "captured" and row.run_id != run_id:
            state = "already_captured"
        rows[ident] = ledger_result(row, state)
        if state == "failed" and not row.error_code:
            rows[ident]["error_code"] = "UNKNOWN"
        if row.state == "sending" and not row.error_messages:
            rows[ident]["error_messages"] = ("the run stopped while this capture was being "
                                             "sent: the next run re-sends it with the same key")
    return rows


def _run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run the send on uvloop where it is installed: at 200 requests/s much of the client's
    CPU is the event loop's own (timers, socket callbacks), which uvloop does in C."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        return asyncio.run(coro)
    return uvloop.run(coro)


def _install_signals(stop: asyncio.Event) -> list[signal.Signals]:
    """SIGINT/SIGTERM set ``stop``: no new capture starts, those in flight finish."""
    if threading.current_thread() is not threading.main_thread():
        return []
    loop = asyncio.get_running_loop()
    sigs = [signal.SIGINT, signal.SIGTERM]
    for sig in sigs:
        loop.add_signal_handler(sig, stop.set)
    return sigs


def run_batch(inputs: list[str], settings: Settings, target: Target | None, results_path: Path,
              *, overwrite: bool = False, lock_wait: float = 0.0,
              progress: Progress | None = None,
              transport: httpx.AsyncBaseTransport | None = None) -> RunSummary:
    """``bulkcapture run``: pre-flight, read, validate, plan, decide, send, record, write.

    Unlike validate and the dry run, this holds every capture and request of the input at
    once (no partitions): 50M lines (20M captures) take over a day to send at 200/s.

    Pre-flight (before any money moves): credentials and target present, results path
    writable, input readable and validated, ledger open and locked. Results are written also
    when the run is aborted (401, circuit breaker, signal); the summary then carries the reason
    and the caller exits 1.
    """
    check_results_path(results_path, overwrite)
    if target is None:
        raise ConfigError("no target: set BULKCAPTURE_BASE_URL or pass --base-url, --provider, "
                          "or --sandbox.")
    start = time.perf_counter()
    loaded = load_plan(inputs, settings)
    ledger_path = resolve_ledger_path(settings.ledger)
    run_id = new_run_id(datetime.now(UTC))
    lock = RunLock(ledger_path)
    done = Sent({})
    # The lock first: opening the SQLite file while another run writes it would race.
    lock.acquire(lock_wait, run_id)
    try:
        with Ledger(ledger_path) as ledger:
            ledger.begin_run(run_id, inputs)
            requests = list(loaded.plan.requests())

            async def main() -> Sent:
                stop = asyncio.Event()
                sigs = _install_signals(stop)
                try:
                    return await _send_all(requests, ledger, target, settings, stop, progress,
                                           transport)
                finally:
                    loop = asyncio.get_running_loop()
                    for sig in sigs:
                        loop.remove_signal_handler(sig)

            try:
                done = _run_loop(main())
            except BaseException:
                # Something unforeseen stopped the send (a full disk under the ledger, a bug):
                # the results still say what happened to each capture, as far as the ledger
                # knows, before the error goes up. Best effort: if even that fails, the
                # original error is the one to show.
                with contextlib.suppress(Exception):
                    rows = rows_from_ledger(ledger, requests, run_id)
                    write_results(build_results(loaded.plan, run_id, outcomes_frame(rows),
                                                unsent="not_sent"), results_path)
                raise
            results = build_results(loaded.plan, run_id, outcomes_frame(done.rows),
                                    unsent="not_sent")
            write_results(results, results_path)
            ledger.end_run(f"aborted: {done.aborted}" if done.aborted else "finished")
    finally:
        lock.release()
    return summarize(results, command="run", run_id=run_id, dry_run=False,
                     elapsed_s=time.perf_counter() - start, sent=done.sent,
                     send_seconds=done.seconds, results_path=str(results_path),
                     ledger_path=str(ledger_path),
                     aborted=str(done.aborted) if done.aborted else None,
                     failures_by_rule=failures_by_rule(loaded.plan.failures),
                     failure_examples=failure_examples(loaded.plan.failures))
