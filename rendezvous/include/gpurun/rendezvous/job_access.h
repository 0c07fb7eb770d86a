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

// The job secret (issue 16 section 2): a shared secret that gpurun's own clients (agents, the
// worker SDK, `gpurun store` clients) prove to a store by challenge-response (HMAC-SHA256 over a
// fresh nonce; the secret never travels). A store that has one admits a peer from a host outside
// its allow-list only after that peer proves it, and from then on admits that peer's host (the
// job's nodes announce themselves: torch workers on a proven agent's host get in). PyTorch's own
// clients cannot prove it: on other hosts they need the allow-list or a proven agent beside them.
// Set it to the same value on every node (any string; `openssl rand -hex 32`); a single-node
// gpurun without one generates one for its workers.
inline constexpr const char* kJobSecretEnv = "GPURUN_JOB_SECRET";

// 64 hex digits from the kernel's CSPRNG (getrandom). Throws Error if that fails.
std::string generate_job_secret();

// Sets o.allow_hosts and o.allow_origin from the first of:
//   1. `flag`: gpurun's --rdzv-allow HOSTS (or PET_RDZV_ALLOW), comma-separated hosts,
//      addresses, CIDR blocks, or "any";
//   2. GPURUN_STORE_ALLOW (already in `o` after apply_store_env);
//   3. the Slurm job's nodes (SLURM_JOB_NODELIST expanded, each name resolved to its addresses
//      here; a name that does not resolve is left out with a warning naming it);
//   4. nothing known: every host, as before, unless `o.job_secret` is set: then no other host
//      until its peers prove the secret (each proof admits its host).
// Throws ConfigError for a malformed node list. Returns a one-line summary for logs ("" for 4).
std::string apply_job_allow(StoreServerOptions& o, const EnvMap& env,
                            const std::optional<std::string>& flag = std::nullopt);

// Who may use a store gpurun would start with these settings, in one line for --dry-run, from the
// same sources as apply_store_env + apply_job_allow, in the same order, without resolving any
// name (a dry run never touches the network). `one_node`: gpurun generates a secret if none is
// given; `loopback_only`: the store binds a loopback address (no other host can reach it).
std::string describe_job_access(const EnvMap& env, const std::optional<std::string>& flag,
                                bool one_node, bool loopback_only);

// Adds the rendezvous members' addresses (`addrs`, e.g. a round's nodes) to `o`'s list: a store
// whose clients can only be those members accepts exactly them (plus any list already set),
// unless the list says "any".
void allow_members(StoreServerOptions& o, const std::vector<std::string>& addrs,
                   const std::string& what);

}  // namespace gpurun::rendezvous
