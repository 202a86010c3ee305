#!/usr/bin/env bash
# Run the test suite: install what is missing (Chromium for the browser test where apt can), then pytest.
# The browser test opens the pages of the last built book (_build/html); build it first to include it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -r requirements.txt
python3 -m pip install -q --no-deps --no-build-isolation -e .
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
    || echo "Chromium could not be installed: the browser test will be skipped"
fi
python3 -m pytest -q "$@"
