#!/usr/bin/env bash
# Installs Debian's chromium for the report's headless-browser test (tests/report/test_report.py -m browser).
# Does nothing when a chromium is already on PATH (or MMCURATE_CHROMIUM points at one).
set -euo pipefail

if [ -n "${MMCURATE_CHROMIUM:-}" ] && [ -x "${MMCURATE_CHROMIUM}" ]; then
  echo "[browser] using ${MMCURATE_CHROMIUM}"; exit 0
fi
if command -v chromium >/dev/null 2>&1; then
  echo "[browser] chromium present: $(chromium --version 2>/dev/null || echo unknown version)"; exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "[browser] no apt-get here: install chromium yourself or set MMCURATE_CHROMIUM; the browser test will be skipped" >&2
  exit 1
fi

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
# Wait for a dpkg lock held by a concurrent install instead of failing at once.
APT=(-o DPkg::Lock::Timeout=600)
echo "[browser] installing Debian's chromium"
$SUDO apt-get "${APT[@]}" update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${APT[@]}" install -y -qq --no-install-recommends chromium fonts-dejavu-core
chromium --version
