#!/usr/bin/env bash
# The README's main job: installs what is missing, builds, then runs the windowed-image example
# on 2 ranks under gpurun (GPUs when present, else CPU) and shows where the output image is.
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_BASEDIR="$PWD"
bash scripts/setup.sh
BUILD_DIR=build bash scripts/build.sh >/dev/null
mkdir -p out
./build/launcher/gpurun --nproc_per_node=2 ./build/examples/windowed_image/windowed_image \
  --output out/windowed_image.png "$@"
echo "output image: $PWD/out/windowed_image.png"
