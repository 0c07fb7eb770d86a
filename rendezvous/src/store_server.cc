// StoreServer: Boost.Asio with callbacks (no coroutines), one io_context thread acting as an
// implicit strand, so no mutexes. ServerCore owns the data (map, queues, waiters) and the
// acceptor; each Session owns one socket, its read buffer, parser and write queue, and keeps
// itself alive through shared_from_this while an operation is pending.
// Over 500 lines: the core and its sessions share the memory accounting and the limits of
// issue 16 (output, store and buffer budgets, frame deadlines, peer checks), which are easier to
// check for completeness in one place. Peer credential lookups live in peer_cred.cc.
#include "gpurun/rendezvous/store_server.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <cctype>
#include <charconv>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "gpurun/common/duration.h"
#include "gpurun/common/error.h"
#include "gpurun/common/log.h"
#include "peer_cred.h"
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
// Bookkeeping charged per stored entry / wait registration on top of its bytes, so that millions
// of empty keys still count against max_store_bytes.
constexpr std::size_t kEntryOverhead = 64;
// Peer-caused log lines: at most kLogBurst per kLogWindow, then one summary line per window.
constexpr int kLogBurst = 10;
constexpr auto kLogWindow = std::chrono::seconds(5);
constexpr auto kSweepPeriod = std::chrono::milliseconds(250);
// Work per event-loop turn on one connection, so that a 100 MB SET does not stall the others:
// at most this much is read per turn, and a larger SET value is copied into the store in slices
// of this size, one per turn
// (fresh memory can be slow to touch: 25-150 MB/s on a loaded VM). Large buffers are freed by
// the Reaper thread, off the loop (unmapping 100 MB took 20-50 ms there).
constexpr std::size_t kTurnBytes = 64 << 10;
constexpr std::size_t kSlicedSetAbove = 1 << 20;
// A GET reply larger than this is streamed from the stored value, kTurnBytes per turn, instead
// of being copied into the output buffer at once. If the value changes meanwhile, what is left
// of it is copied first (the reply is the value as it was when the GET was handled).
constexpr std::size_t kStreamAbove = 1 << 20;

struct FreeDeleter {
  void operator()(std::uint8_t* p) const noexcept { std::free(p); }
};
using ReadBuffer = std::unique_ptr<std::uint8_t, FreeDeleter>;

// Frees large buffers on its own thread so that the event loop never waits for munmap.
class Reaper {
 public:
  static constexpr std::size_t kAbove = 1 << 20;
  ~Reaper() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }
  void drop(std::string&& s) {
    if (s.capacity() < kAbove) return;
    push(Item{std::move(s), nullptr});
  }
  void drop(ReadBuffer&& b, std::size_t cap) {
    if (cap < kAbove) {
      b.reset();
      return;
    }
    push(Item{std::string(), std::move(b)});
  }

 private:
  struct Item {
    std::string s;
    ReadBuffer b;
  };
  void push(Item&& item) {
    {
      std::lock_guard lock(mu_);
      items_.push_back(std::move(item));
      if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
    }
    cv_.notify_one();
  }
  void run() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return done_ || !items_.empty(); });
      std::vector<Item> batch;
      batch.swap(items_);
      lock.unlock();
      batch.clear();  // the frees happen here, off the loop
      lock.lock();
      if (done_ && items_.empty()) return;
    }
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Item> items_;
  bool done_ = false;
  std::thread thread_;
};

std::string mib(std::uint64_t bytes) {
  if (bytes >= (1u << 20) && bytes % (1u << 20) == 0) return fmt::format("{} MiB", bytes >> 20);
  return fmt::format("{} bytes", bytes);
}

// Rate limit for log lines that a misbehaving peer can trigger at will.
class LogLimiter {
 public:
  bool allow() {
    roll();
    if (lines_ < kLogBurst) {
      ++lines_;
      return true;
    }
    ++suppressed_;
    return false;
  }
  // Ends the window when it is over: one summary line if anything was suppressed.
  void roll() {
    auto now = std::chrono::steady_clock::now();
    if (now - start_ < kLogWindow) return;
    if (suppressed_ > 0) {
      GPURUN_LOG_WARN(
          "store", "{} more lines about misbehaving connections suppressed in the last {}s",
          suppressed_, std::chrono::duration_cast<std::chrono::seconds>(now - start_).count());
    }
    start_ = now;
    lines_ = 0;
    suppressed_ = 0;
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  int lines_ = 0;
  std::uint64_t suppressed_ = 0;
};

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

constexpr std::size_t kMaxWills = 1024;  // per connection (an agent needs one per round)

enum class Handled { kDone, kDeferred, kSliced, kStreaming };

class ServerCore : public std::enable_shared_from_this<ServerCore> {
 public:
  ServerCore(asio::io_context& io, StoreServerOptions opts)
      : io_(io), opts_(std::move(opts)), acceptor_(io), accept_retry_(io), sweep_(io) {
    limits_.max_key_bytes = opts_.max_key_bytes;
    limits_.max_value_bytes = opts_.max_value_bytes;
    limits_.max_keys_per_request = opts_.max_keys_per_request;
    own_uid_ = ::geteuid();
  }

