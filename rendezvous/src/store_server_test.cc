// StoreServer against raw sockets: golden bytes (§9 of the protocol doc), framing, waiters,
// CANCEL_WAIT, limits, isolation of a misbehaving connection, both dialects on one server.
#include "gpurun/rendezvous/store_server.h"

#include <catch2/catch.hpp>
#include <thread>

#include "gpurun/common/error.h"
#include "test_util.h"

using namespace gpurun::rendezvous;
using namespace gpurun::rendezvous::testing;
using std::chrono::milliseconds;

namespace {

constexpr milliseconds kQuiet{100};  // "nothing arrives" window for negative checks

}  // namespace

TEST_CASE("server: 1.13 golden bytes", "[server]") {
  StoreServerThread srv(test_server_options());
  RawClient c(srv.port());
  // §5.1/5.2: set("k1","v1"), WAIT [/k1], GET /k1.
  c.send(
      {0x00, 0x03, 0, 0, 0, 0, 0, 0, 0, 0x2f, 0x6b, 0x31, 0x02, 0, 0, 0, 0, 0, 0, 0, 0x76, 0x31});
  c.send(wait113({"/k1"}));
  CHECK(c.recv(1) == Buf{0x00});
  c.send({0x02, 0x03, 0, 0, 0, 0, 0, 0, 0, 0x2f, 0x6b, 0x31});
  CHECK(c.recv(10) == Buf{0x02, 0, 0, 0, 0, 0, 0, 0, 0x76, 0x31});
  // §5.3 ADD 5 then -2 -> 5, 3; stored as ASCII.
  c.send(add113("/ctr", 5));
  CHECK(c.recv_i64() == 5);
  c.send(add113("/ctr", -2));
  CHECK(c.recv(8) == Buf{0x03, 0, 0, 0, 0, 0, 0, 0});
  c.send(get113("/ctr"));
  CHECK(c.recv_bytes() == "3");
  // §5.4 the four COMPARE_SET rows.
  c.send(cat({{0x01}, wstr("/cs"), wstr(""), wstr("a")}));
  CHECK(c.recv_bytes() == "a");
  c.send(cat({{0x01}, wstr("/absent"), wstr("x"), wstr("y")}));
  CHECK(c.recv_bytes() == "x");
  c.send(cat({{0x01}, wstr("/cs"), wstr("a"), wstr("b")}));
  CHECK(c.recv_bytes() == "b");
  c.send(cat({{0x01}, wstr("/cs"), wstr("zzz"), wstr("c")}));
  CHECK(c.recv_bytes() == "b");
  // CHECK with n = 0 and a missing key.
  c.send(cat({{0x04}, u64le(0)}));
  CHECK(c.recv_u8() == 0);
  c.send(cat({{0x04}, u64le(1), wstr("/absent")}));
  CHECK(c.recv_u8() == 1);
  // GETNUMKEYS counts /k1 /ctr /cs; DELETE_KEY twice.
  c.send({0x06});
  CHECK(c.recv_i64() == 3);
  c.send(cat({{0x08}, wstr("/k1")}));
  CHECK(c.recv_i64() == 1);
  c.send(cat({{0x08}, wstr("/k1")}));
  CHECK(c.recv_i64() == 0);
  // WAIT with n = 0 replies at once.
  c.send(wait113({}));
  CHECK(c.recv_u8() == 0);
}

TEST_CASE("server: 2.x handshake, golden bytes and every 2.x op", "[server]") {
  StoreServerThread srv(test_server_options());
  RawClient c(srv.port());
  c.send({0x00, 0xCE, 0xF7, 0x85, 0x3C});
  CHECK(c.silent_for(milliseconds(20)));
  c.send({0x0D, 0x78, 0x56, 0x34, 0x12});
  CHECK(c.recv(4) == Buf{0x78, 0x56, 0x34, 0x12});
  c.send(add2("init/", 1));
  CHECK(c.recv_i64() == 1);
  c.send(set2("/k", "v"));
  c.send(get2("/k"));
  CHECK(c.recv_bytes() == "v");
  c.send(cat({{0x09}, wstr("/k"), wstr("++")}));  // APPEND
  c.send(get2("/k"));
  CHECK(c.recv_bytes() == "v++");
  c.send(cat({{0x0B}, u64le(2), wstr("/a"), wstr("1"), wstr("/b"), wstr("2")}));  // MULTI_SET
  c.send(keys2(0x0A, {"/b", "/missing", "/a"}));                                  // MULTI_GET
  CHECK(c.recv_bytes() == "2");
  CHECK(c.recv_bytes().empty());
  CHECK(c.recv_bytes() == "1");
  c.send(get2("/missing"));  // libuv behaviour: empty value, connection stays usable
  CHECK(c.recv_bytes().empty());
  c.send(keys2(0x05, {"/a", "/b"}));  // CHECK
  CHECK(c.recv_u8() == 0);
  c.send({0x07});  // GETNUMKEYS: init/ /k /a /b
  CHECK(c.recv_i64() == 4);
  c.send(cas2("/a", "1", "one"));
  CHECK(c.recv_bytes() == "one");
  c.send(kCancel2);  // no wait outstanding: still WAIT_CANCELED
  CHECK(c.recv_u8() == 1);
}

