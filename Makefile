# segflow: `make demo` runs the workflow on the built-in synthetic dataset,
# `make test` runs the test suite. Both create .venv from requirements.lock when needed.
# `make images` builds the CPU and GPU images (containers/) with podman. `make docs` builds the
# documentation site into site/; `make docs-reference` regenerates its reference pages (and
# config/README.md's key list) from the schema, the command line and segflow/layout.py.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo test lint dry-run clean-demo venv images docs docs-reference

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

# The unit tests in one pytest process, then each workflow test file in a process of its own:
# in one process for all, after OpenVINO had run in-process (the prediction tests), a later
# workflow test ended the process with SIGSEGV (issue 29; the cause, OpenVINO's alternate signal
# stack, is fixed in segflow.inference.backends, the split kept as a safeguard). Every file runs;
# any failure fails.
test: $(STAMP)
	$(BIN)/python -m pytest -q --ignore=tests/workflow
	status=0; for file in tests/workflow/test_*.py; do \
		$(BIN)/python -m pytest -q "$$file" || status=1; done; exit $$status

lint: $(STAMP)
	scripts/lint.sh

dry-run: $(STAMP)
	$(BIN)/snakemake -n --cores 1 --configfile config/config.yaml

clean-demo:
	rm -rf results/demo resources/demo

docs-reference: $(STAMP)
	$(BIN)/python scripts/make_docs_reference.py

# --strict: a broken link or anchor, or a page left out of the navigation, fails the build.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir site

# The images, tagged as the config pulls them (ghcr.io/segflow/segflow-{cpu,gpu}:<version>),
# with this machine's pip cert and wheel folders mounted for the build
# (containers/build_images.py). IMAGES_BASE=debootstrap makes their base from apt's Debian
# mirror where no registry is reachable (root); KINDS=cpu builds one image; ENGINE='docker'
# builds without the pip settings. Podman without systemd (CI): CONTAINERS_CONF=containers/podman.conf
IMAGES_BASE ?= python:3.11-slim-bookworm
KINDS ?= cpu gpu
ENGINE ?= podman
images:
	$(PYTHON) containers/build_images.py --engine '$(ENGINE)' --base '$(IMAGES_BASE)' \
		$(foreach kind,$(KINDS),--kind $(kind))
