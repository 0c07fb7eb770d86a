// The store server's core, on one Asio event loop (an implicit strand, so no mutexes): it owns
// the key-value state (KvState), the acceptor and the set of connections (Session), and turns
// each parsed request into KvState calls and a reply (server_core.cc). Accepting, the connection
// cap, the peer checks and the frame-deadline sweep are in server_accept.cc; one connection's
// reading, writing and output cap in session.cc.
#pragma once

#include <sys/types.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "allow_list.h"
#include "gpurun/rendezvous/store_server.h"
#include "kv_state.h"
#include "peer_cred.h"
#include "protocol.h"
#include "reaper.h"
#include "server_log.h"

namespace gpurun::rendezvous::server {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

// Work per event-loop turn on one connection, so that a 100 MB SET does not stall the others:
// at most this much is read per turn, and a larger SET value is copied into the store in slices
// of this size, one per turn (fresh memory can be slow to touch: 25-150 MB/s on a loaded VM).
constexpr std::size_t kTurnBytes = 64 << 10;
constexpr std::size_t kSlicedSetAbove = 1 << 20;
// A GET reply larger than this is streamed from the stored value, kTurnBytes per turn, instead
// of being copied into the output buffer at once. If the value changes meanwhile, what is left
// of it is copied first (the reply is the value as it was when the GET was handled).
constexpr std::size_t kStreamAbove = 1 << 20;
constexpr std::size_t kMaxWills = 1024;  // per connection (an agent needs one per round)

// What handle() did with a request: answered it (kDone), left it in the buffer until this
// connection's replies are written (kDeferred), or started a large SET (kSliced) or GET reply
// (kStreaming) that continues over the next turns.
enum class Handled { kDone, kDeferred, kSliced, kStreaming };

class Session;

class ServerCore final : public std::enable_shared_from_this<ServerCore>, private KvHooks {
 public:
  ServerCore(asio::io_context& io, StoreServerOptions opts);

  // server_accept.cc
  void bind();  // throws BindError / ConfigError
  void start();
  void stop();
  void serve_connected(int fd, bool on_probation);

  // ---- used by sessions (server_core.cc) ----
  Handled handle(Session& s, const protocol::Request& req);
  void on_session_closed(Session* s);
  void cancel_wait(Session& s);
  // The last slice of a large SET arrived in `value`: store it (budget checked again).
  void finish_sliced_set(Session& s, std::string key, std::string value);
  void unpin(Session& s, const std::string& key);
  void count_rejected() { ++rejected_; }
  const protocol::Limits& limits() const { return limits_; }
  const StoreServerOptions& options() const { return opts_; }
  LogLimiter& peer_log() { return peer_log_; }
  // Read buffers + queued replies of every connection (max_buffer_bytes).
  void buffer_delta(std::int64_t d) { buffer_bytes_ += static_cast<std::uint64_t>(d); }
  std::uint64_t buffer_bytes() const { return buffer_bytes_; }
  asio::io_context& io() { return io_; }
  Reaper& reaper() { return reaper_; }

  StoreServerStats stats() const;
  std::string audit() const;

  std::uint16_t port() const { return port_; }
  const std::string& host() const { return host_; }
  const std::string& address() const { return address_; }

 private:
  // KvHooks
  void before_mutate(std::string_view key) override;
  void dispose(std::string&& old_value) override { reaper_.drop(std::move(old_value)); }

  // server_core.cc: the requests
  Handled dispatch(Session& s, const protocol::Request& req);
  // True if `st` is ok; else closes `s` with the reason, worded for `req` and `key`.
  bool ok(Session& s, const KvStatus& st, const protocol::Request& req, std::string_view key);
  // Decides whether a reply of `bytes` may be queued for `s` now (nullopt), later (kDeferred),
  // or never (the session is closed; kDone).
  std::optional<Handled> admit_reply(Session& s, std::size_t bytes, const protocol::Request& req);
  std::size_t reply_size(const protocol::Request& req) const;
  // The largest reply one connection may queue: max_output_bytes, but always one whole value.
  std::size_t single_reply_limit() const;
  void set_will(Session& s, const protocol::Request& req);
  void delete_will(Session& s, const protocol::Request& req);

  // server_accept.cc: connections
  void do_accept();
  void on_accept(const boost::system::error_code& ec, tcp::socket sock);
  // check: the peer checks decide (else trusted, or on probation when `on_probation`).
  void add_session(tcp::socket sock, const tcp::endpoint& peer, bool check = true,
                   bool on_probation = false);
  // Why a new connection must be refused, or "" to accept it; `probation` is set when it may
  // come in only to prove the job secret.
  std::string refuse_reason(const tcp::socket& sock, const tcp::endpoint& peer, bool& probation);
  // The job secret: requests a peer on probation may send, and what a proof does.
  bool on_probation_refused(Session& s, const protocol::Request& req);
  void auth_challenge(Session& s);
  void auth_proof(Session& s, const protocol::Request& req);
  bool vouched(const asio::ip::address& a) const;
  void log_refusal(const tcp::endpoint& peer, std::string_view why);
  void resolve_allow_list();
  void set_connection_cap();
  void arm_sweep();
  void sweep();

  asio::io_context& io_;
  StoreServerOptions opts_;
  protocol::Limits limits_;
  tcp::acceptor acceptor_;
  asio::steady_timer accept_retry_;
  asio::steady_timer sweep_;
  tcp::endpoint accept_peer_;  // filled by the pending accept
  bool stopped_ = false;
  std::uint16_t port_ = 0;
  std::string host_;
  std::string address_;
  std::size_t max_connections_ = 0;
  uid_t own_uid_ = 0;
  std::unique_ptr<PeerCredentials> creds_;
  AllowList allowed_;
  // Hosts whose peers proved the job secret: the job's nodes, as they show up (a handful).
  std::vector<asio::ip::address> vouched_;
  LogLimiter peer_log_;
  std::chrono::steady_clock::time_point last_pid_scan_{};
  Reaper reaper_;  // before kv_: values it is handed are freed after kv_'s own

  KvState kv_;
  // key -> sessions streaming its value (kStreamAbove). Entries are removed before their
  // Session is closed, so the raw pointers never dangle.
  StrMap<std::vector<Session*>> pins_;
  std::unordered_set<Session*> sessions_;
  std::vector<std::shared_ptr<Session>> scratch_;  // reused by stop() and sweep()
  std::vector<std::string_view> keys_, values_;    // reused by dispatch()

  std::uint64_t accepted_ = 0;
  std::uint64_t rejected_ = 0;
  std::uint64_t refused_ = 0;
  std::uint64_t buffer_bytes_ = 0;
};

}  // namespace gpurun::rendezvous::server
