// TcpStore: blocking client of a TCPStore-protocol server over non-blocking POSIX sockets with
// poll() deadlines. Requests on one connection are strictly sequential. Connections come from a
// small pool: a single-threaded user gets exactly one connection (like c10d's client), while a
// thread blocked in wait()/get() does not stall another thread's set() on the same TcpStore (the
// Store contract allows concurrent calls); that second thread gets its own connection.
//
// Wait timeouts: in the 2.x dialect the client sends CANCEL_WAIT and reads WAIT_CANCELED (01),
// or STOP_WAITING (00) then 01 when the keys appeared just as the timer fired (then wait() returns
// normally). In the 1.13 dialect there is no CANCEL_WAIT and the server may still send a stray 00
// later, so the timed-out connection is discarded and a new one is opened for the next request.
#include "gpurun/rendezvous/tcp_store.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>

#include "gpurun/common/error.h"
#include "gpurun/common/log.h"
#include "gpurun/common/unique_fd.h"
#include "protocol.h"

namespace gpurun::rendezvous {
namespace {

using protocol::Op;
using protocol::ParseStatus;
using protocol::Reply;
using protocol::ReplyKind;

constexpr std::size_t kMaxIdleConnections = 4;
constexpr std::size_t kMaxKeysInMessage = 8;

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

int poll_ms(Clock::time_point deadline) {
  if (deadline == Clock::time_point::max()) return -1;
  auto left = remaining(deadline).count();
  return static_cast<int>(std::min<long long>(left, INT_MAX));
}

// What an I/O step belongs to, for error messages.
struct What {
  std::string_view op;
  std::span<const std::string> keys;  // user keys (without the wire prefix)
};

std::string describe_what(const What& w) {
  if (w.keys.empty()) return std::string(w.op);
  return fmt::format("{} of key(s) {}", w.op, quote_keys(w.keys));
}

std::span<const std::string> one(const std::string& key) { return {&key, 1}; }

struct Deadline {
  std::chrono::milliseconds timeout;
  Clock::time_point at;
  explicit Deadline(std::chrono::milliseconds t) : timeout(t), at(deadline_after(t)) {}
};

// One operation's request, as TcpStore::Impl::round_trip runs it.
struct Call {
  std::string_view op;                     // names the operation in errors: "set", "get", ...
  std::span<const std::string> keys = {};  // user keys (without the wire prefix), for errors
  std::optional<ReplyKind> reply = {};     // none: the request has no reply (SET, APPEND, ...)
  std::uint64_t count = 0;                 // kBytesList: how many values the reply holds
  bool wait_first = false;             // WAIT for `keys` on the same connection first (like c10d)
  const Deadline* deadline = nullptr;  // a caller's deadline (queue_pop); default: timeout()
};

// round_trip's decoder for requests without a reply.
constexpr auto kNoReply = [](const Reply&) {};

struct Conn {
  UniqueFd fd;
  std::vector<std::uint8_t> wbuf;
  std::vector<std::uint8_t> rbuf;
  std::size_t rlen = 0;  // valid bytes in rbuf
  std::size_t rpos = 0;  // start of the next unread reply
};

}  // namespace

struct TcpStore::Impl {
  explicit Impl(TcpStore& s) : self(s) {}

  TcpStore& self;  // for timeout() (which set_timeout may change) and check()
  TcpStoreOptions opts;
  std::string address;
  protocol::Limits limits;
  std::mutex pool_mu;
  std::vector<std::unique_ptr<Conn>> idle;
  std::uint32_t nonce_seq = 0;

  // ---- low-level I/O ----

  [[noreturn]] void io_error(const What& w, const std::string& why) const {
    throw NetworkError(
        fmt::format("store {}: connection lost during {} ({}); is the store server "
                    "still running?",
                    address, describe_what(w), why));
  }
  [[noreturn]] void io_timeout(const What& w, std::chrono::milliseconds t) const {
    throw StoreTimeout(
        fmt::format("store {}: timed out after {} in {}; is the store server "
                    "overloaded or stopped? ({} raises the limit)",
                    address, format_duration(t), describe_what(w), opts.timeout_setting));
  }

