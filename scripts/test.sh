#!/usr/bin/env bash
# Set up a virtual environment and run the test suite (what .ci/run calls).
#
#   bash scripts/test.sh [PYTEST ARGS...]
#
# VENV (default .venv) is created if missing. The real-model corpus is fetched with
# ../shared/corpus/fetch.sh when that script exists (set ZIPMODEL_FETCH_CORPUS=0 to skip);
# tests that need it are skipped when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[test]"
FETCH=../shared/corpus/fetch.sh
if [ "${ZIPMODEL_FETCH_CORPUS:-1}" != 0 ] && [ -f "$FETCH" ]; then
  bash "$FETCH" >/dev/null || echo "warning: corpus fetch failed; real-data tests will be skipped" >&2
fi
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$HOME/.cache/zipmodel-numba}
exec "$VENV/bin/python" -m pytest "$@"
