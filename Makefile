# One command surface for people, pre-commit and CI.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install services services-down services-status topics worker run test test-unit lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## Create .venv and install the package with its dev tools

services: $(STAMP)  ## Start local Kafka and FerretDB on 127.0.0.1 (builds them on first use)
	$(BIN)/contact-pipeline dev up

services-down: $(STAMP)
	$(BIN)/contact-pipeline dev down

services-status: $(STAMP)
	$(BIN)/contact-pipeline dev status

topics: $(STAMP)  ## Create the topics of topics.yaml on the local broker
	$(BIN)/contact-pipeline topics apply --replication-factor 1

worker: $(STAMP)  ## Run one worker in the foreground
	$(BIN)/contact-pipeline worker

run: $(STAMP)  ## The main job: servers, topics, worker, import of examples/, summary
	$(BIN)/contact-pipeline demo

test: $(STAMP)  ## All tests; integration tests start the local servers when needed
	$(BIN)/pytest -q

test-unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

bench: $(STAMP)  ## Benchmarks (criteria, backfill, throughput); results go to docs/benchmarks.md
	$(BIN)/python -m benchmarks.criteria_eval
	$(BIN)/python -m benchmarks.backfill
	$(BIN)/python -m benchmarks.throughput

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
