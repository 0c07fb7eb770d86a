#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, and runs every test.
#   1. main build (CUDA code compiled when the toolkit is present; warnings are errors under CI)
#   2. ctest: unit, e2e and interop tests (GPU-labelled tests only where a GPU is visible)
#   3. sanitizer build (ASan+UBSan) of the unit and robustness tests, run under ctest
#   4. libFuzzer targets for the protocol parser and the store server, bounded runs + corpus
#      replays (skipped, and said so, without clang++-16)
set -euo pipefail
cd "$(dirname "$0")/.."
# ccache: paths relative to the checkout, and the build directory not hashed, so a fresh clone
# elsewhere (CI) reuses objects compiled from the same sources.
export CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1
start=$(date +%s)
stage() { echo; echo "=== [$(( $(date +%s) - start ))s] $*"; }

stage "setup"
bash scripts/setup.sh
# The real data set of the training example's digits test (a warning, not a failure, if apt
# cannot serve it: that test then says it skipped).
bash scripts/fetch_digits.sh || echo "warning: scripts/fetch_digits.sh failed; the digits test will skip"

stage "layering (include direction) and format (.clang-format)"
bash scripts/check_layering.sh
bash scripts/check_format.sh

werror=()
[ "${CI:-}" = "true" ] && werror=(-DGPURUN_WERROR=ON)

stage "build (build/)"
BUILD_DIR=build bash scripts/build.sh "${werror[@]}"

gpu_filter=(-LE gpu)
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  gpu_filter=()
  echo "GPU found: running gpu-labelled tests too"
else
  echo "no GPU visible: skipping tests labelled 'gpu'"
fi

stage "tests (build/)"
ctest --test-dir build --output-on-failure -j 2 "${gpu_filter[@]}"

if [ "${GPURUN_SKIP_SANITIZE:-0}" != "1" ]; then
  stage "sanitizer build (build-asan/, ASan+UBSan, unit tests)"
  BUILD_DIR=build-asan BUILD_TYPE=Debug bash scripts/build.sh "${werror[@]}" \
    -DGPURUN_SANITIZE=address,undefined -DGPURUN_WITH_CUDA=OFF \
    -DGPURUN_BUILD_EXAMPLES=OFF -DGPURUN_BUILD_BENCH=OFF
  stage "tests (build-asan/, labels unit|robust)"
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    ctest --test-dir build-asan --output-on-failure -j 2 -L 'unit|robust'
fi

if [ "${GPURUN_SKIP_FUZZ:-0}" = "1" ]; then
  stage "fuzzing skipped: GPURUN_SKIP_FUZZ=1"
elif ! command -v clang++-16 >/dev/null; then
  stage "fuzzing SKIPPED: clang++-16 (libFuzzer) is not installed; apt-get install clang-16 to run it"
else
  stage "fuzz build (build-fuzz/, clang-16 libFuzzer)"
  if [ -f tests/fuzz/CMakeLists.txt ]; then
    # Only the fuzz targets are built here (the rest of the tree is covered by the builds above).
    cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_COMPILER=clang++-16 \
      -DCMAKE_C_COMPILER=clang-16 -DGPURUN_FUZZ=ON -DGPURUN_WITH_CUDA=OFF \
      -DGPURUN_BUILD_EXAMPLES=OFF -DGPURUN_BUILD_BENCH=OFF -DGPURUN_BUILD_TESTS=ON
    cmake --build build-fuzz -j "$(nproc)" --target gpurun_fuzz_targets
    stage "fuzz run (bounded)"
    ctest --test-dir build-fuzz --output-on-failure -L fuzz
  fi
fi

stage "all tests passed"
