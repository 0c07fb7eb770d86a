// Test helpers for the store: a raw-socket client that sends exact bytes and reads exact replies
// with deadlines, byte builders for requests of both dialects, server options for tests and a
// bounded poll for asynchronous server state. Tests only.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "gpurun/common/error.h"
#include "gpurun/common/unique_fd.h"
#include "gpurun/rendezvous/store_server.h"
#include "protocol.h"

namespace gpurun::rendezvous::testing {

using Buf = std::vector<std::uint8_t>;

inline Buf u64le(std::uint64_t v) {
  Buf b(8);
  std::memcpy(b.data(), &v, 8);
  return b;
}
inline Buf i64le(std::int64_t v) { return u64le(static_cast<std::uint64_t>(v)); }
inline Buf wstr(std::string_view s) {
  // resize + memcpy: GCC 12 warns (-Warray-bounds, false positive) on insert after an 8-byte vector
  Buf b(8 + s.size());
  std::uint64_t n = s.size();
  std::memcpy(b.data(), &n, 8);
  if (!s.empty()) std::memcpy(b.data() + 8, s.data(), s.size());
  return b;
}
inline Buf cat(std::initializer_list<Buf> parts) {
  Buf out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}
inline Buf v2_validate() { return {0x00, 0xCE, 0xF7, 0x85, 0x3C}; }

// Request frames with the literal type bytes of WIRE_FORMAT.md (golden bytes, not protocol.h's
// encoders, so that an encoder bug cannot hide a server bug).
// 1.13 dialect.
inline Buf set113(std::string_view k, std::string_view v) {
  return cat({{0x00}, wstr(k), wstr(v)});
}
inline Buf get113(std::string_view k) { return cat({{0x02}, wstr(k)}); }
inline Buf add113(std::string_view k, std::int64_t d) { return cat({{0x03}, wstr(k), i64le(d)}); }
inline Buf wait113(std::initializer_list<std::string_view> ks) {
  Buf b = cat({{0x05}, u64le(ks.size())});
  for (auto k : ks) b = cat({b, wstr(k)});
  return b;
}
// 2.x dialect.
inline Buf set2(std::string_view k, std::string_view v) { return cat({{0x01}, wstr(k), wstr(v)}); }
inline Buf cas2(std::string_view k, std::string_view e, std::string_view d) {
  return cat({{0x02}, wstr(k), wstr(e), wstr(d)});
}
inline Buf get2(std::string_view k) { return cat({{0x03}, wstr(k)}); }
inline Buf add2(std::string_view k, std::int64_t d) { return cat({{0x04}, wstr(k), i64le(d)}); }
inline Buf delete2(std::string_view k) { return cat({{0x08}, wstr(k)}); }
inline Buf append2(std::string_view k, std::string_view v) {
  return cat({{0x09}, wstr(k), wstr(v)});
}
template <typename Keys>  // a request of a key count and keys (CHECK, WAIT, MULTI_GET)
Buf keys2(std::uint8_t op, const Keys& ks) {
  Buf b = cat({{op}, u64le(ks.size())});
  for (const auto& k : ks) b = cat({b, wstr(k)});
  return b;
}
inline Buf keys2(std::uint8_t op, std::initializer_list<std::string_view> ks) {
  return keys2<std::initializer_list<std::string_view>>(op, ks);
}
inline Buf wait2(std::initializer_list<std::string_view> ks) { return keys2(0x06, ks); }
inline Buf multi_get2(const std::vector<std::string>& ks) { return keys2(0x0A, ks); }
inline const Buf kCancel2 = {0x0C};
inline Buf ping2(std::uint32_t n) {
  Buf b{0x0D, 0, 0, 0, 0};
  std::memcpy(b.data() + 1, &n, 4);
  return b;
}
inline Buf push2(std::string_view k, std::string_view v) { return cat({{0x0E}, wstr(k), wstr(v)}); }

// Server options for tests: a free port, RLIMIT_NOFILE left as it is.
inline StoreServerOptions test_server_options() {
  StoreServerOptions o;
  o.port = 0;
  o.raise_fd_limit = false;
  return o;
}

// A server on the IPv6 loopback, or nullptr (and `why`) where this host has none.
inline std::unique_ptr<StoreServerThread> ipv6_loopback_server(StoreServerOptions o,
                                                               std::string& why) {
  o.host = "::1";
  try {
    return std::make_unique<StoreServerThread>(o);
  } catch (const BindError& e) {
    why = e.what();
    return nullptr;
  }
}

// Polls `p` until it holds or `timeout` passes; returns its last value. For server state that
// changes on the server's thread (stats()), not as a stand-in for a reply.
template <typename Pred>
bool eventually(Pred p, std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (p()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return p();
}

// A blocking TCP client speaking raw bytes. Every read has a deadline (default 5 s) so a broken
// server fails the test instead of hanging it.
class RawClient {
 public:
  // Adopts an already-connected stream socket (one end of a socketpair the server serves).
  explicit RawClient(UniqueFd fd) : fd_(std::move(fd)) {}
  explicit RawClient(std::uint16_t port, const std::string& host = "127.0.0.1") {
    bool v6 = host.find(':') != std::string::npos;
    fd_.reset(::socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd_) throw std::runtime_error("socket failed");
    int rc;
    if (v6) {
      sockaddr_in6 a{};
      a.sin6_family = AF_INET6;
      a.sin6_port = htons(port);
      ::inet_pton(AF_INET6, host.c_str(), &a.sin6_addr);
      rc = ::connect(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    } else {
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(port);
      ::inet_pton(AF_INET, host.c_str(), &a.sin_addr);
      rc = ::connect(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
    }
    if (rc != 0) throw std::runtime_error(std::string("connect failed: ") + std::strerror(errno));
    int one = 1;
    ::setsockopt(fd_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }

  // Handshake as a 2.x client: VALIDATE (no reply).
  RawClient& v2() {
    send(v2_validate());
    return *this;
  }

  void send(const Buf& b) {
    std::size_t off = 0;
    while (off < b.size()) {
      ssize_t n = ::send(fd_.get(), b.data() + off, b.size() - off, MSG_NOSIGNAL);
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        throw std::runtime_error(std::string("send failed: ") + std::strerror(errno));
      }
      off += static_cast<std::size_t>(n);
    }
  }

  // Reads exactly n bytes; throws on timeout or EOF.
  Buf recv(std::size_t n, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    Buf out(n);
    std::size_t off = 0;
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (off < n) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - std::chrono::steady_clock::now())
                      .count();
      if (left <= 0) throw std::runtime_error("recv timed out");
      pollfd p{fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      ssize_t r = ::recv(fd_.get(), out.data() + off, n - off, 0);
      if (r == 0) throw std::runtime_error("connection closed by the server");
      if (r < 0) {
        if (errno == EINTR) continue;
        throw std::runtime_error(std::string("recv failed: ") + std::strerror(errno));
      }
      off += static_cast<std::size_t>(r);
    }
    return out;
  }
  std::uint8_t recv_u8() { return recv(1)[0]; }
  std::int64_t recv_i64() {
    auto b = recv(8);
    return static_cast<std::int64_t>(protocol::load_u64(b.data()));
  }
  std::string recv_bytes() {
    auto len = protocol::load_u64(recv(8).data());
    auto b = recv(static_cast<std::size_t>(len));
    return std::string(b.begin(), b.end());
  }

  // True if the server closes the connection (EOF/RST) within `timeout`, discarding any data.
  bool closed_within(std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - std::chrono::steady_clock::now())
                      .count();
      if (left <= 0) return false;
      pollfd p{fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      char tmp[4096];
      ssize_t r = ::recv(fd_.get(), tmp, sizeof tmp, 0);
      if (r == 0) return true;
      if (r < 0 && errno != EINTR && errno != EAGAIN) return true;
    }
  }

  // True if no byte arrives within `window` (used to assert "the server sent nothing").
  bool silent_for(std::chrono::milliseconds window) {
    pollfd p{fd_.get(), POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(window.count())) == 0;
  }

  void close() { fd_.reset(); }
  int fd() const { return fd_.get(); }

 private:
  UniqueFd fd_;
};

}  // namespace gpurun::rendezvous::testing
