"""The results file: one row per capture of the input, written atomically.

Last stage of a run (… → send → record → **report**). Builds the results frame from the plan and
whatever the sender and the ledger produced, checks it against ``schemas.results.Results``, and
writes it to a temporary file beside the target, fsyncs, and renames: a reader sees the old file
or the new one, never half of one. Also owns the pre-flight check that the path is writable,
so that a run that could not write its results captures nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import date
from pathlib import Path
from types import TracebackType

import polars as pl

from etl.errors import ResultsError
from etl.model import Status
from etl.plan import Plan
from schemas.results import RESULT_COLUMNS, RESULT_SCHEMA, Results

RESULT_FORMATS = {".parquet": "parquet", ".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson"}
# Columns an outcome frame may carry; anything missing is null.
OUTCOME_COLUMNS = (
    "status", "idempotency_key", "http_status", "capture_id", "capture_location",
    "correlation_id", "error_code", "error_messages", "attempts", "first_attempt_at",
    "completed_at",
)


def default_results_path(inputs: list[str], run_date: date, suffix: str = ".parquet") -> Path:
    """``<first input's stem>.captures.<YYYY-MM-DD>.parquet`` in the working directory; a re-run
    the same day gets ``…-2``, ``…-3`` rather than overwriting the earlier night's file."""
    stem = Path(inputs[0]).name.split(".")[0] if inputs else "captures"
    stem = stem.replace("*", "").replace("?", "") or "captures"
    base = Path(f"{stem}.captures.{run_date.isoformat()}")
    path = base.with_suffix(base.suffix + suffix)
    n = 2
    while path.exists():
        path = Path(f"{base}-{n}{suffix}")
        n += 1
    return path


def check_results_path(path: Path, overwrite: bool) -> None:
    """Pre-flight: a known format, a writable directory, and no file clobbered by accident."""
    if path.suffix.lower() not in RESULT_FORMATS:
        known = ", ".join(RESULT_FORMATS)
        raise ResultsError(f"results file {path} has an unknown format; use one of {known}.")
    if path.exists() and not overwrite:
        raise ResultsError(f"results file {path} already exists: pass --overwrite to replace it, "
                           "or choose another --results path.")
    check_writable(path, "results file", "--results")


def check_writable(path: Path, what: str, option: str) -> None:
    """Pre-flight for any output: its directory exists and a file can be created in it."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ResultsError(f"cannot write {what} {path}: directory {parent} does not "
                           f"exist; create it or choose another {option} path.")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".bulkcapture-probe-"):
            pass
    except OSError as exc:
        raise ResultsError(f"cannot write {what} {path}: {exc.strerror}; choose a "
                           f"writable {option} path.") from exc


def build_results(plan: Plan, run_id: str, outcomes: pl.DataFrame | None = None,
                  unsent: Status = "planned") -> pl.DataFrame:
    """Every capture of the plan, with its outcome where there is one.

    ``outcomes`` is keyed by (order_id, capture_reference). A planned capture with no outcome
    gets ``unsent``: ``planned`` in a dry run, ``not_sent`` when a run stopped before it.
    """
    caps = plan.captures.drop("body")
    if outcomes is not None and outcomes.height:
        have = [c for c in OUTCOME_COLUMNS if c in outcomes.columns]
        out = outcomes.select("order_id", "capture_reference",
                              *[pl.col(c).alias(f"__o_{c}") for c in have])
        caps = caps.join(out, on=["order_id", "capture_reference"], how="left")
        caps = caps.with_columns(
            [pl.coalesce(f"__o_{c}", c).alias(c) if c in caps.columns
             else pl.col(f"__o_{c}").alias(c) for c in have])
    caps = caps.with_columns(
        pl.when(pl.col("status") == "planned").then(pl.lit(unsent)).otherwise(pl.col("status"))
        .alias("status"),
        pl.lit(run_id).alias("run_id"))
    missing = [c for c in RESULT_COLUMNS if c not in caps.columns]
    caps = caps.with_columns([pl.lit(None).alias(c) for c in missing])
    df = caps.select([pl.col(c).cast(RESULT_SCHEMA[c]) for c in RESULT_COLUMNS])
    df = df.with_columns(pl.col("attempts").fill_null(0))
    return Results.validate(df)  # type: ignore[no-any-return]


def write_results(df: pl.DataFrame, path: Path) -> Path:
    """Write atomically (temp file, fsync, rename) in the format of the suffix."""
    fmt = RESULT_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ResultsError(f"results file {path} has an unknown format; use one of "
                           f"{', '.join(RESULT_FORMATS)}.")
    write_atomic(path, lambda tmp: write_frame(df, tmp, fmt))
    return path


def write_frame(frame: pl.DataFrame | pl.LazyFrame, tmp: Path, fmt: str) -> None:
    """``frame`` to ``tmp`` as ``fmt`` (a ``RESULT_FORMATS`` value); a lazy frame is streamed."""
    verb = "sink_" if isinstance(frame, pl.LazyFrame) else "write_"
    getattr(frame, verb + fmt)(tmp)


class PartWriter:
    """One output file (results or rejects) written a part at a time, published whole.

    A partitioned run (``etl.pipeline``) has one part per capture partition and never holds
    them all: each part goes to a Parquet file in a private directory beside the target, and
    ``publish`` streams the parts, in order, into the target's format through ``write_atomic``.
    A reader sees the old file or the complete new one, never some partitions of it; the
    directory is removed on exit, published or not.
    """

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        parent = path.parent if str(path.parent) else Path(".")
        try:
            self._dir = Path(tempfile.mkdtemp(dir=parent, prefix=f".{path.name}.parts."))
        except OSError as exc:
            raise ResultsError(f"cannot write {path}: {exc.strerror}; check that the "
                               "directory exists and is writable.") from exc
        self._parts: list[Path] = []

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def add(self, df: pl.DataFrame) -> None:
        part = self._dir / f"{len(self._parts):05d}.parquet"
        try:
            df.write_parquet(part)
        except OSError as exc:
            raise ResultsError(f"cannot write {self.path}: {exc.strerror or exc}.") from exc
        self._parts.append(part)

    def publish(self) -> None:
        """Every part, in the order added, into ``path`` (temp file, fsync, rename)."""
        if not self._parts:
            raise ValueError("PartWriter.publish: no part was added")
        parts = pl.scan_parquet(self._parts)
        write_atomic(self.path, lambda tmp: write_frame(parts, tmp, self.fmt))


def write_atomic(path: Path, writer: Callable[[Path], object]) -> None:
    """Call ``writer(tmp_path)``, fsync the file, rename it over ``path``, fsync the directory.

    The file gets an ordinary file's mode (0666 less the umask): ``mkstemp`` creates it 0600, and
    results, rejects and reports are for finance to read, not secrets.
    """
    parent = path.parent if str(path.parent) else Path(".")
    try:
        fd, name = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ResultsError(f"cannot write {path}: {exc.strerror}; check that the directory "
                           "exists and is writable.") from exc
    os.close(fd)
    tmp = Path(name)
    try:
        writer(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):  # disk full, a directory in the way, ...
            raise ResultsError(f"cannot write {path}: {exc.strerror or exc}.") from exc
        raise
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        dfd = os.open(parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it, then put it back
    os.umask(mask)
    return mask
