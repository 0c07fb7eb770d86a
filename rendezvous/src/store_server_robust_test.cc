// Robustness of the store server (label robust; CI runs these under ASan+UBSan):
//  - a fixed-seed random-frame storm (>= 100k frames: garbage, truncated, huge lengths and valid
//    requests of both dialects) from several connections, while a well-behaved client's data and
//    wait must survive untouched;
//  - 1000 connect/disconnect cycles without fd or connection growth.
#include <fcntl.h>
#include <sys/resource.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "gpurun/common/log.h"
#include "gpurun/rendezvous/store_server.h"
#include "gpurun/rendezvous/tcp_store.h"
#include "test_util.h"

using namespace gpurun::rendezvous;
using namespace gpurun::rendezvous::testing;
using std::chrono::milliseconds;

namespace {

std::size_t open_fds() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

long rss_kib() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return 0;
}

// Builds random frames. Keys come from a small set so valid WAITs and SETs interact.
class FrameGen {
 public:
  explicit FrameGen(std::uint64_t seed) : rng_(seed) {}

  Buf frame(bool v2) {
    switch (pick(10)) {
      case 0:
      case 1:
        return garbage();
      case 2:
        return truncated(v2);
      case 3:
        return huge(v2);
      default:
        return valid(v2);
    }
  }

 private:
  std::uint64_t pick(std::uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  std::string key() { return "f/" + std::to_string(pick(16)); }
  std::string value() { return std::string(pick(40), static_cast<char>('a' + pick(26))); }

  Buf garbage() {
    Buf b(1 + pick(48));
    for (auto& x : b) x = static_cast<std::uint8_t>(rng_());
    return b;
  }
  Buf truncated(bool v2) {
    Buf b = valid(v2);
    b.resize(pick(b.size()));
    return b;
  }
  Buf huge(bool v2) {
    std::uint8_t op = static_cast<std::uint8_t>(v2 ? 1 + pick(16) : pick(9));
    std::uint64_t len =
        pick(2) ? (std::uint64_t{1} << (20 + pick(44))) : ~std::uint64_t{0} - pick(8);
    return cat({{op}, u64le(len), garbage()});
  }
  Buf valid(bool v2) {
    using protocol::Op;
    static constexpr Op kOps[] = {Op::kSet,    Op::kCompareSet, Op::kGet,        Op::kAdd,
                                  Op::kCheck,  Op::kWait,       Op::kGetNumKeys, Op::kDeleteKey,
                                  Op::kAppend, Op::kMultiGet,   Op::kMultiSet,   Op::kCancelWait,
                                  Op::kPing,   Op::kQueuePush,  Op::kQueuePop,   Op::kQueueLen};
    Dialect d = v2 ? Dialect::kV2 : Dialect::kV113;
    Buf out;
    for (int tries = 0; tries < 8; ++tries) {
      Op op = kOps[pick(std::size(kOps))];
      if (!protocol::wire_byte(d, op)) continue;
      std::string k = key();
      std::string v = value();
      Buf vb(v.begin(), v.end());
      std::vector<std::string> ks;
      std::vector<Buf> vs;
      for (std::uint64_t i = 0, n = pick(4); i < n; ++i) {
        ks.push_back(key());
        vs.push_back(vb);
      }
      switch (op) {
        case Op::kSet:
          protocol::encode_set(d, k, vb, out);
          break;
        case Op::kCompareSet:
          protocol::encode_compare_set(d, k, Buf{}, vb, out);
          break;
        case Op::kGet:
          protocol::encode_get(d, k, out);
          break;
        case Op::kAdd:
          // Only on counter keys, so most ADDs succeed.
          protocol::encode_add(d, "c/" + std::to_string(pick(4)),
                               static_cast<std::int64_t>(pick(5)) - 2, out);
          break;
        case Op::kCheck:
        case Op::kWait:
        case Op::kMultiGet:
          protocol::encode_keys(d, op, ks, out);
          break;
        case Op::kGetNumKeys:
          protocol::encode_num_keys(d, out);
          break;
        case Op::kDeleteKey:
          protocol::encode_delete_key(d, k, out);
          break;
        case Op::kAppend:
          protocol::encode_append(d, k, vb, out);
          break;
        case Op::kMultiSet:
          protocol::encode_multi_set(d, ks, vs, out);
          break;
        case Op::kCancelWait:
          protocol::encode_cancel_wait(d, out);
          break;
        case Op::kPing:
          protocol::encode_ping(d, static_cast<std::uint32_t>(rng_()), out);
          break;
        case Op::kQueuePush:
          protocol::encode_queue_push(d, k, vb, out);
          break;
        case Op::kQueuePop:
          protocol::encode_queue_pop(d, k, out);
          break;
        case Op::kQueueLen:
          protocol::encode_queue_len(d, k, out);
          break;
        default:
          break;
      }
      break;
    }
    return out;
  }

  std::mt19937_64 rng_;
};

// A fuzzing connection: non-blocking, drains whatever the server replies, reconnects when the
// server closes it.
struct FuzzConn {
  std::uint16_t port;
  bool v2 = false;
  gpurun::UniqueFd fd;
  int reconnects = 0;

