"""``python -m etl``: the same as the ``bulkcapture`` command."""

from etl.cli import main

main()
