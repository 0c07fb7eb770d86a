// TcpStore against a StoreServerThread on port 0: the Store contract (with and without a
// PrefixStore, both dialects), connect retry, and what timeouts say.
#include "gpurun/rendezvous/tcp_store.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <future>
#include <thread>

#include "gpurun/common/error.h"
#include "gpurun/common/unique_fd.h"
#include "gpurun/rendezvous/prefix_store.h"
#include "gpurun/rendezvous/store_server.h"
#include "store_contract.h"
#include "test_util.h"

using namespace gpurun::rendezvous;
using std::chrono::milliseconds;

namespace {

TcpStoreOptions client_opts(std::uint16_t port, Dialect d = Dialect::kV2) {
  TcpStoreOptions o;
  o.port = port;
  o.dialect = d;
  o.timeout = std::chrono::seconds(10);
  o.connect_timeout = std::chrono::seconds(5);
  return o;
}

// A loopback listener on a free port that accepts nothing by itself: the kernel completes TCP
// handshakes (up to the backlog), no replies come unless the test accepts and answers.
struct Listener {
  gpurun::UniqueFd fd{::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)};
  std::uint16_t port = 0;
  Listener() {
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd.get(), 16) == 0);
    socklen_t len = sizeof a;
    ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
};

}  // namespace

TEST_CASE("TcpStore (2.x dialect) meets the Store contract", "[tcpstore]") {
  std::unique_ptr<StoreServerThread> srv;
  testing::check_store_contract([&] {
    srv = std::make_unique<StoreServerThread>(testing::test_server_options());
    return std::make_shared<TcpStore>(client_opts(srv->port()));
  });
}

TEST_CASE("TcpStore (1.13 dialect, torch key prefix) meets the Store contract", "[tcpstore]") {
  std::unique_ptr<StoreServerThread> srv;
  testing::check_store_contract([&] {
    srv = std::make_unique<StoreServerThread>(testing::test_server_options());
    auto o = client_opts(srv->port(), Dialect::kV113);
    o.torch_key_prefix = true;
    return std::make_shared<TcpStore>(o);
  });
}

TEST_CASE("PrefixStore over TcpStore meets the Store contract", "[tcpstore]") {
  std::unique_ptr<StoreServerThread> srv;
  testing::check_store_contract([&] {
    srv = std::make_unique<StoreServerThread>(testing::test_server_options());
    return std::make_shared<PrefixStore>("/worker/attempt_0",
                                         std::make_shared<TcpStore>(client_opts(srv->port())));
  });
}

TEST_CASE("TcpStore: torch key prefix and world_size init key match PyTorch", "[tcpstore]") {
  StoreServerThread srv(testing::test_server_options());
  auto o = client_opts(srv.port());
  o.torch_key_prefix = true;
  o.world_size = 2;
  TcpStore a(o);
  TcpStore b(o);
  TcpStore raw(client_opts(srv.port()));
  CHECK(raw.add("init/", 0) == 2);  // each client did ADD "init/" 1, without the "/" prefix
  a.set("k1", "v1");
  CHECK(to_string(raw.get("/k1")) == "v1");
  CHECK(to_string(b.get("k1")) == "v1");
  CHECK(a.num_keys() == 2);
  CHECK(a.ping());
}

TEST_CASE("TcpStore: timeouts name the address, the operation and the missing keys", "[tcpstore]") {
  StoreServerThread srv(testing::test_server_options());
  for (Dialect d : {Dialect::kV2, Dialect::kV113}) {
    CAPTURE(static_cast<int>(d));
    TcpStore s(client_opts(srv.port(), d));
    s.set("here", "1");
    try {
      s.wait({"here", "never"}, milliseconds(100));
      FAIL("wait did not time out");
    } catch (const gpurun::StoreTimeout& e) {
      std::string msg = e.what();
      CHECK_THAT(msg, Catch::Contains("store 127.0.0.1:" + std::to_string(srv.port())));
      CHECK_THAT(msg, Catch::Contains("timed out after 100ms in wait for key(s) 'never'"));
      CHECK_THAT(msg, !Catch::Contains("'here'"));
      CHECK_THAT(msg, Catch::Contains("TcpStoreOptions::timeout raises the limit"));
    }
    // The store is usable afterwards (2.x: same connection; 1.13: a fresh one), and a late set
    // of the timed-out key does not confuse the next reply.
    s.set("never", "now");
    CHECK(s.add("ctr", 1) >= 1);
    CHECK(to_string(s.get("never")) == "now");
    s.set_timeout(milliseconds(100));
    CHECK_THROWS_WITH(s.get("absent"), Catch::Contains("in get for key(s) 'absent'"));
    s.set_timeout(std::chrono::seconds(10));
    s.delete_key("never");
  }
  // Wait timeouts leave no registrations behind on the server (2.x cancels, 1.13 reconnects).
  CHECK(srv.stats().waiters == 0);
}

