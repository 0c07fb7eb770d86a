// PyTorch c10d TCPStore wire protocol (1.13 and 2.x dialects) as pure functions over byte spans:
// an incremental request parser (server side), reply encoders, request encoders and reply parsers
// (client side). No sockets, no allocation sized by an untrusted length field. See
// rendezvous/WIRE_FORMAT.md for the byte-level spec; section numbers below refer to it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gpurun/rendezvous/tcp_store.h"  // Dialect

namespace gpurun::rendezvous::protocol {

// Internal opcode set: the 2.x numbering (§2), plus WATCH_KEY which only 1.13 has.
enum class Op : std::uint8_t {
  kValidate = 0x00,
  kSet = 0x01,
  kCompareSet = 0x02,
  kGet = 0x03,
  kAdd = 0x04,
  kCheck = 0x05,
  kWait = 0x06,
  kGetNumKeys = 0x07,
  kDeleteKey = 0x08,
  kAppend = 0x09,
  kMultiGet = 0x0A,
  kMultiSet = 0x0B,
  kCancelWait = 0x0C,
  kPing = 0x0D,
  kQueuePush = 0x0E,
  kQueuePop = 0x0F,
  kQueueLen = 0x10,
  kWatchKey = 0x80,  // 1.13 only (wire 0x07); not served by gpurun
  // gpurun extensions, 2.x dialect only (wire bytes as here; no PyTorch client sends them): the
  // job secret's challenge-response (job_secret.h). AUTH_CHALLENGE (no body) -> bytes: a nonce,
  // or empty when this connection needs no proof; AUTH_PROOF (str: the HMAC) -> u8 0 = accepted
  // (a wrong proof closes the connection instead).
  kAuthChallenge = 0xA0,
  kAuthProof = 0xA1,
};

const char* op_name(Op op);

inline constexpr std::uint32_t kValidationMagic = 0x3C85F7CE;  // bytes CE F7 85 3C
inline constexpr std::uint8_t kCheckReady = 0, kCheckNotReady = 1;
inline constexpr std::uint8_t kStopWaiting = 0, kWaitCanceled = 1;

// Wire type byte of `op` in `dialect`, or nullopt if that dialect has no such op.
std::optional<std::uint8_t> wire_byte(Dialect dialect, Op op);
// Internal op for a wire type byte, or nullopt for an unknown byte. (2.x byte 0 = VALIDATE.)
std::optional<Op> op_from_wire(Dialect dialect, std::uint8_t byte);

// What a server accepts. Defaults equal StoreServerOptions' defaults.
struct Limits {
  std::size_t max_key_bytes = 64 * 1024;
  std::size_t max_value_bytes = 256 * 1024 * 1024;
  std::size_t max_keys_per_request = 1 << 20;
};

// One parsed request. Views point into the buffer given to RequestParser::parse and stay valid
// until the caller consumes or changes those bytes.
struct Request {
  Op op = Op::kValidate;
  std::string_view key;     // SET GET ADD COMPARE_SET DELETE_KEY APPEND QUEUE_* WATCH_KEY
  std::string_view value;   // SET APPEND QUEUE_PUSH value; COMPARE_SET expected
  std::string_view value2;  // COMPARE_SET desired
  std::int64_t delta = 0;   // ADD
  std::uint32_t u32 = 0;    // VALIDATE magic, PING nonce
  std::uint64_t count = 0;  // CHECK WAIT MULTI_GET: keys; MULTI_SET: pairs
  // CHECK WAIT MULTI_GET: `count` x str; MULTI_SET: `count` x (str, bytes). Already validated;
  // walk it with for_each_key / for_each_pair.
  std::string_view body;
};

// Walks a validated multi-key body. F: void(std::string_view key).
template <typename F>
void for_each_key(const Request& r, F&& f);
// Walks a validated MULTI_SET body. F: void(std::string_view key, std::string_view value).
template <typename F>
void for_each_pair(const Request& r, F&& f);

enum class ParseStatus { kNeedMore, kRequest, kError };

// Incremental, resumable request parser for one connection. The caller keeps the connection's
// unconsumed bytes contiguous, starting at a request boundary, and calls parse() whenever more
// have arrived. Work is linear in the bytes received (the parser remembers how far it got), and
// every length field is checked against Limits before the caller needs to buffer that much.
//
// Dialect (§6.2): auto-detected from the first bytes unless fixed in the constructor. A 2.x
// connection's VALIDATE is returned as a request (op kValidate, u32 = magic) and never accepted
// again. Not thread-safe (one per connection).
class RequestParser {
 public:
  explicit RequestParser(Limits limits = {}, std::optional<Dialect> fixed = std::nullopt);

