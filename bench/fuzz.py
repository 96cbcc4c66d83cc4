"""Long fuzz of the reader and validator: the suite's properties with many examples, and raw
bytes through atheris (coverage-guided) under every input extension.

    .venv/bin/python -m bench.fuzz --examples 2000            # hypothesis, tests/test_fuzz_input.py
    .venv/bin/python -m bench.fuzz --atheris -- -runs=20000 -max_len=8192 corpus/  # atheris

The atheris target writes the fuzzer's bytes to a file whose extension the first byte picks,
runs read → validate → plan, and accepts only two endings: a plan (whose every planned body is
JSON with an integer ``captured_amount`` in range) or an ``InputError``/``BulkCaptureError``.
Anything else — a polars exception, a panic, a ``ValueError`` — is a crash. atheris is not a
project dependency (``pip install atheris``: wheels exist for CPython 3.11 on x86-64 Linux).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTENSIONS = (".csv", ".tsv", ".parquet", ".ndjson", ".jsonl", ".arrow", ".ipc")


def run_hypothesis(examples: int, seed: int) -> int:
    env = {**os.environ, "FUZZ_EXAMPLES": str(examples), "FUZZ_SEED": str(seed)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
           str(ROOT / "tests" / "test_fuzz_input.py"), f"--hypothesis-seed={seed}"]
    return subprocess.call(cmd, env=env, cwd=ROOT)


def one_input(data: bytes, workdir: Path) -> None:
    """The atheris target: any input ends in a checked plan or a BulkCaptureError."""
    from etl.config import Settings
    from etl.errors import BulkCaptureError
    from etl.pipeline import load_plan
    from schemas.limits import MAX_AMOUNT

    if not data:
        return
    path = workdir / f"input{EXTENSIONS[data[0] % len(EXTENSIONS)]}"
    path.write_bytes(data[1:])
    for amounts in ("minor", "major"):
        try:
            plan = load_plan([str(path)], Settings(amounts=amounts)).plan  # type: ignore[arg-type]
        except BulkCaptureError:
            continue
        for body in plan.valid["body"]:
            parsed = json.loads(body)
            amount = parsed["captured_amount"]
            assert isinstance(amount, int) and 0 <= amount <= MAX_AMOUNT, body


def seed_corpus(corpus: Path) -> None:
    """One small valid export per extension (first byte picks it), so libFuzzer starts deep."""
    import io

    from etl.synth import generate

    df = generate(3, invalid_pct=30, seed=5).lines
    for i, ext in enumerate(EXTENSIONS):
        buf = io.BytesIO()
        if ext in (".csv", ".tsv"):
            df.write_csv(buf, separator="\t" if ext == ".tsv" else ",")
        elif ext == ".parquet":
            df.write_parquet(buf)
        elif ext in (".ndjson", ".jsonl"):
            df.write_ndjson(buf)
        else:
            df.write_ipc(buf)
        (corpus / f"seed{ext}").write_bytes(bytes([i]) + buf.getvalue())


def run_atheris(libfuzzer_args: list[str]) -> int:
    try:
        import atheris
    except ImportError:
        print("atheris is not installed: pip install atheris", file=sys.stderr)
        return 2
    # No module is instrumented: atheris hooks every comparison, and in etl/ a comparison
    # often builds a polars expression; hooked, it builds a different plan (planned captures
    # came out without a body, even with only etl.read instrumented). So libFuzzer mutates the
    # seed corpus without Python coverage feedback; the parsers it reaches are native code.
    corpora = [Path(a) for a in libfuzzer_args if not a.startswith("-")]
    if corpora and corpora[0].is_dir() and not any(corpora[0].iterdir()):
        seed_corpus(corpora[0])
    workdir = Path(tempfile.mkdtemp(prefix="bulkcapture-fuzz-"))
    atheris.Setup([sys.argv[0], *libfuzzer_args], lambda data: one_input(data, workdir))
    atheris.Fuzz()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=2000, help="hypothesis examples per property")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--atheris", action="store_true", help="fuzz raw bytes with atheris instead")
    ap.add_argument("libfuzzer", nargs="*", help="after --: libFuzzer options, e.g. -runs=N")
    args = ap.parse_args(argv)
    if args.atheris:
        return run_atheris(args.libfuzzer)
    return run_hypothesis(args.examples, args.seed)


if __name__ == "__main__":
    raise SystemExit(main())