TEST_CASE("TcpStore: request errors name the address, the operation and the keys", "[tcpstore]") {
  // A listener nobody accepts from: connecting works (1.13 dialect: no handshake), replies never
  // come, so every operation that reads a reply times out; its message names what it waited for.
  Listener l;
  auto o = client_opts(l.port, Dialect::kV113);
  o.timeout = milliseconds(100);
  TcpStore s(o);
  std::string where = "store 127.0.0.1:" + std::to_string(l.port) + ": timed out after ";
  CHECK_THROWS_WITH(s.add("ctr", 1),
                    Catch::StartsWith(where) && Catch::Contains("100ms in add of key(s) 'ctr'") &&
                        Catch::Contains("TcpStoreOptions::timeout raises the limit"));
  CHECK_THROWS_AS(s.num_keys(), gpurun::StoreTimeout);
  CHECK_THROWS_WITH(s.num_keys(),
                    Catch::StartsWith(where) && Catch::Contains("100ms in num_keys;"));
  CHECK_THROWS_WITH(s.check({"a", "b"}),
                    Catch::StartsWith(where) && Catch::Contains("in check of key(s) 'a', 'b'"));
  CHECK_THROWS_WITH(s.compare_set("k", to_bytes("x"), to_bytes("y")),
                    Catch::Contains("in compare_set of key(s) 'k'"));
  CHECK_THROWS_WITH(s.delete_key("k"), Catch::Contains("in delete_key of key(s) 'k'"));

  // A server that goes away: the next request on the pooled connection names the operation.
  auto srv = std::make_unique<StoreServerThread>(testing::test_server_options());
  TcpStore t(client_opts(srv->port()));
  t.set("k", "v");
  std::string addr = "store 127.0.0.1:" + std::to_string(srv->port()) + ": connection lost";
  srv.reset();
  CHECK_THROWS_WITH(t.add("ctr", 1), Catch::StartsWith(addr) &&
                                         Catch::Contains("during add of key(s) 'ctr' (") &&
                                         Catch::Contains("is the store server still running?"));
}

TEST_CASE("TcpStore: multi_get and multi_set of no keys return at once", "[tcpstore]") {
  StoreServerThread srv(testing::test_server_options());
  for (Dialect d : {Dialect::kV2, Dialect::kV113}) {
    CAPTURE(static_cast<int>(d));
    auto o = client_opts(srv.port(), d);
    o.timeout = std::chrono::seconds(2);
    TcpStore s(o);
    s.multi_set({}, {});
    CHECK(s.multi_get({}).empty());  // a MULTI_GET reply of no values is no bytes
    s.multi_set({"a", "b"}, {to_bytes("1"), to_bytes("2")});
    auto v = s.multi_get({"b", "a"});
    REQUIRE(v.size() == 2);
    CHECK(to_string(v[0]) == "2");
    CHECK(to_string(v[1]) == "1");
  }
}

TEST_CASE("TcpStore queues: FIFO push/pop/len, apart from the key-value map", "[tcpstore]") {
  StoreServerThread srv(testing::test_server_options());
  TcpStore s(client_opts(srv.port()));
  CHECK(s.queue_len("q") == 0);
  s.queue_push("q", "first");
  s.queue_push("q", Bytes{0x00, 0xff, 0x0a});
  s.queue_push("q", Bytes{});  // an empty item is still an item
  CHECK(s.queue_len("q") == 3);
  CHECK(s.check({"q"}));     // a non-empty queue is a present key
  CHECK(s.num_keys() == 0);  // but not a key-value key
  s.set("q", "kv");          // same name, other namespace
  CHECK(to_string(s.queue_pop("q")) == "first");
  CHECK(s.queue_pop("q") == Bytes{0x00, 0xff, 0x0a});
  CHECK(s.queue_pop("q").empty());
  CHECK(s.queue_len("q") == 0);
  CHECK(to_string(s.get("q")) == "kv");

  // The torch "/" prefix applies to queue keys like any other.
  auto o = client_opts(srv.port());
  o.torch_key_prefix = true;
  TcpStore torch_like(o);
  torch_like.queue_push("tq", "x");
  CHECK(s.queue_len("/tq") == 1);
  CHECK(torch_like.queue_len("tq") == 1);
  CHECK(to_string(torch_like.queue_pop("tq")) == "x");
}

