// The store server's requests: each parsed request becomes KvState calls and a reply, after the
// output cap and the buffer budget admit the reply and the store budget admits the data. Also
// the last wills, the pins of streamed values, the stats and the audit.
#include "server_core.h"

#include <fmt/format.h>

#include <algorithm>

#include "job_secret.h"
#include "session.h"

namespace gpurun::rendezvous::server {

using protocol::Op;
using protocol::Request;

ServerCore::ServerCore(asio::io_context& io, StoreServerOptions opts)
    : io_(io),
      opts_(std::move(opts)),
      acceptor_(io),
      accept_retry_(io),
      sweep_(io),
      kv_(KvLimits{opts_.max_store_bytes, opts_.max_value_bytes}, this) {
  limits_.max_key_bytes = opts_.max_key_bytes;
  limits_.max_value_bytes = opts_.max_value_bytes;
  limits_.max_keys_per_request = opts_.max_keys_per_request;
  own_uid_ = ::geteuid();
}

StoreServerStats ServerCore::stats() const {
  StoreServerStats st;
  st.connections_accepted = accepted_;
  st.connections_open = sessions_.size();
  st.connections_rejected = rejected_;
  st.connections_refused = refused_;
  st.keys = kv_.num_keys();
  st.waiters = kv_.waiters();
  st.store_bytes = kv_.bytes();
  st.buffer_bytes = buffer_bytes_;
  st.max_connections = max_connections_;
  return st;
}

std::string ServerCore::audit() const {
  std::uint64_t bytes = kv_.recount();
  std::uint64_t out = 0;
  for (const Session* s : sessions_) {
    bytes += s->will_bytes_;
    out += s->queued();
  }
  std::string why;
  if (bytes != kv_.bytes()) {
    why += fmt::format("store bytes counted {} but recounted {}; ", kv_.bytes(), bytes);
  }
  why += kv_.audit_waits();
  if (kv_.bytes() > opts_.max_store_bytes) {
    why += fmt::format("store bytes {} over the budget {}; ", kv_.bytes(), opts_.max_store_bytes);
  }
  if (out > buffer_bytes_)
    why += fmt::format("queued output {} over the buffer total {}; ", out, buffer_bytes_);
  return why;
}

void ServerCore::on_session_closed(Session* s) {
  sessions_.erase(s);
  kv_.charge(-static_cast<std::int64_t>(s->will_bytes_));  // what wills store is counted below
  s->will_bytes_ = 0;
  if (stopped_) return;  // the server going down is nobody's death
  // The peer is gone (EOF, reset, protocol error): its wills fire, each only if its target is
  // still absent, so the first reason written for a key (by a live peer or a will) stays.
  auto wills = std::move(s->wills_);
  for (const auto& [target, value] : wills) {
    if (kv_.find(target) != nullptr) continue;
    GPURUN_LOG_DEBUG("store", "connection from {} closed; its will sets '{}'", s->peer(),
                     printable(target));
    // Fits: the will's bytes were budgeted and released just above.
    (void)kv_.set(target, value);
  }
  kv_.deliver();
}

void ServerCore::cancel_wait(Session& s) { kv_.cancel_wait(s); }

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
  if (!ok(s, kv_.can_set(key, value.size()), req, key)) return;
  (void)kv_.set_moved(std::move(key), std::move(value));
  kv_.deliver();
}

bool ServerCore::ok(Session& s, const KvStatus& st, const Request& req, std::string_view key) {
  switch (st.code) {
    case KvStatus::kOk:
      return true;
    case KvStatus::kOverBudget:
      s.close(fmt::format("store memory budget full: its {} of key '{}' needs {} more bytes but "
                          "{} of {} are in use (raise --max-store-bytes / GPURUN_STORE_MAX_BYTES, "
                          "or store less)",
                          protocol::op_name(req.op), printable(key), st.amount, kv_.bytes(),
                          mib(opts_.max_store_bytes)),
              log::Level::kError);
      return false;
    case KvStatus::kNotInteger:
      s.close(fmt::format("ADD on key '{}' whose value is not an integer", printable(req.key)));
      return false;
    case KvStatus::kValueTooLarge:
      s.close(
          fmt::format("APPEND to key '{}' would make its value {} bytes, over the limit of "
                      "{} (--max-value-bytes)",
                      printable(req.key), st.amount, mib(opts_.max_value_bytes)));
      return false;
  }
  return false;
}

std::size_t ServerCore::single_reply_limit() const {
  return std::max(opts_.max_output_bytes, opts_.max_value_bytes + 64);
}

