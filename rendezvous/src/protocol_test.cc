#include "protocol.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "gpurun/common/error.h"

using namespace gpurun::rendezvous;
using namespace gpurun::rendezvous::protocol;
using B = std::vector<std::uint8_t>;

namespace {

B cat(std::initializer_list<B> parts) {
  B out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}
B u64le(std::uint64_t v) {
  B b(8);
  std::memcpy(b.data(), &v, 8);
  return b;
}
B str(std::string_view s) {
  // resize + memcpy: GCC 12 warns (-Warray-bounds, false positive) on insert after an 8-byte vector
  B b(8 + s.size());
  std::uint64_t n = s.size();
  std::memcpy(b.data(), &n, 8);
  if (!s.empty()) std::memcpy(b.data() + 8, s.data(), s.size());
  return b;
}
B bytes_of(std::string_view s) { return B(s.begin(), s.end()); }

// Parses every request in `data`, fed in chunks of `chunk` bytes (0 = all at once), the way a
// server does: keep unconsumed bytes, call parse when need() is met.
struct Fed {
  std::vector<Request> reqs;
  std::vector<std::string> keys;  // owned copies of req.key for checking after the buffer moves
  std::vector<std::string> values;
  ParseStatus last = ParseStatus::kNeedMore;
  std::string error;
  std::optional<Dialect> dialect;
};

Fed feed(const B& data, std::size_t chunk, std::optional<Dialect> fixed = std::nullopt,
         Limits limits = {}) {
  RequestParser p(limits, fixed);
  Fed f;
  B buf;
  std::size_t off = 0;
  while (off < data.size() || chunk == 0) {
    std::size_t n = chunk == 0 ? data.size() : std::min(chunk, data.size() - off);
    buf.insert(buf.end(), data.begin() + static_cast<std::ptrdiff_t>(off),
               data.begin() + static_cast<std::ptrdiff_t>(off + n));
    off += n;
    for (;;) {
      if (buf.size() < p.need()) break;
      Request r;
      auto st = p.parse(buf, r);
      f.last = st;
      if (st == ParseStatus::kNeedMore) break;
      if (st == ParseStatus::kError) {
        f.error = p.error();
        f.dialect = p.dialect();
        return f;
      }
      f.keys.emplace_back(r.key);
      f.values.emplace_back(r.value);
      r.key = r.value = r.value2 = r.body = {};  // views die with the erase below
      f.reqs.push_back(r);
      buf.erase(buf.begin(), buf.begin() + static_cast<std::ptrdiff_t>(p.consumed()));
    }
    if (chunk == 0) break;
  }
  f.dialect = p.dialect();
  return f;
}

}  // namespace

TEST_CASE("protocol: 1.13 golden request bytes parse", "[protocol]") {
  // §5.1: set("k1","v1") as sent by a 1.13 client.
  B set = {0x00, 0x03, 0, 0, 0, 0, 0, 0, 0, 0x2f, 0x6b,
           0x31, 0x02, 0, 0, 0, 0, 0, 0, 0, 0x76, 0x31};
  B get = {0x02, 0x03, 0, 0, 0, 0, 0, 0, 0, 0x2f, 0x6b, 0x31};
  B add = cat({{0x03}, str("/ctr"), {0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}});
  B wait = cat({{0x05}, u64le(1), str("/k1")});
  B numkeys = {0x06};
  B del = cat({{0x08}, str("/k1")});
  B cas = cat({{0x01}, str("/c"), str(""), str("x")});
  B check = cat({{0x04}, u64le(0)});
  for (std::size_t chunk : {std::size_t{0}, std::size_t{1}, std::size_t{3}}) {
    CAPTURE(chunk);
    auto f = feed(cat({set, get, add, wait, numkeys, del, cas, check}), chunk);
    REQUIRE(f.error.empty());
    REQUIRE(f.dialect == Dialect::kV113);
    REQUIRE(f.reqs.size() == 8);
    CHECK(f.reqs[0].op == Op::kSet);
    CHECK(f.keys[0] == "/k1");
    CHECK(f.values[0] == "v1");
    CHECK(f.reqs[1].op == Op::kGet);
    CHECK(f.reqs[2].op == Op::kAdd);
    CHECK(f.keys[2] == "/ctr");
    CHECK(f.reqs[2].delta == -2);
    CHECK(f.reqs[3].op == Op::kWait);
    CHECK(f.reqs[3].count == 1);
    CHECK(f.reqs[4].op == Op::kGetNumKeys);
    CHECK(f.reqs[5].op == Op::kDeleteKey);
    CHECK(f.reqs[6].op == Op::kCompareSet);
    CHECK(f.reqs[7].op == Op::kCheck);
    CHECK(f.reqs[7].count == 0);
  }
}

