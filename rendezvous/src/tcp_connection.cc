#include "tcp_connection.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstring>
#include <thread>

#include "gpurun/common/error.h"
#include "gpurun/common/io.h"
#include "gpurun/common/log.h"
#include "gpurun/common/progress.h"
#include "gpurun/rendezvous/job_access.h"
#include "job_secret.h"

namespace gpurun::rendezvous::detail {
namespace {

using protocol::ParseStatus;
using protocol::Reply;
using protocol::ReplyKind;

int poll_ms(Clock::time_point deadline) {
  if (deadline == Clock::time_point::max()) return -1;
  auto left = remaining(deadline).count();
  return static_cast<int>(std::min<long long>(left, INT_MAX));
}

}  // namespace

std::string quote_keys(std::span<const std::string> keys) {
  std::string out;
  for (std::size_t i = 0; i < keys.size() && i < kMaxKeysInMessage; ++i) {
    if (i > 0) out += ", ";
    out += "'" + keys[i] + "'";
  }
  if (keys.size() > kMaxKeysInMessage) {
    out += fmt::format(" and {} more", keys.size() - kMaxKeysInMessage);
  }
  return out;
}

std::string describe(const What& w) {
  if (w.keys.empty()) return std::string(w.op);
  return fmt::format("{} of key(s) {}", w.op, quote_keys(w.keys));
}

void Connection::io_error(const What& w, const std::string& why) const {
  throw NetworkError(
      fmt::format("store {}: connection lost during {} ({}); is the store server "
                  "still running?",
                  address_, describe(w), why));
}

void Connection::io_timeout(const What& w, std::chrono::milliseconds t) const {
  throw StoreTimeout(
      fmt::format("store {}: timed out after {} in {}; is the store server "
                  "overloaded or stopped? ({} raises the limit)",
                  address_, format_duration(t), describe(w), timeout_setting_));
}

bool Connection::wait_fd(short events, Clock::time_point deadline, const What& w) {
  pollfd p{fd_.get(), events, 0};
  for (;;) {
    int r = retry_eintr([&] { return ::poll(&p, 1, poll_ms(deadline)); });
    if (r > 0) return true;
    if (r < 0) io_error(w, std::strerror(errno));
    if (Clock::now() >= deadline) return false;
  }
}

bool Connection::send(Clock::time_point deadline, const What& w) {
  const std::uint8_t* p = wbuf_.data();
  std::size_t left = wbuf_.size();
  while (left > 0) {
    ssize_t n = retry_eintr([&] { return ::send(fd_.get(), p, left, MSG_NOSIGNAL); });
    if (n > 0) {
      p += n;
      left -= static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_fd(POLLOUT, deadline, w)) return false;
      continue;
    }
    io_error(w, n == 0 ? "connection closed" : std::strerror(errno));
  }
  wbuf_.clear();
  return true;
}

