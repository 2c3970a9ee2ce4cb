# One command per job; each creates .venv (Python 3.11+) on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# A local CIFAR-10 copy beside the checkout is used when present (no download needed);
# set CIFAR10_PATH=/path/to/cifar-10-python.tar.gz to use another, or unset for the download.
CIFAR10_PATH ?= $(wildcard $(CURDIR)/../shared/data/cifar-10-python.tar.gz)
export CIFAR10_PATH

.PHONY: install sweep train test test-fast lint format bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

# the benchmarks' peer (Keras Tuner): the tests smoke-test that benchmark too
$(VENV)/.bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test,bench]"
	touch $@

## the main job: a study on the defaults (Optuna search, every trial tracked in MLflow)
sweep: install
	$(PY) -m cifar_exp sweep $(ARGS)

## one training run with the defaults (ARGS="trainer.epochs=3 ...")
train: install
	$(PY) -m cifar_exp train $(ARGS)

## lint, then the whole test suite (slow end-to-end checks included), as CI runs it
test: install $(VENV)/.bench
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m pytest $(ARGS)

## the quick benchmarks (overhead, throughput; minutes); the long ones: docs/benchmarks.md
bench: install $(VENV)/.bench
	$(PY) benchmarks/framework_overhead.py
	$(PY) benchmarks/throughput.py

test-fast: install
	$(PY) -m pytest -m "not slow" $(ARGS)

lint: install
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks

format: install
	$(PY) -m ruff format src tests benchmarks
	$(PY) -m ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
