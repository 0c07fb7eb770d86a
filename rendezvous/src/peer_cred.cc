#include "peer_cred.h"

#include <fmt/format.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace gpurun::rendezvous {

namespace {

using boost::asio::ip::address;
using boost::asio::ip::tcp;

void fill_addr(const address& a, __be32 out[4]) {
  std::memset(out, 0, 16);
  if (a.is_v4()) {
    auto b = a.to_v4().to_bytes();
    std::memcpy(out, b.data(), 4);
  } else {
    auto b = a.to_v6().to_bytes();
    std::memcpy(out, b.data(), 16);
  }
}

// /proc/net/tcp prints each 32-bit word of the address as the host-order integer in hex.
std::string proc_addr(const address& a, unsigned short port) {
  std::string out;
  if (a.is_v4()) {
    auto b = a.to_v4().to_bytes();
    std::uint32_t w;
    std::memcpy(&w, b.data(), 4);
    out = fmt::format("{:08X}", w);
  } else {
    auto b = a.to_v6().to_bytes();
    for (int i = 0; i < 4; ++i) {
      std::uint32_t w;
      std::memcpy(&w, b.data() + 4 * i, 4);
      out += fmt::format("{:08X}", w);
    }
  }
  return out + fmt::format(":{:04X}", port);
}

}  // namespace

address unmapped(const address& a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return boost::asio::ip::make_address_v4(boost::asio::ip::v4_mapped, a.to_v6());
  }
  return a;
}

bool is_loopback_address(const address& a) {
  address u = unmapped(a);
  return u.is_loopback();
}