bool Connection::receive(ReplyKind kind, std::uint64_t count, Reply& out,
                         Clock::time_point deadline, const What& w) {
  std::size_t need = 0;
  for (;;) {
    std::span<const std::uint8_t> buf(rbuf_.data() + rpos_, rlen_ - rpos_);
    if (buf.size() >= need) {
      auto r = protocol::parse_reply(kind, buf, out, count);
      if (r.status == ParseStatus::kRequest) {
        rpos_ += r.consumed;
        return true;
      }
      if (r.status == ParseStatus::kError) {
        throw ProtocolError(
            fmt::format("store {}: bad reply to {} ({})", address_, describe(w), r.error));
      }
      need = r.need;
    }
    // Make room: drop consumed bytes, then grow by doubling (never by a claimed length).
    if (rpos_ > 0) {
      std::memmove(rbuf_.data(), rbuf_.data() + rpos_, rlen_ - rpos_);
      rlen_ -= rpos_;
      rpos_ = 0;
    }
    if (rbuf_.size() - rlen_ < 4096) rbuf_.resize(std::max<std::size_t>(rbuf_.size() * 2, 65536));
    if (!wait_fd(POLLIN, deadline, w)) return false;
    ssize_t n = retry_eintr(
        [&] { return ::recv(fd_.get(), rbuf_.data() + rlen_, rbuf_.size() - rlen_, 0); });
    if (n > 0) {
      rlen_ += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    io_error(w, n == 0 ? "the server closed the connection" : std::strerror(errno));
  }
}

void Connection::exchange(const Deadline& d, const What& w, std::optional<ReplyKind> kind,
                          std::uint64_t count, Reply& r) {
  if (!send(d.at, w)) io_timeout(w, d.timeout);
  if (kind && !receive(*kind, count, r, d.at, w)) io_timeout(w, d.timeout);
}

UniqueFd Connection::connect_once(const TcpStoreOptions& opts, Clock::time_point deadline,
                                  std::string& err) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string port = std::to_string(opts.port);
  int rc = ::getaddrinfo(opts.host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) {
    err = fmt::format("cannot resolve '{}': {}", opts.host, ::gai_strerror(rc));
    return UniqueFd();
  }
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(res, ::freeaddrinfo);
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    UniqueFd fd(::socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) {
      err = std::strerror(errno);
      continue;
    }
    int r = ::connect(fd.get(), ai->ai_addr, ai->ai_addrlen);
    if (r != 0 && errno == EINPROGRESS) {
      pollfd p{fd.get(), POLLOUT, 0};
      int pr = retry_eintr([&] {
        return ::poll(&p, 1, std::min(poll_ms(deadline) < 0 ? 1000 : poll_ms(deadline), 1000));
      });
      if (pr <= 0) {
        err = "connect timed out";
        continue;
      }
      int so_err = 0;
      socklen_t len = sizeof so_err;
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &so_err, &len);
      r = so_err == 0 ? 0 : -1;
      errno = so_err;
    }
    if (r != 0) {
      err = std::strerror(errno);
      continue;
    }
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
  }
  return UniqueFd();
}

std::unique_ptr<Connection> Connection::open(const TcpStoreOptions& opts,
                                             const std::string& address,
                                             std::chrono::milliseconds budget) {
  auto start = Clock::now();
  auto deadline = deadline_after(budget);
  constexpr auto kMinBackoff = std::chrono::milliseconds(10);
  auto backoff = kMinBackoff;
  std::string err;
  int attempts = 0;
  ProgressSchedule progress(opts.progress_after);
  const std::string hint = opts.connect_hint.empty()
                               ? std::string("is the store server running at that address?")
                               : opts.connect_hint;
  for (;;) {
    ++attempts;
    if (UniqueFd fd = connect_once(opts, deadline, err)) {
      auto c = std::make_unique<Connection>(std::move(fd), opts, address);
      try {
        c->handshake(deadline);
        return c;
      } catch (const ProtocolError&) {
        throw;
      } catch (const Error& e) {
        err = fmt::format("handshake failed: {}", e.what());
        // Auto: the server took the connection and dropped the 2.x handshake. A 1.13 server
        // does that (it reads VALIDATE as a SET with an absurd length): try 1.13, once.
        if (opts.dialect == Dialect::kAuto) {
          if (UniqueFd fd2 = connect_once(opts, deadline, err)) {
            auto c2 = std::make_unique<Connection>(std::move(fd2), opts, address);
            c2->confirm_v113(deadline, e.what());
            return c2;
          }
        }
      }
    }
    if (Clock::now() + backoff >= deadline) break;
    std::this_thread::sleep_for(backoff);  // retry backoff, not synchronisation
    backoff = std::min(backoff * 2, std::max(opts.connect_backoff_max, kMinBackoff));
    const auto so_far = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
    if (progress.due(so_far)) {
      GPURUN_LOG_WARN(
          "store",
          "still trying to reach the store at {} after {} ({} attempts, last: {}); "
          "{}; {}",
          address, format_duration(round_to_seconds(so_far)), attempts, err,
          budget == kNoTimeout
              ? fmt::format("no timeout ({} is 0), so it keeps trying", opts.timeout_setting)
              : fmt::format("giving up in {} ({}={})",
                            format_duration(round_to_seconds(remaining(deadline))),
                            opts.timeout_setting, format_duration(budget)),
          hint);
    }
  }
  auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
  std::string why = hint;
  if (opts.dialect == Dialect::kV2 && err.find("handshake") != std::string::npos) {
    why = "a PyTorch 1.13 TCPStore server needs the 1.13 dialect (Dialect::kV113)";
  }
  throw NetworkError(fmt::format("store {}: cannot connect after {} and {} attempt(s) ({}); {}",
                                 address, format_duration(waited), attempts, err, why),
                     std::make_error_code(std::errc::connection_refused));
}

