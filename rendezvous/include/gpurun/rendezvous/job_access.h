// Who may use a job's store from other hosts when the job knows its nodes (issue 17 "Exposure",
// issue 16 section 2 "Across hosts"). Loopback peers are always let in (the peer-uid check
// decides about them); this decides about every other address.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "gpurun/common/env.h"
#include "gpurun/rendezvous/store_server.h"

namespace gpurun::rendezvous {

// Sets o.allow_hosts and o.allow_origin from the first of:
//   1. `flag`: gpurun's --rdzv-allow HOSTS (or PET_RDZV_ALLOW), comma-separated hosts,
//      addresses, CIDR blocks, or "any";
//   2. GPURUN_STORE_ALLOW (already in `o` after apply_store_env);
//   3. the Slurm job's nodes (SLURM_JOB_NODELIST expanded, each name resolved to its addresses
//      here; a name that does not resolve is left out with a warning naming it);
//   4. nothing known: every host, as before.
// Throws ConfigError for a malformed node list. Returns a one-line summary for logs ("" for 4).
std::string apply_job_allow(StoreServerOptions& o, const EnvMap& env,
                            const std::optional<std::string>& flag = std::nullopt);

// Adds the rendezvous members' addresses (`addrs`, e.g. a round's nodes) to `o`'s list: a store
// whose clients can only be those members accepts exactly them (plus any list already set),
// unless the list says "any".
void allow_members(StoreServerOptions& o, const std::vector<std::string>& addrs,
                   const std::string& what);

}  // namespace gpurun::rendezvous
