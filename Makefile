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
	@echo
	@echo "Demo finished. Outputs are in results/demo/: plans.json, preprocessed/, models/<configuration>/fold_<k>/"
	@echo "(checkpoints, progress.csv, progress.png) and crossval/<configuration>/ (metrics.csv, summary.json)."
	@$(BIN)/python -c "import json, pathlib; [print(f'  cross-validation {p.parent.name}: mean foreground Dice {json.loads(p.read_text())[\"mean_foreground_dice\"]:.3f}') for p in sorted(pathlib.Path('results/demo/crossval').glob('*/summary.json'))]"

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	scripts/lint.sh

dry-run: $(STAMP)
	$(BIN)/snakemake -n --cores 1 --configfile config/config.yaml

clean-demo:
	rm -rf results/demo resources/demo