TEST_CASE("server: framing: byte-at-a-time and pipelined requests", "[server]") {
  StoreServerThread srv(test_server_options());
  RawClient c(srv.port());
  Buf all = cat({v2_validate(), set2("k", "v"), get2("k"), add2("n", 2), {0x0D, 1, 2, 3, 4}});
  SECTION("one byte per write") {
    for (auto b : all) c.send({b});
  }
  SECTION("everything in one write") { c.send(all); }
  CHECK(c.recv_bytes() == "v");
  CHECK(c.recv_i64() == 2);
  CHECK(c.recv(4) == Buf{1, 2, 3, 4});
  // The magic split across writes still selects 2.x (§9.4).
  RawClient d(srv.port());
  d.send({0x00, 0xCE});
  d.send({0xF7});
  d.send({0x85, 0x3C, 0x0D, 9, 9, 9, 9});
  CHECK(d.recv(4) == Buf{9, 9, 9, 9});
}

TEST_CASE("server: waiters are woken by every kind of update", "[server]") {
  StoreServerThread srv(test_server_options());
  RawClient w(srv.port());
  w.v2();
  RawClient s(srv.port());
  s.v2();
  auto waiting = [&](std::uint64_t n) {
    return eventually([&] { return srv.stats().waiters == n; });
  };
  SECTION("set") {
    w.send(wait2({"k"}));
    REQUIRE(waiting(1));
    s.send(set2("k", "v"));
  }
  SECTION("add") {
    w.send(wait2({"k"}));
    REQUIRE(waiting(1));
    s.send(add2("k", 1));
    CHECK(s.recv_i64() == 1);
  }
  SECTION("append") {
    w.send(wait2({"k"}));
    REQUIRE(waiting(1));
    s.send(cat({{0x09}, wstr("k"), wstr("x")}));
  }
  SECTION("multi_set") {
    w.send(wait2({"k"}));
    REQUIRE(waiting(1));
    s.send(cat({{0x0B}, u64le(1), wstr("k"), wstr("x")}));
  }
  SECTION("compare_set creating the key") {
    w.send(wait2({"k"}));
    REQUIRE(waiting(1));
    s.send(cas2("k", "", "x"));
    CHECK(s.recv_bytes() == "x");
  }
  SECTION("multi-key wait with a duplicate key replies once, after the last key") {
    w.send(wait2({"a", "k", "a"}));
    REQUIRE(waiting(1));
    s.send(set2("a", "1"));
    CHECK(w.silent_for(kQuiet));
    s.send(set2("k", "1"));
  }
  SECTION("delete does not wake, nor does a failed compare_set") {
    s.send(set2("other", "1"));
    w.send(wait2({"k"}));
    REQUIRE(waiting(1));
    s.send(cat({{0x08}, wstr("k")}));
    CHECK(s.recv_i64() == 0);
    s.send(cas2("k", "nonempty", "x"));
    CHECK(s.recv_bytes() == "nonempty");
    CHECK(w.silent_for(kQuiet));
    s.send(set2("k", "now"));
  }
  CHECK(w.recv(1) == Buf{0x00});
  CHECK(w.silent_for(milliseconds(20)));  // exactly one STOP_WAITING
  CHECK(srv.stats().waiters == 0);
}

TEST_CASE("server: many waiters on one key all wake on one set", "[server]") {
  StoreServerThread srv(test_server_options());
  std::vector<std::unique_ptr<RawClient>> ws;
  for (int i = 0; i < 50; ++i) {
    ws.push_back(std::make_unique<RawClient>(srv.port()));
    ws.back()->send(wait113({"/release"}));
  }
  REQUIRE(eventually([&] { return srv.stats().waiters == 50; }));
  RawClient s(srv.port());
  s.send(set113("/release", "go"));
  for (auto& w : ws) CHECK(w->recv_u8() == 0);
}

