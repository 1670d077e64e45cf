#!/usr/bin/env bash
# Sets up mmcurate into ./.venv on a fresh machine: native build deps (Debian packages, only when
# missing), a virtualenv, the Python build deps, then builds and installs mmcurate (editable).
#   scripts/setup.sh            runtime install, with the demo sample's needs (Pillow, scikit-image)
#   scripts/setup.sh --test     plus the test peers (Pillow, imagehash, scipy, pywt, scikit-image, torchvision)
#                               and the pinned lint tools scripts/lint.sh runs (ruff, clang-format, mypy)
#   scripts/setup.sh --bench    plus the benchmark peers (faiss-cpu, ...)
# Env: MMCURATE_CUDA=0 skips the CUDA kernels even when nvcc is present; PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

extra=""
case "${1:-}" in
  --test) extra="requirements/test.txt" ;;
  --bench) extra="requirements/bench.txt" ;;
  "") ;;
  *) echo "usage: $0 [--test|--bench]" >&2; exit 2 ;;
esac

# 1. Native libraries the decoders link against (libjpeg-turbo, libpng, libwebp) and the build tools.
need_pkgs=()
have_header() { [ -e "/usr/include/$1" ] || [ -e "/usr/include/x86_64-linux-gnu/$1" ] || [ -e "/usr/include/aarch64-linux-gnu/$1" ]; }
have_header jpeglib.h || need_pkgs+=(libjpeg62-turbo-dev)
have_header png.h || need_pkgs+=(libpng-dev)
have_header webp/decode.h || need_pkgs+=(libwebp-dev)
command -v cmake >/dev/null || need_pkgs+=(cmake)
command -v pkg-config >/dev/null || need_pkgs+=(pkg-config)
command -v g++ >/dev/null || need_pkgs+=(g++)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${need_pkgs[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}"
fi

# 2. Virtualenv.
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip
"$VPY" -m pip install -q -r requirements/build.txt -r requirements/runtime.txt

# 3. nvJPEG's header and library come from NVIDIA's wheel (the system toolkit may lack them).
if [ "${MMCURATE_CUDA:-1}" != "0" ] && { command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; }; then
  "$VPY" -m pip install -q nvidia-nvjpeg
fi

# 4. Peers for tests / benchmarks (before the build, so one resolver pass sees everything).
if [ -n "$extra" ]; then
  "$VPY" -m pip install -q -r "$extra"
  # The report is tested in a real headless browser (Debian's chromium).
  scripts/install_browser.sh
fi

# 5. Build and install mmcurate itself (editable; the CMake build lives in ./build).
"$VPY" -m pip install -q --no-build-isolation -e .
"$VPY" -c "import mmcurate, json; print('[setup] mmcurate', json.dumps(mmcurate.build_info()))"
