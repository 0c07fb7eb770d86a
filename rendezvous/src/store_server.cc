// StoreServer: Boost.Asio with callbacks (no coroutines), one io_context thread acting as an
// implicit strand, so no mutexes. ServerCore owns the data (map, queues, waiters) and the
// acceptor; each Session owns one socket, its read buffer, parser and write queue, and keeps
// itself alive through shared_from_this while an operation is pending.
#include "gpurun/rendezvous/store_server.h"

#include <sys/resource.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <cctype>
#include <charconv>
#include <deque>
#include <future>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "gpurun/common/error.h"
#include "gpurun/common/log.h"
#include "protocol.h"

namespace gpurun::rendezvous {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using protocol::Op;
using protocol::ParseStatus;
using protocol::Request;

constexpr std::size_t kInitialReadBuffer = 4096;
constexpr std::size_t kMinReadSpace = 2048;
constexpr std::size_t kShrinkAbove = 1 << 20;
// A client that pipelines requests without reading replies stops being read from once this much
// output is queued; reading resumes when the backlog is written.
constexpr std::size_t kMaxPendingOutput = 64 << 20;

struct StrHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};
template <typename V>
using StrMap = std::unordered_map<std::string, V, StrHash, std::equal_to<>>;

// Keys are arbitrary bytes: log a bounded, printable rendering.
std::string printable(std::string_view s, std::size_t max = 64) {
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < max; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  if (s.size() > max) out += fmt::format("...({} bytes)", s.size());
  return out;
}

std::string endpoint_string(const tcp::endpoint& ep) {
  auto addr = ep.address();
  if (addr.is_v6()) return fmt::format("[{}]:{}", addr.to_string(), ep.port());
  return fmt::format("{}:{}", addr.to_string(), ep.port());
}

// std::stoll rules (§5.3): leading whitespace, optional sign, digits; trailing junk ignored.
std::optional<std::int64_t> parse_counter(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || (s[i] >= '\t' && s[i] <= '\r'))) ++i;
  s.remove_prefix(i);
  if (!s.empty() && s.front() == '+') {
    s.remove_prefix(1);
    if (!s.empty() && s.front() == '-') return std::nullopt;
  }
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p == s.data()) return std::nullopt;
  return v;
}

class Session;

class ServerCore : public std::enable_shared_from_this<ServerCore> {
 public:
  ServerCore(asio::io_context& io, StoreServerOptions opts)
      : io_(io), opts_(std::move(opts)), acceptor_(io), accept_retry_(io) {
    limits_.max_key_bytes = opts_.max_key_bytes;
    limits_.max_value_bytes = opts_.max_value_bytes;
    limits_.max_keys_per_request = opts_.max_keys_per_request;
  }

  void bind();
  void start() { do_accept(); }
  void stop();

  // ---- used by sessions ----
  void handle(Session& s, const Request& req);
  void on_session_closed(Session* s) { sessions_.erase(s); }
  void cancel_wait(Session& s);
  void count_rejected() { ++rejected_; }
  const protocol::Limits& limits() const { return limits_; }
  void wake_done() { --waiting_; }

  StoreServerStats stats() const {
    StoreServerStats st;
    st.connections_accepted = accepted_;
    st.connections_open = sessions_.size();
    st.connections_rejected = rejected_;
    st.keys = kv_.size();
    st.waiters = waiting_;
    return st;
  }

  std::uint16_t port_ = 0;
  std::string host_;
  std::string address_;

 private:
  void do_accept();
  void on_accept(const boost::system::error_code& ec, tcp::socket sock);
  void add_session(tcp::socket sock, const tcp::endpoint& peer);
  bool exists(std::string_view key) const {
    if (kv_.find(key) != kv_.end()) return true;
    auto q = queues_.find(key);
    return q != queues_.end() && !q->second.empty();
  }
  void set_value(std::string_view key, std::string_view value) {
    auto it = kv_.find(key);
    if (it == kv_.end()) {
      kv_.emplace(std::string(key), std::string(value));
    } else {
      it->second.assign(value);
    }
    wake_all(key);
  }
  void wake_all(std::string_view key);
  void wake_one(std::string_view key);

  asio::io_context& io_;
  StoreServerOptions opts_;
  protocol::Limits limits_;
  tcp::acceptor acceptor_;
  asio::steady_timer accept_retry_;
  tcp::endpoint accept_peer_;  // filled by the pending accept
  bool stopped_ = false;

