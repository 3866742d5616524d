# One-command set-up: every target creates .venv and installs rsabench with its test extras first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNS ?= runs

.PHONY: setup demo test lint bench leaderboards clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

## The main job on the embedded dataset (offline: random initial weights, small images).
demo: setup
	$(BIN)/rsabench run --dataset kriegeskorte2008 --backbone alexnet --objective frozen --objective dissim \
		--weights random --image-size 64 --epochs 3 --runs-dir $(RUNS)/demo

## The test suite (a few minutes on 2 CPU cores).
test: setup
	$(BIN)/python -m pytest -q

## Lint and format check (ruff; configuration in pyproject.toml).
lint: setup
	$(BIN)/ruff check rsabench tests benchmarks leaderboards
	$(BIN)/ruff format --check rsabench tests benchmarks leaderboards

## Speed benchmarks (pytest-benchmark); figures go to benchmarks/RESULTS.md by hand.
bench: setup
	$(BIN)/python -m pytest benchmarks -q --benchmark-json=$(RUNS)/benchmarks.json

## Regenerate the committed leaderboards in leaderboards/.
leaderboards: setup
	$(BIN)/python leaderboards/regenerate.py --runs-dir $(RUNS)/leaderboards

clean:
	rm -rf $(VENV) $(RUNS) .pytest_cache .benchmarks
