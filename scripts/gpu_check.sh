#!/usr/bin/env bash
# One-shot GPU check for a fresh machine with an NVIDIA driver and no internet: builds mmcurate with the CUDA
# kernels for the local GPU, runs the CUDA tests and the GPU benchmarks, and writes everything to $OUT.
#
#   OUT=/some/dir scripts/gpu_check.sh          (OUT defaults to ./gpu_check_out)
#
# Needs on the machine: python3 (3.9+; 3.12 expected) with venv, g++, nvcc (CUDA 12.x/13.x toolkit, found on
# PATH or in /usr/local/cuda/bin), the libjpeg-turbo / libpng / libwebp development headers, and cmake >= 3.24
# (or the cmake wheel below). Wheels come from ./.whl (no index is contacted). Fetch them on a machine with
# internet, for the target's Python version, e.g. for 3.12:
#
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
#       --platform manylinux2014_x86_64 -d .whl \
#       setuptools wheel pybind11 numpy pillow imagehash==4.3.2 scipy PyWavelets scikit-image \
#       networkx imageio tifffile lazy-loader packaging pytest iniconfig pluggy pygments \
#       nvidia-nvjpeg cmake
#
# i.e. exactly: setuptools, wheel, pybind11, numpy, pillow, ImageHash 4.3.2, scipy, PyWavelets,
# scikit-image (+ networkx, imageio, tifffile, lazy-loader, packaging), pytest (+ iniconfig, pluggy,
# pygments), nvidia-nvjpeg (nvjpeg.h and libnvjpeg.so.13; no dependencies), cmake (only if the machine has
# none >= 3.24). Optional: torch + torchvision wheels built for the machine's CUDA (and their nvidia-*
# dependencies) enable the torch DLPack/CAI interop tests, which otherwise skip; with open_clip_torch (+ ftfy,
# regex, timm) as well, benchmarks/bench_cuda_embed.py measures fp16 ViT-B-32 / ViT-L-14 embedding throughput
# (model alone, native loader, and DALI when nvidia-dali-cuda130 is installed: its wheel is ~500 MB).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
step() { echo; echo "=== $* ($(date +%H:%M:%S))"; }
fail() { echo "FAILED: $*"; echo "FAILED: $*" > "$OUT/STATUS"; exit 1; }

step "machine"
uname -a
nvidia-smi || echo "nvidia-smi not available"
NVCC=$(command -v nvcc || true)
[ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ] && NVCC=/usr/local/cuda/bin/nvcc
[ -n "$NVCC" ] && "$NVCC" --version | tail -2 || echo "nvcc not found"
PY=$(command -v python3.12 || command -v python3 || true)
[ -n "$PY" ] || fail "no python3"
"$PY" --version
nproc

step "virtualenv and wheels from .whl"
[ -d .whl ] || fail "no .whl folder with the wheels listed in this script's header"
rm -rf .venv-gpu
"$PY" -m venv .venv-gpu || fail "python3 -m venv"
VPY=$ROOT/.venv-gpu/bin/python
"$VPY" -m pip install -q --no-index --find-links .whl --upgrade pip setuptools wheel >/dev/null 2>&1 || true
# Install every wheel present; pip resolves them against each other, never against an index.
"$VPY" -m pip install -q --no-index --find-links .whl .whl/*.whl || fail "pip install from .whl"
"$VPY" -m pip list 2>/dev/null > "$OUT/pip_list.txt"
export PATH="$ROOT/.venv-gpu/bin:$PATH"  # the cmake wheel's binary, when one was brought
cmake --version | head -1 || fail "no cmake (bring the cmake wheel)"

step "build with CUDA for the local GPU"
[ -n "$NVCC" ] || fail "nvcc is needed to build the CUDA kernels"
export PATH="$(dirname "$NVCC"):$PATH"
# The local GPU's architecture (e.g. 90 for H100), from the driver; "native" lets nvcc ask it itself.
CAP=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')
export MMCURATE_CUDA=1 MMCURATE_CUDA_ARCHS=${MMCURATE_CUDA_ARCHS:-${CAP:-native}}
export MMCURATE_BUILD_JOBS=$(nproc)
echo "CUDA archs: $MMCURATE_CUDA_ARCHS"
rm -rf build mmcurate/_C*.so
# Seed the CMake cache with CMAKE_CUDA_ARCHITECTURES: the _C target is created before CUDA is enabled,
# so without a cached value its CUDA_ARCHITECTURES property would be empty on the first configure.
BT=$("$VPY" -c "import sys, sysconfig; print(f'build/temp.{sysconfig.get_platform()}-{sys.implementation.cache_tag}/mmcurate._C')")
mkdir -p "$BT"
cmake -S . -B "$BT" -DCMAKE_CUDA_ARCHITECTURES="$MMCURATE_CUDA_ARCHS" -DCMAKE_CUDA_COMPILER="$NVCC" \
  -DPython_EXECUTABLE="$VPY" >/dev/null 2>&1 || true
"$VPY" setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; fail "build (see build.log)"; }
tail -3 "$OUT/build.log"
"$VPY" - <<'EOF' | tee "$OUT/build_info.json" || fail "import mmcurate"
import json, mmcurate
from mmcurate.ops import _cuda
info = mmcurate.build_info()
info["nvjpeg"] = _cuda.nvjpeg_info()
print(json.dumps(info, indent=2))
assert info["cuda"], "built without CUDA"
assert info["cuda_devices"] > 0, "no GPU visible to mmcurate"
EOF

step "CUDA tests"
"$VPY" -m pytest tests -m needs_cuda -v -rs --junitxml="$OUT/pytest_cuda.xml" > "$OUT/pytest_cuda.txt" 2>&1
CUDA_RC=$?
tail -30 "$OUT/pytest_cuda.txt"

step "all tests (CPU and GPU)"
"$VPY" -m pytest tests -q -rs > "$OUT/pytest_all.txt" 2>&1
ALL_RC=$?
tail -15 "$OUT/pytest_all.txt"

step "GPU benchmarks"
BENCH_RC=0
if [ -f benchmarks/bench_kernels.py ]; then
  for dev in cuda cpu; do
    "$VPY" benchmarks/bench_kernels.py --device "$dev" --out "$OUT/bench_kernels_$dev.json" \
      > "$OUT/bench_kernels_$dev.txt" 2>&1 || BENCH_RC=$?
    tail -20 "$OUT/bench_kernels_$dev.txt"
  done
fi
for b in benchmarks/bench_cuda*.py; do
  [ -f "$b" ] || continue
  name=$(basename "$b" .py)
  "$VPY" "$b" --out "$OUT/$name.json" > "$OUT/$name.txt" 2>&1 || BENCH_RC=$?
  tail -20 "$OUT/$name.txt"
done

step "summary"
echo "cuda tests rc=$CUDA_RC, all tests rc=$ALL_RC, benchmarks rc=$BENCH_RC"
if [ $CUDA_RC -eq 0 ] && [ $ALL_RC -eq 0 ] && [ $BENCH_RC -eq 0 ]; then echo OK > "$OUT/STATUS"; else
  echo "FAILED: cuda tests rc=$CUDA_RC, all tests rc=$ALL_RC, benchmarks rc=$BENCH_RC" > "$OUT/STATUS"; exit 1; fi
