#!/usr/bin/env bash
# One GPU window of the Network Slimming study (issue 15): smoke, then the next rows that fit.
# What it does and writes: bench/gpu_session.py. The GPU machine has torch 2.11 but no package
# registry and no pydantic (prunekit needs it) or torch_pruning, so both travel as wheels.
#
# Here, once per checkout (both folders are git-ignored; carry them):
#   bench/gpu_session.sh --fetch-wheels                      # -> .whl/
#   mkdir -p .carry && cp ../shared/data/cifar10-jpeg.tar.gz .carry/
# On the GPU machine (device run: carry [".carry", ".whl"], timeout_s 600):
#   bench/gpu_session.sh .carry/cifar10-jpeg.tar.gz "$OUT"
# Back here, with the returned files (rows, sessions and plots go into bench/results/):
#   bench/gpu_session.sh --merge /path/to/returned/slimming.json
# CPU check of the whole path on a tiny subset (tests/bench/test_gpu_session.py runs it):
#   bench/gpu_session.sh DATA OUT --quick --only densenet40 --tools prunekit reference
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The versions this checkout was tested with (pure Python except pydantic-core, cp312 x86-64).
WHEELS=(pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2
        torch-pruning==1.6.1)

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  exec "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
fi

export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# find_spec, not import: each torch import costs seconds.
have() { "$PY" -c "import importlib.util as u, sys; sys.exit(u.find_spec('$1') is None)"; }
missing=()
have pydantic || missing+=(.whl/pydantic*.whl .whl/annotated_types*.whl .whl/typing_inspection*.whl)
have torch_pruning || missing+=(.whl/torch_pruning*.whl)
if [[ ${#missing[@]} -gt 0 ]] && compgen -G ".whl/*.whl" >/dev/null; then
  # Only what is missing: a wheel for another Python would break a working install.
  site="${TMPDIR:-/tmp}/prunekit-gpu-site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "${missing[@]}" || echo "gpu_session.sh: installing ${missing[*]} failed"
  export PYTHONPATH="$PYTHONPATH:$site"
fi
if ! have pydantic; then
  echo "gpu_session.sh: prunekit needs pydantic; run 'bench/gpu_session.sh --fetch-wheels' here and carry .whl"
  exit 2
fi

if [[ "${1:-}" == --merge ]]; then
  exec "$PY" bench/gpu_session.py "$@"
fi
# Usage: DATA OUT [options]. The log is one of the returned files, in OUT.
if [[ $# -lt 2 || "$1" == -* || "$2" == -* ]]; then exec "$PY" bench/gpu_session.py "$@"; fi
mkdir -p "$2"
"$PY" bench/gpu_session.py "$@" 2>&1 | tee "$2/gpu_session.log"
