#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine with Python 3.11 (into .venv), then runs them.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# Headless Chromium (activity-log page test), the OpenSSH client, PostgreSQL (shared-state tests: the
# fixture runs initdb/postgres from PATH or /usr/lib/postgresql/<version>/bin) and HAProxy (the cluster
# profile's haproxy.cfg in front of two nodes) come from Debian.
need=()
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then
  need+=(postgresql)
fi
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v sftp >/dev/null 2>&1 || need+=(openssh-client)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "scripts/test.sh: please install: ${need[*]}" >&2
  fi
fi

source scripts/venv.sh
"${PIP[@]}" install -q --disable-pip-version-check -e '.[test]'
"$PY" -m ruff check .
"$PY" -m ruff format --check .
"$PY" -m mypy  # the packages and tests named in pyproject.toml's [tool.mypy]
# One worker per core (pytest-xdist); tests marked xdist_group("name") run on one worker, one after another.
# TEST_WORKERS=0 runs them all in this process (later arguments win: `bash scripts/test.sh -n 0`).
"$PY" -m pytest -n "${TEST_WORKERS:-auto}" --dist loadgroup "$@"