  // Returns false on timeout; throws NetworkError on failure.
  bool wait_fd(Conn& c, short events, Clock::time_point deadline, const What& w) {
    pollfd p{c.fd.get(), events, 0};
    for (;;) {
      int r = ::poll(&p, 1, poll_ms(deadline));
      if (r > 0) return true;
      if (r == 0) {
        if (Clock::now() >= deadline) return false;
        continue;
      }
      if (errno == EINTR) continue;
      io_error(w, std::strerror(errno));
    }
  }

  // Sends c.wbuf; returns false on timeout.
  bool send_all(Conn& c, Clock::time_point deadline, const What& w) {
    const std::uint8_t* p = c.wbuf.data();
    std::size_t left = c.wbuf.size();
    while (left > 0) {
      ssize_t n = ::send(c.fd.get(), p, left, MSG_NOSIGNAL);
      if (n > 0) {
        p += n;
        left -= static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!wait_fd(c, POLLOUT, deadline, w)) return false;
        continue;
      }
      io_error(w, n == 0 ? "connection closed" : std::strerror(errno));
    }
    c.wbuf.clear();
    return true;
  }

  // Reads until a complete reply of `kind` is buffered; returns false on timeout. The views in
  // `out` stay valid until the next receive on `c`. (A MULTI_GET reply of 0 values is 0 bytes.)
  bool recv_reply(Conn& c, ReplyKind kind, std::uint64_t count, Reply& out,
                  Clock::time_point deadline, const What& w) {
    std::size_t need = 0;
    for (;;) {
      std::span<const std::uint8_t> buf(c.rbuf.data() + c.rpos, c.rlen - c.rpos);
      if (buf.size() >= need) {
        auto r = protocol::parse_reply(kind, buf, out, count);
        if (r.status == ParseStatus::kRequest) {
          c.rpos += r.consumed;
          return true;
        }
        if (r.status == ParseStatus::kError) {
          throw ProtocolError(
              fmt::format("store {}: bad reply to {} ({})", address, describe_what(w), r.error));
        }
        need = r.need;
      }
      // Make room: drop consumed bytes, then grow by doubling (never by a claimed length).
      if (c.rpos > 0) {
        std::memmove(c.rbuf.data(), c.rbuf.data() + c.rpos, c.rlen - c.rpos);
        c.rlen -= c.rpos;
        c.rpos = 0;
      }
      if (c.rbuf.size() - c.rlen < 4096)
        c.rbuf.resize(std::max<std::size_t>(c.rbuf.size() * 2, 65536));
      if (!wait_fd(c, POLLIN, deadline, w)) return false;
      ssize_t n = ::recv(c.fd.get(), c.rbuf.data() + c.rlen, c.rbuf.size() - c.rlen, 0);
      if (n > 0) {
        c.rlen += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
      io_error(w, n == 0 ? "the server closed the connection" : std::strerror(errno));
    }
  }

  // Called after the caller has copied what it needs out of the last reply.
  static void reset_rbuf_if_drained(Conn& c) {
    if (c.rpos == c.rlen) c.rpos = c.rlen = 0;
  }

  // Sends c.wbuf, then (unless `kind` is nullopt) reads one reply into `r`. Running out of `d`
  // throws StoreTimeout naming `w`; other failures throw as send_all/recv_reply do.
  void exchange(Conn& c, const Deadline& d, const What& w, std::optional<ReplyKind> kind,
                std::uint64_t count, Reply& r) {
    if (!send_all(c, d.at, w)) io_timeout(w, d.timeout);
    if (kind && !recv_reply(c, *kind, count, r, d.at, w)) io_timeout(w, d.timeout);
  }

  // ---- connecting ----

  // One attempt over every resolved address. Returns an invalid fd and sets `err` on failure.
  UniqueFd connect_once(Clock::time_point deadline, std::string& err) {
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
        int pr;
        do {
          pr = ::poll(&p, 1, std::min(poll_ms(deadline) < 0 ? 1000 : poll_ms(deadline), 1000));
        } while (pr < 0 && errno == EINTR);
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

  // Connects with exponential backoff until `budget` runs out, then does the 2.x handshake.
  std::unique_ptr<Conn> connect(std::chrono::milliseconds budget) {
    auto start = Clock::now();
    auto deadline = deadline_after(budget);
    auto backoff = std::chrono::milliseconds(10);
    std::string err;
    int attempts = 0;
    ProgressSchedule progress(opts.progress_after);
    const std::string hint = opts.connect_hint.empty()
                                 ? std::string("is the store server running at that address?")
                                 : opts.connect_hint;
    for (;;) {
      ++attempts;
      auto c = std::make_unique<Conn>();
      c->fd = connect_once(deadline, err);
      if (c->fd) {
        try {
          handshake(*c, deadline);
          return c;
        } catch (const ProtocolError&) {
          throw;
        } catch (const Error& e) {
          err = fmt::format("handshake failed: {}", e.what());
        }
      }
      if (Clock::now() + backoff >= deadline) break;
      std::this_thread::sleep_for(backoff);  // retry backoff, not synchronisation
      backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
      const auto so_far =
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start);
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

  void handshake(Conn& c, Clock::time_point deadline) {
    if (opts.dialect != Dialect::kV2) return;
    What w{"handshake", {}};
    std::uint32_t nonce;
    {
      std::lock_guard lock(pool_mu);
      nonce = static_cast<std::uint32_t>(::getpid()) ^ (++nonce_seq << 20);
    }
    protocol::encode_validate(Dialect::kV2, c.wbuf);
    protocol::encode_ping(Dialect::kV2, nonce, c.wbuf);
    auto hs_deadline = std::min(deadline, deadline_after(std::chrono::seconds(10)));
    if (!send_all(c, hs_deadline, w)) throw NetworkError("timed out sending VALIDATE+PING");
    Reply r;
    if (!recv_reply(c, ReplyKind::kU32, 0, r, hs_deadline, w)) {
      throw NetworkError("timed out waiting for the PING echo");
    }
    reset_rbuf_if_drained(c);
    if (r.u32 != nonce) {
      throw ProtocolError(fmt::format(
          "store {}: handshake failed (PING echo {:#x} != nonce {:#x}); is this a PyTorch 2.5+ or "
          "gpurun store?",
          address, r.u32, nonce));
    }
  }

  // ---- pool ----

  std::unique_ptr<Conn> acquire(std::chrono::milliseconds budget) {
    {
      std::lock_guard lock(pool_mu);
      if (!idle.empty()) {
        auto c = std::move(idle.back());
        idle.pop_back();
        return c;
      }
    }
    return connect(budget);
  }

  void release(std::unique_ptr<Conn> c) {
    if (!c || !c->fd || c->rpos != c->rlen) return;  // broken or with unread bytes: drop it
    c->rpos = c->rlen = 0;
    std::lock_guard lock(pool_mu);
    if (idle.size() < kMaxIdleConnections) idle.push_back(std::move(c));
  }

  // A leased connection: returned to the pool only when the request finished cleanly.
  struct Lease {
    Lease(Impl& impl, std::chrono::milliseconds timeout)
        : impl_(impl), conn_(impl.acquire(std::min(timeout, impl.opts.connect_timeout))) {}
    ~Lease() {
      if (ok_) impl_.release(std::move(conn_));
    }
    Conn& operator*() { return *conn_; }
    void done() { ok_ = true; }

    Impl& impl_;
    std::unique_ptr<Conn> conn_;
    bool ok_ = false;
  };

  void wait_on(Conn& c, std::span<const std::string> keys, const Deadline& d, std::string_view op);

  // Every operation's request goes through here: lease a pooled connection (connecting if none is
  // idle), WAIT for the keys first if asked (timeout() counted from then), let `encode` append the
  // request to the connection's write buffer, send it and read its reply by the operation's
  // deadline (timeout() from the call, or call.deadline for both), and hand the reply to `decode`
  // while its views are valid.
  // Timeouts and errors name the address, call.op and call.keys. The connection goes back to the
  // pool only when all of it succeeded.
  // Encode: void(std::vector<std::uint8_t>&). Decode: T(const Reply&); round_trip returns its T.
  template <typename Encode, typename Decode>
  auto round_trip(const Call& call, Encode&& encode, Decode&& decode) {
    Deadline d = call.deadline ? *call.deadline : Deadline(self.timeout());
    Lease l(*this, d.timeout);
    Conn& c = *l;
    if (call.wait_first) wait_on(c, call.keys, call.deadline ? d : Deadline(d.timeout), call.op);
    encode(c.wbuf);
    Reply r;
    exchange(c, d, What{call.op, call.keys}, call.reply, call.count, r);
    if constexpr (std::is_void_v<std::invoke_result_t<Decode&, const Reply&>>) {
      decode(r);
      reset_rbuf_if_drained(c);
      l.done();
    } else {
      auto out = decode(r);
      reset_rbuf_if_drained(c);
      l.done();
      return out;
    }
  }

  // Ops only the 2.x dialect has are refused before anything is sent (the connection stays usable).
  void require_v2(std::string_view what, std::string_view hint = {}) const {
    if (opts.dialect == Dialect::kV2) return;
    throw ProtocolError(
        fmt::format("store {}: {} is only part of the 2.x protocol{}", address, what, hint));
  }

  std::string wire(const std::string& key) const { return opts.torch_key_prefix ? "/" + key : key; }
  std::vector<std::string> wire(std::span<const std::string> keys) const {
    if (!opts.torch_key_prefix) return {keys.begin(), keys.end()};
    std::vector<std::string> out;
    out.reserve(keys.size());
    for (const auto& k : keys) out.push_back("/" + k);
    return out;
  }
};

TcpStore::TcpStore(TcpStoreOptions options)
    : Store(options.timeout), options_(std::move(options)), impl_(std::make_unique<Impl>(*this)) {
  impl_->opts = options_;
  impl_->address = options_.host.find(':') != std::string::npos
                       ? fmt::format("[{}]:{}", options_.host, options_.port)
                       : fmt::format("{}:{}", options_.host, options_.port);
  // Connect now (errors name the address); the pool holds the connection for the first request.
  impl_->release(impl_->connect(options_.connect_timeout));
  if (options_.world_size) {
    // Like a PyTorch client given world_size: ADD "init/" 1 (no "/" prefix, §3.2).
    const std::string key = "init/";
    impl_->round_trip(
        {.op = "add", .keys = one(key), .reply = ReplyKind::kI64},
        [&](auto& out) { protocol::encode_add(options_.dialect, key, 1, out); }, kNoReply);
  }
}

TcpStore::~TcpStore() = default;

std::string TcpStore::describe() const { return "store " + impl_->address; }

void TcpStore::set(const std::string& key, const Bytes& value) {
  impl_->round_trip(
      {.op = "set", .keys = one(key)},
      [&](auto& out) { protocol::encode_set(options_.dialect, impl_->wire(key), value, out); },
      kNoReply);
}

Bytes TcpStore::get(const std::string& key) {
  // Like PyTorch: WAIT first (a 1.13 server closes the connection on GET of a missing key).
  return impl_->round_trip(
      {.op = "get", .keys = one(key), .reply = ReplyKind::kBytes, .wait_first = true},
      [&](auto& out) { protocol::encode_get(options_.dialect, impl_->wire(key), out); },
      [](const Reply& r) { return Bytes(r.values[0].begin(), r.values[0].end()); });
}

std::int64_t TcpStore::add(const std::string& key, std::int64_t delta) {
  return impl_->round_trip(
      {.op = "add", .keys = one(key), .reply = ReplyKind::kI64},
      [&](auto& out) { protocol::encode_add(options_.dialect, impl_->wire(key), delta, out); },
      [](const Reply& r) { return r.i64; });
}

Bytes TcpStore::compare_set(const std::string& key, const Bytes& expected, const Bytes& desired) {
  return impl_->round_trip(
      {.op = "compare_set", .keys = one(key), .reply = ReplyKind::kBytes},
      [&](auto& out) {
        protocol::encode_compare_set(options_.dialect, impl_->wire(key), expected, desired, out);
      },
      [](const Reply& r) { return Bytes(r.values[0].begin(), r.values[0].end()); });
}

bool TcpStore::check(const std::vector<std::string>& keys) {
  return impl_->round_trip(
      {.op = "check", .keys = keys, .reply = ReplyKind::kU8},
      [&](auto& out) {
        protocol::encode_keys(options_.dialect, Op::kCheck, impl_->wire(keys), out);
      },
      [](const Reply& r) { return r.u8 == protocol::kCheckReady; });
}

void TcpStore::wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) {
  // Not a round_trip: the deadline is `timeout`, but connecting may take the store's timeout.
  Impl::Lease l(*impl_, std::max(timeout, this->timeout()));
  impl_->wait_on(*l, keys, Deadline(timeout), "wait");
  l.done();
}

// WAITs on `c` until `d`; returns when every key exists, else throws StoreTimeout naming the
// missing keys. After a 1.13 timeout the connection is closed (a stray STOP_WAITING may follow),
// so the lease drops it.
void TcpStore::Impl::wait_on(Conn& c, std::span<const std::string> keys, const Deadline& d,
                             std::string_view op) {
  What w{op, keys};
  protocol::encode_keys(opts.dialect, Op::kWait, wire(keys), c.wbuf);
  if (!send_all(c, d.at, w)) io_timeout(w, d.timeout);
  Reply r;
  if (recv_reply(c, ReplyKind::kU8, 0, r, d.at, w)) {
    Impl::reset_rbuf_if_drained(c);
    if (r.u8 != protocol::kStopWaiting) {
      c.fd.reset();
      throw ProtocolError(
          fmt::format("store {}: unexpected reply {:#04x} to {}", address, r.u8, describe_what(w)));
    }
    return;
  }
  // Timed out.
  if (opts.dialect == Dialect::kV2) {
    Deadline cd(std::min(self.timeout(), std::chrono::milliseconds(30'000)));
    What cw{"cancel of wait", keys};
    protocol::encode_cancel_wait(opts.dialect, c.wbuf);
    exchange(c, cd, cw, ReplyKind::kU8, 0, r);
    if (r.u8 == protocol::kStopWaiting) {
      // The keys appeared just as we gave up: STOP_WAITING then WAIT_CANCELED.
      if (!recv_reply(c, ReplyKind::kU8, 0, r, cd.at, cw)) {
        io_timeout(cw, cd.timeout);
      }
      Impl::reset_rbuf_if_drained(c);
      if (r.u8 != protocol::kWaitCanceled) {
        c.fd.reset();
        throw ProtocolError(
            fmt::format("store {}: expected WAIT_CANCELED, got {:#04x}", address, r.u8));
      }
      return;
    }
    Impl::reset_rbuf_if_drained(c);
    if (r.u8 != protocol::kWaitCanceled) {
      c.fd.reset();
      throw ProtocolError(
          fmt::format("store {}: unexpected reply {:#04x} to CANCEL_WAIT", address, r.u8));
    }
  } else {
    c.fd.reset();  // 1.13: the registration stays on the server; never reuse this connection
  }
  // Name only the keys that are still missing (best effort: on failure, name them all).
  std::vector<std::string> all(keys.begin(), keys.end());
  std::vector<std::string> missing;
  try {
    for (const auto& k : keys) {
      if (missing.size() > kMaxKeysInMessage) {
        missing.push_back(k);
        continue;
      }
      bool present;
      if (c.fd) {  // 2.x after a clean cancel: reuse this connection
        Deadline cd(self.timeout());
        protocol::encode_keys(opts.dialect, Op::kCheck, wire(one(k)), c.wbuf);
        exchange(c, cd, What{"check", one(k)}, ReplyKind::kU8, 0, r);
        reset_rbuf_if_drained(c);
        present = r.u8 == protocol::kCheckReady;
      } else {
        present = self.check({k});
      }
      if (!present) missing.push_back(k);
    }
  } catch (const Error&) {
    missing = all;
  }
  if (missing.empty()) missing = all;
  throw StoreTimeout(fmt::format(
      "store {}: timed out after {} in {} for key(s) {}; is the peer that sets {} running? "
      "({} raises the limit)",
      address, format_duration(d.timeout), op, quote_keys(missing),
      missing.size() == 1 ? "it" : "them", opts.timeout_setting));
}

bool TcpStore::delete_key(const std::string& key) {
  return impl_->round_trip(
      {.op = "delete_key", .keys = one(key), .reply = ReplyKind::kI64},
      [&](auto& out) { protocol::encode_delete_key(options_.dialect, impl_->wire(key), out); },
      [](const Reply& r) { return r.i64 == 1; });
}

std::int64_t TcpStore::num_keys() {
  return impl_->round_trip(
      {.op = "num_keys", .reply = ReplyKind::kI64},
      [&](auto& out) { protocol::encode_num_keys(options_.dialect, out); },
      [](const Reply& r) { return r.i64; });
}

std::vector<Bytes> TcpStore::multi_get(const std::vector<std::string>& keys) {
  // 1.13 has no MULTI_GET: pipeline one GET per key. Their replies are byte for byte a MULTI_GET
  // reply (one `bytes` per key), so both dialects read the same reply.
  return impl_->round_trip(
      {.op = "multi_get",
       .keys = keys,
       .reply = ReplyKind::kBytesList,
       .count = keys.size(),
       .wait_first = true},
      [&](auto& out) {
        if (options_.dialect == Dialect::kV2) {
          protocol::encode_keys(options_.dialect, Op::kMultiGet, impl_->wire(keys), out);
        } else {
          for (const auto& k : keys) protocol::encode_get(options_.dialect, impl_->wire(k), out);
        }
      },
      [](const Reply& r) {
        std::vector<Bytes> values;
        values.reserve(r.values.size());
        for (auto v : r.values) values.emplace_back(v.begin(), v.end());
        return values;
      });
}

void TcpStore::multi_set(const std::vector<std::string>& keys, const std::vector<Bytes>& values) {
  if (keys.size() != values.size()) {
    throw ConfigError(fmt::format("multi_set given {} keys but {} values; pass one value per key",
                                  keys.size(), values.size()));
  }
  impl_->round_trip(
      {.op = "multi_set", .keys = keys},
      [&](auto& out) {
        if (options_.dialect == Dialect::kV2) {
          protocol::encode_multi_set(options_.dialect, impl_->wire(keys), values, out);
        } else {
          for (std::size_t i = 0; i < keys.size(); ++i) {
            protocol::encode_set(options_.dialect, impl_->wire(keys[i]), values[i], out);
          }
        }
      },
      kNoReply);
}

void TcpStore::append(const std::string& key, const Bytes& value) {
  if (options_.dialect == Dialect::kV2) {
    impl_->round_trip(
        {.op = "append", .keys = one(key)},
        [&](auto& out) { protocol::encode_append(options_.dialect, impl_->wire(key), value, out); },
        kNoReply);
    return;
  }
  // 1.13 has no APPEND: emulate it with a compare_set loop (atomic on the server).
  for (;;) {
    Bytes current;
    if (check({key})) current = get(key);
    Bytes desired = current;
    desired.insert(desired.end(), value.begin(), value.end());
    if (compare_set(key, current, desired) == desired) return;
  }
}

bool TcpStore::ping() {
  impl_->require_v2("PING");
  std::uint32_t nonce = static_cast<std::uint32_t>(::getpid()) ^ 0x5a5a0000u;
  return impl_->round_trip(
      {.op = "ping", .reply = ReplyKind::kU32},
      [&](auto& out) { protocol::encode_ping(options_.dialect, nonce, out); },
      [&](const Reply& r) { return r.u32 == nonce; });
}

namespace {
constexpr std::string_view kQueueHint =
    " (PyTorch 1.13 has no queues); use Dialect::kV2 with gpurun's store or a PyTorch 2.8+ one";
}  // namespace

void TcpStore::queue_push(const std::string& key, const Bytes& value) {
  impl_->require_v2("QUEUE_PUSH", kQueueHint);
  impl_->round_trip(
      {.op = "queue_push", .keys = one(key)},
      [&](auto& out) {
        protocol::encode_queue_push(options_.dialect, impl_->wire(key), value, out);
      },
      kNoReply);
}

Bytes TcpStore::queue_pop(const std::string& key, std::chrono::milliseconds timeout) {
  impl_->require_v2("QUEUE_POP", kQueueHint);
  // Like PyTorch: WAIT until the queue is non-empty, then pop. Another consumer may pop the item
  // first (the reply's length is then 0): wait again, by the same deadline.
  Deadline d(timeout);
  for (;;) {
    auto item = impl_->round_trip(
        {.op = "queue_pop",
         .keys = one(key),
         .reply = ReplyKind::kQueuePop,
         .wait_first = true,
         .deadline = &d},
        [&](auto& out) { protocol::encode_queue_pop(options_.dialect, impl_->wire(key), out); },
        [](const Reply& r) -> std::optional<Bytes> {
          if (r.i64 <= 0) return std::nullopt;
          return Bytes(r.values[0].begin(), r.values[0].end());
        });
    if (item) return std::move(*item);
  }
}

std::int64_t TcpStore::queue_len(const std::string& key) {
  impl_->require_v2("QUEUE_LEN", kQueueHint);
  return impl_->round_trip(
      {.op = "queue_len", .keys = one(key), .reply = ReplyKind::kI64},
      [&](auto& out) { protocol::encode_queue_len(options_.dialect, impl_->wire(key), out); },
      [](const Reply& r) { return r.i64; });
}

}  // namespace gpurun::rendezvous
