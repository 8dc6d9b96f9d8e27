#!/usr/bin/env bash
# Installs erda_sparse and everything it needs into the active Python environment:
# system packages, PyTorch (CPU build, pinned), MinkowskiEngine 0.5.4, and this package's kernels.
#   bash scripts/install.sh            # runtime
#   bash scripts/install.sh --test     # runtime + test tools
# Environment: ERDA_TORCH_SPEC (default torch==2.13.0), ERDA_ME_CUDA=1 to build MinkowskiEngine with
# CUDA (default: CPU-only), MAX_JOBS (default: number of cores).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
WITH_TEST=0
for a in "$@"; do
  case "$a" in
    --test) WITH_TEST=1 ;;
    *) echo "install.sh: unknown argument '$a' (expected --test)" >&2; exit 2 ;;
  esac
done
TORCH_SPEC=${ERDA_TORCH_SPEC:-torch==2.13.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}

step() { echo; echo "== $*"; }

# 1. System packages: OpenBLAS headers for MinkowskiEngine, a C++ toolchain.
missing=()
dpkg -s libopenblas-dev >/dev/null 2>&1 || missing+=(libopenblas-dev)
command -v g++ >/dev/null 2>&1 || missing+=(build-essential)
if [ ${#missing[@]} -gt 0 ]; then
  step "system packages (${missing[*]})"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# 2. pip new enough to pass --config-settings through to MinkowskiEngine's setup.py.
step "pip"
"$PY" -m pip install -q "pip>=23.3"

# 3. PyTorch first, pinned (an unpinned torch pulls a multi-GB CUDA build).
if ! "$PY" -c "import torch" 2>/dev/null; then
  step "PyTorch ($TORCH_SPEC)"
  "$PY" -m pip install -q "$TORCH_SPEC"
fi
step "build and runtime dependencies"
"$PY" -m pip install -q "numpy" "plyfile" "ninja" "pybind11" "setuptools>=64" "wheel" "tqdm" "tensorboard" "matplotlib"
if [ "$WITH_TEST" = 1 ]; then
  "$PY" -m pip install -q "pytest>=7" "cmake>=3.18" "ruff"
fi

# 4. MinkowskiEngine 0.5.4 from source. Its setup.py uninstalls MinkowskiEngine whenever it is evaluated,
#    so it is only ever invoked when the package is absent.
if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('MinkowskiEngine') is None)"; then
  step "MinkowskiEngine 0.5.4 (compiles for a few minutes)"
  ME_OPTS=(--config-settings=--global-option=--blas=openblas)
  if [ "${ERDA_ME_CUDA:-0}" != 1 ]; then ME_OPTS+=(--config-settings=--global-option=--cpu_only); fi
  CFLAGS="${CFLAGS:--g0}" "$PY" -m pip install --no-build-isolation --no-deps "${ME_OPTS[@]}" minkowskiengine==0.5.4
fi

# 5. This package, in editable mode: its kernels (CPU always; CUDA when torch and nvcc allow) are built into
#    this checkout's erda_sparse/, so `python -m erda_sparse...` works from the checkout's root (where Python
#    finds ./erda_sparse first) and from any other folder alike, and edits to the Python files take effect.
step "erda_sparse (pip install -e ., builds the kernels in place)"
"$PY" -m pip install --no-build-isolation --no-deps -e .
echo; echo "== done"
