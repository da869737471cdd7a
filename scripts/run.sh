#!/usr/bin/env bash
# Set up zipmodel and run the main job.
#
#   bash scripts/run.sh                 # round trip on the bundled sample checkpoint
#   bash scripts/run.sh MODEL [MODEL..] # compress, verify against the original, show info
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e .
ZM="$VENV/bin/zipmodel"
if [ $# -eq 0 ]; then
  exec "$ZM" demo
fi
for f in "$@"; do
  "$ZM" compress -f "$f"
  "$ZM" verify "$f.zm" --against "$f"
  "$ZM" info "$f.zm" --no-tensors
done
