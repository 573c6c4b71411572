# Stream concurrency: `make` alone lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV    ?= .venv
PY      := $(VENV)/bin/python
PIP     := $(VENV)/bin/pip
# Every installed package at the exact version tested (pip freeze of a fresh install): `make
# constraints` regenerates it after a dependency is added, removed or upgraded.
CONSTRAINTS := constraints.txt
# The install stamp changes with pyproject.toml and the pins, so a changed dependency list reinstalls.
DEPS_HASH := $(shell cat pyproject.toml $(CONSTRAINTS) 2>/dev/null | sha256sum | cut -c1-16)
STAMP   := $(VENV)/.installed-$(DEPS_HASH)
# Where `make constraints` installs the project afresh to freeze it (removed afterwards).
PIN_VENV := .venv-constraints

.PHONY: help install constraints system-deps services services-cluster services-secure services-down demo test bench soak lint clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-17s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(STAMP) ## create .venv and install the project with its dev and plot extras, at the versions in constraints.txt (quick when done)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[dev,plot]'
	@rm -f $(VENV)/.installed-*
	@touch $@

constraints: ## re-pin constraints.txt from a fresh install: kept pins stay, new dependencies get their newest version (UPGRADE=1: all newest)
	@rm -rf $(PIN_VENV) && python3 -m venv $(PIN_VENV)
	$(PIN_VENV)/bin/pip install -q $(if $(UPGRADE),,-c $(CONSTRAINTS)) -e '.[dev,plot]'
	@{ echo "# Every package a fresh \`make install\` installs, at the version tested: \`make constraints\` regenerates"; \
	   echo "# this file (UPGRADE=1 re-resolves all). Python $$($(PIN_VENV)/bin/python -c 'import platform; print(platform.python_version())')."; \
	   $(PIN_VENV)/bin/pip freeze --exclude-editable; } > $(CONSTRAINTS).new
	@rm -rf $(PIN_VENV) && mv $(CONSTRAINTS).new $(CONSTRAINTS)
	@echo "$(CONSTRAINTS): $$(grep -c '==' $(CONSTRAINTS)) pins; \`make install\` brings .venv to them"

system-deps: install ## make sure redis-server, chromium + chromedriver (console tests), the Apache Kafka jars (Java + Maven) and Prometheus (for the rules tests) are available
	$(PY) -m compose.launcher ensure
	@bash ops/prometheus-binaries.sh

services: install ## start Kafka on localhost:9092 and Redis on localhost:6379 (Docker if it answers, else local processes)
	$(PY) -m compose.launcher up

services-cluster: install ## start Kafka on localhost:9092 and a Redis Cluster (3 masters + 3 replicas) on localhost:7000-7005
	$(PY) -m compose.launcher up --redis-cluster

services-secure: install ## start SASL_SSL Kafka (ACLs) on localhost:9094 and TLS-only Redis (ACL users) on localhost:6380, printing the settings (docs/security.md)
	$(PY) -m compose.launcher up --secure

services-down: install ## stop the services started by `make services`, `make services-cluster` or `make services-secure`
	$(PY) -m compose.launcher down

demo: install system-deps ## run the demo: local Kafka + Redis, the processor and the simulator, then its report
	$(PY) -m producer_sim.demo

test: install system-deps ## run the whole test suite (unit, integration, chaos) against real Kafka and Redis
	$(PY) -m pytest tests

bench: install system-deps ## run the benchmark, writing bench/out/report.json (BENCH_ARGS=--quick: one minute)
	$(PY) -m bench.run $(BENCH_ARGS)

soak: install system-deps ## 30 min at 5,000 ev/s: processor RSS, Redis memory, lag every 10 s -> bench/out/soak/ (SOAK_ARGS=--minutes 6)
	$(PY) -m bench.soak $(SOAK_ARGS)

lint: install ## ruff check and ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean: ## remove caches and run data (keeps .venv and the cached Kafka jars)
	@if ls compose/.run/*.pid >/dev/null 2>&1; then \
		echo "services started by 'make services' still run: 'make services-down' first"; exit 1; fi
	rm -rf compose/.run bench/out .pytest_cache .ruff_cache .hypothesis build dist
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -print0 | xargs -0 rm -rf
