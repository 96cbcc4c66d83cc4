"""``python -m etl.sandbox``: the same as ``bulkcapture sandbox`` (what the subprocess runner
starts)."""

from etl.cli.sandbox_cmd import sandbox

if __name__ == "__main__":
    sandbox(prog_name="bulkcapture sandbox")
