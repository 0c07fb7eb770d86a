// Which hosts may use a store from another host (issue 16 section 2, issue 17 "Exposure"):
// addresses, CIDR blocks ("10.77.0.0/24", "fd00::/64") and host names (every address a name
// resolves to, looked up once when the list is built); "any" or "*" lets everyone in. Peers on
// this host are not its business (the peer-uid check is; loopback is always allowed).
#pragma once

#include <boost/asio/ip/address.hpp>
#include <string>
#include <vector>

namespace gpurun::rendezvous {

class AllowList {
 public:
  AllowList() = default;  // lets everyone in
  // `origin` names where the entries came from ("--rdzv-allow", "SLURM_JOB_NODELIST=n[1-2]") in
  // errors and in describe(). Throws ConfigError for a malformed CIDR or a name that does not
  // resolve. No entries (or "any" among them): everyone.
  AllowList(const std::vector<std::string>& entries, std::string origin);

  bool restricts() const { return !any_; }
  bool allows(boost::asio::ip::address a) const;  // an IPv4-mapped IPv6 peer counts as IPv4
  // "10.77.0.11, 10.77.0.12 (SLURM_JOB_NODELIST=n[1-2])": for log lines (the first 8 entries).
  std::string describe() const;

 private:
  struct Net {
    boost::asio::ip::address base;
    int prefix = 0;  // bits compared
    std::string text;
  };
  std::vector<Net> nets_;
  std::string origin_;
  bool any_ = true;
};

}  // namespace gpurun::rendezvous
