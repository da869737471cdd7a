#!/usr/bin/env bash
# Create one virtual environment per lossless peer and install it there.
#
#   bash benches/peers/setup_peers.sh            # all peers
#   bash benches/peers/setup_peers.sh zipnn z4ai # only these
#   FORCE=1 bash benches/peers/setup_peers.sh    # rebuild venvs even if they work
#
# Venvs live under ${ZIPMODEL_BENCH_VENVS:-$HOME/.cache/zipmodel-bench/venvs}/<peer>.
# The peers' dependencies conflict (zipnn needs torch, lmzip/z4ai build native
# code lazily into their package dirs, ...), so each gets its own venv.
#
# Idempotent: a venv whose smoke test passes is left alone. A peer that fails to
# install is reported at the end; it is not fatal (exit status is 0 as long as
# at least one peer works).
#
# Never install a bare `torch` requirement: it would download GBs of CUDA
# wheels. zipnn's venv gets `torch==2.13.0` first, which resolves to the local
# CPU wheel (2.13.0+cpu); every other install runs with a constraint pinning
# torch to that same version so nothing can pull a CUDA build by accident.
set -u

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENVS="${ZIPMODEL_BENCH_VENVS:-$HOME/.cache/zipmodel-bench/venvs}"
PYTHON="${PYTHON:-python3}"
LOGDIR="$VENVS/_logs"
mkdir -p "$VENVS" "$LOGDIR"

ALL_PEERS=(zipnn glyd lmzip z4ai openzl zstd3)
if [ "$#" -gt 0 ]; then PEERS=("$@"); else PEERS=("${ALL_PEERS[@]}"); fi

CONSTRAINTS="$LOGDIR/torch-constraint.txt"
echo "torch==2.13.0" > "$CONSTRAINTS"

# Packages per peer (pip arguments). numpy is needed by run_peer.py itself.
#  - lmzip[zstd]: on Python < 3.14 lmz falls back to deflate for its non-plane
#    streams unless the `zstandard` package is present; its own docs call zstd
#    "the intended coder", so the extra is installed.
#  - z4ai[maxratio]: brotli; without it effort="max" silently falls back to the
#    default codec.
#  - zstd3: only zstandard, in a venv of its own.
pkgs_for() {
  case "$1" in
    zipnn)  echo "zipnn==0.5.4 numpy ml_dtypes" ;;
    glyd)   echo "glyd==0.32.1 numpy" ;;
    lmzip)  echo "lmzip[zstd]==1.3.0 numpy" ;;
    z4ai)   echo "z4ai[maxratio]==0.2.0 numpy" ;;
    openzl) echo "openzl==0.3.0 numpy" ;;
    zstd3)  echo "zstandard numpy" ;;
    *) return 1 ;;
  esac
}

# Smoke test: import the peer and do a tiny round trip. For lmzip and z4ai this
# also triggers the lazy native builds (lmz's byte-plane kernel, z4ai's rANS
# kernels), so that no compiler runs inside a timed benchmark later.
smoke_for() {
  case "$1" in
    zipnn) cat <<'EOF'
import torch, zipnn, numpy as np
assert "+cpu" in torch.__version__, "torch is not the CPU build: " + torch.__version__
raw = (np.random.default_rng(0).standard_normal(1 << 16).astype(np.float32) * 0.02).tobytes()
z = zipnn.ZipNN(input_format="byte", bytearray_dtype="float32", threads=1)
c = z.compress(bytearray(raw)); assert bytes(z.decompress(c)) == raw
print("torch", torch.__version__)
EOF
    ;;
    glyd) cat <<'EOF'
import glyd
raw = bytes(range(256)) * 64
assert glyd.decompress(glyd.compress(raw, threads=1)) == raw
print("glyd", glyd.version())
EOF
    ;;
    lmzip) cat <<'EOF'
import os, tempfile, numpy as np, lmz
d = tempfile.mkdtemp()
src, arc, out = (os.path.join(d, n) for n in ("a.bin", "a.lmz", "b.bin"))
raw = (np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32) * 0.02).tobytes()
open(src, "wb").write(raw)
lmz.compress(src, arc, workers=1); lmz.decompress(arc, out, workers=1)
assert open(out, "rb").read() == raw
b = lmz.backends(); print("backends", b)
assert b["kernel"] not in ("numpy", "python"), "lmz native kernel not built: %r" % b["kernel"]
for p in (src, arc, out): os.unlink(p)
os.rmdir(d)
EOF
    ;;
    z4ai) cat <<'EOF'
