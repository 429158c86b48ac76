# Sourced by serve.sh and test.sh: the virtual environment .venv in the checkout, so that a system Python
# that refuses a global `pip install` (PEP 668: Debian 12, Ubuntu 24.04) works as well as any other.
# Sets PY (its python) and PIP (a pip that installs into it).
if [ -n "${VIRTUAL_ENV:-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
  PY="$VIRTUAL_ENV/bin/python"  # the caller's own environment
else
  if [ ! -x .venv/bin/python ]; then
    # Debian ships ensurepip separately (python3-venv): without it, an environment without pip, filled by the
    # system's pip below.
    python3 -m venv .venv >/dev/null 2>&1 || { rm -rf .venv && python3 -m venv --without-pip .venv; }
  fi
  PY="$PWD/.venv/bin/python"
fi
if "$PY" -m pip --version >/dev/null 2>&1; then
  PIP=("$PY" -m pip)
else
  PIP=(python3 -m pip --python "$PY")
fi