PeerCredentials::PeerCredentials() {
  nl_fd_ = ::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (nl_fd_ < 0) {
    why_ = fmt::format("NETLINK_SOCK_DIAG socket: {}", std::strerror(errno));
    return;
  }
  timeval tv{0, 200 * 1000};  // the kernel answers at once; never hang the event loop
  ::setsockopt(nl_fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

PeerCredentials::~PeerCredentials() {
  if (nl_fd_ >= 0) ::close(nl_fd_);
}

LookupResult PeerCredentials::lookup(const tcp::endpoint& peer, const tcp::endpoint& local,
                                     SocketOwner& out) {
  if (nl_fd_ >= 0) {
    LookupResult r = lookup_netlink(peer, local, out);
    if (r != LookupResult::kUnavailable) return r;
  }
  return lookup_proc(peer, local, out);
}

LookupResult PeerCredentials::lookup_netlink(const tcp::endpoint& peer, const tcp::endpoint& local,
                                             SocketOwner& out) {
  // A v4-mapped pair is an IPv4 client socket (tried first) or a dual-stack IPv6 one.
  struct Try {
    int family;
    address src, dst;
  };
  std::vector<Try> tries;
  address p = peer.address(), l = local.address();
  if (unmapped(p).is_v4() && unmapped(l).is_v4())
    tries.push_back({AF_INET, unmapped(p), unmapped(l)});
  if (p.is_v6()) tries.push_back({AF_INET6, p, l});
  for (const Try& t : tries) {
    struct {
      nlmsghdr nlh;
      inet_diag_req_v2 r;
    } req{};
    req.nlh.nlmsg_len = sizeof req;
    req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
    req.nlh.nlmsg_flags = NLM_F_REQUEST;
    req.nlh.nlmsg_seq = ++seq_;
    req.r.sdiag_family = static_cast<__u8>(t.family);
    req.r.sdiag_protocol = IPPROTO_TCP;
    req.r.idiag_states = ~0u;
    req.r.id.idiag_sport = htons(peer.port());
    req.r.id.idiag_dport = htons(local.port());
    fill_addr(t.src, req.r.id.idiag_src);
    fill_addr(t.dst, req.r.id.idiag_dst);
    req.r.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
    req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
    sockaddr_nl kernel{};
    kernel.nl_family = AF_NETLINK;
    if (::sendto(nl_fd_, &req, sizeof req, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) <
        0) {
      why_ = fmt::format("inet_diag request: {}", std::strerror(errno));
      return LookupResult::kUnavailable;
    }
    alignas(nlmsghdr) char buf[8192];
    bool found = false;
    for (;;) {
      ssize_t n = ::recv(nl_fd_, buf, sizeof buf, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        why_ = fmt::format("inet_diag reply: {}", std::strerror(errno));
        return LookupResult::kUnavailable;
      }
      bool done = false;
      const auto len = static_cast<std::size_t>(n);
      // NLMSG_OK/NLMSG_NEXT, spelled out (the macros compare signed with unsigned).
      for (std::size_t off = 0, step = 0; off + sizeof(nlmsghdr) <= len; off += step) {
        auto* h = reinterpret_cast<nlmsghdr*>(buf + off);
        if (h->nlmsg_len < sizeof(nlmsghdr) || off + h->nlmsg_len > len) break;
        step = (h->nlmsg_len + 3u) & ~std::size_t{3};
        if (h->nlmsg_seq != seq_) continue;  // a late reply to an earlier, timed-out request
        done = true;
        if (h->nlmsg_type == NLMSG_ERROR) {
          auto* e = reinterpret_cast<nlmsgerr*>(reinterpret_cast<char*>(h) + NLMSG_HDRLEN);
          if (e->error == -ENOENT || e->error == 0) break;
          why_ = fmt::format("inet_diag: {}", std::strerror(-e->error));
          return LookupResult::kUnavailable;
        }
        if (h->nlmsg_type == SOCK_DIAG_BY_FAMILY) {
          auto* m = reinterpret_cast<inet_diag_msg*>(reinterpret_cast<char*>(h) + NLMSG_HDRLEN);
          out.uid = m->idiag_uid;
          out.inode = m->idiag_inode;
          found = true;
        }
      }
      if (done) break;
    }
    if (found) return LookupResult::kFound;
  }
  return LookupResult::kNotFound;
}

LookupResult PeerCredentials::lookup_proc(const tcp::endpoint& peer, const tcp::endpoint& local,
                                          SocketOwner& out) {
  address p = peer.address(), l = local.address();
  struct Try {
    const char* file;
    std::string local_field, remote_field;
  };
  std::vector<Try> tries;
  if (unmapped(p).is_v4() && unmapped(l).is_v4()) {
    tries.push_back({"/proc/net/tcp", proc_addr(unmapped(p), peer.port()),
                     proc_addr(unmapped(l), local.port())});
  }
  if (p.is_v6()) {
    tries.push_back({"/proc/net/tcp6", proc_addr(p, peer.port()), proc_addr(l, local.port())});
  }
  bool readable = false;
  for (const Try& t : tries) {
    std::ifstream in(t.file);
    if (!in) continue;
    readable = true;
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream f(line);
      std::string sl, loc, rem, st, queues, timer, retr;
      unsigned long uid = 0, timeout = 0, inode = 0;
      if (!(f >> sl >> loc >> rem >> st >> queues >> timer >> retr >> uid >> timeout >> inode)) {
        continue;
      }
      if (loc == t.local_field && rem == t.remote_field) {
        out.uid = static_cast<uid_t>(uid);
        out.inode = static_cast<ino_t>(inode);
        return LookupResult::kFound;
      }
    }
  }
  if (!readable) {
    why_ += (why_.empty() ? "" : "; ") + std::string("/proc/net/tcp is not readable");
    return LookupResult::kUnavailable;
  }
  return LookupResult::kNotFound;
}

std::optional<pid_t> pid_of_socket(ino_t inode) {
  namespace fs = std::filesystem;
  if (inode == 0) return std::nullopt;
  const std::string want = fmt::format("socket:[{}]", inode);
  std::error_code ec;
  for (fs::directory_iterator proc("/proc", ec), end; !ec && proc != end; proc.increment(ec)) {
    const std::string name = proc->path().filename().string();
    if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::error_code fec;
    for (fs::directory_iterator fd(proc->path() / "fd", fec); !fec && fd != end;
         fd.increment(fec)) {
      std::error_code lec;
      auto target = fs::read_symlink(fd->path(), lec);
      if (!lec && target.native() == want) return static_cast<pid_t>(std::stol(name));
    }
  }
  return std::nullopt;
}

}  // namespace gpurun::rendezvous
