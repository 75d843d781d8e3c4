#!/usr/bin/env bash
# Developer check: ruff on the package, tests, benchmarks and scripts, snakefmt on the rules,
# the generated reference pages up to date (else: make docs-reference), then snakemake --lint
# on the demo config. Run from the repository root with the virtualenv's tools on PATH
# (`make lint` does both).
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check segflow tests benchmarks scripts
ruff format --check segflow
snakefmt --check Snakefile workflow/rules
python scripts/make_docs_reference.py --check
snakemake --lint --configfile config/config.yaml