TEST_CASE("server: CANCEL_WAIT", "[server]") {
  StoreServerThread srv(test_server_options());
  RawClient w(srv.port());
  w.v2();
  RawClient s(srv.port());
  s.v2();
  SECTION("cancel replies 01 and later sets send nothing") {
    w.send(wait2({"k"}));
    REQUIRE(eventually([&] { return srv.stats().waiters == 1; }));
    w.send(kCancel2);
    CHECK(w.recv(1) == Buf{0x01});
    CHECK(srv.stats().waiters == 0);
    s.send(set2("k", "v"));
    s.send({0x0D, 0, 0, 0, 0});  // PING as a barrier: the SET has been applied
    s.recv(4);
    CHECK(w.silent_for(kQuiet));
    // The connection is still usable.
    w.send(get2("k"));
    CHECK(w.recv_bytes() == "v");
  }
  SECTION("race: the key is set just before the cancel: 00 then 01") {
    w.send(wait2({"k"}));
    REQUIRE(eventually([&] { return srv.stats().waiters == 1; }));
    s.send(set2("k", "v"));
    s.send({0x0D, 0, 0, 0, 0});
    s.recv(4);
    w.send(kCancel2);
    CHECK(w.recv(2) == Buf{0x00, 0x01});
  }
}

TEST_CASE("server: a client that disconnects while waiting is cleaned up", "[server]") {
  StoreServerThread srv(test_server_options());
  {
    RawClient w(srv.port());
    w.send(wait113({"/k", "/k2"}));
    REQUIRE(eventually([&] { return srv.stats().waiters == 1; }));
  }
  REQUIRE(eventually([&] { return srv.stats().connections_open == 0; }));
  CHECK(srv.stats().waiters == 0);
  RawClient s(srv.port());
  s.send(set113("/k", "v"));
  s.send(wait113({"/k"}));
  CHECK(s.recv_u8() == 0);
}

TEST_CASE("server: a malformed frame closes only that connection", "[server]") {
  StoreServerThread srv(test_server_options());
  RawClient good(srv.port());
  good.v2();
  good.send(set2("keep", "me"));
  RawClient waiter(srv.port());
  waiter.v2();
  waiter.send(wait2({"later"}));
  REQUIRE(eventually([&] { return srv.stats().waiters == 1; }));
  auto rejected_before = srv.stats().connections_rejected;

  RawClient bad(srv.port());
  SECTION("unknown opcode (1.13)") { bad.send({0x42}); }
  SECTION("bad magic after 0x00 falls to 1.13 and then breaks a limit") {
    bad.send({0x00, 0xCE, 0xF7, 0x85, 0x3D, 0x00, 0x00, 0x00, 0x00});
  }
  SECTION("2.x second VALIDATE") {
    bad.v2();
    bad.send(v2_validate());
  }
  SECTION("oversized key length") { bad.send(cat({{0x02}, u64le(1ull << 40)})); }
  SECTION("oversized value length") { bad.send(cat({{0x00}, wstr("k"), u64le(~0ull)})); }
  SECTION("huge key count") { bad.send(cat({v2_validate(), {0x06}, u64le(1ull << 50)})); }
  SECTION("ADD on a non-integer value") {
    bad.send(set113("keep2", "abc"));
    bad.send(add113("keep2", 1));
  }
  SECTION("WATCH_KEY (1.13)") { bad.send(cat({{0x07}, wstr("/w")})); }
  CHECK(bad.closed_within());
  CHECK(srv.stats().connections_rejected == rejected_before + 1);
  // Everyone else carries on: data intact, the wait still fires.
  good.send(get2("keep"));
  CHECK(good.recv_bytes() == "me");
  good.send(set2("later", "x"));
  CHECK(waiter.recv_u8() == 0);
}

TEST_CASE("server: limits are configurable", "[server]") {
  auto o = test_server_options();
  o.max_key_bytes = 8;
  o.max_value_bytes = 16;
  o.max_keys_per_request = 2;
  StoreServerThread srv(o);
  RawClient ok(srv.port());
  ok.v2();
  ok.send(set2("12345678", std::string(16, 'v')));
  ok.send(get2("12345678"));
  CHECK(ok.recv_bytes() == std::string(16, 'v'));
  RawClient k(srv.port());
  k.v2();
  k.send(get2("123456789"));
  CHECK(k.closed_within());
  RawClient v(srv.port());
  v.v2();
  v.send(set2("k", std::string(17, 'v')));
  CHECK(v.closed_within());
  RawClient n(srv.port());
  n.v2();
  n.send(wait2({"a", "b", "c"}));
  CHECK(n.closed_within());
}

TEST_CASE("server: max_connections refuses extra connections", "[server]") {
  auto o = test_server_options();
  o.max_connections = 2;
  StoreServerThread srv(o);
  RawClient a(srv.port()), b(srv.port());
  a.send(add113("/n", 1));
  CHECK(a.recv_i64() == 1);
  b.send(add113("/n", 1));
  CHECK(b.recv_i64() == 2);
  RawClient c(srv.port());  // the kernel accepts; the server closes it
  CHECK(c.closed_within());
  CHECK(srv.stats().connections_refused == 1);
  a.close();
  REQUIRE(eventually([&] { return srv.stats().connections_open == 1; }));
  RawClient d(srv.port());
  d.send(add113("/n", 1));
  CHECK(d.recv_i64() == 3);
}

