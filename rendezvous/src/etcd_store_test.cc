// EtcdStore against a real etcd (Debian's etcd-server, started by this binary on 127.0.0.1):
// the shared Store contract, concurrent add, leases and deletion watches, endpoint failover, and
// the errors for an unreachable etcd and for a port that is not etcd's v3 gateway.
// Registered only when etcd is installed (label "etcd"; see rendezvous/CMakeLists.txt).
#include "gpurun/rendezvous/etcd_store.h"

#include <fmt/format.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <thread>

#include "etcd_client.h"
#include "etcd_test_util.h"
#include "gpurun/common/error.h"
#include "store_contract.h"

using namespace gpurun::rendezvous;
using gpurun::NetworkError;
using gpurun::StoreTimeout;
using std::chrono::milliseconds;

namespace {

testing::EtcdProcess& etcd_server() {
  static testing::EtcdProcess e;  // one etcd for the binary, killed at exit
  return e;
}

std::string fresh_prefix() {
  static std::atomic<int> n{0};
  return "test/" + std::to_string(::getpid()) + "/" + std::to_string(n++) + "/";
}

std::shared_ptr<EtcdStore> make_store(std::string endpoints = "") {
  EtcdStoreOptions o;
  o.endpoints = endpoints.empty() ? etcd_server().endpoint() : endpoints;
  o.prefix = fresh_prefix();
  o.timeout = milliseconds(5000);
  o.request_timeout = milliseconds(5000);
  return std::make_shared<EtcdStore>(o);
}

// A TCP listener that answers every HTTP request with 404 (a port that is not etcd's gateway).
class NotEtcd {
 public:
  NotEtcd() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] {
      for (;;) {
        int c = ::accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        char buf[4096];
        (void)::read(c, buf, sizeof buf);
        const char reply[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nNot Found";
        (void)::write(c, reply, sizeof reply - 1);
        ::close(c);
      }
    });
  }
  ~NotEtcd() {
    ::shutdown(fd_, SHUT_RDWR);
    ::close(fd_);
    thread_.join();
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
};

}  // namespace

TEST_CASE("EtcdStore meets the Store contract", "[etcd]") {
  testing::check_store_contract([] { return make_store(); });
}

TEST_CASE("EtcdStore add and append lose no update under concurrent writers", "[etcd]") {
  auto s = make_store();
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        s->add("ctr", 1);
        s->append("log", to_bytes("x"));
      }
    });
  }
  for (auto& t : ts) t.join();
  CHECK(s->add("ctr", 0) == 100);
  CHECK(s->get("log").size() == 100);
}

TEST_CASE("EtcdStore compare_set lets exactly one of many racers create a key", "[etcd]") {
  auto s = make_store();
  std::atomic<int> winners{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 6; ++t) {
    ts.emplace_back([&, t] {
      const auto mine = to_bytes("w" + std::to_string(t));
      if (s->compare_set("once", {}, mine) == mine) ++winners;
    });
  }
  for (auto& t : ts) t.join();
  CHECK(winners == 1);
}

TEST_CASE("EtcdStore lease keys vanish with their lease and the watch sees it", "[etcd]") {
  auto s = make_store();
  const auto lease = s->grant_lease(milliseconds(30'000));
  CHECK(s->keep_alive(lease));
  s->set_with_lease("alive/a", to_bytes("will of a"), lease);
  s->set("alive/b", "not leased");
  const auto from = s->revision() + 1;
  std::thread revoker([&] { s->revoke_lease(lease); });
  std::string key, value;
  s->watch_deletes("alive/", from, gpurun::deadline_after(milliseconds(10'000)),
                   [&](const std::string& k, const Bytes& v) {
                     key = k;
                     value = to_string(v);
                     return false;
                   });
  revoker.join();
  CHECK(key == "alive/a");
  CHECK(value == "will of a");
  CHECK_FALSE(s->check({"alive/a"}));
  CHECK(s->check({"alive/b"}));
  CHECK_FALSE(s->keep_alive(lease));
}

TEST_CASE("EtcdStore fails over from a dead endpoint to a live one", "[etcd]") {
  const int dead = testing::free_tcp_port();
  auto s = make_store(fmt::format("127.0.0.1:{},{}", dead, etcd_server().endpoint()));
  s->set("k", "v");
  CHECK(to_string(s->get("k")) == "v");
  CHECK_THAT(s->describe(), Catch::Contains(std::to_string(dead)));
}

TEST_CASE("EtcdStore names every endpoint when etcd is unreachable", "[etcd]") {
  const int a = testing::free_tcp_port();
  const int b = testing::free_tcp_port();
  EtcdStoreOptions o;
  o.endpoints = fmt::format("127.0.0.1:{},127.0.0.1:{}", a, b);
  o.request_timeout = milliseconds(500);
  try {
    EtcdStore s(o);
    FAIL("no error");
  } catch (const NetworkError& e) {
    CHECK_THAT(e.what(), Catch::Contains(fmt::format("127.0.0.1:{} (connection refused)", a)));
    CHECK_THAT(e.what(), Catch::Contains(fmt::format("127.0.0.1:{} (connection refused)", b)));
    CHECK_THAT(e.what(), Catch::Contains("--listen-client-urls"));
  }
}

TEST_CASE("EtcdStore says so when the port is not etcd's v3 gateway", "[etcd]") {
  NotEtcd fake;
  EtcdStoreOptions o;
  o.endpoints = fmt::format("127.0.0.1:{}", fake.port());
  o.request_timeout = milliseconds(500);
  try {
    EtcdStore s(o);
    FAIL("no error");
  } catch (const NetworkError& e) {
    CHECK_THAT(e.what(), Catch::Contains("HTTP 404"));
    CHECK_THAT(e.what(), Catch::Contains("no etcd v3 HTTP/JSON gateway"));
  }
}

TEST_CASE("EtcdStore wait times out naming the key and the endpoint", "[etcd]") {
  auto s = make_store();
  try {
    s->wait({"nobody/sets/this"}, milliseconds(200));
    FAIL("no timeout");
  } catch (const StoreTimeout& e) {
    CHECK_THAT(e.what(), Catch::Contains("'nobody/sets/this'"));
    CHECK_THAT(e.what(), Catch::Contains(etcd_server().endpoint()));
  }
}

TEST_CASE("etcd endpoint lists parse with defaults and schemes", "[etcd-parse]") {
  auto eps = etcd::parse_endpoints("a:1, http://b:2/,c,[::1]:3");
  REQUIRE(eps.size() == 4);
  CHECK(eps[0].str() == "a:1");
  CHECK(eps[1].str() == "b:2");
  CHECK(eps[2].str() == "c:2379");
  CHECK(eps[3].str() == "[::1]:3");
  CHECK_THROWS_AS(etcd::parse_endpoints("a:x"), gpurun::ConfigError);
  CHECK_THROWS_AS(etcd::parse_endpoints("https://a:1"), gpurun::ConfigError);
  CHECK(etcd::prefix_end("a/") == "a0");
  CHECK(etcd::b64decode(etcd::b64encode(std::string("\0\xff", 2))) == std::string("\0\xff", 2));
}