  StrMap<std::string> kv_;
  StrMap<std::deque<std::string>> queues_;
  // key -> one entry per registration (a key listed twice in one WAIT is registered twice).
  // Entries are removed before their Session is closed, so the raw pointers never dangle.
  StrMap<std::vector<Session*>> waiters_;
  std::unordered_set<Session*> sessions_;
  std::vector<std::shared_ptr<Session>> scratch_;  // reused by stop()

  std::uint64_t accepted_ = 0;
  std::uint64_t rejected_ = 0;
  std::uint64_t waiting_ = 0;

  friend class Session;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(std::shared_ptr<ServerCore> core, tcp::socket sock, const tcp::endpoint& peer)
      : core_(std::move(core)), sock_(std::move(sock)), peer_(peer), parser_(core_->limits()) {
    boost::system::error_code ignored;
    sock_.non_blocking(true, ignored);  // flush() first tries a direct, non-blocking write
  }

  void start() { maybe_read(); }

  // Closes the socket and drops every wait registration. A non-empty reason is logged as a
  // protocol violation. Idempotent.
  void close(std::string_view reason) {
    if (closed_) return;
    closed_ = true;
    if (!reason.empty()) {
      GPURUN_LOG_WARN("store", "closing connection from {}: {}", peer(), reason);
      core_->count_rejected();
    } else {
      GPURUN_LOG_DEBUG("store", "connection from {} closed", peer());
    }
    core_->cancel_wait(*this);
    core_->on_session_closed(this);
    boost::system::error_code ignored;
    sock_.shutdown(tcp::socket::shutdown_both, ignored);
    sock_.close(ignored);
  }

  // One registration of this session's WAIT was satisfied.
  void key_ready() {
    if (wait_remaining_ == 0) return;
    if (--wait_remaining_ == 0) {
      wait_keys_.clear();
      core_->wake_done();
      protocol::reply_u8(out_, protocol::kStopWaiting);
      flush();
    }
  }

  std::vector<std::uint8_t>& out() { return out_; }
  std::string peer() const { return endpoint_string(peer_); }
  bool closed() const { return closed_; }

  std::size_t wait_remaining_ = 0;
  std::vector<std::string> wait_keys_;  // registrations of the current WAIT, for cleanup

 private:
  void maybe_read() {
    if (closed_ || reading_) return;
    if (out_.size() + writing_.size() > kMaxPendingOutput) return;  // resumed by on_write
    std::size_t used = in_end_ - in_begin_;
    if (used == 0 && in_cap_ > kShrinkAbove) {
      in_.reset();
      in_cap_ = 0;
    }
    if (in_begin_ > 0 && (used == 0 || in_cap_ - in_end_ < kMinReadSpace)) {
      if (used > 0) std::memmove(in_.get(), in_.get() + in_begin_, used);
      in_begin_ = 0;
      in_end_ = used;
    }
    if (in_cap_ - in_end_ < kMinReadSpace) {
      // Grow by doubling only: never by a length the peer claimed (§8.2).
      std::size_t cap = std::max(kInitialReadBuffer, in_cap_ * 2);
      auto bigger = std::make_unique_for_overwrite<std::uint8_t[]>(cap);
      if (used > 0) std::memcpy(bigger.get(), in_.get() + in_begin_, used);
      in_ = std::move(bigger);
      in_cap_ = cap;
      in_begin_ = 0;
      in_end_ = used;
    }
    reading_ = true;
    sock_.async_read_some(asio::buffer(in_.get() + in_end_, in_cap_ - in_end_),
                          [self = shared_from_this()](const boost::system::error_code& ec,
                                                      std::size_t n) { self->on_read(ec, n); });
  }

  void on_read(const boost::system::error_code& ec, std::size_t n) {
    reading_ = false;
    if (closed_) return;
    if (ec) {
      if (ec != asio::error::eof && ec != asio::error::connection_reset &&
          ec != asio::error::operation_aborted) {
        GPURUN_LOG_DEBUG("store", "read from {} failed: {}", peer(), ec.message());
      }
      close("");
      return;
    }
    in_end_ += n;
    process();
    if (closed_) return;
    flush();
    maybe_read();
  }

