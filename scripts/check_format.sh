#!/usr/bin/env bash
# Fails when a tracked C++/CUDA source differs from .clang-format (fix: clang-format -i <file>).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v clang-format >/dev/null; then
  echo "format: clang-format not installed (scripts/setup.sh installs it)"; exit 1
fi
files=$(git ls-files '*.cc' '*.h' '*.cu' 2>/dev/null || find . -name '*.cc' -o -name '*.h' -o -name '*.cu')
if ! clang-format --dry-run --Werror $files; then
  echo "format: run 'clang-format -i' on the files above"; exit 1
fi
echo "format: ok"