  void bind();
  void start() {
    do_accept();
    arm_sweep();
  }
  void stop();

  // ---- used by sessions ----
  Handled handle(Session& s, const Request& req);
  void on_session_closed(Session* s);
  void cancel_wait(Session& s);
  void count_rejected() { ++rejected_; }
  const protocol::Limits& limits() const { return limits_; }
  const StoreServerOptions& options() const { return opts_; }
  void wake_done() { --waiting_; }
  LogLimiter& peer_log() { return peer_log_; }
  // Read buffers + queued replies of every connection (max_buffer_bytes).
  void buffer_delta(std::int64_t d) { buffer_bytes_ += static_cast<std::uint64_t>(d); }
  std::uint64_t buffer_bytes() const { return buffer_bytes_; }
  // The largest reply one connection may queue: max_output_bytes, but always one whole value.
  std::size_t single_reply_limit() const {
    return std::max(opts_.max_output_bytes, opts_.max_value_bytes + 64);
  }
  void release_wait_bytes(std::size_t n) { store_bytes_ -= n; }
  // The last slice of a large SET arrived in `value`: store it (budget checked again).
  void finish_sliced_set(Session& s, std::string key, std::string value);
  void unpin(Session& s, const std::string& key);
  asio::io_context& io() { return io_; }
  Reaper& reaper() { return reaper_; }

  StoreServerStats stats() const {
    StoreServerStats st;
    st.connections_accepted = accepted_;
    st.connections_open = sessions_.size();
    st.connections_rejected = rejected_;
    st.connections_refused = refused_;
    st.keys = kv_.size();
    st.waiters = waiting_;
    st.store_bytes = store_bytes_;
    st.buffer_bytes = buffer_bytes_;
    st.max_connections = max_connections_;
    return st;
  }

  std::uint16_t port_ = 0;
  std::string host_;
  std::string address_;

  void serve_connected(int fd) {
    tcp::socket sock(io_);
    boost::system::error_code ec;
    sock.assign(acceptor_.local_endpoint(ec).protocol(), fd, ec);
    if (ec) {
      ::close(fd);
      return;
    }
    add_session(std::move(sock), tcp::endpoint(asio::ip::address_v4::loopback(), 0), false);
  }
  std::string audit() const;