  void process() {
    Request req;
    while (!closed_) {
      std::span<const std::uint8_t> buf(in_.get() + in_begin_, in_end_ - in_begin_);
      if (buf.size() < parser_.need()) break;
      ParseStatus st = parser_.parse(buf, req);
      if (st == ParseStatus::kNeedMore) break;
      if (st == ParseStatus::kError) {
        close(parser_.error());
        return;
      }
      try {
        core_->handle(*this, req);
      } catch (const std::exception& e) {
        close(fmt::format("{} failed: {}", protocol::op_name(req.op), e.what()));
        return;
      }
      in_begin_ += parser_.consumed();
    }
    if (in_begin_ == in_end_) in_begin_ = in_end_ = 0;
  }

 public:
  void flush() {
    if (closed_ || writing_active_ || out_.empty()) return;
    // Common case: the reply fits in the socket buffer; write it now, without an async op.
    boost::system::error_code ec;
    std::size_t n = sock_.write_some(asio::buffer(out_), ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) {
      n = 0;
    } else if (ec) {
      GPURUN_LOG_DEBUG("store", "write to {} failed: {}", peer(), ec.message());
      close("");
      return;
    }
    if (n == out_.size()) {
      if (out_.capacity() > kShrinkAbove) {
        std::vector<std::uint8_t>().swap(out_);
      } else {
        out_.clear();
      }
      return;
    }
    out_.erase(out_.begin(), out_.begin() + static_cast<std::ptrdiff_t>(n));
    writing_.swap(out_);
    writing_active_ = true;
    asio::async_write(sock_, asio::buffer(writing_),
                      [self = shared_from_this()](const boost::system::error_code& wec,
                                                  std::size_t) { self->on_write(wec); });
  }

 private:
  void on_write(const boost::system::error_code& ec) {
    writing_active_ = false;
    if (closed_) return;
    if (ec) {
      GPURUN_LOG_DEBUG("store", "write to {} failed: {}", peer(), ec.message());
      close("");
      return;
    }
    if (writing_.capacity() > kShrinkAbove) {
      std::vector<std::uint8_t>().swap(writing_);
    } else {
      writing_.clear();
    }
    flush();
    maybe_read();
  }

  std::shared_ptr<ServerCore> core_;
  tcp::socket sock_;
  tcp::endpoint peer_;
  protocol::RequestParser parser_;
  std::unique_ptr<std::uint8_t[]> in_;
  std::size_t in_cap_ = 0, in_begin_ = 0, in_end_ = 0;
  std::vector<std::uint8_t> out_;      // replies not yet handed to the socket
  std::vector<std::uint8_t> writing_;  // the buffer of the write in flight
  bool reading_ = false;
  bool writing_active_ = false;
  bool closed_ = false;
};

// ---- ServerCore ------------------------------------------------------------------------------

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
    GPURUN_LOG_WARN("store", "accept on {} failed: {}", address_, ec.message());
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

void ServerCore::add_session(tcp::socket sock, const tcp::endpoint& peer) {
  ++accepted_;
  if (sessions_.size() >= opts_.max_connections) {
    ++rejected_;
    GPURUN_LOG_WARN("store",
                    "refusing connection from {}: {} connections open (max_connections); "
                    "raise --max-connections",
                    endpoint_string(peer), sessions_.size());
    boost::system::error_code ignored;
    sock.close(ignored);
    return;
  }
  boost::system::error_code ignored;
  sock.set_option(tcp::no_delay(true), ignored);
  auto s = std::make_shared<Session>(shared_from_this(), std::move(sock), peer);
  sessions_.insert(s.get());
  GPURUN_LOG_DEBUG("store", "connection from {}", s->peer());
  s->start();
}

void ServerCore::stop() {
  if (stopped_) return;
  stopped_ = true;
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  accept_retry_.cancel();
  scratch_.clear();
  for (Session* s : sessions_) scratch_.push_back(s->shared_from_this());
  for (auto& s : scratch_) s->close("");
  scratch_.clear();
}

void ServerCore::cancel_wait(Session& s) {
  if (s.wait_remaining_ > 0) {
    for (const auto& key : s.wait_keys_) {
      auto it = waiters_.find(key);
      if (it == waiters_.end()) continue;
      std::erase(it->second, &s);
      if (it->second.empty()) waiters_.erase(it);
    }
    s.wait_remaining_ = 0;
    --waiting_;
  }
  s.wait_keys_.clear();
}

void ServerCore::wake_all(std::string_view key) {
  if (waiters_.empty()) return;
  auto it = waiters_.find(key);
  if (it == waiters_.end()) return;
  std::vector<Session*> list = std::move(it->second);
  waiters_.erase(it);
  for (Session* s : list) s->key_ready();
}

