#!/usr/bin/env bash
# Installs what gpurun needs from Debian bookworm (apt), only what is missing. Idempotent.
# Usage: scripts/setup.sh            (runs apt-get as root, or through sudo when not root)
set -euo pipefail

PKGS=(
  cmake ninja-build g++ pkg-config ccache           # toolchain
  libboost1.81-dev libboost-program-options1.81-dev # Asio (store server), Process, Program_options (CLI)
  libfmt-dev nlohmann-json3-dev                     # formatting, JSON (summaries, error files, --dump-config)
  libssl-dev                                        # libcrypto: HMAC-SHA256 of the store's job secret
  catch2                                            # unit/e2e tests (v2)
  libgloo-dev                                       # CPU collectives in the worker SDK
  libpng-dev libopenblas-dev                        # examples: PNG I/O, BLAS for the training example
  python3-torch                                     # interop tests: real PyTorch 1.13 TCPStore + gloo
  openmpi-bin slurm-wlm munge                       # tests next to real launchers (mpirun, srun)
  etcd-server                                       # --rdzv-backend etcd tests start a real etcd
  clang-16 libclang-rt-16-dev                       # libFuzzer target for the wire-protocol parser
  procps iproute2 psmisc                            # ps/ss/fuser used by tests and `gpurun --info`
  tmux                                              # terminal tests (stdin, pdb, Ctrl-Z) drive a real tty
  clang-format                                      # CI checks the sources against .clang-format
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PKGS[@]} packages present"
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "setup: done"
