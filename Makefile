# segflow: `make demo` runs the workflow on the built-in synthetic dataset,
# `make test` runs the test suite. Both create .venv from requirements.lock when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test lint dry-run clean-demo venv

venv: $(STAMP)

# torch first, pinned: on CPU-only machines this takes the CPU wheel; a loose requirement
# elsewhere in the tree would otherwise pull a multi-GB CUDA build.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --configfile config/config.yaml
	$(BIN)/snakemake --report results/demo/report.html --configfile config/config.yaml
	@$(BIN)/python scripts/demo_summary.py results/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	scripts/lint.sh

dry-run: $(STAMP)
	$(BIN)/snakemake -n --cores 1 --configfile config/config.yaml

clean-demo:
	rm -rf results/demo resources/demo