void ServerCore::wake_one(std::string_view key) {
  if (waiters_.empty()) return;
  auto it = waiters_.find(key);
  if (it == waiters_.end()) return;
  Session* s = it->second.front();
  it->second.erase(it->second.begin());
  if (it->second.empty()) waiters_.erase(it);
  s->key_ready();
}

void ServerCore::handle(Session& s, const Request& req) {
  auto& out = s.out();
  switch (req.op) {
    case Op::kValidate:
      break;  // consumed by dialect detection; no reply
    case Op::kSet:
      set_value(req.key, req.value);
      break;
    case Op::kCompareSet: {
      auto it = kv_.find(req.key);
      if (it == kv_.end()) {
        if (req.value.empty()) {
          kv_.emplace(std::string(req.key), std::string(req.value2));
          protocol::reply_bytes(out, req.value2);
          wake_all(req.key);
        } else {
          protocol::reply_bytes(out, req.value);  // upstream's "absent" reply
        }
      } else if (it->second == req.value) {
        it->second.assign(req.value2);
        protocol::reply_bytes(out, req.value2);
        wake_all(req.key);
      } else {
        protocol::reply_bytes(out, it->second);
      }
      break;
    }
    case Op::kGet: {
      auto it = kv_.find(req.key);
      protocol::reply_bytes(out, it == kv_.end() ? std::string_view() : it->second);
      break;
    }
    case Op::kAdd: {
      std::int64_t current = 0;
      auto it = kv_.find(req.key);
      if (it != kv_.end()) {
        auto v = parse_counter(it->second);
        if (!v) {
          s.close(fmt::format("ADD on key '{}' whose value is not an integer", printable(req.key)));
          return;
        }
        current = *v;
      }
      // Two's complement wrap instead of signed-overflow UB.
      auto result = static_cast<std::int64_t>(static_cast<std::uint64_t>(current) +
                                              static_cast<std::uint64_t>(req.delta));
      char digits[24];
      auto [end, ec] = std::to_chars(digits, digits + sizeof digits, result);
      (void)ec;
      std::string_view text(digits, static_cast<std::size_t>(end - digits));
      if (it == kv_.end()) {
        kv_.emplace(std::string(req.key), std::string(text));
      } else {
        it->second.assign(text);
      }
      protocol::reply_i64(out, result);
      wake_all(req.key);
      break;
    }
    case Op::kCheck: {
      bool all = true;
      protocol::for_each_key(req, [&](std::string_view k) {
        if (all && !exists(k)) all = false;
      });
      protocol::reply_u8(out, all ? protocol::kCheckReady : protocol::kCheckNotReady);
      break;
    }
    case Op::kWait: {
      cancel_wait(s);  // one wait slot per connection: a new WAIT replaces the old one
      std::size_t missing = 0;
      protocol::for_each_key(req, [&](std::string_view k) {
        if (exists(k)) return;
        auto it = waiters_.find(k);
        if (it == waiters_.end()) it = waiters_.emplace(std::string(k), 0).first;
        it->second.push_back(&s);
        s.wait_keys_.emplace_back(k);
        ++missing;
      });
      if (missing == 0) {
        protocol::reply_u8(out, protocol::kStopWaiting);
      } else {
        s.wait_remaining_ = missing;
        ++waiting_;
      }
      break;
    }
    case Op::kGetNumKeys:
      protocol::reply_i64(out, static_cast<std::int64_t>(kv_.size()));
      break;
    case Op::kDeleteKey: {
      auto it = kv_.find(req.key);
      bool found = it != kv_.end();
      if (found) kv_.erase(it);
      protocol::reply_i64(out, found ? 1 : 0);
      break;
    }
    case Op::kAppend: {
      auto it = kv_.find(req.key);
      if (it == kv_.end()) {
        kv_.emplace(std::string(req.key), std::string(req.value));
      } else {
        it->second.append(req.value);
      }
      wake_all(req.key);
      break;
    }
    case Op::kMultiGet:
      protocol::for_each_key(req, [&](std::string_view k) {
        auto it = kv_.find(k);
        protocol::reply_bytes(out, it == kv_.end() ? std::string_view() : it->second);
      });
      break;
    case Op::kMultiSet:
      protocol::for_each_pair(req,
                              [&](std::string_view k, std::string_view v) { set_value(k, v); });
      break;
    case Op::kCancelWait:
      cancel_wait(s);
      protocol::reply_u8(out, protocol::kWaitCanceled);
      break;
    case Op::kPing:
      protocol::reply_u32(out, req.u32);
      break;
    case Op::kQueuePush: {
      auto it = queues_.find(req.key);
      if (it == queues_.end()) it = queues_.emplace(std::string(req.key), 0).first;
      it->second.emplace_back(req.value);
      wake_one(req.key);
      break;
    }
    case Op::kQueuePop: {
      auto it = queues_.find(req.key);
      std::size_t len = it == queues_.end() ? 0 : it->second.size();
      protocol::reply_i64(out, static_cast<std::int64_t>(len));
      if (len > 0) {
        protocol::reply_bytes(out, it->second.front());
        it->second.pop_front();
        if (it->second.empty()) queues_.erase(it);
      }
      break;
    }
    case Op::kQueueLen: {
      auto it = queues_.find(req.key);
      protocol::reply_i64(out,
                          static_cast<std::int64_t>(it == queues_.end() ? 0 : it->second.size()));
      break;
    }
    case Op::kWatchKey:
      s.close("WATCH_KEY (the PyTorch 1.13 watch/callback API) is not supported");
      return;
  }
}