// Exact size of the reply `req` gets now (0 for requests without one).
std::size_t ServerCore::reply_size(const Request& req) const {
  auto value_len = [&](std::string_view k) -> std::size_t {
    const std::string* v = kv_.find(k);
    return v == nullptr ? 0 : v->size();
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
      const std::string* front = kv_.queue_front(req.key);
      return 16 + (front == nullptr ? 0 : front->size());
    }
    case Op::kAdd:
    case Op::kGetNumKeys:
    case Op::kDeleteKey:
    case Op::kQueueLen:
      return 8;
    case Op::kPing:
      return 4;
    case Op::kAuthChallenge:
      return 8 + auth::kNonceBytes;
    case Op::kAuthProof:
      return 1;
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

void ServerCore::set_will(Session& s, const Request& req) {
  std::string target(req.key.substr(kWillKeyPrefix.size()));
  if (s.wills_.size() >= kMaxWills && !s.wills_.count(target)) {
    s.close(fmt::format("more than {} last wills on one connection", kMaxWills));
    return;
  }
  // Pending wills count against the store budget like stored entries.
  auto w = s.wills_.find(target);
  std::int64_t old =
      w == s.wills_.end()
          ? 0
          : static_cast<std::int64_t>(KvState::entry_bytes(w->first, w->second.size()));
  std::int64_t now = static_cast<std::int64_t>(KvState::entry_bytes(target, req.value.size()));
  if (!ok(s, kv_.reserve(now - old), req, req.key)) return;
  kv_.charge(now - old);
  s.will_bytes_ += static_cast<std::size_t>(now - old);
  s.wills_[std::move(target)] = std::string(req.value);
}

void ServerCore::delete_will(Session& s, const Request& req) {
  auto w = s.wills_.find(req.key.substr(kWillKeyPrefix.size()));
  const bool had = w != s.wills_.end();
  if (had) {
    std::size_t bytes = KvState::entry_bytes(w->first, w->second.size());
    kv_.charge(-static_cast<std::int64_t>(bytes));
    s.will_bytes_ -= bytes;
    s.wills_.erase(w);
  }
  protocol::reply_i64(s.out(), had ? 1 : 0);
}

Handled ServerCore::handle(Session& s, const Request& req) {
  Handled h;
  try {
    h = dispatch(s, req);
  } catch (...) {
    kv_.deliver();
    throw;
  }
  // Waiters woken by this request hear of it after its own reply is queued.
  kv_.deliver();
  return h;
}

// A peer on probation may only prove the job secret; anything else closes it (true).
bool ServerCore::on_probation_refused(Session& s, const Request& req) {
  if (!s.probation_until_) return false;
  switch (req.op) {
    case Op::kValidate:
    case Op::kPing:
    case Op::kAuthChallenge:
    case Op::kAuthProof:
      return false;
    default:
      break;
  }
  ++refused_;
  s.close(fmt::format(
      "it sent {} without proving the job secret first; it connected from a host "
      "outside the job's allow-list{} (PyTorch clients there need --rdzv-allow; "
      "gpurun's prove GPURUN_JOB_SECRET)",
      protocol::op_name(req.op), allowed_.restricts() ? " (" + allowed_.describe() + ")" : ""));
  return true;
}

void ServerCore::auth_challenge(Session& s) {
  if (!s.probation_until_) {  // trusted already: nothing to prove
    protocol::reply_bytes(s.out(), "");
    return;
  }
  s.nonce_ = auth::make_nonce();
  protocol::reply_bytes(s.out(), s.nonce_);
}

void ServerCore::auth_proof(Session& s, const Request& req) {
  if (!s.probation_until_) {
    protocol::reply_u8(s.out(), 0);
    return;
  }
  if (s.nonce_.empty()) {
    s.close("AUTH_PROOF without an AUTH_CHALLENGE before it");
    return;
  }
  if (!auth::proof_matches(opts_.job_secret, s.nonce_, req.key)) {
    ++refused_;
    s.close(
        "its job-secret proof is wrong: its GPURUN_JOB_SECRET differs from this store's (set the "
        "same value on every node)");
    return;
  }
  s.probation_until_.reset();
  s.nonce_.clear();
  const auto host = unmapped(s.endpoint().address());
  if (!vouched(host)) {
    vouched_.push_back(host);
    GPURUN_LOG_INFO("store", "{} proved the job secret: host {} is admitted as one of the job's",
                    s.peer(), host.to_string());
  }
  protocol::reply_u8(s.out(), 0);
}

Handled ServerCore::dispatch(Session& s, const Request& req) {
  if (on_probation_refused(s, req)) return Handled::kDone;
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
        set_will(s, req);
        break;
      }
      if (req.value.size() > kSlicedSetAbove) {  // budget checked now and again when stored
        if (!ok(s, kv_.can_set(req.key, req.value.size()), req, req.key)) break;
        s.start_sliced_set(req.key, req.value);
        return Handled::kSliced;
      }
      (void)ok(s, kv_.set(req.key, req.value), req, req.key);
      break;
    case Op::kCompareSet: {
      std::string_view reply;
      if (ok(s, kv_.compare_set(req.key, req.value, req.value2, reply), req, req.key)) {
        protocol::reply_bytes(out, reply);
      }
      break;
    }
    case Op::kGet: {
      const std::string* v = kv_.find(req.key);
      if (v != nullptr && v->size() > kStreamAbove) {
        protocol::reply_i64(out, static_cast<std::int64_t>(v->size()));  // the length
        s.start_body(req.key, *v);
        pins_[std::string(req.key)].push_back(&s);
        return Handled::kStreaming;
      }
      protocol::reply_bytes(out, v == nullptr ? std::string_view() : std::string_view(*v));
      break;
    }
    case Op::kAdd: {
      std::int64_t result = 0;
      if (ok(s, kv_.add(req.key, req.delta, result), req, req.key)) {
        protocol::reply_i64(out, result);
      }
      break;
    }
    case Op::kCheck: {
      bool all = true;
      protocol::for_each_key(req, [&](std::string_view k) {
        if (all && !kv_.exists(k)) all = false;
      });
      protocol::reply_u8(out, all ? protocol::kCheckReady : protocol::kCheckNotReady);
      break;
    }
    case Op::kWait: {
      keys_.clear();
      protocol::for_each_key(req, [&](std::string_view k) { keys_.push_back(k); });
      bool ready = false;
      if (!ok(s, kv_.wait(s, keys_, ready), req, req.count > 0 ? "(wait registrations)" : "")) {
        break;
      }
      if (ready) protocol::reply_u8(out, protocol::kStopWaiting);
      break;
    }
    case Op::kGetNumKeys:
      protocol::reply_i64(out, static_cast<std::int64_t>(kv_.num_keys()));
      break;
    case Op::kDeleteKey:
      if (req.key.starts_with(kWillKeyPrefix)) {
        delete_will(s, req);
        break;
      }
      protocol::reply_i64(out, kv_.erase(req.key) ? 1 : 0);
      break;
    case Op::kAppend:
      (void)ok(s, kv_.append(req.key, req.value), req, req.key);
      break;
    case Op::kMultiGet:
      protocol::for_each_key(req, [&](std::string_view k) {
        const std::string* v = kv_.find(k);
        protocol::reply_bytes(out, v == nullptr ? std::string_view() : std::string_view(*v));
      });
      break;
    case Op::kMultiSet:
      keys_.clear();
      values_.clear();
      protocol::for_each_pair(req, [&](std::string_view k, std::string_view v) {
        keys_.push_back(k);
        values_.push_back(v);
      });
      (void)ok(s, kv_.multi_set(keys_, values_), req, "(multi_set)");
      break;
    case Op::kCancelWait:
      kv_.cancel_wait(s);
      protocol::reply_u8(out, protocol::kWaitCanceled);
      break;
    case Op::kPing:
      protocol::reply_u32(out, req.u32);
      break;
    case Op::kQueuePush:
      (void)ok(s, kv_.queue_push(req.key, req.value), req, req.key);
      break;
    case Op::kQueuePop: {
      std::size_t len = kv_.queue_len(req.key);
      protocol::reply_i64(out, static_cast<std::int64_t>(len));
      if (len > 0) {
        protocol::reply_bytes(out, *kv_.queue_front(req.key));
        kv_.queue_pop(req.key);
      }
      break;
    }
    case Op::kQueueLen:
      protocol::reply_i64(out, static_cast<std::int64_t>(kv_.queue_len(req.key)));
      break;
    case Op::kWatchKey:
      s.close("WATCH_KEY (the PyTorch 1.13 watch/callback API) is not supported");
      break;
    case Op::kAuthChallenge:
      auth_challenge(s);
      break;
    case Op::kAuthProof:
      auth_proof(s, req);
      break;
  }
  return Handled::kDone;
}

}  // namespace gpurun::rendezvous::server
