#!/usr/bin/env bash
# Coverage-guided fuzzing of the native decoders (libFuzzer, ASan+UBSan) and the tar / JSON readers (atheris).
#
#   scripts/fuzz.sh [decode|readers|all|build] [seconds]      (default: all, 60 s per target)
#
# decode:  fuzz/decode_fuzzer.cpp + csrc/cpu/*.cpp built with clang -fsanitize=fuzzer,address,undefined
#          against the system libjpeg-turbo / libpng / libwebp (needs clang: apt-get install -y clang).
# readers: fuzz/readers_fuzzer.py under atheris (pip install atheris) with the .venv Python.
# Seeds come from fuzz/corpus/<target>/ (read only); the growing corpus lives in fuzz/work/<target>/,
# crashes / timeouts / OOMs are saved to fuzz/crashers/<target>/ (turn each into a regression test in
# tests/hostile/test_fuzz_regressions.py), logs go to fuzz/work/<target>.log. A run that stops on a crash
# is restarted until the time is up, so one campaign collects every finding. `all` runs both targets at
# once, each under nice -n 19.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${1:-all}"
SECONDS_PER_TARGET="${2:-60}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
CXX="${FUZZ_CXX:-clang++}"
BUILD="$ROOT/fuzz/build"
JOBS="${FUZZ_JOBS:-2}"
SAN="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CXXFLAGS="-std=c++17 -O1 -g $SAN -march=${MMCURATE_ARCH:-native} -Icsrc/include -Icsrc"

build_decode() {
  command -v "$CXX" >/dev/null || { echo "fuzz.sh: $CXX not found (apt-get install -y clang)" >&2; exit 2; }
  mkdir -p "$BUILD/obj"
  local srcs=(csrc/cpu/*.cpp) objs=() todo=()
  for s in "${srcs[@]}"; do
    local o="$BUILD/obj/$(basename "${s%.cpp}").o"
    objs+=("$o")
    # Rebuild when the source or any header is newer than the object.
    if [[ ! -f "$o" || "$s" -nt "$o" ]] || [[ -n "$(find csrc/include csrc/cpu csrc/kernels -name '*.h' -newer "$o" -print -quit)" ]]; then
      todo+=("$s")
    fi
  done
  if ((${#todo[@]})); then
    printf '%s\n' "${todo[@]}" | xargs -P "$JOBS" -I{} sh -c \
      'nice -n 10 '"$CXX $CXXFLAGS"' -fsanitize=fuzzer-no-link -c {} -o '"$BUILD"'/obj/$(basename {} .cpp).o'
  fi
  # shellcheck disable=SC2086
  nice -n 10 $CXX $CXXFLAGS fuzz/decode_fuzzer.cpp "${objs[@]}" -o "$BUILD/decode_fuzzer" \
    -ljpeg -lpng -lwebp -lpthread
}

# run_loop NAME SECONDS CMD...: runs CMD (a libFuzzer-style command line) until SECONDS have passed,
# restarting it after a crash (the artifact is kept), with the corpus carried across restarts.
run_loop() {
  local name="$1" secs="$2"; shift 2
  local work="$ROOT/fuzz/work/$name" crash="$ROOT/fuzz/crashers/$name" log="$ROOT/fuzz/work/$name.log"
  mkdir -p "$work" "$crash"
  : > "$log"
  local end=$(( $(date +%s) + secs )) runs=0
  while :; do
    local left=$(( end - $(date +%s) ))
    (( left > 0 )) || break
    runs=$((runs + 1))
    echo "=== fuzz.sh: $name run $runs, ${left}s left" >> "$log"
    nice -n 19 "$@" -max_total_time="$left" -artifact_prefix="$crash/" -print_final_stats=1 \
      "$work" "$ROOT/fuzz/corpus/$name" >> "$log" 2>&1 || true
  done
  echo "fuzz.sh: $name: $runs run(s); crashers: $(find "$crash" -type f | wc -l); log $log"
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|#[0-9]+ +DONE' "$log" | tail -n 4 || true
}

fuzz_decode() {
  build_decode
  ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}" \
  UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
    run_loop decode "$SECONDS_PER_TARGET" "$BUILD/decode_fuzzer" \
      -timeout=10 -rss_limit_mb=3072 -max_len=65536 -dict="$ROOT/fuzz/decode.dict"
}

fuzz_readers() {
  "$PY" -c 'import atheris' 2>/dev/null || { echo "fuzz.sh: atheris missing ($PY -m pip install atheris)" >&2; exit 2; }
  mkdir -p "$ROOT/fuzz/work"
  : > "$ROOT/fuzz/work/readers.seen"   # distinct findings of this campaign (see readers_fuzzer.py)
  MMCURATE_FUZZ_SEEN="$ROOT/fuzz/work/readers.seen" PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
    run_loop readers "$SECONDS_PER_TARGET" "$PY" "$ROOT/fuzz/readers_fuzzer.py" \
      -timeout=20 -rss_limit_mb=3072 -max_len=65536
}

case "$TARGET" in
  build) build_decode ;;
  decode) fuzz_decode ;;
  readers) fuzz_readers ;;
  all)
    build_decode
    fuzz_decode & p1=$!
    fuzz_readers & p2=$!
    wait "$p1"; wait "$p2"
    ;;
  *) echo "usage: scripts/fuzz.sh [decode|readers|all|build] [seconds]" >&2; exit 2 ;;
esac