  void open(bool as_v2) {
    fd.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    ::fcntl(fd.get(), F_SETFL, O_NONBLOCK);
    v2 = as_v2;
    if (v2) send_some(v2_validate());
  }
  void drain() {
    char tmp[65536];
    for (;;) {
      ssize_t r = ::recv(fd.get(), tmp, sizeof tmp, MSG_DONTWAIT);
      if (r > 0) continue;
      if (r == 0) fd.reset();  // closed by the server
      return;
    }
  }
  // Returns false when the connection is gone (or hopelessly backed up) and must be reopened.
  bool send_some(const Buf& b) {
    std::size_t off = 0;
    int stalls = 0;
    while (off < b.size()) {
      ssize_t n = ::send(fd.get(), b.data() + off, b.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        off += static_cast<std::size_t>(n);
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && ++stalls < 3) {
        drain();
        if (!fd) return false;
        pollfd p{fd.get(), POLLOUT, 0};
        ::poll(&p, 1, 20);
        continue;
      }
      return false;
    }
    return true;
  }
  void abort_rst() {  // abrupt close: RST instead of FIN
    linger l{1, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
    fd.reset();
  }
};

}  // namespace

TEST_CASE("robust: 100k random frames from several connections leave good clients intact",
          "[robust]") {
  // Thousands of "closing connection from ...: <reason>" warnings are expected here.
  gpurun::log::configure(gpurun::log::Level::kError);
  StoreServerOptions o;
  o.raise_fd_limit = false;
  StoreServerThread srv(o);

  TcpStoreOptions co;
  co.port = srv.port();
  co.timeout = std::chrono::seconds(30);
  TcpStore good(co);
  good.set("good/data", "precious");
  good.add("good/ctr", 41);
  RawClient waiter(srv.port());
  waiter.v2();
  waiter.send(cat({{0x06}, u64le(1), wstr("good/release")}));
  REQUIRE(eventually([&] { return srv.stats().waiters >= 1; }));

  constexpr int kConns = 6;
  constexpr int kFrames = 100'000;
  FrameGen gen(0x5eed1234);
  std::mt19937_64 rng(99);
  std::vector<FuzzConn> conns(kConns);
  for (int i = 0; i < kConns; ++i) {
    conns[static_cast<std::size_t>(i)].port = srv.port();
    conns[static_cast<std::size_t>(i)].open(i % 2 == 0);
  }
  int frames = 0;
  int reopened = 0;
  while (frames < kFrames) {
    auto& c = conns[rng() % kConns];
    // Several frames per write (the server must split them), like pipelining clients.
    Buf batch;
    for (std::uint64_t i = 0, n = 1 + rng() % 8; i < n; ++i) {
      Buf f = gen.frame(c.v2);
      batch.insert(batch.end(), f.begin(), f.end());
      ++frames;
    }
    c.drain();
    bool ok = c.fd && c.send_some(batch);
    if (!ok || rng() % 500 == 0) {
      if (ok && rng() % 2) c.abort_rst();
      c.open(rng() % 2 == 0);
      ++reopened;
    }
  }
  for (auto& c : conns) c.fd.reset();
  INFO("reopened " << reopened << " connections");
  CHECK(reopened > 100);  // the storm did hit protocol errors

  // The server still serves: data intact, the wait is still registered and fires.
  REQUIRE(eventually([&] { return srv.stats().connections_open == 2; }));
  CHECK(to_string(good.get("good/data")) == "precious");
  CHECK(good.add("good/ctr", 1) == 42);
  CHECK(waiter.silent_for(milliseconds(1)));
  good.set("good/release", "go");
  CHECK(waiter.recv_u8() == 0);
  auto st = srv.stats();
  CHECK(st.connections_rejected > 100);
  CHECK(st.waiters == 0);
  gpurun::log::configure(gpurun::log::Level::kWarn);
}

TEST_CASE("robust: 1000 connect/disconnect cycles leak no fds or connections", "[robust]") {
  StoreServerOptions o;
  o.raise_fd_limit = false;
  StoreServerThread srv(o);
  TcpStoreOptions co;
  co.port = srv.port();
  co.timeout = std::chrono::seconds(30);

  auto cycle = [&](int i) {
    switch (i % 4) {
      case 0: {  // a TcpStore client doing real work
        TcpStore s(co);
        s.set("cyc/" + std::to_string((i / 4) % 8), "x");
        break;
      }
      case 1: {  // disconnect while waiting
        RawClient c(srv.port());
        c.send(cat({{0x05}, u64le(1), wstr("/never")}));
        break;
      }
      case 2: {  // half a request, then an abrupt reset
        RawClient c(srv.port());
        c.send(cat({{0x00}, u64le(100), Buf{1, 2, 3}}));
        linger l{1, 0};
        ::setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
        break;
      }
      default: {  // connect and leave without a byte (a port scan)
        RawClient c(srv.port());
        break;
      }
    }
  };
  for (int i = 0; i < 200; ++i) cycle(i);  // warm-up: allocator pools, thread stacks
  REQUIRE(eventually([&] { return srv.stats().connections_open == 0; }));
  std::size_t fds_before = open_fds();
  long rss_before = rss_kib();
  for (int i = 0; i < 1000; ++i) cycle(i);
  REQUIRE(eventually([&] { return srv.stats().connections_open == 0; }));
  auto st = srv.stats();
  CHECK(st.waiters == 0);
  CHECK(st.keys == 8);
  CHECK(st.connections_accepted == 1200);
  CHECK(open_fds() == fds_before);
  long growth = rss_kib() - rss_before;
  INFO("RSS growth " << growth << " KiB");
  CHECK(growth < 48 * 1024);  // generous: ASan's quarantine holds freed memory
}
