// libFuzzer target for the store server's request handling (store_server.cc), issue 16 section 5:
// one StoreServer per input with small limits, three simulated connections (socketpairs served
// through StoreServer::serve_connected), the input's bytes fed to them in small interleaved
// chunks. Invariants checked after every chunk and at the end:
//  - StoreServer::audit(): the running byte/waiter counters equal a recount of the data, and the
//    store never holds more than its budget;
//  - replies are well-formed: what a connection without WAITs receives parses, reply by reply,
//    as a prefix of the replies its requests call for (the client's own reply parser);
//  - after every connection closes, nothing stays accounted (buffers, waiters).
// Input: pieces separated by "|#|"; piece i goes to connection i % 3; connection 1 is a peer on
// probation (the store has a job secret it cannot prove: anything but VALIDATE, PING and AUTH_*
// closes it); connection 2 is never read until the end (its replies back up: output cap,
// deferral). A raw frame stream (the protocol
// corpus) is one piece for connection 0. Also linked into store_fuzz_replay (replay_main.cc).
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gpurun/common/log.h"
#include "gpurun/rendezvous/store_server.h"
#include "protocol.h"

namespace proto = gpurun::rendezvous::protocol;
using gpurun::rendezvous::StoreServer;
using gpurun::rendezvous::StoreServerOptions;

namespace {

constexpr int kConns = 3;
constexpr std::string_view kSeparator = "|#|";

[[noreturn]] void fail(const std::string& why) {
  std::fprintf(stderr, "store_fuzzer: invariant broken: %s\n", why.c_str());
  std::abort();
}

struct Conn {
  int fd = -1;  // the client end
  std::vector<std::uint8_t> sent, received;
  bool drain = true;
};

void read_available(Conn& c) {
  if (c.fd < 0) return;
  std::uint8_t buf[65536];
  for (;;) {
    ssize_t n = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      c.received.insert(c.received.end(), buf, buf + n);
      continue;
    }
    return;
  }
}

// Runs the server until it has nothing left to do for what was written so far.
void settle(boost::asio::io_context& io, std::vector<Conn>& conns) {
  for (int quiet = 0; quiet < 2;) {
    std::size_t ran = io.poll();
    std::size_t before = 0, after = 0;
    for (auto& c : conns) before += c.received.size();
    for (auto& c : conns) {
      if (c.drain) read_available(c);
    }
    for (auto& c : conns) after += c.received.size();
    io.restart();
    quiet = (ran == 0 && after == before) ? quiet + 1 : 0;
  }
}

