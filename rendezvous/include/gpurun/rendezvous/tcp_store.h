// Client of a TCPStore-protocol server: gpurun's StoreServer or PyTorch's own TCPStore server.
// Requests on one connection are strictly sequential (like c10d's client); a small pool gives a
// second thread its own connection while one is blocked in wait()/get(). Blocking I/O with poll()
// deadlines. Connecting retries with exponential backoff until connect_timeout, so the server may
// come up later. Every timeout names the address, the operation and the keys.
#pragma once

#include <memory>
#include <optional>
#include <string_view>

#include "gpurun/common/progress.h"
#include "gpurun/rendezvous/store.h"

namespace gpurun::rendezvous {

// Which wire dialect to speak (rendezvous/WIRE_FORMAT.md §6).
enum class Dialect {
  kV2,    // PyTorch 2.x: VALIDATE magic + PING on connect, 2.x opcode numbers. gpurun's default.
  kV113,  // PyTorch 1.13: no handshake, 1.13 opcode numbers (needed to talk to a torch 1.13
          // server).
  // Whichever the server speaks, found at connect: the 2.x handshake, and if the server drops
  // the connection during it (a 1.13 server does), 1.13 on a new connection, checked with a
  // GETNUMKEYS. For a store run by a launcher of unknown PyTorch version (torchrun). options()
  // then says which was found. PyTorch 2.0-2.4 (2.x without PING) is neither: an error says so.
  kAuto,
};

struct TcpStoreOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 29500;
  std::chrono::milliseconds timeout = Store::kDefaultTimeout;          // per blocking operation
  std::chrono::milliseconds connect_timeout = Store::kDefaultTimeout;  // total connect retry budget
  // Connect retries back off from 10 ms, doubling up to this. Lower it when the server is known
  // to be starting at this very moment (the SDK's self-hosted store): a retry then lands soon
  // after it binds instead of up to a second later.
  std::chrono::milliseconds connect_backoff_max{1000};
  Dialect dialect = Dialect::kV2;
  // Prepend "/" to every key as PyTorch's TCPStore client does, so keys line up with Python peers.
  bool torch_key_prefix = false;
  // When set, the constructor does ADD "init/" 1 like a PyTorch client given world_size.
  std::optional<int> world_size;
  // What a user changes to wait longer, named in timeout messages (the SDK: GPURUN_COMM_TIMEOUT).
  std::string timeout_setting = "TcpStoreOptions::timeout";
  // While connecting fails: a progress line (level warn) at growing intervals from this long
  // (gpurun/common/progress.h); 0 = none.
  std::chrono::milliseconds progress_after = kDefaultProgressAfter;
  // Advice when the server cannot be reached (replaces "is the store server running at that
  // address?"), e.g. which variables the address came from.
  std::string connect_hint;
  // The job secret to prove when the server asks (job_access.h), in the 2.x dialect: nullopt
  // takes GPURUN_JOB_SECRET from the environment, "" proves nothing. Proving it costs nothing
  // where the server does not need it (the challenge rides with the handshake and is answered
  // "not needed"); a server that does not know the request (PyTorch's) fails the handshake with
  // a message saying so.
  std::optional<std::string> job_secret;
};

class TcpStore final : public Store {
 public:
  // Connects (with retry). Throws NetworkError if the server is unreachable by connect_timeout;
  // the message names the address and how long it tried.
  explicit TcpStore(TcpStoreOptions options);
  ~TcpStore() override;

  void set(const std::string& key, const Bytes& value) override;
  using Store::set;
  Bytes get(const std::string& key) override;
  std::int64_t add(const std::string& key, std::int64_t delta) override;
  Bytes compare_set(const std::string& key, const Bytes& expected, const Bytes& desired) override;
  bool check(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys, std::chrono::milliseconds timeout) override;
  using Store::wait;
  bool delete_key(const std::string& key) override;
  std::int64_t num_keys() override;
  std::vector<Bytes> multi_get(const std::vector<std::string>& keys) override;
  void multi_set(const std::vector<std::string>& keys, const std::vector<Bytes>& values) override;
  void append(const std::string& key, const Bytes& value) override;
  std::string describe() const override;  // "store 127.0.0.1:29500"

  // 2.x dialect only: round-trips a PING; returns false if the server did not echo it.
  bool ping();

  // Queues (2.x dialect only: gpurun's StoreServer and PyTorch 2.8+ servers have them; in the
  // 1.13 dialect these throw ProtocolError without sending anything). A queue is a FIFO of values
  // under a key, apart from the key-value map (num_keys() does not count it), but check() and
  // wait() see a non-empty queue as a present key. Keys get the torch "/" prefix like any other.
  void queue_push(const std::string& key, const Bytes& value);
  void queue_push(const std::string& key, std::string_view value) {
    queue_push(key, to_bytes(value));
  }
  // Blocks until the queue has an item, then removes and returns its head. Throws StoreTimeout
  // naming the key and the address when none arrives within `timeout` (default: timeout()).
  Bytes queue_pop(const std::string& key, std::chrono::milliseconds timeout);
  Bytes queue_pop(const std::string& key) { return queue_pop(key, timeout()); }
  // Number of items queued under `key` (0 for a queue never pushed to).
  std::int64_t queue_len(const std::string& key);

  const TcpStoreOptions& options() const { return options_; }

 private:
  struct Impl;
  TcpStoreOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace gpurun::rendezvous
