#include "gpurun/rendezvous/job_access.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>

#include "gpurun/common/log.h"
#include "gpurun/common/net.h"
#include "gpurun/common/slurm.h"

namespace gpurun::rendezvous {

std::string apply_job_allow(StoreServerOptions& o, const EnvMap& env,
                            const std::optional<std::string>& flag) {
  if (flag) {
    o.allow_hosts.clear();
    for (const auto& h : split(*flag, ',')) {
      if (auto t = trim(h); !t.empty()) o.allow_hosts.push_back(t);
    }
    o.allow_origin = "--rdzv-allow";
    return fmt::format("other hosts allowed: {} (--rdzv-allow)", *flag);
  }
  if (!o.allow_hosts.empty()) {
    return fmt::format("other hosts allowed: {} ({})", fmt::join(o.allow_hosts, ","),
                       o.allow_origin);
  }
  auto nodes = slurm_job_nodes(env);
  if (!nodes) {
    if (o.job_secret.empty()) return "";
    return fmt::format(
        "other hosts allowed: those whose gpurun proves {} (and then their "
        "workers)",
        kJobSecretEnv);
  }
  std::vector<std::string> unresolved;
  for (const auto& n : nodes->nodes) {
    std::string why;
    auto addrs = resolve_addresses(n, &why);
    if (addrs.empty()) unresolved.push_back(fmt::format("{} ({})", n, why));
    for (auto& a : addrs) {
      if (std::find(o.allow_hosts.begin(), o.allow_hosts.end(), a) == o.allow_hosts.end()) {
        o.allow_hosts.push_back(std::move(a));
      }
    }
  }
  if (!unresolved.empty()) {
    GPURUN_LOG_WARN("store",
                    "cannot resolve {} of the Slurm job's nodes; the store refuses connections "
                    "from {}; pass --rdzv-allow HOSTS (or GPURUN_STORE_ALLOW) with their "
                    "addresses or an address block",
                    fmt::join(unresolved, ", "), unresolved.size() == 1 ? "it" : "them");
  }
  if (o.allow_hosts.empty()) {
    // Not one name resolved: an empty list would let everyone in; refuse every other host.
    o.allow_hosts.push_back("0.0.0.0/32");
  }
  o.allow_origin = fmt::format("the Slurm job's nodes, {}", nodes->from);
  return fmt::format("other hosts allowed: the Slurm job's nodes ({}: {})", nodes->from,
                     fmt::join(o.allow_hosts, ","));
}

std::string describe_job_access(const EnvMap& env, const std::optional<std::string>& flag,
                                bool one_node, bool loopback_only) {
  const bool uid_check = env_bool(env, "GPURUN_STORE_CHECK_PEER_UID").value_or(true);
  const std::string here =
      uid_check ? "this host: only this uid" : "this host: any uid (GPURUN_STORE_CHECK_PEER_UID=0)";
  const auto given = env_get(env, kJobSecretEnv);
  // Who else gets in by proving a secret ("" when there is none).
  std::string provers;
  if (given && !given->empty()) {
    provers = fmt::format("hosts whose gpurun proves {} (then their workers too)", kJobSecretEnv);
  } else if (one_node) {
    provers = "hosts that prove the job secret gpurun generates for this run (its workers get it)";
  }
  const std::string also = provers.empty() ? "" : ", and " + provers;
  std::string others;
  if (loopback_only) {
    others = "none (the store is bound to a loopback address)";
  } else if (flag) {
    others = fmt::format("only {} (--rdzv-allow){}", *flag, also);
  } else if (auto v = env_get(env, "GPURUN_STORE_ALLOW")) {
    others = fmt::format("only {} (GPURUN_STORE_ALLOW){}", *v, also);
  } else if (auto nodes = slurm_job_nodes(env)) {
    others = fmt::format("only the Slurm job's nodes ({}){}", nodes->from, also);
  } else if (!provers.empty()) {
    others = "only " + provers;
  } else {
    others =
        fmt::format("any (no --rdzv-allow, Slurm node list or {}: set one to keep other hosts out)",
                    kJobSecretEnv);
  }
  return fmt::format("{}; other hosts: {}", here, others);
}

void allow_members(StoreServerOptions& o, const std::vector<std::string>& addrs,
                   const std::string& what) {
  if (std::find(o.allow_hosts.begin(), o.allow_hosts.end(), "any") != o.allow_hosts.end() ||
      std::find(o.allow_hosts.begin(), o.allow_hosts.end(), "*") != o.allow_hosts.end()) {
    return;
  }
  o.allow_origin = o.allow_hosts.empty() ? what : fmt::format("{} and {}", what, o.allow_origin);
  for (const auto& a : addrs) {
    if (!a.empty() &&
        std::find(o.allow_hosts.begin(), o.allow_hosts.end(), a) == o.allow_hosts.end()) {
      o.allow_hosts.push_back(a);
    }
  }
}

}  // namespace gpurun::rendezvous
