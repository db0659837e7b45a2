# Two entry points for a fresh machine with Python 3.11+:
#   make demo   install into .venv and open the dashboard on live demo data
#   make test   install into .venv (with test extras) and run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-newest-duckdb install install-dev bench lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Both take the lake extra, so .venv has one DuckDB whichever ran first: the one the DuckLake extension
# wheels are built for (a store written by DuckDB 2 cannot be opened by 1.5, so the demo's store must not
# be written by one and read by the other). `pip install perfdeck` alone takes the newest DuckDB.
install: $(BIN)/python
	$(BIN)/pip install -q -e '.[lake]'

install-dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,lake]'

demo: install
	$(BIN)/perfdeck demo

test: install-dev
	$(BIN)/python -m pytest -q

# The DuckDB file store on the newest DuckDB too (what `pip install perfdeck` gets), in a venv of its own:
# the quick half of the suite, without the lake's tests.
test-newest-duckdb:
	$(PYTHON) -m venv .venv-newest-duckdb
	.venv-newest-duckdb/bin/pip install -q --upgrade pip
	.venv-newest-duckdb/bin/pip install -q -e '.[dev]'
	.venv-newest-duckdb/bin/python -c "import duckdb; print('DuckDB', duckdb.__version__)"
	.venv-newest-duckdb/bin/python -m pytest -q -m "not slow and not lake"

bench: install-dev
	$(BIN)/python bench/sdk_overhead.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/host_sampler.py
	$(BIN)/python bench/compare.py
	$(BIN)/python bench/lake.py    # PostgreSQL for the catalogs, Redis for the ingest part (skipped without)

lint: install-dev
	$(BIN)/ruff check .
