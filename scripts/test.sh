#!/usr/bin/env bash
# Set up with the test extras, check style, run the whole test suite. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
.venv/bin/ruff check src tests scripts
.venv/bin/python -m pytest -q "$@"