import numpy as np, z4ai, brotli
from z4ai import rans
g = np.random.default_rng(0).standard_normal(1 << 18).astype(np.float32) * 0.02
for raw, dt in ((g.tobytes(), "fp32"), (g.astype(np.float16).tobytes(), "fp16"),
                ((g.view(np.uint32) >> 16).astype(np.uint16).tobytes(), "bf16")):
    for eff in (None, "max"):
        c = z4ai.compress(raw, dtype=dt, effort=eff, threads=1)
        assert bytes(z4ai.decompress(c)) == raw
print("rans native:", rans.available())
assert rans.available(), "z4ai native rANS kernel did not build"
EOF
    ;;
    openzl) cat <<'EOF'
import numpy as np
import openzl.ext as zl
c = zl.Compressor()
c.set_parameter(zl.CParam.FormatVersion, zl.MAX_FORMAT_VERSION)
c.select_starting_graph(zl.graphs.Compress()(c))   # before ref_compressor, or "Graph invalid"
cctx = zl.CCtx(); cctx.ref_compressor(c)
cctx.set_parameter(zl.CParam.StickyParameters, 1)
raw = np.frombuffer(bytes(range(256)) * 64, dtype=np.uint8)
f = cctx.compress([zl.Input(zl.Type.Serial, raw)])
f = cctx.compress([zl.Input(zl.Type.Serial, raw)])
out = zl.DCtx().decompress(f)
assert out[0].content.as_bytes() == raw.tobytes()
print("openzl", zl.LIBRARY_VERSION_MAJOR, zl.LIBRARY_VERSION_MINOR, zl.LIBRARY_VERSION_PATCH)
EOF
    ;;
    zstd3) cat <<'EOF'
import zstandard
raw = bytes(range(256)) * 64
assert zstandard.ZstdDecompressor().decompress(zstandard.ZstdCompressor(level=3).compress(raw)) == raw
print("zstandard", zstandard.__version__, "libzstd", zstandard.ZSTD_VERSION)
EOF
    ;;
  esac
}

smoke() {  # smoke <peer>  -> 0 if the venv works
  local py="$VENVS/$1/bin/python"
  [ -x "$py" ] || return 1
  smoke_for "$1" | "$py" - >>"$LOGDIR/$1.log" 2>&1
}

install_peer() {
  local peer="$1" venv="$VENVS/$1" pkgs
  pkgs="$(pkgs_for "$peer")" || { echo "unknown peer: $peer" >&2; return 1; }
  local log="$LOGDIR/$peer.log"
  : >"$log"
  if [ "${FORCE:-0}" != "1" ] && smoke "$peer"; then
    [ -s "$venv/freeze.txt" ] || "$venv/bin/python" -m pip freeze >"$venv/freeze.txt" 2>/dev/null
    echo "[$peer] already set up ($venv): $(tail -n 1 "$log")"
    return 0
  fi
  echo "[$peer] creating $venv (log: $log)"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv" >>"$log" 2>&1 || return 1
  local pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q -c "$CONSTRAINTS")
  "${pip[@]}" -U pip setuptools wheel >>"$log" 2>&1 || return 1
  if [ "$peer" = zipnn ]; then
    # torch first (CPU wheel from local disk); zipnn's sdist builds against it.
    "${pip[@]}" torch==2.13.0 >>"$log" 2>&1 || return 1
  fi
  # shellcheck disable=SC2086
  "${pip[@]}" $pkgs >>"$log" 2>&1 || return 1
  smoke "$peer" || return 1
  "$venv/bin/python" -m pip freeze >"$venv/freeze.txt" 2>/dev/null
  echo "[$peer] installed"
}

ok=(); failed=()
for peer in "${PEERS[@]}"; do
  if install_peer "$peer"; then
    ok+=("$peer")
  else
    failed+=("$peer")
    echo "[$peer] FAILED -- last lines of $LOGDIR/$peer.log:" >&2
    tail -n 15 "$LOGDIR/$peer.log" | sed 's/^/    /' >&2
  fi
done

echo
echo "venvs:     $VENVS"
echo "succeeded: ${ok[*]:-(none)}"
echo "failed:    ${failed[*]:-(none)}"
echo "run:       \$VENVS/<peer>/bin/python $HERE/run_peer.py --peer <peer> --file F --threads 2 --runs 3 --json"
[ "${#ok[@]}" -gt 0 ]
