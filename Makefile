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

demo: $(STAMP)
	$(BIN)/bulkcapture validate sample_data/shipments.csv || test $$? -eq 3
	mkdir -p demo_out
	$(BIN)/bulkcapture run sample_data/shipments.csv --sandbox --ledger demo_out/ledger.sqlite --results demo_out/captures.parquet --overwrite --rate 200 || test $$? -eq 3

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
