// Who is on the other end of an accepted TCP connection? For a peer on this host (same network
// namespace), the kernel knows the owner of the client's socket: NETLINK_SOCK_DIAG (inet_diag)
// answers an exact lookup by the 4-tuple, with /proc/net/tcp{,6} as the fallback. Used by the
// store to accept only connections from the uid that runs it (issue 16, section 2).
#pragma once

#include <sys/types.h>

#include <boost/asio/ip/tcp.hpp>
#include <optional>
#include <string>

namespace gpurun::rendezvous {

struct SocketOwner {
  uid_t uid = 0;
  ino_t inode = 0;  // 0: a socket without an owner (TIME_WAIT, being closed)
};

enum class LookupResult { kFound, kNotFound, kUnavailable };

class PeerCredentials {
 public:
  PeerCredentials();
  ~PeerCredentials();
  PeerCredentials(const PeerCredentials&) = delete;
  PeerCredentials& operator=(const PeerCredentials&) = delete;

  // Looks up the socket whose local end is `peer` and whose remote end is `local` (the client
  // side of a connection this process accepted on `local`). kNotFound: no such socket in this
  // network namespace (a remote peer, or the client already closed). kUnavailable: neither
  // inet_diag nor /proc/net/tcp could be used (why() says why).
  LookupResult lookup(const boost::asio::ip::tcp::endpoint& peer,
                      const boost::asio::ip::tcp::endpoint& local, SocketOwner& out);
  const std::string& why() const { return why_; }

 private:
  LookupResult lookup_netlink(const boost::asio::ip::tcp::endpoint& peer,
                              const boost::asio::ip::tcp::endpoint& local, SocketOwner& out);
  LookupResult lookup_proc(const boost::asio::ip::tcp::endpoint& peer,
                           const boost::asio::ip::tcp::endpoint& local, SocketOwner& out);
  int nl_fd_ = -1;
  std::uint32_t seq_ = 0;
  std::string why_;
};

// The pid of a process holding socket `inode` (scans /proc/*/fd; only processes this one may
// inspect), or nullopt.
std::optional<pid_t> pid_of_socket(ino_t inode);

// A v4-mapped IPv6 address (a dual-stack listener sees IPv4 clients this way) as plain IPv4.
boost::asio::ip::address unmapped(const boost::asio::ip::address& a);

// True for 127.0.0.0/8, ::1 and ::ffff:127.x.y.z.
bool is_loopback_address(const boost::asio::ip::address& a);

}  // namespace gpurun::rendezvous