TEST_CASE("TcpStore queues: queue_pop blocks until a push, one item per consumer", "[tcpstore]") {
  StoreServerThread srv(testing::test_server_options());
  TcpStore s(client_opts(srv.port()));
  // Two consumers blocked on one queue (own connections from the pool), then two pushes from
  // another client: each consumer gets exactly one of the items.
  auto pop = [&] { return to_string(s.queue_pop("jobs", std::chrono::seconds(20))); };
  auto a = std::async(std::launch::async, pop);
  auto b = std::async(std::launch::async, pop);
  auto waited = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (srv.stats().waiters < 2 && std::chrono::steady_clock::now() < waited) {
    std::this_thread::yield();
  }
  REQUIRE(srv.stats().waiters == 2);
  TcpStore producer(client_opts(srv.port()));
  producer.queue_push("jobs", "1");
  producer.queue_push("jobs", "2");
  std::vector<std::string> got{a.get(), b.get()};
  std::sort(got.begin(), got.end());
  CHECK(got == std::vector<std::string>{"1", "2"});
  CHECK(s.queue_len("jobs") == 0);
}

TEST_CASE("TcpStore queues: queue_pop waits again when another consumer took the item",
          "[tcpstore]") {
  // A scripted 2.x server: after the first WAIT, QUEUE_POP replies length 0 (as when another
  // consumer popped first); the client must WAIT again and pop the next item.
  using testing::Buf;
  Listener l;
  timeval tv{10, 0};  // accept() and recv() in the script give up instead of hanging the test
  ::setsockopt(l.fd.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::vector<Buf> requests;  // what the client sent after the handshake
  std::thread script([&] {
    gpurun::UniqueFd c(::accept4(l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!c) return;
    ::setsockopt(c.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    auto read_n = [&](std::size_t n) {
      Buf b(n);
      for (std::size_t got = 0; got < n;) {
        ssize_t r = ::recv(c.get(), b.data() + got, n - got, 0);
        if (r <= 0) throw std::runtime_error("client went away");
        got += static_cast<std::size_t>(r);
      }
      return b;
    };
    auto write = [&](const Buf& b) { ::send(c.get(), b.data(), b.size(), MSG_NOSIGNAL); };
    try {
      read_n(5);                                 // VALIDATE
      Buf ping = read_n(5);                      // PING nonce
      write(Buf(ping.begin() + 1, ping.end()));  // echo
      for (int round = 0; round < 2; ++round) {
        requests.push_back(read_n(18));  // WAIT ["q"]
        write({protocol::kStopWaiting});
        requests.push_back(read_n(10));  // QUEUE_POP "q"
        write(round == 0 ? testing::i64le(0)
                         : testing::cat({testing::i64le(1), testing::wstr("it")}));
      }
    } catch (const std::exception&) {
    }
  });
  std::string got;
  try {
    TcpStore s(client_opts(l.port));
    got = to_string(s.queue_pop("q", std::chrono::seconds(5)));
  } catch (...) {
    script.join();
    throw;
  }
  script.join();
  CHECK(got == "it");
  Buf wait = testing::cat({{0x06}, testing::u64le(1), testing::wstr("q")});
  Buf pop = testing::cat({{0x0F}, testing::wstr("q")});
  CHECK(requests == std::vector<Buf>{wait, pop, wait, pop});
}

TEST_CASE("TcpStore queues: timeouts and the 1.13 dialect", "[tcpstore]") {
  StoreServerThread srv(testing::test_server_options());
  TcpStore s(client_opts(srv.port()));
  try {
    s.queue_pop("empty", milliseconds(100));
    FAIL("queue_pop of an empty queue did not time out");
  } catch (const gpurun::StoreTimeout& e) {
    CHECK_THAT(e.what(), Catch::StartsWith("store 127.0.0.1:" + std::to_string(srv.port())) &&
                             Catch::Contains("timed out after 100ms in queue_pop for key(s) "
                                             "'empty'"));
  }
  CHECK(srv.stats().waiters == 0);  // the WAIT was cancelled
  s.queue_push("empty", "now");     // the connection is still good
  CHECK(to_string(s.queue_pop("empty", milliseconds(100))) == "now");

  // PyTorch 1.13 has no queues: refused locally, nothing sent, the store stays usable.
  TcpStore old(client_opts(srv.port(), Dialect::kV113));
  CHECK_THROWS_AS(old.queue_push("q", "x"), gpurun::ProtocolError);
  CHECK_THROWS_WITH(old.queue_pop("q"), Catch::Contains("QUEUE_POP is only part of the 2.x"));
  CHECK_THROWS_WITH(old.queue_len("q"), Catch::Contains("Dialect::kV2"));
  CHECK(old.add("ctr", 1) == 1);
  CHECK(s.queue_len("q") == 0);
}

TEST_CASE("TcpStore: connect retries until the server comes up", "[tcpstore]") {
  std::uint16_t port;
  {
    StoreServerThread probe(testing::test_server_options());
    port = probe.port();
  }
  auto fut = std::async(std::launch::async, [port] {
    TcpStore s(client_opts(port));
    return s.add("ctr", 1);
  });
  std::this_thread::sleep_for(milliseconds(150));  // let it fail a few connects first
  auto o = testing::test_server_options();
  o.port = port;
  StoreServerThread srv(o);
  CHECK(fut.get() == 1);
}

TEST_CASE("TcpStore: connect failure names the address and how long it tried", "[tcpstore]") {
  std::uint16_t port;
  {
    StoreServerThread probe(testing::test_server_options());
    port = probe.port();
  }
  auto o = client_opts(port);
  o.connect_timeout = milliseconds(100);
  try {
    TcpStore s(o);
    FAIL("connected to a closed port");
  } catch (const gpurun::NetworkError& e) {
    CHECK_THAT(e.what(), Catch::Contains("store 127.0.0.1:" + std::to_string(port)));
    CHECK_THAT(e.what(), Catch::Contains("cannot connect after"));
  }
}

TEST_CASE("TcpStore: a server that never answers the handshake", "[tcpstore]") {
  // A listener nobody accepts from: the kernel completes the TCP handshake, the PING echo never
  // comes (as with a PyTorch 1.13 server). The error hints at the 1.13 dialect.
  Listener l;
  auto o = client_opts(l.port);
  o.connect_timeout = milliseconds(300);
  try {
    TcpStore s(o);
    FAIL("handshake succeeded without a server");
  } catch (const gpurun::NetworkError& e) {
    CHECK_THAT(e.what(), Catch::Contains("handshake"));
    CHECK_THAT(e.what(), Catch::Contains("kV113"));
  }
}

TEST_CASE("TcpStore: concurrent users of one TcpStore do not block each other", "[tcpstore]") {
  StoreServerThread srv(testing::test_server_options());
  auto s = std::make_shared<TcpStore>(client_opts(srv.port()));
  std::vector<std::thread> ts;
  for (int i = 0; i < 8; ++i) {
    ts.emplace_back([&, i] {
      for (int j = 0; j < 50; ++j) s->add("ctr", 1);
      s->set("done/" + std::to_string(i), "1");
    });
  }
  std::vector<std::string> keys;
  for (int i = 0; i < 8; ++i) keys.push_back("done/" + std::to_string(i));
  s->wait(keys, std::chrono::seconds(20));
  for (auto& t : ts) t.join();
  CHECK(s->add("ctr", 0) == 400);
}

TEST_CASE("TcpStore over IPv6 loopback", "[tcpstore]") {
  std::string why;
  auto srv = testing::ipv6_loopback_server(testing::test_server_options(), why);
  if (!srv) {
    WARN("skipping: no IPv6 loopback here (" << why << ")");
    return;
  }
  auto c = client_opts(srv->port());
  c.host = "::1";
  TcpStore s(c);
  CHECK(s.describe() == "store [::1]:" + std::to_string(srv->port()));
  s.set("k", "v");
  CHECK(to_string(s.get("k")) == "v");
}

TEST_CASE("tcp store: a last will fires when its connection goes away, only if absent",
          "[tcp_store][server]") {
  StoreServerThread server(testing::test_server_options());
  TcpStore observer(client_opts(server.port()));
  {
    TcpStore dying(client_opts(server.port()));
    dying.set(std::string(kWillKeyPrefix) + "end/1", "lost node a");
    dying.set(std::string(kWillKeyPrefix) + "end/2", "lost node a");
    dying.set(std::string(kWillKeyPrefix) + "end/3", "lost node a");
    CHECK(dying.delete_key(std::string(kWillKeyPrefix) + "end/3"));  // cancelled
    CHECK_FALSE(dying.delete_key(std::string(kWillKeyPrefix) + "end/4"));
    observer.set("end/2", "ok");             // already decided: the will must not overwrite it
    CHECK_FALSE(observer.check({"end/1"}));  // a will is not a key while its peer lives
    CHECK(observer.num_keys() == 1);
  }
  // The waiter is woken by the will as by a set.
  observer.wait({"end/1"}, milliseconds(5000));
  CHECK(to_string(observer.get("end/1")) == "lost node a");
  CHECK(to_string(observer.get("end/2")) == "ok");
  CHECK_FALSE(observer.check({"end/3"}));
}

TEST_CASE("tcp store: wills do not fire when the server stops", "[tcp_store][server]") {
  StoreServerThread server(testing::test_server_options());
  TcpStore dying(client_opts(server.port()));
  dying.set(std::string(kWillKeyPrefix) + "end", "lost");
  server.stop();  // must not crash or touch a key on the way down
  SUCCEED();
}
