// gpurun's TCPStore-compatible server: one Asio event loop, no thread per client, speaking both
// the PyTorch 1.13 and 2.x dialects (detected per connection). Blocking ops (WAIT) never block
// the loop: waiters are registered per key and woken on set/add/append/compare_set/multi_set.
// A malformed or oversized request closes only that connection (logged with peer and reason).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace boost::asio {
class io_context;
}

namespace gpurun::rendezvous {

struct StoreServerOptions {
  std::string host = "127.0.0.1";  // "0.0.0.0" / "::" for every interface; names are resolved
  std::uint16_t port = 0;          // 0 = pick a free port (read it back with port())
  std::size_t max_key_bytes = 64 * 1024;            // PyTorch libuv accepts 8 KiB
  std::size_t max_value_bytes = 256 * 1024 * 1024;  // PyTorch libuv accepts 8 MiB
  std::size_t max_keys_per_request = 1 << 20;       // PyTorch libuv accepts 131072
  std::size_t max_connections = 1 << 20;            // bounded by RLIMIT_NOFILE too
  bool raise_fd_limit = true;  // raise RLIMIT_NOFILE soft limit to the hard limit at start
};

struct StoreServerStats {
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_open = 0;
  std::uint64_t connections_rejected = 0;  // protocol errors / limits
  std::uint64_t keys = 0;
  std::uint64_t waiters = 0;
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

// `gpurun store [--host H] [--port P]` / the gpurun-store binary: runs a server in the foreground,
// prints "gpurun store listening on <addr>" on stdout, stops on SIGINT/SIGTERM. Returns exit code.
int store_main(int argc, char** argv);

}  // namespace gpurun::rendezvous