void raise_fd_limit() {
  rlimit lim{};
  if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) return;
  if (lim.rlim_cur >= lim.rlim_max) return;
  rlim_t old = lim.rlim_cur;
  lim.rlim_cur = lim.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &lim) == 0) {
    GPURUN_LOG_INFO("store", "raised RLIMIT_NOFILE from {} to {}", old, lim.rlim_max);
  } else {
    GPURUN_LOG_WARN("store", "could not raise RLIMIT_NOFILE from {} to {}: {}", old, lim.rlim_max,
                    std::strerror(errno));
  }
}

}  // namespace

// ---- StoreServer -----------------------------------------------------------------------------

struct StoreServer::Impl {
  std::shared_ptr<ServerCore> core;
};

StoreServer::StoreServer(boost::asio::io_context& io, StoreServerOptions options)
    : impl_(std::make_shared<Impl>()) {
  if (options.raise_fd_limit) raise_fd_limit();
  impl_->core = std::make_shared<ServerCore>(io, std::move(options));
  impl_->core->bind();
  impl_->core->start();
  GPURUN_LOG_INFO("store", "listening on {}", impl_->core->address_);
}

StoreServer::~StoreServer() { stop(); }

std::uint16_t StoreServer::port() const { return impl_->core->port_; }
std::string StoreServer::host() const { return impl_->core->host_; }
std::string StoreServer::address() const { return impl_->core->address_; }
void StoreServer::stop() { impl_->core->stop(); }
StoreServerStats StoreServer::stats() const { return impl_->core->stats(); }

// ---- StoreServerThread -----------------------------------------------------------------------

struct StoreServerThread::Impl {
  boost::asio::io_context io{1};
  std::unique_ptr<StoreServer> server;
  std::thread thread;
  std::mutex mu;
  bool stopped = false;
};

StoreServerThread::StoreServerThread(StoreServerOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->server = std::make_unique<StoreServer>(impl_->io, std::move(options));
  impl_->thread = std::thread([impl = impl_.get()] {
    for (;;) {
      try {
        impl->io.run();
        return;
      } catch (const std::exception& e) {
        GPURUN_LOG_ERROR("store", "unexpected error in the store event loop: {}", e.what());
      }
    }
  });
}

StoreServerThread::~StoreServerThread() { stop(); }

std::uint16_t StoreServerThread::port() const { return impl_->server->port(); }
std::string StoreServerThread::address() const { return impl_->server->address(); }

StoreServerStats StoreServerThread::stats() const {
  std::lock_guard lock(impl_->mu);
  if (impl_->stopped) return impl_->server->stats();
  std::promise<StoreServerStats> p;
  auto f = p.get_future();
  boost::asio::post(impl_->io, [&] { p.set_value(impl_->server->stats()); });
  return f.get();
}

void StoreServerThread::stop() {
  std::lock_guard lock(impl_->mu);
  if (impl_->stopped) return;
  impl_->stopped = true;
  // Closing the acceptor and every session leaves the loop without work, so run() returns.
  boost::asio::post(impl_->io, [impl = impl_.get()] { impl->server->stop(); });
  if (impl_->thread.joinable()) impl_->thread.join();
}

}  // namespace gpurun::rendezvous
