# digits: `make help` lists the targets.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PATH := $(abspath $(BIN)):$(PATH)
export CODECARBON_LOG_LEVEL ?= error

.DEFAULT_GOAL := help
.PHONY: help install run test browser lint audit bench image clean

help: ## List the targets with one line each
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(STAMP) ## Create .venv and install digits with every extra (editable) from the hash-checked lock requirements/full.txt; seconds when nothing changed

# The lock's pins and hashes, then the project alone (it cannot be hash-checked; its build backend
# is in the lock, hence --no-build-isolation). requirements/lock.py regenerates the locks.
# --no-deps: the lock is the whole closure, so pip installs exactly its lines and resolves
# nothing (pip 23.2 resolving a dependency with extras, e.g. pip-audit's CacheControl[filecache],
# takes the index's newest release, unpinned, and refuses the whole lock once one appears);
# pip check then proves the closure whole: every installed package's requirements are met.
$(STAMP): pyproject.toml requirements/full.txt
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r requirements/full.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check --disable-pip-version-check
	touch $(STAMP)

run: install ## Run the whole pipeline: dvc repro (prepare, validate, train, evaluate, register)
	dvc repro

test: install browser ## Run the test suite
	pytest

browser: ## Install Debian's chromium and chromedriver (web page test), prometheus (monitoring test) and wrk (serve bench test), once
	command -v chromium >/dev/null && command -v chromedriver >/dev/null && command -v promtool >/dev/null && command -v wrk >/dev/null || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver prometheus wrk)

lint: install ## ruff lint and format check, mypy
	ruff check .
	ruff format --check .
	mypy digits_cli

audit: install ## Audit the installed dependencies for published vulnerabilities (pip-audit)
	python bench/dependency_audit.py

bench: install ## Run every benchmark under bench/ and print its figures (after `make run`; ~20 min)
	python bench/cli_startup.py
	python bench/read_speed.py
	python bench/answer_cost.py
	python bench/predict_jobs.py
	python bench/base_install.py
	python bench/finder_quality.py
	python bench/printed_digits.py
	python bench/ocr_compare.py
	python bench/serve_bench.py --max-concurrency 1
	python bench/serve_slow_clients.py
	python bench/serve_memory.py
	python bench/serve_deadline.py
	python bench/train_bench.py

image: install ## Build the Docker image `digits` with the registry's champion baked in (after `make run`)
	digits export models/serving.onnx
	docker build --build-arg MODEL=/app/serving.onnx -t digits .

clean: ## Remove generated data, models, reports and the local MLflow store
	rm -rf data models reports mlruns mlflow.db emissions.csv
