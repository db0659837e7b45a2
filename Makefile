# Two entry points for a fresh machine with Python 3.11+:
#   make demo   install into .venv and open the dashboard on live demo data
#   make test   install into .venv (with test extras) and run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test install install-dev bench lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev,lake]'

demo: install
	$(BIN)/perfdeck demo

test: install-dev
	$(BIN)/python -m pytest -q

bench: install-dev
	$(BIN)/python bench/sdk_overhead.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/host_sampler.py
	$(BIN)/python bench/compare.py

lint: install-dev
	$(BIN)/ruff check .
