# Two entry points that work on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit bench bench-quick serve clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e ".[test]"
	# MONAI Label's client for tests/server/test_monailabel_client.py; --no-deps: the package's own
	# dependencies (its server: a CUDA torch, SAM2, numpy < 2) are not needed by the client.
	$(BIN)/pip install --quiet --no-deps monailabel==0.8.5
	touch $(STAMP)

## Set up and run the main job on the built-in demo data.
demo: $(STAMP)
	$(BIN)/clickadapt demo --output outputs/demo

## Set up and run the whole test suite: lint, format check, type check, tests.
test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python -m bench configs/bench/full.yaml

bench-quick: $(STAMP)
	$(BIN)/python -m bench configs/bench/quick.yaml

serve: $(STAMP)
	$(BIN)/clickadapt serve

clean:
	rm -rf $(VENV) outputs .mypy_cache .ruff_cache .pytest_cache
