// This host's network interfaces and routes, as the launcher (`gpurun info`) and the worker SDK
// (which address Gloo's TCP transport binds) both need them: one implementation for both.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace gpurun {

struct NetInterface {
  std::string name;
  bool up = false;
  bool loopback = false;
  std::vector<std::string> addresses;  // IPv4 and IPv6, textual
};

// getifaddrs(), grouped by interface, in the kernel's order.
std::vector<NetInterface> list_interfaces();

// The local address the kernel would use to reach `host` (UDP connect, nothing is sent), or
// nullopt with the reason in *why (unresolvable name, no route). `port` only picks the route.
std::optional<std::string> source_address_for(const std::string& host, std::string* why,
                                              std::uint16_t port = 9);

// Where a store port derived from a job's id falls when nobody chose one (srun: Slurm's job and
// step ids, slurm.h; mpirun on one host: its job id, the worker SDK): kDerivedPortBase up to
// kDerivedPortBase + kDerivedPortSpan - 1 (20000..59999), the same on every rank of the job.
inline constexpr int kDerivedPortBase = 20000;
inline constexpr int kDerivedPortSpan = 40000;

// "", "localhost", 127.x.y.z and ::1.
bool is_loopback_name(const std::string& host);

// Every address `host` (a name or an address) resolves to, IPv4 and IPv6, textual, each once;
// empty with the reason in *why when it does not resolve.
std::vector<std::string> resolve_addresses(const std::string& host, std::string* why);

// Where a store that others reach at `host` should listen ("binding follows the endpoint"): a
// loopback name stays loopback ("localhost" -> 127.0.0.1); otherwise the first address `host`
// resolves to that belongs to this host and is not loopback; otherwise (a name this host
// resolves to loopback, as Debian's 127.0.1.1 for its own name, or an address of another host
// behind NAT) every interface of its family, "0.0.0.0" or "::" (dual-stack).
std::string bind_address_for(const std::string& host);

}  // namespace gpurun