Connection::Connection(UniqueFd fd, const TcpStoreOptions& opts, std::string address)
    : fd_(std::move(fd)),
      dialect_(opts.dialect == Dialect::kAuto ? Dialect::kV2 : opts.dialect),
      timeout_setting_(opts.timeout_setting),
      address_(std::move(address)),
      job_secret_(opts.job_secret.value_or("")) {}

void Connection::handshake(Clock::time_point deadline) {
  if (dialect_ != Dialect::kV2) return;
  static std::atomic<std::uint32_t> seq{0};
  What w{"handshake"};
  const std::uint32_t nonce = static_cast<std::uint32_t>(::getpid()) ^ (++seq << 20);
  protocol::encode_validate(Dialect::kV2, wbuf_);
  protocol::encode_ping(Dialect::kV2, nonce, wbuf_);
  // The job secret's challenge rides with the handshake: no extra round trip where the server
  // needs no proof from this connection (it answers with an empty nonce).
  const bool prove = !job_secret_.empty();
  if (prove) protocol::encode_auth_challenge(Dialect::kV2, wbuf_);
  auto hs_deadline = std::min(deadline, deadline_after(std::chrono::seconds(10)));
  if (!send(hs_deadline, w)) throw NetworkError("timed out sending VALIDATE+PING");
  Reply r;
  if (!receive(ReplyKind::kU32, 0, r, hs_deadline, w)) {
    throw NetworkError("timed out waiting for the PING echo");
  }
  consumed();
  if (r.u32 != nonce) {
    throw ProtocolError(fmt::format(
        "store {}: handshake failed (PING echo {:#x} != nonce {:#x}); is this a PyTorch 2.5+ or "
        "gpurun store?",
        address_, r.u32, nonce));
  }
  if (prove) prove_secret(hs_deadline);
}

void Connection::confirm_v113(Clock::time_point deadline, const std::string& v2_error) {
  dialect_ = Dialect::kV113;
  What w{"1.13 dialect check (GETNUMKEYS)"};
  protocol::encode_num_keys(Dialect::kV113, wbuf_);
  const auto d = std::min(deadline, deadline_after(std::chrono::seconds(5)));
  Reply r;
  bool ok = false;
  try {
    ok = send(d, w) && receive(ReplyKind::kI64, 0, r, d, w);
  } catch (const NetworkError&) {
    ok = false;
  }
  if (!ok) {
    throw ProtocolError(fmt::format(
        "store {}: the server speaks neither PyTorch 2.5+'s dialect (the handshake failed: {}) "
        "nor 1.13's (GETNUMKEYS got no answer); PyTorch 2.0-2.4 stores are not supported",
        address_, v2_error));
  }
  consumed();
}

void Connection::prove_secret(Clock::time_point deadline) {
  What w{"job-secret proof"};
  Reply r;
  // One reply of `kind`; the server closing the connection instead means `closed` (a format
  // string for the variable's name, filled only then; no retry: the next connection would get
  // the same answer).
  auto expect = [&](ReplyKind kind, std::string_view what, std::string_view closed) {
    bool got = false;
    try {
      got = receive(kind, 0, r, deadline, w);
    } catch (const NetworkError&) {
      throw ProtocolError(
          fmt::format("store {}: {}", address_, fmt::format(fmt::runtime(closed), kJobSecretEnv)));
    }
    if (!got) throw NetworkError(fmt::format("timed out waiting for the {}", what));
  };
  expect(ReplyKind::kBytes, "job-secret challenge",
         "the server closed the connection at gpurun's job-secret challenge: it is not a gpurun "
         "store (PyTorch's TCPStore does not know the request); unset {} for it");
  const std::string challenge(r.values.empty() ? std::string_view() : r.values[0]);
  consumed();
  if (challenge.empty()) return;  // this connection needs no proof
  protocol::encode_auth_proof(Dialect::kV2, auth::proof(job_secret_, challenge), wbuf_);
  if (!send(deadline, w)) throw NetworkError("timed out sending the job-secret proof");
  expect(ReplyKind::kU8, "job-secret verdict",
         "the store refused this host's job-secret proof: {} here differs from the store's (set "
         "the same value on every node)");
  consumed();
}

}  // namespace gpurun::rendezvous::detail
