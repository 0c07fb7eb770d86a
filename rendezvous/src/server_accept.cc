// The store server's connections: binding (with the connection cap below RLIMIT_NOFILE and the
// peer-uid lookup proven on our own socket), accepting in bursts, refusing peers (cap, uid,
// allow-list; the uid lookup itself is peer_cred.cc), the frame-deadline sweep, and stopping.
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/ip/v6_only.hpp>
#include <cctype>

#include "gpurun/common/duration.h"
#include "gpurun/common/error.h"
#include "server_core.h"
#include "session.h"

namespace gpurun::rendezvous::server {
namespace {

constexpr auto kSweepPeriod = std::chrono::milliseconds(250);

}  // namespace

void ServerCore::bind() {
  const std::string& host = opts_.host;
  auto bind_error = [&](const boost::system::error_code& ec, std::string_view step) {
    std::string why = ec.message();
    if (!why.empty()) why[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(why[0])));
    return BindError(fmt::format("cannot {} store on {}:{} ({})", step, host, opts_.port, why),
                     std::error_code(ec.value(), std::generic_category()), host, opts_.port);
  };
  boost::system::error_code ec;
  tcp::endpoint ep;
  auto addr = asio::ip::make_address(host, ec);
  if (!ec) {
    ep = tcp::endpoint(addr, opts_.port);
  } else {
    tcp::resolver resolver(io_);
    auto results = resolver.resolve(host, std::to_string(opts_.port),
                                    tcp::resolver::passive | tcp::resolver::numeric_service, ec);
    if (ec || results.empty()) {
      if (!ec) ec = asio::error::host_not_found;
      throw bind_error(ec, "resolve host for");
    }
    ep = results.begin()->endpoint();
  }
  acceptor_.open(ep.protocol(), ec);
  if (ec) throw bind_error(ec, "open socket for");
  acceptor_.set_option(tcp::acceptor::reuse_address(true), ec);
  if (ep.address().is_v6() && ep.address().is_unspecified()) {
    acceptor_.set_option(asio::ip::v6_only(false), ec);  // "::" also accepts IPv4, like libuv
  }
  acceptor_.bind(ep, ec);
  if (ec) {
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    throw bind_error(ec, "bind");
  }
  acceptor_.listen(65535, ec);  // the kernel caps it at net.core.somaxconn
  if (ec) throw bind_error(ec, "listen");
  acceptor_.non_blocking(true, ec);  // on_accept drains pending connections synchronously
  auto local = acceptor_.local_endpoint(ec);
  if (ec) throw bind_error(ec, "read the bound address of");
  port_ = local.port();
  host_ = local.address().to_string();
  address_ = endpoint_string(local);

  set_connection_cap();
  if (opts_.check_peer_uid) {
    creds_ = std::make_unique<PeerCredentials>();
    SocketOwner probe;
    // Our own listening socket proves the lookup works (a dual-stack or v6 bind is looked up as
    // v6); a failure disables the check with a warning instead of refusing every worker.
    if (creds_->lookup(local, tcp::endpoint(local.address(), 0), probe) ==
        LookupResult::kUnavailable) {
      GPURUN_LOG_WARN("store",
                      "cannot check the uid of local peers ({}); the store on {} accepts "
                      "connections from any local user",
                      creds_->why(), address_);
      creds_.reset();
    }
  }
  resolve_allow_list();
}

// The connection cap leaves descriptors for the rest of the process (the launcher's pipes, log
// files, a restart's new workers): refusing a stranger's 1000th connection is better than
// failing the job's next fork.
void ServerCore::set_connection_cap() {
  rlimit lim{};
  std::size_t fds = 1024;
  if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY) {
    fds = static_cast<std::size_t>(lim.rlim_cur);
  } else if (lim.rlim_cur == RLIM_INFINITY) {
    fds = 1 << 20;
  }
  std::size_t reserve = std::max<std::size_t>(64, fds / 4);
  std::size_t fit = fds > reserve ? fds - reserve : 1;
  max_connections_ = opts_.max_connections == 0 ? fit : std::min(opts_.max_connections, fit);
  if (opts_.max_connections > fit) {
    GPURUN_LOG_WARN("store",
                    "--max-connections {} lowered to {} (RLIMIT_NOFILE {} minus a reserve of {} "
                    "descriptors); raise the hard limit (ulimit -Hn) for more",
                    opts_.max_connections, fit, fds, reserve);
  }
}

