// gpurun's TCPStore-compatible server: one Asio event loop, no thread per client, speaking both
// the PyTorch 1.13 and 2.x dialects (detected per connection). Blocking ops (WAIT) never block
// the loop: waiters are registered per key and woken on set/add/append/compare_set/multi_set.
// A malformed or oversized request closes only that connection (logged with peer and reason).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gpurun/common/env.h"

namespace boost::asio {
class io_context;
}

namespace gpurun::rendezvous {

// Last wills (a gpurun extension, no new opcode): SET "gpurun.will/<target>" = V is not stored;
// it registers, on that connection, "when this peer goes away, set <target> = V unless <target>
// exists by then" (waking its waiters). DELETE_KEY "gpurun.will/<target>" cancels it. A will
// fires on EOF, reset or a protocol error, at once: the elastic agents use it to learn that a
// node's agent died (kill -9 closes its sockets) without waiting for a missed heartbeat. Wills
// do not fire when the server itself stops.
inline constexpr std::string_view kWillKeyPrefix = "gpurun.will/";

struct StoreServerOptions {
  std::string host = "127.0.0.1";  // "0.0.0.0" / "::" for every interface; names are resolved
  std::uint16_t port = 0;          // 0 = pick a free port (read it back with port())
  std::size_t max_key_bytes = 64 * 1024;            // PyTorch libuv accepts 8 KiB
  std::size_t max_value_bytes = 256 * 1024 * 1024;  // PyTorch libuv accepts 8 MiB
  std::size_t max_keys_per_request = 1 << 20;       // PyTorch libuv accepts 131072
  // 0 = auto: RLIMIT_NOFILE (after raising it) minus a reserve of max(64, limit/4) descriptors
  // for the process hosting the store (the launcher's pipes, logs, restarts). An explicit value
  // is capped the same way.
  std::size_t max_connections = 0;
  bool raise_fd_limit = true;  // raise RLIMIT_NOFILE soft limit to the hard limit at start
  // Memory bounds (issue 16). Replies queued for one connection: a request whose reply would pass
  // this waits until the earlier replies are written, and one that cannot fit even then (a
  // single value may always be read: the bound is at least max_value_bytes) closes the
  // connection before anything is allocated.
  std::size_t max_output_bytes = 64 << 20;
  // Stored keys + values + queue items + wait registrations (64 bytes of overhead per entry).
  // A write that would pass it closes the writer's connection with an ERROR line.
  std::size_t max_store_bytes = std::size_t{1} << 30;
  // All connections' read buffers and queued replies together.
  std::size_t max_buffer_bytes = std::size_t{1} << 30;
  // A frame (request) that has started must be complete within this, or its connection is closed
  // (slowloris). Idle connections between requests are never timed out. 0 = no deadline.
  std::chrono::milliseconds frame_timeout{60000};
  // Access control (issue 16, section 2). Peers on this host (same network namespace) must run
  // as the uid of this process (found through inet_diag / /proc/net/tcp); a loopback peer whose
  // socket owner cannot be found is refused.
  bool check_peer_uid = true;
  // Peers on other hosts: allowed addresses, CIDR blocks (10.0.0.0/8) or host names (resolved
  // at start; one that does not resolve is a ConfigError); "any" or empty: every host.
  // allow_origin names where the list came from in log lines and errors.
  std::vector<std::string> allow_hosts;
  std::string allow_origin = "--allow";
  // The job secret (job_access.h; GPURUN_JOB_SECRET). Set: a peer from a host outside
  // allow_hosts (or from any other host when allow_hosts is empty) is let in on probation: it may
  // only prove the secret (AUTH_CHALLENGE, AUTH_PROOF; VALIDATE and PING besides) within
  // auth_timeout; a proof admits it and its host, anything else closes it. Empty: no secret.
  std::string job_secret;
  std::chrono::milliseconds auth_timeout{10000};
};

// Applies GPURUN_STORE_* environment variables to `o` (how the launcher's embedded store is
// configured): GPURUN_STORE_CHECK_PEER_UID (bool), GPURUN_STORE_ALLOW (comma-separated hosts),
// GPURUN_STORE_MAX_BYTES, GPURUN_STORE_MAX_CONNECTIONS, GPURUN_STORE_FRAME_TIMEOUT (duration),
// and GPURUN_JOB_SECRET (job_secret).
// Throws ConfigError on a malformed value.
void apply_store_env(StoreServerOptions& o, const EnvMap& env);

struct StoreServerStats {
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_open = 0;
  std::uint64_t connections_rejected = 0;  // closed for protocol errors / limits
  std::uint64_t connections_refused = 0;   // refused at accept (connection cap, peer checks)
  std::uint64_t keys = 0;
  std::uint64_t waiters = 0;
  std::uint64_t store_bytes = 0;      // what max_store_bytes bounds
  std::uint64_t buffer_bytes = 0;     // what max_buffer_bytes bounds
  std::uint64_t max_connections = 0;  // the effective connection cap
};

// Lifetime: bind happens in the constructor (throws gpurun::BindError with the errno, host and
// port: the caller can explain EADDRINUSE). Serving happens while the io_context runs.
// REQUIRES: all calls except port()/address() happen on the io_context's thread or before run().
class StoreServer {
 public:
  StoreServer(boost::asio::io_context& io, StoreServerOptions options);
  ~StoreServer();
  StoreServer(const StoreServer&) = delete;
  StoreServer& operator=(const StoreServer&) = delete;

  std::uint16_t port() const;
  std::string host() const;     // the bound address, e.g. "127.0.0.1" or "::"
  std::string address() const;  // "127.0.0.1:41234" / "[::1]:41234"

  // Stops accepting, closes every connection. Idempotent.
  void stop();

  StoreServerStats stats() const;

  // For the fuzzer and tests: serves `fd`, an already-connected stream socket (e.g. one end of a
  // socketpair), as if it had been accepted; takes ownership. No peer checks apply to it; with
  // `on_probation` it is treated as a peer from a host outside the allow-list (it must prove the
  // job secret first: StoreServerOptions::job_secret).
  void serve_connected(int fd, bool on_probation = false);
  // Recounts what the limits account for (stored bytes, waiters) from the data itself; returns
  // "" when the running counters agree, else what differs. Linear in the store's size.
  std::string audit() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// Owns an io_context, a StoreServer and the thread running them. For the launcher, tests and
// benchmarks that want a server "in the background". Thread-safe accessors.
class StoreServerThread {
 public:
  explicit StoreServerThread(StoreServerOptions options);  // binds, then starts the thread
  ~StoreServerThread();                                    // stops and joins
  std::uint16_t port() const;
  std::string address() const;
  StoreServerStats stats() const;  // posted to the loop and waited for
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpurun::rendezvous
