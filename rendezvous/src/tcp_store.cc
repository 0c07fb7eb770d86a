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

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <type_traits>

#include "gpurun/common/error.h"
#include "gpurun/common/log.h"
#include "gpurun/rendezvous/job_access.h"
#include "tcp_connection.h"

namespace gpurun::rendezvous {
namespace {

using detail::Connection;
using detail::Deadline;
using detail::What;
using protocol::Op;
using protocol::Reply;
using protocol::ReplyKind;

constexpr std::size_t kMaxIdleConnections = 4;

std::span<const std::string> one(const std::string& key) { return {&key, 1}; }

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

}  // namespace

struct TcpStore::Impl {
  explicit Impl(TcpStore& s) : self(s) {}

  TcpStore& self;  // for timeout() (which set_timeout may change) and check()
  TcpStoreOptions opts;
  std::string address;
  std::mutex pool_mu;
  std::vector<std::unique_ptr<Connection>> idle;

  std::unique_ptr<Connection> connect(std::chrono::milliseconds budget) {
    return Connection::open(opts, address, budget);
  }

  // ---- pool ----

  std::unique_ptr<Connection> acquire(std::chrono::milliseconds budget) {
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

  void release(std::unique_ptr<Connection> c) {
    if (!c || !c->reusable()) return;  // broken or with unread bytes: drop it
    c->consumed();
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
    Connection& operator*() { return *conn_; }
    void done() { ok_ = true; }

    Impl& impl_;
    std::unique_ptr<Connection> conn_;
    bool ok_ = false;
  };

  void wait_on(Connection& c, std::span<const std::string> keys, const Deadline& d,
               std::string_view op);

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
    Connection& c = *l;
    if (call.wait_first) wait_on(c, call.keys, call.deadline ? d : Deadline(d.timeout), call.op);
    encode(c.wbuf());
    Reply r;
    c.exchange(d, What{call.op, call.keys}, call.reply, call.count, r);
    if constexpr (std::is_void_v<std::invoke_result_t<Decode&, const Reply&>>) {
      decode(r);
      c.consumed();
      l.done();
    } else {
      auto out = decode(r);
      c.consumed();
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
  // The job secret, once for every connection of the pool.
  if (!options_.job_secret) {
    const char* v = std::getenv(kJobSecretEnv);
    options_.job_secret = v != nullptr ? v : "";
  }
  impl_->opts = options_;
  impl_->address = options_.host.find(':') != std::string::npos
                       ? fmt::format("[{}]:{}", options_.host, options_.port)
                       : fmt::format("{}:{}", options_.host, options_.port);
  // Connect now (errors name the address); the pool holds the connection for the first request.
  auto first = impl_->connect(options_.connect_timeout);
  if (options_.dialect == Dialect::kAuto) {  // what the server spoke, for every request
    options_.dialect = impl_->opts.dialect = first->dialect();
    GPURUN_LOG_DEBUG("store", "{} speaks the {} dialect", impl_->address,
                     options_.dialect == Dialect::kV2 ? "2.x" : "1.13");
  }
  impl_->release(std::move(first));
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
void TcpStore::Impl::wait_on(Connection& c, std::span<const std::string> keys, const Deadline& d,
                             std::string_view op) {
  What w{op, keys};
  Reply r;
  // The one-byte reply `r` must be `want`; else the connection is dropped and the error thrown.
  auto expect = [&](std::uint8_t want, auto&& error) {
    c.consumed();
    if (r.u8 == want) return;
    c.discard();
    throw ProtocolError(error());
  };
  protocol::encode_keys(opts.dialect, Op::kWait, wire(keys), c.wbuf());
  c.exchange(d, w, std::nullopt, 0, r);  // sent by the deadline, or StoreTimeout
  if (c.receive(ReplyKind::kU8, 0, r, d.at, w)) {
    expect(protocol::kStopWaiting, [&] {
      return fmt::format("store {}: unexpected reply {:#04x} to {}", address, r.u8,
                         detail::describe(w));
    });
    return;
  }
  // Timed out.
  if (opts.dialect == Dialect::kV2) {
    Deadline cd(std::min(self.timeout(), std::chrono::milliseconds(30'000)));
    What cw{"cancel of wait", keys};
    protocol::encode_cancel_wait(opts.dialect, c.wbuf());
    c.exchange(cd, cw, ReplyKind::kU8, 0, r);
    if (r.u8 == protocol::kStopWaiting) {
      // The keys appeared just as we gave up: STOP_WAITING then WAIT_CANCELED.
      c.exchange(cd, cw, ReplyKind::kU8, 0, r);
      expect(protocol::kWaitCanceled, [&] {
        return fmt::format("store {}: expected WAIT_CANCELED, got {:#04x}", address, r.u8);
      });
      return;
    }
    expect(protocol::kWaitCanceled, [&] {
      return fmt::format("store {}: unexpected reply {:#04x} to CANCEL_WAIT", address, r.u8);
    });
  } else {
    c.discard();  // 1.13: the registration stays on the server; never reuse this connection
  }
  // Name only the keys that are still missing (best effort: on failure, name them all).
  std::vector<std::string> all(keys.begin(), keys.end());
  std::vector<std::string> missing;
  try {
    for (const auto& k : keys) {
      if (missing.size() > detail::kMaxKeysInMessage) {
        missing.push_back(k);
        continue;
      }
      bool present;
      if (c.is_open()) {  // 2.x after a clean cancel: reuse this connection
        protocol::encode_keys(opts.dialect, Op::kCheck, wire(one(k)), c.wbuf());
        c.exchange(Deadline(self.timeout()), What{"check", one(k)}, ReplyKind::kU8, 0, r);
        c.consumed();
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
      address, format_duration(d.timeout), op, detail::quote_keys(missing),
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