TEST_CASE("server: 1.13 and 2.x clients share one key space, idle connections are fine",
          "[server]") {
  StoreServerThread srv(test_server_options());
  RawClient idle(srv.port());  // the 1.13 watch connection: never sends a byte
  RawClient old(srv.port());
  RawClient neu(srv.port());
  neu.v2();
  neu.send(wait2({"/shared"}));
  REQUIRE(eventually([&] { return srv.stats().waiters == 1; }));
  old.send(set113("/shared", "from-1.13"));
  CHECK(neu.recv_u8() == 0);
  neu.send(get2("/shared"));
  CHECK(neu.recv_bytes() == "from-1.13");
  neu.send(add2("/ctr", 10));
  CHECK(neu.recv_i64() == 10);
  old.send(add113("/ctr", 1));
  CHECK(old.recv_i64() == 11);
  CHECK(srv.stats().connections_open == 3);
  CHECK(idle.silent_for(milliseconds(10)));
}

TEST_CASE("server: queues", "[server]") {
  StoreServerThread srv(test_server_options());
  RawClient c(srv.port());
  c.v2();
  Buf pop = cat({{0x0F}, wstr("q")});
  Buf len = cat({{0x10}, wstr("q")});
  c.send(pop);
  CHECK(c.recv_i64() == 0);  // empty: nothing follows
  c.send(len);
  CHECK(c.recv_i64() == 0);
  c.send(keys2(0x05, {"q"}));
  CHECK(c.recv_u8() == 1);
  c.send(push2("q", "first"));
  c.send(push2("q", "second"));
  c.send(len);
  CHECK(c.recv_i64() == 2);
  c.send(keys2(0x05, {"q"}));  // a non-empty queue counts as present
  CHECK(c.recv_u8() == 0);
  c.send(pop);
  CHECK(c.recv_i64() == 2);
  CHECK(c.recv_bytes() == "first");
  c.send(pop);
  CHECK(c.recv_i64() == 1);
  CHECK(c.recv_bytes() == "second");
  c.send({0x07});
  CHECK(c.recv_i64() == 0);  // queues are not keys
  // A push wakes exactly one waiter.
  RawClient w1(srv.port()), w2(srv.port());
  w1.v2();
  w2.v2();
  w1.send(wait2({"q"}));
  w2.send(wait2({"q"}));
  REQUIRE(eventually([&] { return srv.stats().waiters == 2; }));
  c.send(push2("q", "x"));
  REQUIRE(eventually([&] { return srv.stats().waiters == 1; }));
  bool one = !w1.silent_for(kQuiet);
  bool two = !w2.silent_for(milliseconds(1));
  CHECK(one != two);
  c.send(push2("q", "y"));
  (one ? w2 : w1).recv(1);
}

TEST_CASE("server: IPv6 loopback", "[server]") {
  std::string why;
  auto srv = ipv6_loopback_server(test_server_options(), why);
  if (!srv) {
    WARN("skipping: no IPv6 loopback here (" << why << ")");
    return;
  }
  CHECK(srv->address() == "[::1]:" + std::to_string(srv->port()));
  RawClient c(srv->port(), "::1");
  c.send(add113("/v6", 3));
  CHECK(c.recv_i64() == 3);
}

TEST_CASE("server: bind failure names host, port and errno", "[server]") {
  StoreServerThread first(test_server_options());
  auto o = test_server_options();
  o.port = first.port();
  // SO_REUSEADDR does not allow two listeners on one port.
  try {
    StoreServerThread second(o);
    FAIL("second bind on a busy port succeeded");
  } catch (const gpurun::BindError& e) {
    CHECK(e.code() == std::errc::address_in_use);
    CHECK(e.port() == first.port());
    CHECK(e.host() == "127.0.0.1");
    CHECK_THAT(e.what(), Catch::Contains(std::to_string(first.port())));
  }
  auto bad = test_server_options();
  bad.host = "203.0.113.7";  // TEST-NET-3: not a local address
  CHECK_THROWS_AS(StoreServerThread(bad), gpurun::BindError);
}

TEST_CASE("server: stop closes every connection and is idempotent", "[server]") {
  auto srv = std::make_unique<StoreServerThread>(test_server_options());
  RawClient w(srv->port());
  w.send(wait113({"/never"}));
  REQUIRE(eventually([&] { return srv->stats().waiters == 1; }));
  srv->stop();
  CHECK(w.closed_within());
  srv->stop();
  CHECK(srv->stats().connections_open == 0);
  srv.reset();
}
