#!/usr/bin/env sh
# Install what tests/test_browser.py needs: Debian's chromium and Playwright for Python.
# Playwright drives the system chromium (/usr/bin/chromium); no browser is downloaded
# (never run `playwright install`). Usage: scripts/install_browser_test_deps.sh [PYTHON]
set -eu

PYTHON="${1:-${PYTHON:-.venv/bin/python}}"

if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends \
        chromium chromium-driver
fi

"$PYTHON" -m pip install "playwright>=1.40" "fastapi>=0.110" "uvicorn>=0.27" \
    "python-multipart>=0.0.9" "httpx>=0.27"
"$PYTHON" -c "import playwright.sync_api" && chromium --version