void ServerCore::resolve_allow_list() {
  allowed_ = AllowList(opts_.allow_hosts, opts_.allow_origin);
  if (allowed_.restricts()) {
    GPURUN_LOG_INFO("store", "the store on {} accepts other hosts only from {}", address_,
                    allowed_.describe());
  }
}

// A warning (rate-limited: peers can trigger it at will) that `peer` is refused and why.
void ServerCore::log_refusal(const tcp::endpoint& peer, std::string_view why) {
  if (peer_log_.allow()) {
    GPURUN_LOG_WARN("store", "refusing connection from {}: {}", endpoint_string(peer), why);
  }
}

bool ServerCore::vouched(const asio::ip::address& a) const {
  return std::find(vouched_.begin(), vouched_.end(), unmapped(a)) != vouched_.end();
}

std::string ServerCore::refuse_reason(const tcp::socket& sock, const tcp::endpoint& peer,
                                      bool& probation) {
  probation = false;
  bool loopback = is_loopback_address(peer.address());
  bool local_peer = loopback;
  if (creds_) {
    boost::system::error_code ec;
    tcp::endpoint local = sock.local_endpoint(ec);
    SocketOwner owner;
    LookupResult r = ec ? LookupResult::kNotFound : creds_->lookup(peer, local, owner);
    if (r == LookupResult::kFound && owner.inode != 0) {
      local_peer = true;
      if (owner.uid != own_uid_) {
        std::string who = fmt::format("uid {}", owner.uid);
        if (peer_log_.allow()) {
          // A /proc scan only when the line is printed, and at most once a second (it walks
          // every process's fds, on the event loop).
          auto now = std::chrono::steady_clock::now();
          if (now - last_pid_scan_ >= std::chrono::seconds(1)) {
            last_pid_scan_ = now;
            if (auto pid = pid_of_socket(owner.inode)) who += fmt::format(" (pid {})", *pid);
          }
          GPURUN_LOG_WARN("store",
                          "refusing connection from {}: it belongs to {}, but only uid {} (which "
                          "runs this store) may use it (GPURUN_STORE_CHECK_PEER_UID=0 / "
                          "--no-peer-uid-check turns this check off)",
                          endpoint_string(peer), who, own_uid_);
        }
        return "uid";
      }
      return "";
    }
    if (loopback) {
      log_refusal(peer, "the owner of that loopback socket cannot be found (it closed already)");
      return "unknown owner";
    }
  }
  // This host through one of its own addresses (the kernel makes the source address the
  // destination): local whatever the uid lookup said, never a stranger host.
  if (!local_peer) {
    boost::system::error_code ec;
    const tcp::endpoint local = sock.local_endpoint(ec);
    if (!ec && unmapped(local.address()) == unmapped(peer.address())) local_peer = true;
  }
  // Other hosts: the allow-list, else (with a job secret) hosts whose peers proved it, else
  // probation until this one does; without a secret and a list, everyone (PyTorch's behaviour).
  const bool secret = !opts_.job_secret.empty();
  const bool listed = allowed_.restricts() ? allowed_.allows(peer.address()) : !secret;
  if (!local_peer && !listed && secret) {
    probation = !vouched(peer.address());
    return "";
  }
  if (!local_peer && !listed) {
    if (peer_log_.allow()) {
      log_refusal(peer, fmt::format("not one of the job's hosts, which are {} and loopback; add "
                                    "it with --rdzv-allow (GPURUN_STORE_ALLOW for gpurun-store "
                                    "and the SDK's store)",
                                    allowed_.describe()));
    }
    return "address";
  }
  return "";
}

void ServerCore::start() {
  do_accept();
  arm_sweep();
}

void ServerCore::arm_sweep() {
  if (stopped_) return;
  sweep_.expires_after(kSweepPeriod);
  sweep_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec || self->stopped_) return;
    self->sweep();
    self->arm_sweep();
  });
}