TEST_CASE("protocol: 2.x handshake and golden bytes", "[protocol]") {
  B validate = {0x00, 0xCE, 0xF7, 0x85, 0x3C};
  B ping = {0x0D, 0x78, 0x56, 0x34, 0x12};
  B add = cat({{0x04}, str("init/"), u64le(1)});
  B set = cat({{0x01}, str("/k1"), str("v1")});
  for (std::size_t chunk : {std::size_t{0}, std::size_t{1}, std::size_t{2}}) {
    CAPTURE(chunk);
    auto f = feed(cat({validate, ping, add, set}), chunk);
    REQUIRE(f.error.empty());
    REQUIRE(f.dialect == Dialect::kV2);
    REQUIRE(f.reqs.size() == 4);
    CHECK(f.reqs[0].op == Op::kValidate);
    CHECK(f.reqs[1].op == Op::kPing);
    CHECK(f.reqs[1].u32 == 0x12345678u);
    CHECK(f.reqs[2].op == Op::kAdd);
    CHECK(f.keys[2] == "init/");
    CHECK(f.reqs[2].delta == 1);
    CHECK(f.reqs[3].op == Op::kSet);
  }
  // Encoders produce the same bytes.
  B enc;
  encode_validate(Dialect::kV2, enc);
  encode_ping(Dialect::kV2, 0x12345678u, enc);
  CHECK(enc == cat({validate, ping}));
}

TEST_CASE("protocol: dialect detection per section 6.2", "[protocol]") {
  SECTION("a 1.13 SET starting with 0x00 whose key length is not the magic is 1.13") {
    auto f = feed(cat({{0x00}, str("k"), str("v")}), 1);
    CHECK(f.dialect == Dialect::kV113);
    REQUIRE(f.reqs.size() == 1);
    CHECK(f.reqs[0].op == Op::kSet);
  }
  SECTION("fewer than 5 bytes matching the magic stay undecided") {
    RequestParser p;
    B part = {0x00, 0xCE, 0xF7};
    Request r;
    CHECK(p.parse(part, r) == ParseStatus::kNeedMore);
    CHECK_FALSE(p.dialect().has_value());
    CHECK(p.need() == 5);
  }
  SECTION("an idle connection stays undecided") {
    RequestParser p;
    Request r;
    CHECK(p.parse({}, r) == ParseStatus::kNeedMore);
    CHECK_FALSE(p.dialect().has_value());
  }
  SECTION("a second VALIDATE is an error") {
    auto f = feed({0x00, 0xCE, 0xF7, 0x85, 0x3C, 0x00, 0xCE, 0xF7, 0x85, 0x3C}, 0);
    CHECK_THAT(f.error, Catch::Contains("VALIDATE"));
  }
  SECTION("2.x opcodes above 0x10 and 1.13 opcodes above 0x08 are unknown") {
    auto f2 = feed({0x00, 0xCE, 0xF7, 0x85, 0x3C, 0x11}, 0);
    CHECK_THAT(f2.error, Catch::Contains("unknown query type 0x11"));
    auto f1 = feed({0x09}, 0);
    CHECK_THAT(f1.error, Catch::Contains("unknown query type 0x09"));
    CHECK_THAT(f1.error, Catch::Contains("1.13"));
  }
}

TEST_CASE("protocol: opcode mapping between dialects", "[protocol]") {
  CHECK(wire_byte(Dialect::kV113, Op::kSet) == 0x00);
  CHECK(wire_byte(Dialect::kV113, Op::kGetNumKeys) == 0x06);
  CHECK(wire_byte(Dialect::kV113, Op::kWatchKey) == 0x07);
  CHECK(wire_byte(Dialect::kV113, Op::kDeleteKey) == 0x08);
  CHECK_FALSE(wire_byte(Dialect::kV113, Op::kAppend).has_value());
  CHECK_FALSE(wire_byte(Dialect::kV113, Op::kValidate).has_value());
  CHECK(wire_byte(Dialect::kV2, Op::kQueueLen) == 0x10);
  CHECK_FALSE(wire_byte(Dialect::kV2, Op::kWatchKey).has_value());
  for (int b = 0; b < 256; ++b) {
    for (Dialect d : {Dialect::kV113, Dialect::kV2}) {
      auto op = op_from_wire(d, static_cast<std::uint8_t>(b));
      if (op) CHECK(wire_byte(d, *op) == b);
    }
  }
  B out;
  CHECK_THROWS_AS(encode_append(Dialect::kV113, "k", B{}, out), gpurun::ProtocolError);
}

