#include "protocol.h"

#include <fmt/format.h>

#include <bit>

#include "gpurun/common/error.h"

namespace gpurun::rendezvous::protocol {

static_assert(std::endian::native == std::endian::little,
              "the TCPStore wire format is the host byte order of little-endian PyTorch hosts");

namespace {

const char* dialect_name(Dialect d) { return d == Dialect::kV113 ? "1.13" : "2.x"; }

// Field programs: the payload layout of each op after its type byte (§5).
enum class F : std::uint8_t { kEnd, kKey, kVal1, kVal2, kI64, kU32, kCount, kKeys, kPairs };

const F* program(Op op) {
  static constexpr F kKeyOnly[] = {F::kKey, F::kEnd};
  static constexpr F kKeyVal[] = {F::kKey, F::kVal1, F::kEnd};
  static constexpr F kKeyValVal[] = {F::kKey, F::kVal1, F::kVal2, F::kEnd};
  static constexpr F kKeyI64[] = {F::kKey, F::kI64, F::kEnd};
  static constexpr F kKeyList[] = {F::kCount, F::kKeys, F::kEnd};
  static constexpr F kPairList[] = {F::kCount, F::kPairs, F::kEnd};
  static constexpr F kNothing[] = {F::kEnd};
  static constexpr F kU32Only[] = {F::kU32, F::kEnd};
  switch (op) {
    case Op::kValidate:
      return kU32Only;
    case Op::kSet:
      return kKeyVal;
    case Op::kCompareSet:
      return kKeyValVal;
    case Op::kGet:
      return kKeyOnly;
    case Op::kAdd:
      return kKeyI64;
    case Op::kCheck:
      return kKeyList;
    case Op::kWait:
      return kKeyList;
    case Op::kGetNumKeys:
      return kNothing;
    case Op::kDeleteKey:
      return kKeyOnly;
    case Op::kAppend:
      return kKeyVal;
    case Op::kMultiGet:
      return kKeyList;
    case Op::kMultiSet:
      return kPairList;
    case Op::kCancelWait:
      return kNothing;
    case Op::kPing:
      return kU32Only;
    case Op::kQueuePush:
      return kKeyVal;
    case Op::kQueuePop:
      return kKeyOnly;
    case Op::kQueueLen:
      return kKeyOnly;
    case Op::kWatchKey:
      return kKeyOnly;
    case Op::kAuthChallenge:
      return kNothing;
    case Op::kAuthProof:
      return kKeyOnly;
  }
  return kNothing;
}

}  // namespace

const char* op_name(Op op) {
  switch (op) {
    case Op::kValidate:
      return "VALIDATE";
    case Op::kSet:
      return "SET";
    case Op::kCompareSet:
      return "COMPARE_SET";
    case Op::kGet:
      return "GET";
    case Op::kAdd:
      return "ADD";
    case Op::kCheck:
      return "CHECK";
    case Op::kWait:
      return "WAIT";
    case Op::kGetNumKeys:
      return "GETNUMKEYS";
    case Op::kDeleteKey:
      return "DELETE_KEY";
    case Op::kAppend:
      return "APPEND";
    case Op::kMultiGet:
      return "MULTI_GET";
    case Op::kMultiSet:
      return "MULTI_SET";
    case Op::kCancelWait:
      return "CANCEL_WAIT";
    case Op::kPing:
      return "PING";
    case Op::kQueuePush:
      return "QUEUE_PUSH";
    case Op::kQueuePop:
      return "QUEUE_POP";
    case Op::kQueueLen:
      return "QUEUE_LEN";
    case Op::kWatchKey:
      return "WATCH_KEY";
    case Op::kAuthChallenge:
      return "AUTH_CHALLENGE";
    case Op::kAuthProof:
      return "AUTH_PROOF";
  }
  return "?";
}

std::optional<std::uint8_t> wire_byte(Dialect dialect, Op op) {
  auto v = static_cast<std::uint8_t>(op);
  if (dialect == Dialect::kV2) {
    if (op == Op::kWatchKey) return std::nullopt;
    return v;
  }
  // 1.13 (§6.2): 2.x x+1 -> x for SET..GETNUMKEYS, WATCH_KEY = 7, DELETE_KEY = 8, nothing else.
  if (v >= 0x01 && v <= 0x07) return static_cast<std::uint8_t>(v - 1);
  if (op == Op::kWatchKey) return 0x07;
  if (op == Op::kDeleteKey) return 0x08;
  return std::nullopt;  // nor gpurun's AUTH_* (2.x only)
}

std::optional<Op> op_from_wire(Dialect dialect, std::uint8_t byte) {
  if (dialect == Dialect::kV2) {
    if (byte <= 0x10) return static_cast<Op>(byte);
    if (byte == static_cast<std::uint8_t>(Op::kAuthChallenge)) return Op::kAuthChallenge;
    if (byte == static_cast<std::uint8_t>(Op::kAuthProof)) return Op::kAuthProof;
    return std::nullopt;
  }
  if (byte <= 0x06) return static_cast<Op>(byte + 1);
  if (byte == 0x07) return Op::kWatchKey;
  if (byte == 0x08) return Op::kDeleteKey;
  return std::nullopt;
}

// ---- RequestParser ---------------------------------------------------------------------------

RequestParser::RequestParser(Limits limits, std::optional<Dialect> fixed)
    : limits_(limits), dialect_(fixed) {}

ParseStatus RequestParser::fail(std::string why) {
  failed_ = true;
  error_ = std::move(why);
  return ParseStatus::kError;
}

ParseStatus RequestParser::need_more(std::size_t total) {
  need_ = total;
  return ParseStatus::kNeedMore;
}

ParseStatus RequestParser::detect(std::span<const std::uint8_t> buf, Request& out) {
  static constexpr std::uint8_t kMagic[4] = {0xCE, 0xF7, 0x85, 0x3C};
  if (buf.empty()) return need_more(1);
  if (buf[0] != 0x00) {
    dialect_ = Dialect::kV113;
    return ParseStatus::kNeedMore;  // caller continues with the normal parse
  }
  std::size_t have = std::min<std::size_t>(buf.size(), 5);
  for (std::size_t i = 1; i < have; ++i) {
    if (buf[i] != kMagic[i - 1]) {
      dialect_ = Dialect::kV113;  // a 1.13 SET whose key length starts in byte 1
      return ParseStatus::kNeedMore;
    }
  }
  if (have < 5) return need_more(5);
  dialect_ = Dialect::kV2;
  out = Request{};
  out.op = Op::kValidate;
  out.u32 = kValidationMagic;
  consumed_ = 5;
  return ParseStatus::kRequest;
}

ParseStatus RequestParser::parse(std::span<const std::uint8_t> buf, Request& out) {
  if (failed_) return ParseStatus::kError;
  consumed_ = 0;
  if (!dialect_) {
    ParseStatus st = detect(buf, out);
    if (!dialect_ || st == ParseStatus::kRequest) return st;
  }
  if (!in_request_) {
    if (buf.empty()) return need_more(1);
    auto op = op_from_wire(*dialect_, buf[0]);
    if (!op) {
      return fail(
          fmt::format("unknown query type 0x{:02x} ({} dialect)", buf[0], dialect_name(*dialect_)));
    }
    if (*op == Op::kValidate) {
      return fail("VALIDATE sent again on an already validated 2.x connection");
    }
    op_ = *op;
    in_request_ = true;
    pos_ = 1;
    step_ = 0;
    sub_ = 0;
    n_ = i_ = 0;
  }

  // Takes one length-prefixed string at pos_; returns a status to stop with, or nothing.
  auto take = [&](std::size_t limit, const char* what, std::size_t& off,
                  std::size_t& len) -> std::optional<ParseStatus> {
    if (buf.size() < pos_ + 8) return need_more(pos_ + 8);
    std::uint64_t l = load_u64(buf.data() + pos_);
    if (l > limit) {
      return fail(fmt::format("{} length {} exceeds the limit of {} bytes in {}", what, l, limit,
                              op_name(op_)));
    }
    if (buf.size() - pos_ - 8 < l) return need_more(pos_ + 8 + static_cast<std::size_t>(l));
    off = pos_ + 8;
    len = static_cast<std::size_t>(l);
    pos_ += 8 + len;
    return std::nullopt;
  };

  const F* prog = program(op_);
  for (;;) {
    switch (prog[step_]) {
      case F::kEnd: {
        auto view = [&](std::size_t off, std::size_t len) {
          return std::string_view(reinterpret_cast<const char*>(buf.data()) + off, len);
        };
        out = Request{};
        out.op = op_;
        out.key = view(key_off_, key_len_);
        out.value = view(v1_off_, v1_len_);
        out.value2 = view(v2_off_, v2_len_);
        out.delta = delta_;
        out.u32 = u32_;
        out.count = n_;
        if (body_off_ != 0) out.body = view(body_off_, pos_ - body_off_);
        consumed_ = pos_;
        in_request_ = false;
        pos_ = 0;
        key_off_ = key_len_ = v1_off_ = v1_len_ = v2_off_ = v2_len_ = body_off_ = 0;
        delta_ = 0;
        u32_ = 0;
        need_ = 1;
        return ParseStatus::kRequest;
      }
      case F::kKey:
        if (auto s = take(limits_.max_key_bytes, "key", key_off_, key_len_)) return *s;
        break;
      case F::kVal1:
        if (auto s = take(limits_.max_value_bytes, "value", v1_off_, v1_len_)) return *s;
        break;
      case F::kVal2:
        if (auto s = take(limits_.max_value_bytes, "value", v2_off_, v2_len_)) return *s;
        break;
      case F::kI64:
        if (buf.size() < pos_ + 8) return need_more(pos_ + 8);
        delta_ = static_cast<std::int64_t>(load_u64(buf.data() + pos_));
        pos_ += 8;
        break;
      case F::kU32:
        if (buf.size() < pos_ + 4) return need_more(pos_ + 4);
        u32_ = load_u32(buf.data() + pos_);
        pos_ += 4;
        break;
      case F::kCount: {
        if (buf.size() < pos_ + 8) return need_more(pos_ + 8);
        std::uint64_t n = load_u64(buf.data() + pos_);
        if (n > limits_.max_keys_per_request) {
          return fail(fmt::format("{} keys in one {} exceed the limit of {}", n, op_name(op_),
                                  limits_.max_keys_per_request));
        }
        n_ = n;
        i_ = 0;
        pos_ += 8;
        body_off_ = pos_;
        break;
      }
      case F::kKeys:
        while (i_ < n_) {
          std::size_t off, len;
          if (auto s = take(limits_.max_key_bytes, "key", off, len)) return *s;
          ++i_;
        }
        break;
      case F::kPairs:
        while (i_ < n_) {
          std::size_t off, len;
          if (sub_ == 0) {
            if (auto s = take(limits_.max_key_bytes, "key", off, len)) return *s;
            sub_ = 1;
          }
          if (auto s = take(limits_.max_value_bytes, "value", off, len)) return *s;
          sub_ = 0;
          ++i_;
        }
        break;
    }
    ++step_;
  }
}

// ---- request encoders ------------------------------------------------------------------------

namespace {

Writer begin(Dialect d, Op op, std::vector<std::uint8_t>& out) {
  auto b = wire_byte(d, op);
  if (!b) {
    throw ProtocolError(fmt::format("{} is not part of the PyTorch {} store protocol", op_name(op),
                                    dialect_name(d)));
  }
  Writer w(out);
  w.u8(*b);
  return w;
}

// SET, APPEND and QUEUE_PUSH share one body: the key, then the value, both length-prefixed.
void encode_key_value(Dialect d, Op op, std::string_view key, std::span<const std::uint8_t> value,
                      std::vector<std::uint8_t>& out) {
  Writer w = begin(d, op, out);
  w.str(key);
  w.bytes(value);
}

}  // namespace

void encode_validate(Dialect d, std::vector<std::uint8_t>& out) {
  if (d != Dialect::kV2) throw ProtocolError("VALIDATE is only part of the 2.x store protocol");
  Writer w(out);
  w.u8(0x00);
  w.u32(kValidationMagic);
}

void encode_ping(Dialect d, std::uint32_t nonce, std::vector<std::uint8_t>& out) {
  begin(d, Op::kPing, out).u32(nonce);
}

void encode_set(Dialect d, std::string_view key, std::span<const std::uint8_t> value,
                std::vector<std::uint8_t>& out) {
  encode_key_value(d, Op::kSet, key, value, out);
}

void encode_get(Dialect d, std::string_view key, std::vector<std::uint8_t>& out) {
  begin(d, Op::kGet, out).str(key);
}

void encode_add(Dialect d, std::string_view key, std::int64_t delta,
                std::vector<std::uint8_t>& out) {
  Writer w = begin(d, Op::kAdd, out);
  w.str(key);
  w.i64(delta);
}

void encode_compare_set(Dialect d, std::string_view key, std::span<const std::uint8_t> expected,
                        std::span<const std::uint8_t> desired, std::vector<std::uint8_t>& out) {
  Writer w = begin(d, Op::kCompareSet, out);
  w.str(key);
  w.bytes(expected);
  w.bytes(desired);
}

void encode_keys(Dialect d, Op op, std::span<const std::string> keys,
                 std::vector<std::uint8_t>& out) {
  Writer w = begin(d, op, out);
  w.u64(keys.size());
  for (const auto& k : keys) w.str(k);
}

void encode_num_keys(Dialect d, std::vector<std::uint8_t>& out) { begin(d, Op::kGetNumKeys, out); }

void encode_delete_key(Dialect d, std::string_view key, std::vector<std::uint8_t>& out) {
  begin(d, Op::kDeleteKey, out).str(key);
}

void encode_append(Dialect d, std::string_view key, std::span<const std::uint8_t> value,
                   std::vector<std::uint8_t>& out) {
  encode_key_value(d, Op::kAppend, key, value, out);
}

void encode_multi_set(Dialect d, std::span<const std::string> keys,
                      std::span<const std::vector<std::uint8_t>> values,
                      std::vector<std::uint8_t>& out) {
  if (keys.size() != values.size()) {
    throw ProtocolError(
        fmt::format("multi_set given {} keys but {} values", keys.size(), values.size()));
  }
  Writer w = begin(d, Op::kMultiSet, out);
  w.u64(keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) {
    w.str(keys[i]);
    w.bytes(values[i]);
  }
}

void encode_cancel_wait(Dialect d, std::vector<std::uint8_t>& out) {
  begin(d, Op::kCancelWait, out);
}

void encode_queue_push(Dialect d, std::string_view key, std::span<const std::uint8_t> value,
                       std::vector<std::uint8_t>& out) {
  encode_key_value(d, Op::kQueuePush, key, value, out);
}

void encode_queue_pop(Dialect d, std::string_view key, std::vector<std::uint8_t>& out) {
  begin(d, Op::kQueuePop, out).str(key);
}

void encode_queue_len(Dialect d, std::string_view key, std::vector<std::uint8_t>& out) {
  begin(d, Op::kQueueLen, out).str(key);
}

void encode_auth_challenge(Dialect d, std::vector<std::uint8_t>& out) {
  begin(d, Op::kAuthChallenge, out);
}

void encode_auth_proof(Dialect d, std::string_view proof, std::vector<std::uint8_t>& out) {
  begin(d, Op::kAuthProof, out).str(proof);
}

// ---- reply parser ----------------------------------------------------------------------------

ReplyParse parse_reply(ReplyKind kind, std::span<const std::uint8_t> buf, Reply& out,
                       std::uint64_t count, std::uint64_t max_value_bytes) {
  ReplyParse r;
  std::size_t pos = 0;
  auto need = [&](std::size_t total) {
    r.status = ParseStatus::kNeedMore;
    r.need = total;
    return r;
  };
  // 0 = ok, 1 = need more (r filled), 2 = error (r filled)
  auto take_value = [&]() -> int {
    if (buf.size() < pos + 8) {
      need(pos + 8);
      return 1;
    }
    std::uint64_t len = load_u64(buf.data() + pos);
    if (len > max_value_bytes) {
      r.status = ParseStatus::kError;
      r.error =
          fmt::format("reply value length {} exceeds the limit of {} bytes", len, max_value_bytes);
      return 2;
    }
    if (buf.size() - pos - 8 < len) {
      need(pos + 8 + static_cast<std::size_t>(len));
      return 1;
    }
    out.values.emplace_back(reinterpret_cast<const char*>(buf.data()) + pos + 8,
                            static_cast<std::size_t>(len));
    pos += 8 + static_cast<std::size_t>(len);
    return 0;
  };
  out.values.clear();
  switch (kind) {
    case ReplyKind::kU8:
      if (buf.size() < 1) return need(1);
      out.u8 = buf[0];
      pos = 1;
      break;
    case ReplyKind::kU32:
      if (buf.size() < 4) return need(4);
      out.u32 = load_u32(buf.data());
      pos = 4;
      break;
    case ReplyKind::kI64:
      if (buf.size() < 8) return need(8);
      out.i64 = static_cast<std::int64_t>(load_u64(buf.data()));
      pos = 8;
      break;
    case ReplyKind::kBytes:
      if (take_value() != 0) return r;
      break;
    case ReplyKind::kBytesList:
      for (std::uint64_t i = 0; i < count; ++i) {
        if (take_value() != 0) return r;
      }
      break;
    case ReplyKind::kQueuePop:
      if (buf.size() < 8) return need(8);
      out.i64 = static_cast<std::int64_t>(load_u64(buf.data()));
      pos = 8;
      if (out.i64 > 0 && take_value() != 0) return r;
      break;
  }
  r.status = ParseStatus::kRequest;
  r.consumed = pos;
  return r;
}

}  // namespace gpurun::rendezvous::protocol
