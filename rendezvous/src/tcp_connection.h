// One TcpStore connection (detail of tcp_store.cc): a non-blocking socket with poll() deadlines,
// its write and read buffers, connecting with backoff and the 2.x handshake. Every failure names
// the store's address and the step; a deadline that passes is reported to the caller (send and
// receive return false) or, through exchange(), as a StoreTimeout.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gpurun/common/duration.h"
#include "gpurun/common/unique_fd.h"
#include "gpurun/rendezvous/tcp_store.h"
#include "protocol.h"

namespace gpurun::rendezvous::detail {

inline constexpr std::size_t kMaxKeysInMessage = 8;

// "'a', 'b' and 3 more".
std::string quote_keys(std::span<const std::string> keys);

// What an I/O step belongs to, for error messages.
struct What {
  std::string_view op;
  std::span<const std::string> keys = {};  // user keys (without the wire prefix)
};
std::string describe(const What& w);  // "get of key(s) 'k'"

struct Deadline {
  std::chrono::milliseconds timeout;
  Clock::time_point at;
  explicit Deadline(std::chrono::milliseconds t) : timeout(t), at(deadline_after(t)) {}
};

class Connection {
 public:
  // Connects to opts.host:opts.port with exponential backoff until `budget` runs out (progress
  // lines meanwhile), then does the 2.x handshake (VALIDATE + PING, and with a job secret
  // AUTH_CHALLENGE, then AUTH_PROOF if the server asks for one). Throws NetworkError naming
  // `address`, how long it tried and why; ProtocolError when the server answers wrongly.
  static std::unique_ptr<Connection> open(const TcpStoreOptions& opts, const std::string& address,
                                          std::chrono::milliseconds budget);

  // Requests are appended here, then sent.
  std::vector<std::uint8_t>& wbuf() { return wbuf_; }
  // Sends wbuf(); false when `deadline` passes first. Throws NetworkError when the connection
  // fails.
  bool send(Clock::time_point deadline, const What& w);
  // Reads until a complete reply of `kind` is buffered; false when `deadline` passes first. The
  // views in `out` stay valid until the next receive (a MULTI_GET reply of 0 values is 0 bytes).
  bool receive(protocol::ReplyKind kind, std::uint64_t count, protocol::Reply& out,
               Clock::time_point deadline, const What& w);
  // send(), then (unless `kind` is nullopt) receive(); running out of `d` throws StoreTimeout
  // naming `w` and the setting that raises the limit.
  void exchange(const Deadline& d, const What& w, std::optional<protocol::ReplyKind> kind,
                std::uint64_t count, protocol::Reply& r);
  // The caller has copied what it needs out of the last reply.
  void consumed() {
    if (rpos_ == rlen_) rpos_ = rlen_ = 0;
  }
  // Open, with no unread bytes: may go back to the pool.
  bool reusable() const { return fd_ && rpos_ == rlen_; }
  // Never reuse this connection (a stray reply may follow); the next request opens another.
  void discard() { fd_.reset(); }
  bool is_open() const { return static_cast<bool>(fd_); }
  Dialect dialect() const { return dialect_; }  // never kAuto once open

  Connection(UniqueFd fd, const TcpStoreOptions& opts, std::string address);

 private:
  static UniqueFd connect_once(const TcpStoreOptions& opts, Clock::time_point deadline,
                               std::string& err);
  void handshake(Clock::time_point deadline);
  // Dialect::kAuto after a 2.x handshake the server dropped: 1.13 on this new connection, if a
  // 1.13 GETNUMKEYS is answered. Throws ProtocolError naming both tries when it is not.
  void confirm_v113(Clock::time_point deadline, const std::string& v2_error);
  // Reads the AUTH_CHALLENGE reply and, if it holds a nonce, proves job_secret_ (job_secret.h).
  void prove_secret(Clock::time_point deadline);
  // Returns false on timeout; throws NetworkError on failure.
  bool wait_fd(short events, Clock::time_point deadline, const What& w);
  [[noreturn]] void io_error(const What& w, const std::string& why) const;
  [[noreturn]] void io_timeout(const What& w, std::chrono::milliseconds t) const;

  UniqueFd fd_;
  Dialect dialect_;
  std::string timeout_setting_;  // named in timeout messages
  std::string address_;
  std::string job_secret_;  // proven when the server asks ("" = none; TcpStore resolved it)
  std::vector<std::uint8_t> wbuf_;
  std::vector<std::uint8_t> rbuf_;
  std::size_t rlen_ = 0;  // valid bytes in rbuf_
  std::size_t rpos_ = 0;  // start of the next unread reply
};

}  // namespace gpurun::rendezvous::detail
