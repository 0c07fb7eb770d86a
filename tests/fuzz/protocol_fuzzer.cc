// libFuzzer target for the TCPStore request parser (and the client's reply parser): feeds the
// input in both dialects and with auto-detection, whole and in small chunks, and walks every
// parsed multi-key body so out-of-bounds views show up under ASan. Also linked into
// protocol_fuzz_replay (replay_main.cc), which replays the saved corpus in ordinary builds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <span>
#include <vector>

#include "protocol.h"

namespace proto = gpurun::rendezvous::protocol;
using gpurun::rendezvous::Dialect;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void feed(std::span<const std::uint8_t> data, std::size_t chunk, std::optional<Dialect> dialect,
          const proto::Limits& limits) {
  proto::RequestParser parser(limits, dialect);
  std::vector<std::uint8_t> buf;
  std::size_t off = 0;
  while (off < data.size()) {
    std::size_t n = std::min(chunk, data.size() - off);
    buf.insert(buf.end(), data.begin() + static_cast<std::ptrdiff_t>(off),
               data.begin() + static_cast<std::ptrdiff_t>(off + n));
    off += n;
    for (;;) {
      if (buf.size() < parser.need()) break;
      proto::Request req;
      auto st = parser.parse(buf, req);
      if (st == proto::ParseStatus::kError) {
        check(!parser.error().empty());
        return;
      }
      if (st == proto::ParseStatus::kNeedMore) {
        check(parser.need() > buf.size());
        break;
      }
      check(parser.consumed() > 0 && parser.consumed() <= buf.size());
      check(req.key.size() <= limits.max_key_bytes && req.value.size() <= limits.max_value_bytes);
      std::size_t total = 0;
      if (req.op == proto::Op::kMultiSet) {
        proto::for_each_pair(req, [&](std::string_view k, std::string_view v) {
          total += k.size() + v.size() + 16;
        });
        check(total == req.body.size());
      } else if (!req.body.empty() || req.count > 0) {
        proto::for_each_key(req, [&](std::string_view k) { total += k.size() + 8; });
        check(total == req.body.size());
      }
      buf.erase(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(parser.consumed()));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::span<const std::uint8_t> in(data, size);
  proto::Limits small;
  small.max_key_bytes = 64;
  small.max_value_bytes = 256;
  small.max_keys_per_request = 16;
  proto::Limits defaults;
  feed(in, size == 0 ? 1 : size, std::nullopt, defaults);
  feed(in, size <= 512 ? 1 : 13, std::nullopt, small);  // byte-at-a-time is quadratic-ish here
  feed(in, 3, Dialect::kV113, small);
  feed(in, 7, Dialect::kV2, defaults);
  // Client side: every reply kind over the same bytes.
  for (auto kind :
       {proto::ReplyKind::kU8, proto::ReplyKind::kU32, proto::ReplyKind::kI64,
        proto::ReplyKind::kBytes, proto::ReplyKind::kBytesList, proto::ReplyKind::kQueuePop}) {
    proto::Reply r;
    auto res = proto::parse_reply(kind, in, r, size % 5, 1024);
    if (res.status == proto::ParseStatus::kRequest) check(res.consumed <= size);
    if (res.status == proto::ParseStatus::kNeedMore) check(res.need > size);
  }
  return 0;
}