 private:
  void do_accept();
  void on_accept(const boost::system::error_code& ec, tcp::socket sock);
  void add_session(tcp::socket sock, const tcp::endpoint& peer, bool check = true);
  std::string refuse_reason(const tcp::socket& sock, const tcp::endpoint& peer);
  void resolve_allow_list();
  void arm_sweep();
  void sweep();
  bool exists(std::string_view key) const {
    if (kv_.find(key) != kv_.end()) return true;
    auto q = queues_.find(key);
    return q != queues_.end() && !q->second.empty();
  }
  static std::size_t entry_bytes(std::string_view key, std::size_t value) {
    return key.size() + value + kEntryOverhead;
  }
  // Store-budget delta of giving `key` a value of `size` bytes.
  std::int64_t set_delta(std::string_view key, std::size_t size) const {
    auto it = kv_.find(key);
    if (it == kv_.end()) return static_cast<std::int64_t>(entry_bytes(key, size));
    return static_cast<std::int64_t>(size) - static_cast<std::int64_t>(it->second.size());
  }
  // False (and the session closed, with an ERROR line) if `delta` more bytes do not fit.
  bool reserve_store(Session& s, std::int64_t delta, const Request& req, std::string_view key);
  // Decides whether a reply of `bytes` may be queued for `s` now (kDone), later (kDeferred), or
  // never (the session is closed; returns kDone).
  std::optional<Handled> admit_reply(Session& s, std::size_t bytes, const Request& req);
  std::size_t reply_size(const Request& req) const;
  // `key`'s stored value is about to change or go: sessions streaming it keep their own copy.
  void before_mutate(std::string_view key);
  void set_value(std::string_view key, std::string_view value) {
    before_mutate(key);
    auto it = kv_.find(key);
    if (it == kv_.end()) {
      store_bytes_ += entry_bytes(key, value.size());
      kv_.emplace(std::string(key), std::string(value));
    } else {
      store_bytes_ += value.size();
      store_bytes_ -= it->second.size();
      if (it->second.capacity() >= Reaper::kAbove) {
        reaper_.drop(std::move(it->second));
        it->second = std::string(value);
      } else {
        it->second.assign(value);
      }
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
  asio::steady_timer sweep_;
  tcp::endpoint accept_peer_;  // filled by the pending accept
  bool stopped_ = false;
  std::size_t max_connections_ = 0;
  uid_t own_uid_ = 0;
  std::unique_ptr<PeerCredentials> creds_;
  std::vector<asio::ip::address> allowed_;
  LogLimiter peer_log_;
  std::chrono::steady_clock::time_point last_pid_scan_{};
  Reaper reaper_;

  StrMap<std::string> kv_;
  StrMap<std::deque<std::string>> queues_;
  // key -> one entry per registration (a key listed twice in one WAIT is registered twice).
  // Entries are removed before their Session is closed, so the raw pointers never dangle.
  StrMap<std::vector<Session*>> waiters_;
  StrMap<std::vector<Session*>> pins_;  // key -> sessions streaming its value (kStreamAbove)
  std::unordered_set<Session*> sessions_;
  std::vector<std::shared_ptr<Session>> scratch_;  // reused by stop() and sweep()

  std::uint64_t accepted_ = 0;
  std::uint64_t rejected_ = 0;
  std::uint64_t refused_ = 0;
  std::uint64_t waiting_ = 0;
  std::uint64_t store_bytes_ = 0;
  std::uint64_t buffer_bytes_ = 0;

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
  // protocol violation (rate-limited). Idempotent.
  void close(std::string_view reason, log::Level level = log::Level::kWarn) {
    if (closed_) return;
    closed_ = true;
    if (!reason.empty()) {
      if (log::enabled(level, "store") && core_->peer_log().allow()) {
        log::write(level, "store", fmt::format("closing connection from {}: {}", peer(), reason));
      }
      core_->count_rejected();
    } else {
      GPURUN_LOG_DEBUG("store", "connection from {} closed", peer());
    }
    core_->cancel_wait(*this);
    if (streaming_) {
      streaming_ = false;
      core_->unpin(*this, body_key_);
    }
    core_->on_session_closed(this);
    boost::system::error_code ignored;
    sock_.shutdown(tcp::socket::shutdown_both, ignored);
    sock_.close(ignored);
    core_->reaper().drop(std::move(in_), in_cap_);
    in_cap_ = in_begin_ = in_end_ = 0;
    std::vector<std::uint8_t>().swap(out_);
    if (!writing_active_) std::vector<std::uint8_t>().swap(writing_);
    account();
  }

  // One registration of this session's WAIT was satisfied.
  void key_ready() {
    if (wait_remaining_ == 0) return;
    if (--wait_remaining_ == 0) {
      wait_keys_.clear();
      core_->wake_done();
      core_->release_wait_bytes(wait_bytes_);
      wait_bytes_ = 0;
      if (streaming_) {  // not in the middle of a streamed GET reply: right after it
        wait_reply_after_body_ = true;
        return;
      }
      protocol::reply_u8(out_, protocol::kStopWaiting);
      flush();
      account();
    }
  }

  std::vector<std::uint8_t>& out() { return out_; }
  std::size_t queued() const { return out_.size() + writing_.size(); }
  std::string peer() const { return endpoint_string(peer_); }
  bool closed() const { return closed_; }
  // True if a frame has been arriving for longer than `limit` while we were waiting for it.
  bool frame_overdue(std::chrono::steady_clock::time_point now,
                     std::chrono::milliseconds limit) const {
    return reading_ && frame_started_ && now - *frame_started_ > limit;
  }
  // Re-counts this session's buffers in the core's buffer total.
  void account() {
    std::size_t now = in_cap_ + out_.capacity() + writing_.capacity();
    core_->buffer_delta(static_cast<std::int64_t>(now) - static_cast<std::int64_t>(accounted_));
    accounted_ = now;
  }

  // A SET whose value is copied into the store in slices (see kSlicedSetAbove).
  void start_sliced_set(std::string_view key, std::string_view value) {
    slice_key_.assign(key);
    slice_value_.clear();
    slice_value_.reserve(value.size());
    slice_src_ = value;
  }

  std::size_t wait_remaining_ = 0;
  std::size_t wait_bytes_ = 0;          // store-budget bytes of the current WAIT's registrations
  std::vector<std::string> wait_keys_;  // registrations of the current WAIT, for cleanup
  // Last wills (kWillKeyPrefix): target key -> value, applied when the peer goes away.
  std::map<std::string, std::string, std::less<>> wills_;
  std::size_t will_bytes_ = 0;  // store-budget bytes of wills_

 private:
  void maybe_read() {
    if (closed_ || reading_ || deferred_ || slicing_ || streaming_) return;
    if (queued() > core_->options().max_output_bytes) return;  // resumed by on_write
    std::size_t used = in_end_ - in_begin_;
    if (used == 0 && in_cap_ > kShrinkAbove) {
      core_->reaper().drop(std::move(in_), in_cap_);
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
      const auto& o = core_->options();
      if (core_->buffer_bytes() + (cap - in_cap_) > o.max_buffer_bytes) {
        close(fmt::format("a {} read buffer would pass the store's buffer budget of {} ({} in "
                          "use by all connections; raise --max-buffer-bytes)",
                          mib(cap), mib(o.max_buffer_bytes), mib(core_->buffer_bytes())),
              log::Level::kError);
        return;
      }
      // realloc: large blocks are remapped by the kernel, not copied (in_begin_ is 0 here when
      // bytes are kept, see above).
      auto* bigger = static_cast<std::uint8_t*>(std::realloc(in_.get(), cap));
      if (bigger == nullptr) {
        close(fmt::format("cannot allocate a {} read buffer", mib(cap)), log::Level::kError);
        return;
      }
      (void)in_.release();
      in_.reset(bigger);
      in_cap_ = cap;
    }
    account();
    reading_ = true;
    sock_.async_read_some(
        asio::buffer(in_.get() + in_end_, std::min(in_cap_ - in_end_, kTurnBytes)),
        [self = shared_from_this()](const boost::system::error_code& ec, std::size_t n) {
          self->on_read(ec, n);
        });
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
    pump(false);
  }

  // Handles every complete request in the buffer, until one has to wait for output space.
  void process() {
    Request req;
    bool progressed = false;
    while (!closed_) {
      std::span<const std::uint8_t> buf(in_.get() + in_begin_, in_end_ - in_begin_);
      if (buf.size() < parser_.need()) break;
      ParseStatus st = parser_.parse(buf, req);
      if (st == ParseStatus::kNeedMore) break;
      if (st == ParseStatus::kError) {
        close(parser_.error());
        return;
      }
      Handled h;
      try {
        h = core_->handle(*this, req);
      } catch (const std::exception& e) {
        close(fmt::format("{} failed: {}", protocol::op_name(req.op), e.what()));
        return;
      }
      if (h == Handled::kStreaming) {  // the reply goes out over the next turns
        in_begin_ += parser_.consumed();
        break;
      }
      if (h == Handled::kSliced) {
        slicing_ = true;
        slice_consume_ = parser_.consumed();
        post_slice();
        break;
      }
      if (h == Handled::kDeferred) {
        // The request stays in the buffer (the parser is at a boundary again) and is parsed
        // anew once this connection's replies are written.
        deferred_ = true;
        break;
      }
      in_begin_ += parser_.consumed();
      progressed = true;
    }
    if (in_begin_ == in_end_) in_begin_ = in_end_ = 0;
    // The frame deadline covers a request that has started arriving; it restarts whenever a
    // request completes, and idle connections (nothing buffered) have none.
    if (in_begin_ == in_end_ || deferred_ || slicing_ || streaming_) {
      frame_started_.reset();
    } else if (progressed || !frame_started_) {
      frame_started_ = std::chrono::steady_clock::now();
    }
  }

  void post_slice() {
    asio::post(core_->io(), [self = shared_from_this()] { self->slice(); });
  }
  // One turn's worth of a sliced SET; the last one stores it and resumes the connection.
  void slice() {
    if (closed_) return;
    std::size_t n = std::min(kTurnBytes, slice_src_.size() - slice_value_.size());
    slice_value_.append(slice_src_.substr(slice_value_.size(), n));
    if (slice_value_.size() < slice_src_.size()) {
      post_slice();
      return;
    }
    slicing_ = false;
    slice_src_ = {};
    core_->finish_sliced_set(*this, std::move(slice_key_), std::move(slice_value_));
    slice_value_ = std::string();
    if (closed_) return;
    in_begin_ += slice_consume_;
    process();
    if (closed_) return;
    pump(false);
  }

  // Writes what is queued, retries a deferred request once there is room, and reads again.
  void pump(bool retry) {
    for (;;) {
      if (streaming_) {
        flush();
        if (closed_) return;
        if (body_off_ < body_.size() || writing_active_ || !out_.empty()) {
          account();
          return;  // continued by on_write or by the turn flush() posted
        }
        streaming_ = false;
        core_->unpin(*this, body_key_);
        body_ = {};
        std::string().swap(body_owned_);
        if (wait_reply_after_body_) {
          wait_reply_after_body_ = false;
          protocol::reply_u8(out_, protocol::kStopWaiting);
        }
        process();  // the requests that came after the GET
        if (closed_) return;
        continue;
      }
      if (retry && deferred_) {
        deferred_ = false;
        process();
        if (closed_) return;
      }
      flush();
      if (closed_) return;
      if (deferred_ && !writing_active_) {  // everything was written synchronously: retry now
        retry = true;
        continue;
      }
      break;
    }
    account();
    maybe_read();
  }

 public:
  // Starts streaming `body` (a stored value) as the rest of the reply whose header is queued.
  void start_body(std::string_view key, std::string_view body) {
    streaming_ = true;
    body_key_.assign(key);
    body_ = body;
    body_off_ = 0;
  }
  // The stored value is about to change: keep what is left to send (one copy).
  void detach_body() {
    body_owned_.assign(body_.substr(body_off_));
    body_ = body_owned_;
    body_off_ = 0;
  }

  void flush() {
    if (closed_ || writing_active_) return;
    if (out_.empty() && streaming_ && body_off_ < body_.size()) {
      std::size_t n = std::min(kTurnBytes, body_.size() - body_off_);
      auto p = reinterpret_cast<const std::uint8_t*>(body_.data()) + body_off_;
      out_.insert(out_.end(), p, p + n);
      body_off_ += n;
    }
    if (out_.empty()) return;
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
      // The next chunk in a later turn, so other connections are served in between.
      // (The posted handler also keeps this session alive meanwhile.)
      if (streaming_ && body_off_ < body_.size()) {
        asio::post(core_->io(), [self = shared_from_this()] { self->pump(true); });
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
    if (closed_) {
      std::vector<std::uint8_t>().swap(writing_);
      account();
      return;
    }
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
    pump(true);
  }

  std::shared_ptr<ServerCore> core_;
  tcp::socket sock_;
  tcp::endpoint peer_;
  protocol::RequestParser parser_;
  ReadBuffer in_;
  std::size_t in_cap_ = 0, in_begin_ = 0, in_end_ = 0;
  std::vector<std::uint8_t> out_;      // replies not yet handed to the socket
  std::vector<std::uint8_t> writing_;  // the buffer of the write in flight
  std::size_t accounted_ = 0;          // bytes of this session in the core's buffer total
  std::optional<std::chrono::steady_clock::time_point> frame_started_;
  bool reading_ = false;
  bool writing_active_ = false;
  bool deferred_ = false;   // a request waits in the buffer for output space
  bool streaming_ = false;  // a large GET reply is being sent from the stored value
  std::string body_key_;
  std::string_view body_;  // the stored value (or body_owned_ once detached)
  std::size_t body_off_ = 0;
  std::string body_owned_;
  bool wait_reply_after_body_ = false;
  bool slicing_ = false;  // a large SET is being copied into the store, one slice per turn
  std::string slice_key_, slice_value_;
  std::string_view slice_src_;  // the value, in in_ (which is not touched while slicing)
  std::size_t slice_consume_ = 0;
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

  // The connection cap leaves descriptors for the rest of the process (the launcher's pipes,
  // log files, a restart's new workers): refusing a stranger's 1000th connection is better than
  // failing the job's next fork.
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

void ServerCore::resolve_allow_list() {
  for (const auto& h : opts_.allow_hosts) {
    boost::system::error_code ec;
    auto a = asio::ip::make_address(h, ec);
    if (!ec) {
      allowed_.push_back(a);
      continue;
    }
    tcp::resolver resolver(io_);
    auto results = resolver.resolve(h, "0", ec);
    if (ec || results.empty()) {
      throw ConfigError(
          fmt::format("cannot resolve store allow-list host '{}' ({}); check "
                      "--allow / GPURUN_STORE_ALLOW",
                      h, ec ? ec.message() : "no address"));
    }
    for (const auto& r : results) allowed_.push_back(r.endpoint().address());
  }
}

// Why a new connection must be refused, or "" to accept it.
std::string ServerCore::refuse_reason(const tcp::socket& sock, const tcp::endpoint& peer) {
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
      if (peer_log_.allow()) {
        GPURUN_LOG_WARN("store",
                        "refusing connection from {}: the owner of that loopback socket cannot "
                        "be found (it closed already)",
                        endpoint_string(peer));
      }
      return "unknown owner";
    }
  }
  if (!local_peer && !allowed_.empty()) {
    asio::ip::address a = peer.address();
    if (a.is_v6() && a.to_v6().is_v4_mapped()) {
      a = asio::ip::make_address_v4(asio::ip::v4_mapped, a.to_v6());
    }
    if (std::find(allowed_.begin(), allowed_.end(), a) == allowed_.end()) {
      if (peer_log_.allow()) {
        GPURUN_LOG_WARN("store",
                        "refusing connection from {}: not one of the job's hosts "
                        "(GPURUN_STORE_ALLOW / --allow)",
                        endpoint_string(peer));
      }
      return "address";
    }
  }
  return "";
}

std::string ServerCore::audit() const {
  std::uint64_t bytes = 0;
  for (const auto& [k, v] : kv_) bytes += entry_bytes(k, v.size());
  for (const auto& [k, q] : queues_) {
    bytes += k.size() + kEntryOverhead;
    for (const auto& item : q) bytes += item.size() + kEntryOverhead;
  }
  std::uint64_t waiting = 0, out = 0;
  for (const Session* s : sessions_) {
    bytes += s->wait_bytes_ + s->will_bytes_;
    if (s->wait_remaining_ > 0) ++waiting;
    out += s->queued();
  }
  std::string why;
  if (bytes != store_bytes_) {
    why += fmt::format("store bytes counted {} but recounted {}; ", store_bytes_, bytes);
  }
  if (waiting != waiting_) why += fmt::format("waiters counted {} but {}; ", waiting_, waiting);
  if (store_bytes_ > opts_.max_store_bytes) {
    why += fmt::format("store bytes {} over the budget {}; ", store_bytes_, opts_.max_store_bytes);
  }
  if (out > buffer_bytes_)
    why += fmt::format("queued output {} over the buffer total {}; ", out, buffer_bytes_);
  return why;
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
  if (opts_.frame_timeout.count() <= 0) return;
  auto now = std::chrono::steady_clock::now();
  scratch_.clear();
  for (Session* s : sessions_) {
    if (s->frame_overdue(now, opts_.frame_timeout)) scratch_.push_back(s->shared_from_this());
  }
  for (auto& s : scratch_) {
    s->close(
        fmt::format("a request started arriving more than {} ago and is still incomplete "
                    "(frame deadline; GPURUN_STORE_FRAME_TIMEOUT raises it)",
                    format_duration(opts_.frame_timeout)));
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

void ServerCore::add_session(tcp::socket sock, const tcp::endpoint& peer, bool check) {
  ++accepted_;
  if (sessions_.size() >= max_connections_) {
    ++refused_;
    if (peer_log_.allow()) {
      GPURUN_LOG_WARN("store",
                      "refusing connection from {}: {} connections open (the cap; it leaves "
                      "descriptors for the launcher: raise ulimit -Hn or --max-connections)",
                      endpoint_string(peer), sessions_.size());
    }
    boost::system::error_code ignored;
    sock.close(ignored);
    return;
  }
  if (check && !refuse_reason(sock, peer).empty()) {
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
  GPURUN_LOG_DEBUG("store", "connection from {}", s->peer());
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

void ServerCore::on_session_closed(Session* s) {
  sessions_.erase(s);
  store_bytes_ -= s->will_bytes_;  // pending wills were budgeted; what they store is counted below
  s->will_bytes_ = 0;
  if (stopped_) return;  // the server going down is nobody's death
  // The peer is gone (EOF, reset, protocol error): its wills fire, each only if its target is
  // still absent, so the first reason written for a key (by a live peer or a will) stays.
  auto wills = std::move(s->wills_);
  for (const auto& [target, value] : wills) {
    if (kv_.find(target) != kv_.end()) continue;
    GPURUN_LOG_DEBUG("store", "connection from {} closed; its will sets '{}'", s->peer(),
                     printable(target));
    set_value(target, value);
  }
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
  store_bytes_ -= s.wait_bytes_;
  s.wait_bytes_ = 0;
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

// Exact size of the reply `req` gets now (0 for requests without one).
std::size_t ServerCore::reply_size(const Request& req) const {
  auto value_len = [&](std::string_view k) -> std::size_t {
    auto it = kv_.find(k);
    return it == kv_.end() ? 0 : it->second.size();
  };
  switch (req.op) {
    case Op::kGet:
      return 8 + value_len(req.key);
    case Op::kCompareSet:  // the new, the expected or the current value
      return 8 + std::max({req.value.size(), req.value2.size(), value_len(req.key)});
    case Op::kMultiGet: {
      std::size_t n = 0;
      protocol::for_each_key(req, [&](std::string_view k) { n += 8 + value_len(k); });
      return n;
    }
    case Op::kQueuePop: {
      auto it = queues_.find(req.key);
      return 16 + (it == queues_.end() || it->second.empty() ? 0 : it->second.front().size());
    }
    case Op::kAdd:
    case Op::kGetNumKeys:
    case Op::kDeleteKey:
    case Op::kQueueLen:
      return 8;
    case Op::kPing:
      return 4;
    case Op::kCheck:
    case Op::kWait:
    case Op::kCancelWait:
      return 1;
    default:
      return 0;
  }
}

std::optional<Handled> ServerCore::admit_reply(Session& s, std::size_t bytes, const Request& req) {
  std::size_t queued = s.queued();
  bool fits_conn =
      queued + bytes <= opts_.max_output_bytes || (queued == 0 && bytes <= single_reply_limit());
  bool fits_total = buffer_bytes_ + bytes <= opts_.max_buffer_bytes;
  if (fits_conn && fits_total) return std::nullopt;
  // Retried once this connection's earlier replies are written (reading stops meanwhile).
  if (queued > 0 && bytes <= single_reply_limit()) return Handled::kDeferred;
  if (!fits_conn) {
    s.close(
        fmt::format("the reply to its {} would be {} bytes, over the limit of {} queued for "
                    "one connection (--max-output-bytes; one value up to "
                    "--max-value-bytes is always allowed)",
                    protocol::op_name(req.op), bytes, mib(opts_.max_output_bytes)));
  } else {
    s.close(fmt::format(
                "the reply to its {} ({} bytes) does not fit the store's buffer budget of {} "
                "({} in use by all connections; raise --max-buffer-bytes)",
                protocol::op_name(req.op), bytes, mib(opts_.max_buffer_bytes), mib(buffer_bytes_)),
            log::Level::kError);
  }
  return Handled::kDone;
}

bool ServerCore::reserve_store(Session& s, std::int64_t delta, const Request& req,
                               std::string_view key) {
  if (delta <= 0 || store_bytes_ + static_cast<std::uint64_t>(delta) <= opts_.max_store_bytes) {
    return true;
  }
  s.close(fmt::format("store memory budget full: its {} of key '{}' needs {} more bytes but {} of "
                      "{} are in use (raise --max-store-bytes / GPURUN_STORE_MAX_BYTES, or store "
                      "less)",
                      protocol::op_name(req.op), printable(key), delta, store_bytes_,
                      mib(opts_.max_store_bytes)),
          log::Level::kError);
  return false;
}

void ServerCore::before_mutate(std::string_view key) {
  if (pins_.empty()) return;
  auto it = pins_.find(key);
  if (it == pins_.end()) return;
  for (Session* s : it->second) s->detach_body();
  pins_.erase(it);
}

void ServerCore::unpin(Session& s, const std::string& key) {
  auto it = pins_.find(key);
  if (it == pins_.end()) return;  // detached already
  std::erase(it->second, &s);
  if (it->second.empty()) pins_.erase(it);
}

void ServerCore::finish_sliced_set(Session& s, std::string key, std::string value) {
  Request req;
  req.op = Op::kSet;
  if (!reserve_store(s, set_delta(key, value.size()), req, key)) return;
  before_mutate(key);
  auto it = kv_.find(key);
  if (it == kv_.end()) {
    store_bytes_ += entry_bytes(key, value.size());
    it = kv_.emplace(std::move(key), std::move(value)).first;
  } else {
    store_bytes_ += value.size();
    store_bytes_ -= it->second.size();
    std::swap(it->second, value);
    reaper_.drop(std::move(value));
  }
  wake_all(it->first);
}

Handled ServerCore::handle(Session& s, const Request& req) {
  if (std::size_t bytes = reply_size(req); bytes > 0) {
    if (auto h = admit_reply(s, bytes, req)) return *h;
    bool stream = req.op == Op::kGet && bytes > kStreamAbove + 8;
    if (bytes > 4096 && !stream) s.out().reserve(s.out().size() + bytes);  // exactly
  }
  auto& out = s.out();
  switch (req.op) {
    case Op::kValidate:
      break;  // consumed by dialect detection; no reply
    case Op::kSet:
      if (req.key.starts_with(kWillKeyPrefix)) {
        std::string target(req.key.substr(kWillKeyPrefix.size()));
        if (s.wills_.size() >= kMaxWills && !s.wills_.count(target)) {
          s.close(fmt::format("more than {} last wills on one connection", kMaxWills));
          break;
        }
        // Pending wills count against the store budget like stored entries.
        auto w = s.wills_.find(target);
        std::int64_t old = w == s.wills_.end()
                               ? 0
                               : static_cast<std::int64_t>(entry_bytes(w->first, w->second.size()));
        std::int64_t now = static_cast<std::int64_t>(entry_bytes(target, req.value.size()));
        if (!reserve_store(s, now - old, req, req.key)) break;
        store_bytes_ += static_cast<std::uint64_t>(now - old);
        s.will_bytes_ += static_cast<std::size_t>(now - old);
        s.wills_[std::move(target)] = std::string(req.value);
        break;
      }
      if (!reserve_store(s, set_delta(req.key, req.value.size()), req, req.key)) break;
      if (req.value.size() > kSlicedSetAbove) {
        s.start_sliced_set(req.key, req.value);
        return Handled::kSliced;
      }
      set_value(req.key, req.value);
      break;
    case Op::kCompareSet: {
      auto it = kv_.find(req.key);
      if (it == kv_.end()) {
        if (req.value.empty()) {
          if (!reserve_store(s, set_delta(req.key, req.value2.size()), req, req.key)) break;
          protocol::reply_bytes(out, req.value2);
          set_value(req.key, req.value2);
        } else {
          protocol::reply_bytes(out, req.value);  // upstream's "absent" reply
        }
      } else if (it->second == req.value) {
        if (!reserve_store(s, set_delta(req.key, req.value2.size()), req, req.key)) break;
        protocol::reply_bytes(out, req.value2);
        set_value(req.key, req.value2);
      } else {
        protocol::reply_bytes(out, it->second);
      }
      break;
    }
    case Op::kGet: {
      auto it = kv_.find(req.key);
      if (it != kv_.end() && it->second.size() > kStreamAbove) {
        protocol::reply_i64(out, static_cast<std::int64_t>(it->second.size()));  // the length
        s.start_body(it->first, it->second);
        pins_[it->first].push_back(&s);
        return Handled::kStreaming;
      }
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
          break;
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
      if (!reserve_store(s, set_delta(req.key, text.size()), req, req.key)) break;
      protocol::reply_i64(out, result);
      set_value(req.key, text);
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
      cancel_wait(s);         // one wait slot per connection: a new WAIT replaces the old one
      std::int64_t cost = 0;  // registrations: the key in waiters_ and in wait_keys_
      protocol::for_each_key(req, [&](std::string_view k) {
        if (!exists(k)) cost += static_cast<std::int64_t>(2 * k.size() + kEntryOverhead);
      });
      if (!reserve_store(s, cost, req, req.count > 0 ? "(wait registrations)" : "")) break;
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
        s.wait_bytes_ = static_cast<std::size_t>(cost);
        store_bytes_ += s.wait_bytes_;
        ++waiting_;
      }
      break;
    }
    case Op::kGetNumKeys:
      protocol::reply_i64(out, static_cast<std::int64_t>(kv_.size()));
      break;
    case Op::kDeleteKey: {
      if (req.key.starts_with(kWillKeyPrefix)) {
        auto w = s.wills_.find(req.key.substr(kWillKeyPrefix.size()));
        const bool had = w != s.wills_.end();
        if (had) {
          std::size_t bytes = entry_bytes(w->first, w->second.size());
          store_bytes_ -= bytes;
          s.will_bytes_ -= bytes;
          s.wills_.erase(w);
        }
        protocol::reply_i64(out, had ? 1 : 0);
        break;
      }
      auto it = kv_.find(req.key);
      bool found = it != kv_.end();
      if (found) {
        before_mutate(req.key);
        store_bytes_ -= entry_bytes(it->first, it->second.size());
        reaper_.drop(std::move(it->second));
        kv_.erase(it);
      }
      protocol::reply_i64(out, found ? 1 : 0);
      break;
    }
    case Op::kAppend: {
      auto it = kv_.find(req.key);
      std::size_t old = it == kv_.end() ? 0 : it->second.size();
      if (old + req.value.size() > opts_.max_value_bytes) {
        s.close(
            fmt::format("APPEND to key '{}' would make its value {} bytes, over the limit of "
                        "{} (--max-value-bytes)",
                        printable(req.key), old + req.value.size(), mib(opts_.max_value_bytes)));
        break;
      }
      if (!reserve_store(s, set_delta(req.key, old + req.value.size()), req, req.key)) break;
      if (it == kv_.end()) {
        store_bytes_ += entry_bytes(req.key, req.value.size());
        kv_.emplace(std::string(req.key), std::string(req.value));
      } else {
        before_mutate(req.key);
        store_bytes_ += req.value.size();
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
    case Op::kMultiSet: {
      // An upper bound (a key set twice counts twice): the whole request or none of it.
      std::int64_t cost = 0;
      protocol::for_each_pair(req, [&](std::string_view k, std::string_view v) {
        cost += std::max<std::int64_t>(0, set_delta(k, v.size()));
      });
      if (!reserve_store(s, cost, req, "(multi_set)")) break;
      protocol::for_each_pair(req,
                              [&](std::string_view k, std::string_view v) { set_value(k, v); });
      break;
    }
    case Op::kCancelWait:
      cancel_wait(s);
      protocol::reply_u8(out, protocol::kWaitCanceled);
      break;
    case Op::kPing:
      protocol::reply_u32(out, req.u32);
      break;
    case Op::kQueuePush: {
      auto it = queues_.find(req.key);
      std::size_t cost = req.value.size() + kEntryOverhead;
      if (it == queues_.end()) cost += req.key.size() + kEntryOverhead;
      if (!reserve_store(s, static_cast<std::int64_t>(cost), req, req.key)) break;
      if (it == queues_.end()) it = queues_.emplace(std::string(req.key), 0).first;
      it->second.emplace_back(req.value);
      store_bytes_ += cost;
      wake_one(req.key);
      break;
    }
    case Op::kQueuePop: {
      auto it = queues_.find(req.key);
      std::size_t len = it == queues_.end() ? 0 : it->second.size();
      protocol::reply_i64(out, static_cast<std::int64_t>(len));
      if (len > 0) {
        protocol::reply_bytes(out, it->second.front());
        store_bytes_ -= it->second.front().size() + kEntryOverhead;
        it->second.pop_front();
        if (it->second.empty()) {
          store_bytes_ -= it->first.size() + kEntryOverhead;
          queues_.erase(it);
        }
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
      break;
  }
  return Handled::kDone;
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

void apply_store_env(StoreServerOptions& o, const EnvMap& env) {
  if (auto v = env_bool(env, "GPURUN_STORE_CHECK_PEER_UID")) o.check_peer_uid = *v;
  if (auto v = env_get(env, "GPURUN_STORE_ALLOW")) {
    o.allow_hosts.clear();
    for (const auto& h : split(*v, ',')) {
      if (auto t = trim(h); !t.empty()) o.allow_hosts.push_back(t);
    }
  }
  auto positive = [&](std::string_view key, std::size_t& field) {
    if (auto v = env_int(env, key)) {
      if (*v <= 0) {
        throw ConfigError(fmt::format("invalid {}={} (must be a positive number)", key, *v));
      }
      field = static_cast<std::size_t>(*v);
    }
  };
  positive("GPURUN_STORE_MAX_BYTES", o.max_store_bytes);
  positive("GPURUN_STORE_MAX_CONNECTIONS", o.max_connections);
  if (auto v = env_duration(env, "GPURUN_STORE_FRAME_TIMEOUT")) o.frame_timeout = *v;
}

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
void StoreServer::serve_connected(int fd) { impl_->core->serve_connected(fd); }
std::string StoreServer::audit() const { return impl_->core->audit(); }
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
