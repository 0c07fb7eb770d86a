#!/usr/bin/env bash
# Fails when an #include breaks the one-way dependency direction (docs: STYLE.md §2):
#   gpurun_common <- gpurun_rendezvous <- {launcher, worker_sdk} ; worker_sdk <- examples
# The store's command line (rendezvous/tools, gpurun/tools/) sits above the store library: only
# the gpurun and gpurun-store executables use it.
# The launcher and the worker SDK never include each other; common includes nothing of ours
# but itself; the rendezvous library includes neither the launcher nor the SDK; examples use
# only <gpurun/worker/...> (and, through it, common/rendezvous public headers).
# Inside the launcher (launcher/src/<part>/, README "Layout"): the lower parts probe/, process/
# and output/ include each other, gpurun_common/rendezvous and cli/config.h (the LaunchConfig
# contract) only: never run/, multinode/, info/ or cli/'s other files. run/ never includes
# multinode/ (the agents call run_node, not the other way round).
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
check() {  # check <dir> <forbidden-regex> <why> [<allowed-regex>]
  local dir=$1 re=$2 why=$3 allowed=${4:-} hits
  [ -d "$dir" ] || return 0
  hits=$(grep -RInE --include='*.h' --include='*.cc' --include='*.cu' --include='*.cuh' \
         "^[[:space:]]*#[[:space:]]*include[[:space:]]*[<\"]($re)" "$dir" || true)
  if [ -n "$hits" ] && [ -n "$allowed" ]; then
    hits=$(grep -vE "#[[:space:]]*include[[:space:]]*[<\"]($allowed)" <<<"$hits" || true)
  fi
  if [ -n "$hits" ]; then
    echo "layering: $why:"; echo "$hits"; fail=1
  fi
}
check rendezvous/common 'gpurun/(rendezvous|worker|launcher)/|config\.h' "common must not include higher layers"
check rendezvous 'gpurun/(worker|launcher)/|(\.\./)+(launcher|worker_sdk)/' "rendezvous must not include the launcher or the SDK"
check rendezvous/src 'gpurun/tools/|(\.\./)+tools/' "the store library must not include its command-line tools (rendezvous/tools)"
check rendezvous/include 'gpurun/tools/' "the store library must not include its command-line tools (rendezvous/tools)"
check worker_sdk 'gpurun/tools/' "the worker SDK must not include the store's command-line tools"
check launcher 'gpurun/worker/|(\.\./)+worker_sdk/' "the launcher must not include the worker SDK"
check worker_sdk 'gpurun/launcher/|(\.\./)+launcher/|config\.h"' "the worker SDK must not include the launcher"
check examples 'gpurun/launcher/|(\.\./)+(launcher|rendezvous)/src' "examples use only the SDK's public headers"
for part in probe process output; do
  check "launcher/src/$part" '(run|multinode|info)/|cli/' "launcher/$part must not include run/, multinode/, info/ or cli/ (but cli/config.h)" 'cli/config\.h"'
done
check launcher/src/run 'multinode/' "launcher/run must not include multinode/ (the agents call run_node)"
[ $fail -eq 0 ] && echo "layering: ok"
exit $fail
