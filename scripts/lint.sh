#!/usr/bin/env bash
# Lint and type checks, in this order:
#   1. ruff check .                      (rules: [tool.ruff.lint] in pyproject.toml)
#   2. ruff format --check .             ([tool.ruff.format])
#   3. clang-format --dry-run -Werror    over csrc/ and fuzz/*.cpp (.clang-format)
#   4. mypy                              over mmcurate/ops, mmcurate/curate, mmcurate/pipeline/stage.py ([tool.mypy])
#   5. scripts/check_imports.py          no import circles and no private name imported across modules in mmcurate/
# Every check runs even after one fails; the exit status is non-zero when any failed, and each failure
# prints the command that fixes (or shows) it.
#   scripts/lint.sh          check only
#   scripts/lint.sh --fix    apply ruff's safe fixes, ruff format and clang-format in place, then check
# The tools come from ./.venv, pinned in requirements/test.txt (scripts/setup.sh --test installs them).
set -uo pipefail
cd "$(dirname "$0")/.."

fix=0
case "${1:-}" in
  --fix) fix=1 ;;
  "") ;;
  *) echo "usage: $0 [--fix]" >&2; exit 2 ;;
esac

BIN=.venv/bin
for tool in ruff clang-format mypy; do
  if [ ! -x "$BIN/$tool" ]; then
    echo "[lint] $BIN/$tool is missing: run scripts/setup.sh --test (or .venv/bin/pip install -r requirements/test.txt)" >&2
    exit 2
  fi
done

# C++/CUDA sources: everything under csrc/, and the fuzz harnesses (not fuzz/corpus or fuzz/crashers).
native_sources() {
  { find csrc -type f \( -name '*.h' -o -name '*.hpp' -o -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' \)
    find fuzz -maxdepth 1 -type f -name '*.cpp'; } | LC_ALL=C sort
}
mapfile -t NATIVE < <(native_sources)
MYPY_TARGETS="mmcurate/ops mmcurate/curate mmcurate/pipeline/stage.py"   # the same list as [tool.mypy] files

if [ "$fix" = 1 ]; then
  echo "[lint] fixing: ruff check --fix, ruff format, clang-format -i"
  "$BIN/ruff" check --fix --quiet . || true
  "$BIN/ruff" format --quiet .
  "$BIN/clang-format" -i "${NATIVE[@]}"
fi

failed=()
run_check() {  # name, fix hint, command...
  local name=$1 hint=$2
  shift 2
  echo "[lint] $name"
  if "$@"; then
    echo "[lint] $name: ok"
  else
    echo "[lint] $name: FAILED -- to fix: $hint"
    failed+=("$name")
  fi
}

run_check "ruff check" \
  "$BIN/ruff check --fix . (safe fixes), then edit what remains; --unsafe-fixes shows more" \
  "$BIN/ruff" check --output-format concise .
run_check "ruff format" \
  "$BIN/ruff format . (or scripts/lint.sh --fix)" \
  "$BIN/ruff" format --check --output-format concise .
run_check "clang-format" \
  "$BIN/clang-format -i <file> for each file named above (or scripts/lint.sh --fix)" \
  "$BIN/clang-format" --dry-run -Werror "${NATIVE[@]}"
# shellcheck disable=SC2086  # MYPY_TARGETS is a word list
run_check "mypy" \
  "annotate or correct the lines named above ($BIN/mypy $MYPY_TARGETS)" \
  "$BIN/mypy" $MYPY_TARGETS
run_check "imports" \
  "break the circle named above (move the shared piece to a module both import) or make the name public" \
  "$BIN/python" scripts/check_imports.py

if [ ${#failed[@]} -gt 0 ]; then
  echo "[lint] FAILED: ${failed[*]}"
  exit 1
fi
echo "[lint] all checks passed"
