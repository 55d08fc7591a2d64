# Two commands on a fresh machine with only python3: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test soak bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,parquet]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/runwatch demo --episodes 60 --keep-open

test: $(STAMP)
	$(BIN)/python -m pytest

soak: $(STAMP)
	RUNWATCH_SOAK=1 $(BIN)/python -m pytest -m soak

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet ruff mypy pandas-stubs
	$(BIN)/ruff check runwatch tests benchmarks
	$(BIN)/mypy

clean:
	rm -rf $(VENV) runwatch_demo *.egg-info .pytest_cache
