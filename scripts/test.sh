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
# torch only writes the test checkpoints (zipmodel never needs it); opt in, since outside
# this project's machines a plain torch install downloads a multi-GB CUDA build.
if [ "${ZIPMODEL_TEST_TORCH:-0}" = 1 ]; then
  "$VENV/bin/python" -m pip install -q "torch==${ZIPMODEL_TORCH_VERSION:-2.13.0}" ||
    echo "warning: torch not installed; tests that write torch files will be skipped" >&2
  # transformers: zipmodel eval and the Hub round trip through AutoModel.from_pretrained.
  "$VENV/bin/python" -m pip install -q "transformers>=4.40" ||
    echo "warning: transformers not installed; eval tests will be skipped" >&2
fi
FETCH=../shared/corpus/fetch.sh
if [ "${ZIPMODEL_FETCH_CORPUS:-1}" != 0 ] && [ -f "$FETCH" ]; then
  bash "$FETCH" >/dev/null || echo "warning: corpus fetch failed; real-data tests will be skipped" >&2
fi
export NUMBA_CACHE_DIR=${NUMBA_CACHE_DIR:-$HOME/.cache/zipmodel-numba}
exec "$VENV/bin/python" -m pytest "$@"