TEST_CASE("protocol: every query type round-trips through encoder and parser", "[protocol]") {
  for (Dialect d : {Dialect::kV113, Dialect::kV2}) {
    CAPTURE(static_cast<int>(d));
    B wire;
    if (d == Dialect::kV2) encode_validate(d, wire);
    std::vector<std::string> keys = {"a", "", "ccc"};
    std::vector<B> vals = {bytes_of("1"), B{}, B{0, 255}};
    encode_set(d, "k", bytes_of("v"), wire);
    encode_get(d, "k", wire);
    encode_add(d, "n", -7, wire);
    encode_compare_set(d, "c", bytes_of("old"), bytes_of("new"), wire);
    encode_keys(d, Op::kCheck, keys, wire);
    encode_keys(d, Op::kWait, keys, wire);
    encode_num_keys(d, wire);
    encode_delete_key(d, "k", wire);
    std::vector<Op> expect = {Op::kSet,   Op::kGet,  Op::kAdd,        Op::kCompareSet,
                              Op::kCheck, Op::kWait, Op::kGetNumKeys, Op::kDeleteKey};
    if (d == Dialect::kV2) {
      encode_append(d, "k", bytes_of("more"), wire);
      encode_keys(d, Op::kMultiGet, keys, wire);
      encode_multi_set(d, keys, vals, wire);
      encode_cancel_wait(d, wire);
      encode_ping(d, 7, wire);
      encode_queue_push(d, "q", bytes_of("x"), wire);
      encode_queue_pop(d, "q", wire);
      encode_queue_len(d, "q", wire);
      expect.insert(expect.end(), {Op::kAppend, Op::kMultiGet, Op::kMultiSet, Op::kCancelWait,
                                   Op::kPing, Op::kQueuePush, Op::kQueuePop, Op::kQueueLen});
      expect.insert(expect.begin(), Op::kValidate);
    }
    // Parse in one go, keeping the buffer so views stay valid.
    RequestParser p;
    std::span<const std::uint8_t> rest(wire);
    std::vector<Request> got;
    Request r;
    while (!rest.empty()) {
      REQUIRE(p.parse(rest, r) == ParseStatus::kRequest);
      got.push_back(r);
      rest = rest.subspan(p.consumed());
    }
    REQUIRE(got.size() == expect.size());
    for (std::size_t i = 0; i < got.size(); ++i) CHECK(got[i].op == expect[i]);
    std::size_t o = d == Dialect::kV2 ? 1 : 0;
    CHECK(got[o + 0].key == "k");
    CHECK(got[o + 0].value == "v");
    CHECK(got[o + 2].delta == -7);
    CHECK(got[o + 3].value == "old");
    CHECK(got[o + 3].value2 == "new");
    std::vector<std::string> seen;
    for_each_key(got[o + 5], [&](std::string_view k) { seen.emplace_back(k); });
    CHECK(seen == keys);
    if (d == Dialect::kV2) {
      CHECK(got[o + 8].value == "more");
      std::vector<std::pair<std::string, std::string>> pairs;
      for_each_pair(got[o + 10],
                    [&](std::string_view k, std::string_view v) { pairs.emplace_back(k, v); });
      REQUIRE(pairs.size() == 3);
      CHECK(pairs[2].first == "ccc");
      CHECK(pairs[2].second == std::string("\0\xff", 2));
      CHECK(got[o + 12].u32 == 7);
      CHECK(got[o + 13].value == "x");
    }
    // Byte-at-a-time gives the same ops.
    auto f = feed(wire, 1);
    REQUIRE(f.error.empty());
    REQUIRE(f.reqs.size() == expect.size());
    for (std::size_t i = 0; i < expect.size(); ++i) CHECK(f.reqs[i].op == expect[i]);
  }
}