void check_replies(const Conn& c, const proto::Limits& limits) {
  // The requests this connection sent, in order (up to the first malformed one).
  proto::RequestParser parser(limits);
  std::span<const std::uint8_t> rest(c.sent);
  struct Expect {
    proto::ReplyKind kind;
    std::uint64_t count;
  };
  std::vector<Expect> expect;
  for (;;) {
    proto::Request req;
    if (rest.size() < parser.need()) break;
    auto st = parser.parse(rest, req);
    if (st != proto::ParseStatus::kRequest) break;
    rest = rest.subspan(parser.consumed());
    switch (req.op) {
      case proto::Op::kWait:
        return;  // its reply may come later than the replies after it
      case proto::Op::kGet:
      case proto::Op::kCompareSet:
        expect.push_back({proto::ReplyKind::kBytes, 0});
        break;
      case proto::Op::kMultiGet:
        expect.push_back({proto::ReplyKind::kBytesList, req.count});
        break;
      case proto::Op::kAdd:
      case proto::Op::kGetNumKeys:
      case proto::Op::kDeleteKey:
      case proto::Op::kQueueLen:
        expect.push_back({proto::ReplyKind::kI64, 0});
        break;
      case proto::Op::kCheck:
      case proto::Op::kCancelWait:
        expect.push_back({proto::ReplyKind::kU8, 0});
        break;
      case proto::Op::kPing:
        expect.push_back({proto::ReplyKind::kU32, 0});
        break;
      case proto::Op::kAuthChallenge:
        expect.push_back({proto::ReplyKind::kBytes, 0});
        break;
      case proto::Op::kAuthProof:  // accepted: u8 0 (a wrong proof closes the connection)
        expect.push_back({proto::ReplyKind::kU8, 0});
        break;
      case proto::Op::kQueuePop:
        expect.push_back({proto::ReplyKind::kQueuePop, 0});
        break;
      default:
        break;  // no reply
    }
  }
  std::span<const std::uint8_t> got(c.received);
  for (const auto& e : expect) {
    if (got.empty()) return;  // the server closed the connection here: a prefix
    proto::Reply r;
    auto res = proto::parse_reply(e.kind, got, r, e.count);
    if (res.status != proto::ParseStatus::kRequest) {
      fail(res.status == proto::ParseStatus::kError ? "malformed reply: " + res.error
                                                    : "truncated reply");
    }
    got = got.subspan(res.consumed);
  }
  if (!got.empty()) fail(std::to_string(got.size()) + " reply bytes nobody asked for");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static bool quiet = [] {
    gpurun::log::configure(gpurun::log::Level::kError, "none");  // thousands of peer warnings
    return true;
  }();
  (void)quiet;
  StoreServerOptions o;
  o.raise_fd_limit = false;
  o.check_peer_uid = false;
  o.frame_timeout = std::chrono::milliseconds(0);
  o.max_key_bytes = 64;
  o.max_value_bytes = 256;
  o.max_keys_per_request = 16;
  o.max_output_bytes = 512;
  o.max_store_bytes = 4096;
  o.max_buffer_bytes = 1 << 16;
  o.job_secret = "fuzz";  // connection 1 is on probation: it must prove it (it never can)
  proto::Limits limits;
  limits.max_key_bytes = o.max_key_bytes;
  limits.max_value_bytes = o.max_value_bytes;
  limits.max_keys_per_request = o.max_keys_per_request;

  boost::asio::io_context io(1);
  std::optional<StoreServer> server;
  server.emplace(io, o);
  std::vector<Conn> conns(kConns);
  for (int i = 0; i < kConns; ++i) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
    int small = 4096;  // replies back up quickly on the connection that is not read
    ::setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    ::setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    ::fcntl(sv[1], F_SETFL, O_NONBLOCK);
    conns[static_cast<std::size_t>(i)].fd = sv[1];
    conns[static_cast<std::size_t>(i)].drain = i != 2;
    server->serve_connected(sv[0], /*on_probation=*/i == 1);
  }

  // Split into pieces, then interleave the pieces' chunks across connections.
  std::string_view in(reinterpret_cast<const char*>(data), size);
  std::vector<std::pair<int, std::string_view>> pieces;
  for (int i = 0;; ++i) {
    auto p = in.find(kSeparator);
    pieces.emplace_back(i % kConns, in.substr(0, p));
    if (p == std::string_view::npos) break;
    in.remove_prefix(p + kSeparator.size());
  }
  std::uint32_t rng = static_cast<std::uint32_t>(size) * 2654435761u + 1;
  bool more = true;
  while (more) {
    more = false;
    for (auto& [conn, piece] : pieces) {
      if (piece.empty()) continue;
      rng = rng * 1664525u + 1013904223u;
      std::size_t n = std::min<std::size_t>(piece.size(), 1 + (rng >> 24) % 64);
      Conn& c = conns[static_cast<std::size_t>(conn)];
      ssize_t w = ::send(c.fd, piece.data(), n, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (w > 0) {
        c.sent.insert(c.sent.end(), piece.begin(), piece.begin() + w);
        piece.remove_prefix(static_cast<std::size_t>(w));
      } else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        piece = {};  // the server closed this connection
      }
      more = more || !piece.empty();
      settle(io, conns);
      if (auto why = server->audit(); !why.empty()) fail(why);
      // A full socket on a connection that is not read: stop writing to it.
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) piece = {};
    }
  }
  conns[2].drain = true;
  settle(io, conns);
  if (auto why = server->audit(); !why.empty()) fail(why);
  for (auto& c : conns) check_replies(c, limits);

  for (auto& c : conns) {
    ::close(c.fd);
    c.fd = -1;
  }
  settle(io, conns);
  auto st = server->stats();
  if (st.connections_open != 0) fail("connections still open after every client closed");
  if (st.buffer_bytes != 0) fail(std::to_string(st.buffer_bytes) + " buffer bytes left");
  if (st.waiters != 0) fail("waiters left after every client closed");
  if (auto why = server->audit(); !why.empty()) fail(why);
  server->stop();
  server.reset();
  return 0;
}