void ServerCore::sweep() {
  peer_log_.roll();
  const bool frames = opts_.frame_timeout.count() > 0;
  auto now = std::chrono::steady_clock::now();
  scratch_.clear();
  for (Session* s : sessions_) {
    if ((frames && s->frame_overdue(now, opts_.frame_timeout)) || s->probation_overdue(now)) {
      scratch_.push_back(s->shared_from_this());
    }
  }
  for (auto& s : scratch_) {
    if (s->probation_overdue(now)) {
      s->close(
          fmt::format("it did not prove the job secret within {} (it connected from a host "
                      "outside the job's allow-list{})",
                      format_duration(opts_.auth_timeout),
                      allowed_.restricts() ? ", " + allowed_.describe() : ""));
    } else {
      s->close(
          fmt::format("a request started arriving more than {} ago and is still incomplete "
                      "(frame deadline; GPURUN_STORE_FRAME_TIMEOUT raises it)",
                      format_duration(opts_.frame_timeout)));
    }
  }
  scratch_.clear();
}

void ServerCore::do_accept() {
  if (stopped_) return;
  acceptor_.async_accept(accept_peer_, [self = shared_from_this()](
                                           const boost::system::error_code& ec, tcp::socket sock) {
    self->on_accept(ec, std::move(sock));
  });
}

void ServerCore::on_accept(const boost::system::error_code& ec, tcp::socket sock) {
  if (stopped_) return;
  if (ec) {
    if (ec == asio::error::operation_aborted) return;
    if (peer_log_.allow()) {
      GPURUN_LOG_WARN("store", "accept on {} failed: {}", address_, ec.message());
    }
    if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space ||
        ec == asio::error::no_memory || ec.value() == ENFILE) {
      // Out of descriptors: retry shortly instead of spinning on the same error.
      accept_retry_.expires_after(std::chrono::milliseconds(50));
      accept_retry_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
        if (!e) self->do_accept();
      });
      return;
    }
    do_accept();
    return;
  }
  add_session(std::move(sock), accept_peer_);
  // Take every other pending connection now (non-blocking) before re-arming: a burst of
  // thousands of clients is accepted without one event-loop round trip each.
  for (int i = 0; i < 256 && !stopped_; ++i) {
    boost::system::error_code aec;
    tcp::socket next = acceptor_.accept(accept_peer_, aec);
    if (aec) break;  // would_block: drained (other errors resurface in async_accept)
    add_session(std::move(next), accept_peer_);
  }
  do_accept();
}

void ServerCore::serve_connected(int fd, bool on_probation) {
  tcp::socket sock(io_);
  boost::system::error_code ec;
  sock.assign(acceptor_.local_endpoint(ec).protocol(), fd, ec);
  if (ec) {
    ::close(fd);
    return;
  }
  add_session(std::move(sock), tcp::endpoint(asio::ip::address_v4::loopback(), 0), false,
              on_probation);
}

void ServerCore::add_session(tcp::socket sock, const tcp::endpoint& peer, bool check,
                             bool on_probation) {
  ++accepted_;
  if (sessions_.size() >= max_connections_) {
    ++refused_;
    log_refusal(peer, fmt::format("{} connections open (the cap; it leaves descriptors for the "
                                  "launcher: raise ulimit -Hn or --max-connections)",
                                  sessions_.size()));
    boost::system::error_code ignored;
    sock.close(ignored);
    return;
  }
  bool probation = on_probation;
  if (check && !refuse_reason(sock, peer, probation).empty()) {
    ++refused_;
    boost::system::error_code ignored;
    linger l{true, 0};  // RST: the stranger's bytes are never read
    ::setsockopt(sock.native_handle(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
    sock.close(ignored);
    return;
  }
  boost::system::error_code ignored;
  sock.set_option(tcp::no_delay(true), ignored);
  auto s = std::make_shared<Session>(shared_from_this(), std::move(sock), peer);
  sessions_.insert(s.get());
  if (probation) s->probation_until_ = std::chrono::steady_clock::now() + opts_.auth_timeout;
  GPURUN_LOG_DEBUG("store", "connection from {}{}", s->peer(),
                   probation ? " (on probation until it proves the job secret)" : "");
  s->start();
}

void ServerCore::stop() {
  if (stopped_) return;
  stopped_ = true;
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  accept_retry_.cancel();
  sweep_.cancel();
  scratch_.clear();
  for (Session* s : sessions_) scratch_.push_back(s->shared_from_this());
  for (auto& s : scratch_) s->close("");
  scratch_.clear();
}

}  // namespace gpurun::rendezvous::server
