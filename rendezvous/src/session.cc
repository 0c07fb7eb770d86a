#include "session.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <cstring>

namespace gpurun::rendezvous::server {
namespace {

constexpr std::size_t kInitialReadBuffer = 4096;
constexpr std::size_t kMinReadSpace = 2048;
constexpr std::size_t kShrinkAbove = 1 << 20;

}  // namespace

Session::Session(std::shared_ptr<ServerCore> core, tcp::socket sock, const tcp::endpoint& peer)
    : core_(std::move(core)), sock_(std::move(sock)), peer_(peer), parser_(core_->limits()) {
  boost::system::error_code ignored;
  sock_.non_blocking(true, ignored);  // flush() first tries a direct, non-blocking write
}

void Session::close(std::string_view reason, log::Level level) {
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

void Session::keys_ready() {
  if (closed_) return;
  if (streaming_) {  // not in the middle of a streamed GET reply: right after it
    wait_reply_after_body_ = true;
    return;
  }
  protocol::reply_u8(out_, protocol::kStopWaiting);
  flush();
  account();
}

void Session::account() {
  std::size_t now = in_cap_ + out_.capacity() + writing_.capacity();
  core_->buffer_delta(static_cast<std::int64_t>(now) - static_cast<std::int64_t>(accounted_));
  accounted_ = now;
}

void Session::start_sliced_set(std::string_view key, std::string_view value) {
  slice_key_.assign(key);
  slice_value_.clear();
  slice_value_.reserve(value.size());
  slice_src_ = value;
}

void Session::start_body(std::string_view key, std::string_view body) {
  streaming_ = true;
  body_key_.assign(key);
  body_ = body;
  body_off_ = 0;
}

void Session::detach_body() {
  body_owned_.assign(body_.substr(body_off_));
  body_ = body_owned_;
  body_off_ = 0;
}

void Session::maybe_read() {
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
  sock_.async_read_some(asio::buffer(in_.get() + in_end_, std::min(in_cap_ - in_end_, kTurnBytes)),
                        [self = shared_from_this()](const boost::system::error_code& ec,
                                                    std::size_t n) { self->on_read(ec, n); });
}

void Session::on_read(const boost::system::error_code& ec, std::size_t n) {
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

void Session::process() {
  protocol::Request req;
  bool progressed = false;
  while (!closed_) {
    std::span<const std::uint8_t> buf(in_.get() + in_begin_, in_end_ - in_begin_);
    if (buf.size() < parser_.need()) break;
    protocol::ParseStatus st = parser_.parse(buf, req);
    if (st == protocol::ParseStatus::kNeedMore) break;
    if (st == protocol::ParseStatus::kError) {
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

void Session::post_slice() {
  asio::post(core_->io(), [self = shared_from_this()] { self->slice(); });
}

void Session::slice() {
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

void Session::pump(bool retry) {
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

void Session::flush() {
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
                    [self = shared_from_this()](const boost::system::error_code& wec, std::size_t) {
                      self->on_write(wec);
                    });
}

void Session::on_write(const boost::system::error_code& ec) {
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

}  // namespace gpurun::rendezvous::server
