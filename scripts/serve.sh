#!/usr/bin/env bash
# Installs ingestd into .venv and runs `ingestd serve` on its embedded defaults (SQLite store, emails as
# .eml files under ./ingestd-data). Usage: bash scripts/serve.sh [serve options, e.g. --config FILE]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
"${PIP[@]}" install -q --disable-pip-version-check .
echo "ingestd is installed in $(dirname "$PY"); run it again with: $(dirname "$PY")/ingestd serve" >&2
exec "$(dirname "$PY")/ingestd" serve "$@"
