// One store connection: its socket, read buffer, parser and write queue. It reads only while its
// queued replies are under --max-output-bytes and the server's buffer budget allows, hands each
// complete request to the ServerCore, writes replies directly when the socket takes them (else
// asynchronously), streams large GET replies and slices large SETs over several loop turns, and
// keeps itself alive through shared_from_this while an operation is pending.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gpurun/common/log.h"
#include "server_core.h"

namespace gpurun::rendezvous::server {

class Session final : public std::enable_shared_from_this<Session>, public KvWaiter {
 public:
  Session(std::shared_ptr<ServerCore> core, tcp::socket sock, const tcp::endpoint& peer);

  void start() { maybe_read(); }

  // Closes the socket and drops its wait registration. A non-empty reason is logged as a
  // protocol violation (rate-limited). Idempotent.
  void close(std::string_view reason, log::Level level = log::Level::kWarn);

  // Every key of this connection's WAIT exists: STOP_WAITING (after a streamed reply, if one is
  // being sent).
  void keys_ready() override;

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
  void account();

  // A SET whose value is copied into the store in slices (see kSlicedSetAbove).
  void start_sliced_set(std::string_view key, std::string_view value);
  // Starts streaming `body` (a stored value) as the rest of the reply whose header is queued.
  void start_body(std::string_view key, std::string_view body);
  // The stored value is about to change: keep what is left to send (one copy).
  void detach_body();

  const tcp::endpoint& endpoint() const { return peer_; }
  // On probation (the job secret, StoreServerOptions::job_secret): a peer from a host outside
  // the allow-list, closed at this time unless it has proven the secret by then. nullopt: trusted.
  std::optional<std::chrono::steady_clock::time_point> probation_until_;
  std::string nonce_;  // the AUTH_CHALLENGE nonce it was sent
  bool probation_overdue(std::chrono::steady_clock::time_point now) const {
    return probation_until_ && now >= *probation_until_;
  }

  // Last wills (kWillKeyPrefix): target key -> value, applied when the peer goes away.
  std::map<std::string, std::string, std::less<>> wills_;
  std::size_t will_bytes_ = 0;  // store-budget bytes of wills_

 private:
  void maybe_read();
  void on_read(const boost::system::error_code& ec, std::size_t n);
  // Handles every complete request in the buffer, until one has to wait for output space.
  void process();
  void post_slice();
  // One turn's worth of a sliced SET; the last one stores it and resumes the connection.
  void slice();
  // Writes what is queued, retries a deferred request once there is room, and reads again.
  void pump(bool retry);
  void flush();
  void on_write(const boost::system::error_code& ec);

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

}  // namespace gpurun::rendezvous::server
