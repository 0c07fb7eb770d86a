#!/usr/bin/env bash
# Fails when an #include breaks the one-way dependency direction (docs: STYLE.md §2):
#   gpurun_common <- gpurun_rendezvous <- {launcher, worker_sdk} ; worker_sdk <- examples
# The launcher and the worker SDK never include each other; common includes nothing of ours
# but itself; the rendezvous library includes neither the launcher nor the SDK; examples use
# only <gpurun/worker/...> (and, through it, common/rendezvous public headers).
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
check() {  # check <dir> <forbidden-regex> <why>
  local dir=$1 re=$2 why=$3 hits
  [ -d "$dir" ] || return 0
  hits=$(grep -RInE --include='*.h' --include='*.cc' --include='*.cu' --include='*.cuh' \
         "^[[:space:]]*#[[:space:]]*include[[:space:]]*[<\"]($re)" "$dir" || true)
  if [ -n "$hits" ]; then
    echo "layering: $why:"; echo "$hits"; fail=1
  fi
}
check rendezvous/common 'gpurun/(rendezvous|worker|launcher)/|config\.h' "common must not include higher layers"
check rendezvous 'gpurun/(worker|launcher)/|(\.\./)+(launcher|worker_sdk)/' "rendezvous must not include the launcher or the SDK"
check launcher 'gpurun/worker/|(\.\./)+worker_sdk/' "the launcher must not include the worker SDK"
check worker_sdk 'gpurun/launcher/|(\.\./)+launcher/|config\.h"' "the worker SDK must not include the launcher"
check examples 'gpurun/launcher/|(\.\./)+(launcher|rendezvous)/src' "examples use only the SDK's public headers"
[ $fail -eq 0 ] && echo "layering: ok"
exit $fail