TEST_CASE("protocol: limits are enforced before the bytes arrive", "[protocol]") {
  Limits lim;
  lim.max_key_bytes = 16;
  lim.max_value_bytes = 32;
  lim.max_keys_per_request = 4;
  SECTION("key length") {
    auto f = feed(cat({{0x02}, u64le(17)}), 0, Dialect::kV113, lim);
    CHECK_THAT(f.error, Catch::Contains("key length 17 exceeds the limit of 16"));
  }
  SECTION("value length") {
    auto f = feed(cat({{0x00}, str("k"), u64le(33)}), 0, Dialect::kV113, lim);
    CHECK_THAT(f.error, Catch::Contains("value length 33"));
  }
  SECTION("huge length field does not make the parser ask for it") {
    auto f = feed(cat({{0x00}, str("k"), u64le(~0ull)}), 0, Dialect::kV113);
    CHECK_THAT(f.error, Catch::Contains("value length"));
  }
  SECTION("key count") {
    auto f = feed(cat({{0x05}, u64le(5)}), 0, Dialect::kV113, lim);
    CHECK_THAT(f.error, Catch::Contains("5 keys in one WAIT exceed the limit of 4"));
    auto g = feed(cat({{0x0B}, u64le(1ull << 62)}), 0, Dialect::kV2, lim);
    CHECK_THAT(g.error, Catch::Contains("MULTI_SET"));
  }
  SECTION("at the limit is fine") {
    auto f = feed(cat({{0x00}, str(std::string(16, 'k')), str(std::string(32, 'v'))}), 1,
                  Dialect::kV113, lim);
    CHECK(f.error.empty());
    CHECK(f.reqs.size() == 1);
  }
  SECTION("need() never exceeds the validated request size") {
    RequestParser p(lim, Dialect::kV113);
    B partial = cat({{0x00}, str("k")});
    partial.resize(partial.size() + 4);  // half a value length
    Request r;
    CHECK(p.parse(partial, r) == ParseStatus::kNeedMore);
    CHECK(p.need() == 1 + 9 + 8);
  }
}

TEST_CASE("protocol: reply parser", "[protocol]") {
  Reply r;
  B i64 = u64le(static_cast<std::uint64_t>(-3));
  auto res = parse_reply(ReplyKind::kI64, i64, r);
  REQUIRE(res.status == ParseStatus::kRequest);
  CHECK(r.i64 == -3);
  CHECK(res.consumed == 8);
  B partial(i64.begin(), i64.begin() + 5);
  res = parse_reply(ReplyKind::kI64, partial, r);
  CHECK(res.status == ParseStatus::kNeedMore);
  CHECK(res.need == 8);
  B val = cat({str("v1"), str("")});
  res = parse_reply(ReplyKind::kBytesList, val, r, 2);
  REQUIRE(res.status == ParseStatus::kRequest);
  REQUIRE(r.values.size() == 2);
  CHECK(r.values[0] == "v1");
  CHECK(r.values[1].empty());
  B pop0 = u64le(0);
  res = parse_reply(ReplyKind::kQueuePop, pop0, r);
  CHECK(res.status == ParseStatus::kRequest);
  CHECK(res.consumed == 8);
  CHECK(r.values.empty());
  B pop1 = cat({u64le(2), str("head")});
  res = parse_reply(ReplyKind::kQueuePop, pop1, r);
  CHECK(res.status == ParseStatus::kRequest);
  CHECK(r.values.at(0) == "head");
  B huge = u64le(1ull << 40);
  res = parse_reply(ReplyKind::kBytes, huge, r);
  CHECK(res.status == ParseStatus::kError);
  // §5.2 golden GET reply.
  B get_reply = {0x02, 0, 0, 0, 0, 0, 0, 0, 0x76, 0x31};
  res = parse_reply(ReplyKind::kBytes, get_reply, r);
  CHECK(r.values.at(0) == "v1");
}

TEST_CASE("protocol: random garbage never crashes the parser", "[protocol]") {
  std::mt19937_64 rng(42);
  Limits lim;
  lim.max_key_bytes = 1024;
  lim.max_value_bytes = 4096;
  lim.max_keys_per_request = 64;
  for (int iter = 0; iter < 2000; ++iter) {
    B data(rng() % 200);
    for (auto& b : data) b = static_cast<std::uint8_t>(rng() % 4 == 0 ? rng() % 20 : rng());
    std::optional<Dialect> fixed;
    if (iter % 3 == 1) fixed = Dialect::kV113;
    if (iter % 3 == 2) fixed = Dialect::kV2;
    auto f = feed(data, 1 + rng() % 7, fixed, lim);
    (void)f;
  }
  SUCCEED();
}

TEST_CASE("protocol: saved fuzz corpus replays cleanly", "[protocol]") {
  namespace fs = std::filesystem;
  fs::path dir = GPURUN_FUZZ_CORPUS_DIR;
  REQUIRE(fs::is_directory(dir));
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    B data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (std::size_t chunk : {std::size_t{0}, std::size_t{1}}) {
      feed(data, chunk);
      feed(data, chunk, Dialect::kV113);
      feed(data, chunk, Dialect::kV2);
    }
    ++files;
  }
  CHECK(files > 0);
}
