#!/usr/bin/env bash
# Build the book: install what is missing, execute every chapter under a profile, compile the HTML.
# Usage: bash scripts/build-book.sh [smoke|default|paper]     (default: default)
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-default}"
python3 -m pip install -q -r requirements.txt
python3 -m pip install -q --no-deps --no-build-isolation -e .
python3 -m ipykernel install --sys-prefix --name python3 >/dev/null 2>&1 || true
python3 -m geed.report build --profile "$profile"
echo "open _build/html/index.html"
