#!/usr/bin/env bash
# Set up with the test extras, check style, run the whole test suite. `.ci/run` calls this.
# Skips are listed (-rs); with CI=true a test skipped for a missing real model or real data set
# fails (tests/real_resources.py), and so does a run that collects no test (pytest exit 5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/ruff check src tests scripts
.venv/bin/python -m pytest -q -rs "$@"