  // kRequest: `out` is filled and consumed() bytes at the front of `buf` make up the request.
  // kNeedMore: call again once buf.size() >= need(). kError: error() says why; the parser is
  // stuck in the error state (close the connection).
  ParseStatus parse(std::span<const std::uint8_t> buf, Request& out);

  std::size_t consumed() const { return consumed_; }
  std::size_t need() const { return need_; }
  const std::string& error() const { return error_; }
  std::optional<Dialect> dialect() const { return dialect_; }
  // Bytes of a partially parsed request already validated (0 at a boundary).
  std::size_t pending() const { return pos_; }

 private:
  ParseStatus fail(std::string why);
  ParseStatus need_more(std::size_t total);
  ParseStatus detect(std::span<const std::uint8_t> buf, Request& out);

  Limits limits_;
  std::optional<Dialect> dialect_;
  std::string error_;
  std::size_t consumed_ = 0;
  std::size_t need_ = 1;
  // Resume state of the request being parsed (offsets from its first byte).
  bool in_request_ = false;
  bool failed_ = false;
  Op op_ = Op::kValidate;
  std::uint8_t step_ = 0;
  std::uint8_t sub_ = 0;
  std::size_t pos_ = 0;
  std::uint64_t n_ = 0, i_ = 0;
  std::size_t key_off_ = 0, key_len_ = 0, v1_off_ = 0, v1_len_ = 0, v2_off_ = 0, v2_len_ = 0;
  std::size_t body_off_ = 0;
  std::int64_t delta_ = 0;
  std::uint32_t u32_ = 0;
};

// ---- little-endian primitives ----------------------------------------------------------------

inline std::uint64_t load_u64(const std::uint8_t* p) {
  std::uint64_t v;
  std::memcpy(&v, p, 8);
  return v;  // x86-64 / aarch64: little-endian hosts only (static_assert in protocol.cc)
}
inline std::uint32_t load_u32(const std::uint8_t* p) {
  std::uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Appends wire encodings to a byte buffer (requests and replies share these).
class Writer {
 public:
  explicit Writer(std::vector<std::uint8_t>& out) : out_(out) {}
  void u8(std::uint8_t v) { out_.push_back(v); }
  void u32(std::uint32_t v) { raw(&v, 4); }
  void u64(std::uint64_t v) { raw(&v, 8); }
  void i64(std::int64_t v) { raw(&v, 8); }
  void str(std::string_view s) {
    u64(s.size());
    raw(s.data(), s.size());
  }
  void bytes(std::span<const std::uint8_t> b) {
    u64(b.size());
    raw(b.data(), b.size());
  }
  void raw(const void* p, std::size_t n) {
    auto* b = static_cast<const std::uint8_t*>(p);
    out_.insert(out_.end(), b, b + n);
  }

 private:
  std::vector<std::uint8_t>& out_;
};

// ---- client side: request encoders -----------------------------------------------------------
// Each appends one complete request to `out`. Throws ProtocolError if `dialect` has no such op.

void encode_validate(Dialect d, std::vector<std::uint8_t>& out);  // 2.x only
void encode_ping(Dialect d, std::uint32_t nonce, std::vector<std::uint8_t>& out);
void encode_set(Dialect d, std::string_view key, std::span<const std::uint8_t> value,
                std::vector<std::uint8_t>& out);
void encode_get(Dialect d, std::string_view key, std::vector<std::uint8_t>& out);
void encode_add(Dialect d, std::string_view key, std::int64_t delta,
                std::vector<std::uint8_t>& out);
void encode_compare_set(Dialect d, std::string_view key, std::span<const std::uint8_t> expected,
                        std::span<const std::uint8_t> desired, std::vector<std::uint8_t>& out);
// CHECK, WAIT, MULTI_GET: `op` plus a key list.
void encode_keys(Dialect d, Op op, std::span<const std::string> keys,
                 std::vector<std::uint8_t>& out);
void encode_num_keys(Dialect d, std::vector<std::uint8_t>& out);
void encode_delete_key(Dialect d, std::string_view key, std::vector<std::uint8_t>& out);
void encode_append(Dialect d, std::string_view key, std::span<const std::uint8_t> value,
                   std::vector<std::uint8_t>& out);
void encode_multi_set(Dialect d, std::span<const std::string> keys,
                      std::span<const std::vector<std::uint8_t>> values,
                      std::vector<std::uint8_t>& out);
void encode_cancel_wait(Dialect d, std::vector<std::uint8_t>& out);
void encode_queue_push(Dialect d, std::string_view key, std::span<const std::uint8_t> value,
                       std::vector<std::uint8_t>& out);
void encode_queue_pop(Dialect d, std::string_view key, std::vector<std::uint8_t>& out);
void encode_queue_len(Dialect d, std::string_view key, std::vector<std::uint8_t>& out);
void encode_auth_challenge(Dialect d, std::vector<std::uint8_t>& out);  // 2.x only
void encode_auth_proof(Dialect d, std::string_view proof, std::vector<std::uint8_t>& out);

// ---- client side: reply parser ---------------------------------------------------------------

enum class ReplyKind {
  kU8,         // CHECK, WAIT, CANCEL_WAIT, AUTH_PROOF
  kU32,        // PING
  kI64,        // ADD, GETNUMKEYS, DELETE_KEY, QUEUE_LEN
  kBytes,      // GET, COMPARE_SET, AUTH_CHALLENGE
  kBytesList,  // MULTI_GET (`count` values)
  kQueuePop,   // i64 len, then bytes if len > 0
};

struct Reply {
  std::uint8_t u8 = 0;
  std::uint32_t u32 = 0;
  std::int64_t i64 = 0;
  std::vector<std::string_view> values;  // views into the parsed buffer
};

struct ReplyParse {
  ParseStatus status = ParseStatus::kNeedMore;
  std::size_t consumed = 0;  // kRequest (= complete reply)
  std::size_t need = 0;      // kNeedMore: minimum buffer size worth trying again with
  std::string error;         // kError
};

// Parses one complete reply of `kind` at the front of `buf` (stateless: call again on the whole
// buffer when more bytes have arrived). Values longer than max_value_bytes are an error.
ReplyParse parse_reply(ReplyKind kind, std::span<const std::uint8_t> buf, Reply& out,
                       std::uint64_t count = 0,
                       std::uint64_t max_value_bytes = std::uint64_t{1} << 32);

// ---- server side: reply encoders -------------------------------------------------------------

inline void reply_u8(std::vector<std::uint8_t>& out, std::uint8_t v) { out.push_back(v); }
inline void reply_i64(std::vector<std::uint8_t>& out, std::int64_t v) { Writer(out).i64(v); }
inline void reply_u32(std::vector<std::uint8_t>& out, std::uint32_t v) { Writer(out).u32(v); }
inline void reply_bytes(std::vector<std::uint8_t>& out, std::string_view v) { Writer(out).str(v); }

// ---- template definitions --------------------------------------------------------------------

template <typename F>
void for_each_key(const Request& r, F&& f) {
  const char* p = r.body.data();
  for (std::uint64_t i = 0; i < r.count; ++i) {
    std::uint64_t len = load_u64(reinterpret_cast<const std::uint8_t*>(p));
    f(std::string_view(p + 8, len));
    p += 8 + len;
  }
}

template <typename F>
void for_each_pair(const Request& r, F&& f) {
  const char* p = r.body.data();
  for (std::uint64_t i = 0; i < r.count; ++i) {
    std::uint64_t klen = load_u64(reinterpret_cast<const std::uint8_t*>(p));
    std::string_view k(p + 8, klen);
    p += 8 + klen;
    std::uint64_t vlen = load_u64(reinterpret_cast<const std::uint8_t*>(p));
    std::string_view v(p + 8, vlen);
    p += 8 + vlen;
    f(k, v);
  }
}

}  // namespace gpurun::rendezvous::protocol
