# One venv, created from pyproject.toml; every target depends on it.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The whole night on sample_data/ against the embedded sandbox: validate, capture, re-run
# (nothing is captured twice), ask the ledger, reconcile against the sandbox's settlements.
# Exit 3 ("some captures invalid/rejected") is the expected outcome of the sample night.
demo: $(STAMP)
	rm -rf demo_out && mkdir -p demo_out
	$(BIN)/bulkcapture validate sample_data/shipments.csv --rejects demo_out/rejects.csv || test $$? -eq 3
	$(BIN)/bulkcapture run sample_data/shipments.csv --sandbox --sandbox-orders sample_data/orders.csv \
	  --ledger demo_out/ledger.sqlite --results demo_out/captures.parquet --rate 200 \
	  --sandbox-settlements demo_out/settlements.json || test $$? -eq 3
	$(BIN)/bulkcapture run sample_data/shipments.csv --sandbox --sandbox-orders sample_data/orders.csv \
	  --ledger demo_out/ledger.sqlite --results demo_out/rerun.parquet --rate 200 || test $$? -eq 3
	$(BIN)/bulkcapture ledger ORD-2026-000000000 --ledger demo_out/ledger.sqlite
	$(BIN)/bulkcapture reconcile --captures demo_out/captures.parquet \
	  --settlement demo_out/settlements.json --out demo_out/report.xlsx || test $$? -eq 3
	$(BIN)/bulkcapture reconcile --captures demo_out/captures.parquet \
	  --settlement demo_out/settlements.json --out demo_out/report.html || test $$? -eq 3
	@echo "demo: results, ledger and reports are in demo_out/"

test: $(STAMP)
	$(BIN)/ruff check etl schemas tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check etl schemas tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) demo_out .pytest_cache .mypy_cache .ruff_cache
