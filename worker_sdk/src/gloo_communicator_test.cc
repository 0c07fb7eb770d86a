// Gloo collectives with ranks as threads on one MemoryStore: every collective, every type,
// sizes 0, 1, non-multiples of the world size and multi-segment, world sizes 1..4.
#include "gloo_communicator.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>

#include "gpurun/common/error.h"
#include "test_util.h"

using namespace gpurun;
using namespace gpurun::worker;
using gpurun::worker::testing::expect;
using gpurun::worker::testing::join_errors;
using gpurun::worker::testing::run_ranks;

namespace {

template <typename T>
T value(int rank, std::size_t i) {
  return static_cast<T>((rank + 1) * 3 + static_cast<int>(i % 5));
}

template <typename T>
void check_all(Communicator& comm, std::size_t n) {
  const int r = comm.rank();
  const int w = comm.size();
  const std::string tn = to_string(data_type_of<T>());
  // all_reduce
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax, ReduceOp::kMin, ReduceOp::kAvg}) {
    std::vector<T> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = value<T>(r, i);
    comm.all_reduce(std::span(v), op);
    for (std::size_t i = 0; i < n; ++i) {
      T sum = 0, mx = value<T>(0, i), mn = value<T>(0, i);
      for (int q = 0; q < w; ++q) {
        sum = static_cast<T>(sum + value<T>(q, i));
        mx = std::max(mx, value<T>(q, i));
        mn = std::min(mn, value<T>(q, i));
      }
      T want = op == ReduceOp::kSum   ? sum
               : op == ReduceOp::kMax ? mx
               : op == ReduceOp::kMin ? mn
                                      : static_cast<T>(sum / static_cast<T>(w));
      expect(v[i] == want, fmt::format("all_reduce {} {} n={} i={}: got {} want {}", to_string(op),
                                       tn, n, i, double(v[i]), double(want)));
    }
  }
  // broadcast from the last rank
  {
    std::vector<T> v(n, static_cast<T>(r));
    comm.broadcast(std::span(v), w - 1);
    for (auto x : v) expect(x == static_cast<T>(w - 1), fmt::format("broadcast {} n={}", tn, n));
  }
  // all_gather
  {
    std::vector<T> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = value<T>(r, i);
    auto all = comm.all_gather(std::span<const T>(v));
    expect(all.size() == n * static_cast<std::size_t>(w), "all_gather size");
    for (int q = 0; q < w; ++q)
      for (std::size_t i = 0; i < n; ++i)
        expect(all[static_cast<std::size_t>(q) * n + i] == value<T>(q, i),
               fmt::format("all_gather {} n={}", tn, n));
  }
  // gather with variable sizes: rank q sends n + q elements (rank 0 may send 0 when n == 0)
  {
    std::vector<T> mine(n + static_cast<std::size_t>(r));
    for (std::size_t i = 0; i < mine.size(); ++i) mine[i] = value<T>(r, i);
    const int root = w / 2;
    auto got = comm.gather_host(std::span<const T>(mine), root);
    if (r == root) {
      expect(got.size() == static_cast<std::size_t>(w), "gather ranks");
      for (int q = 0; q < w; ++q) {
        expect(got[static_cast<std::size_t>(q)].size() == n + static_cast<std::size_t>(q),
               "gather size");
        for (std::size_t i = 0; i < n + static_cast<std::size_t>(q); ++i)
          expect(got[static_cast<std::size_t>(q)][i] == value<T>(q, i),
                 fmt::format("gather {} n={}", tn, n));
      }
    } else {
      expect(got.empty(), "gather non-root");
    }
  }
  // reduce_scatter
  {
    std::vector<T> send(n * static_cast<std::size_t>(w));
    for (std::size_t i = 0; i < send.size(); ++i) send[i] = value<T>(r, i);
    std::vector<T> recv(n);
    comm.reduce_scatter(send.data(), recv.data(), n, data_type_of<T>(), ReduceOp::kSum);
    for (std::size_t i = 0; i < n; ++i) {
      T want = 0;
      for (int q = 0; q < w; ++q)
        want = static_cast<T>(want + value<T>(q, static_cast<std::size_t>(r) * n + i));
      expect(recv[i] == want, fmt::format("reduce_scatter {} n={} i={}", tn, n, i));
    }
  }
  comm.barrier();
}

}  // namespace

TEST_CASE("gloo collectives, every type, 1-4 ranks", "[gloo]") {
  for (int world : {1, 2, 3, 4}) {
    DYNAMIC_SECTION("world " << world) {
      auto errs = run_ranks(world, [](Context& ctx, int) {
        expect(ctx.backend() == Backend::kGloo, "backend");
        for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{1001}}) {
          check_all<float>(ctx.comm(), n);
          check_all<double>(ctx.comm(), n);
          check_all<std::int32_t>(ctx.comm(), n);
          check_all<std::int64_t>(ctx.comm(), n);
          check_all<std::uint8_t>(ctx.comm(), n);
        }
      });
      CHECK(join_errors(errs) == "");
    }
  }
}

TEST_CASE("gloo collectives with GPU ranks staged through host memory (fake GPUs)", "[gloo]") {
  auto errs = run_ranks(
      3,
      [](Context& ctx, int r) {
        expect(ctx.device().is_cuda() == (r != 1), "device " + ctx.device().str());
        for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{1001}}) {
          check_all<float>(ctx.comm(), n);
          check_all<std::int64_t>(ctx.comm(), n);
          check_all<std::uint8_t>(ctx.comm(), n);
        }
      },
      {{"GPURUN_FAKE_GPU_RANKS", "0,2"}});
  CHECK(join_errors(errs) == "");
}

TEST_CASE("gloo all_reduce across several ring segments", "[gloo]") {
  auto errs = run_ranks(3, [](Context& ctx, int r) {
    std::vector<float> v(700'001, static_cast<float>(r + 1));  // ~2.7 MiB, > 1 MiB segments
    ctx.comm().all_reduce(std::span(v));
    for (float x : v) expect(x == 6.0f, fmt::format("got {}", x));
    auto m = ctx.comm().all_reduce_value<std::int64_t>(r, ReduceOp::kMax);
    expect(m == 2, "all_reduce_value");
  });
  CHECK(join_errors(errs) == "");
}

TEST_CASE("gloo all_reduce reduces in rank order on every rank (shared memory, one-round, ring)",
          "[gloo]") {
  // float addition is not associative: (1e8 + 1) - 1e8 == 0 but (-1e8 + 1e8) + 1 == 1. Every
  // rank must compute b0 + b1 + b2 in that order, whatever its own rank, so all agree.
  // n = 1000: 4 KB (TCP: one round); n = 300'000: 1.2 MB (TCP: the ring; shared memory: five
  // chunks). Shared memory and the one-round path give exactly 0 everywhere; the ring reduces
  // each segment in its own order, so only agreement between ranks is guaranteed there.
  const bool have_shm = gpurun::worker::testing::shm_available();
  if (!have_shm) WARN("no usable /dev/shm here: the shared-memory case runs over TCP");
  for (const char* shm : {"1", "0"}) {
    for (std::size_t n : {std::size_t{1000}, std::size_t{300'000}}) {
      auto errs = run_ranks(
          3,
          [n, shm, have_shm](Context& ctx, int r) {
            const float mine[] = {1e8f, 1.0f, -1e8f};
            std::vector<float> v(n, mine[r]);
            ctx.comm().all_reduce(std::span(v));
            const float probe[] = {v[0], v[n / 2], v[n - 1]};
            const auto all = ctx.comm().all_gather(std::span<const float>(probe, 3));
            for (std::size_t i = 0; i < all.size(); ++i) {
              expect(all[i] == probe[i % 3], fmt::format("ranks disagree at probe {}", i % 3));
            }
            if (n == 1000 || (std::string(shm) == "1" && have_shm)) {
              for (float x : v) expect(x == 0.0f, fmt::format("got {}, want 0", x));
            }
          },
          {{"GPURUN_SHM", shm}});
      INFO("GPURUN_SHM=" << shm << ", n = " << n);
      CHECK(join_errors(errs) == "");
    }
  }
}

TEST_CASE("shared-memory all_reduce: every op and type, odd sizes, many chunks, 2-4 ranks",
          "[gloo][shm]") {
  for (int world : {2, 3, 4}) {
    auto errs = run_ranks(world, [world](Context& ctx, int r) {
      // 327'683 doubles: ten 256 KiB chunks, the last one partial.
      for (std::size_t n : {std::size_t{1}, std::size_t{12'345}, std::size_t{327'683}}) {
        std::vector<double> d(n);
        for (std::size_t i = 0; i < n; ++i) d[i] = static_cast<double>((i % 7) + r);
        ctx.comm().all_reduce(std::span(d), ReduceOp::kSum);
        for (std::size_t i = 0; i < n; ++i) {
          const double want = static_cast<double>(world) * static_cast<double>(i % 7) +
                              static_cast<double>(world * (world - 1) / 2);
          expect(d[i] == want, fmt::format("sum n={} i={}: {} != {}", n, i, d[i], want));
        }
        std::vector<std::int32_t> m(n, r);
        ctx.comm().all_reduce(std::span(m), ReduceOp::kMax);
        expect(m.front() == world - 1 && m.back() == world - 1, "max");
        std::vector<std::int64_t> lo(n, r + 10);
        ctx.comm().all_reduce(std::span(lo), ReduceOp::kMin);
        expect(lo.front() == 10 && lo.back() == 10, "min");
        std::vector<float> avg(n, static_cast<float>(2 * r));
        ctx.comm().all_reduce(std::span(avg), ReduceOp::kAvg);
        expect(avg.back() == static_cast<float>(world - 1), fmt::format("avg {}", avg.back()));
      }
    });
    INFO("world " << world);
    CHECK(join_errors(errs) == "");
  }
}

TEST_CASE("all_gather, broadcast, gather and barrier in many chunks, shared memory and TCP alike",
          "[gloo][shm]") {
  for (const char* shm : {"1", "0"}) {
    auto errs = run_ranks(
        3,
        [](Context& ctx, int r) {
          // 100'003 int32 per rank: two 256 KiB chunks and a partial one.
          const std::size_t n = 100'003;
          std::vector<std::int32_t> mine(n);
          for (std::size_t i = 0; i < n; ++i) mine[i] = static_cast<std::int32_t>(i * 3 + r);
          const auto all = ctx.comm().all_gather(std::span<const std::int32_t>(mine));
          expect(all.size() == 3 * n, "all_gather size");
          for (int q = 0; q < 3; ++q) {
            for (std::size_t i = 0; i < n; i += 997) {
              expect(
                  all[static_cast<std::size_t>(q) * n + i] == static_cast<std::int32_t>(i * 3 + q),
                  fmt::format("all_gather block {} element {}", q, i));
            }
          }
          for (int root : {0, 2}) {
            std::vector<double> b(70'001, r == root ? 1.5 * root : -1.0);
            ctx.comm().broadcast(std::span(b), root);
            expect(b.front() == 1.5 * root && b.back() == 1.5 * root,
                   fmt::format("broadcast from {}", root));
          }
          // Variable gather: rank q sends q * 100'000 + 7 bytes (rank 0 only 7; chunks differ).
          std::vector<std::uint8_t> g(static_cast<std::size_t>(r) * 100'000 + 7,
                                      static_cast<std::uint8_t>(10 + r));
          for (int root : {0, 1}) {
            const auto got = ctx.comm().gather_host_flat(std::span<const std::uint8_t>(g), root);
            if (r != root) continue;
            expect(got.ranks() == 3, "gather ranks");
            for (int q = 0; q < 3; ++q) {
              const auto b = got.from(q);
              expect(b.size() == static_cast<std::size_t>(q) * 100'000 + 7, "gather size");
              expect(std::all_of(b.begin(), b.end(), [q](std::uint8_t x) { return x == 10 + q; }),
                     fmt::format("gather block {} at root {}", q, root));
            }
          }
          ctx.comm().barrier();
        },
        {{"GPURUN_SHM", shm}});
    INFO("GPURUN_SHM=" << shm);
    CHECK(join_errors(errs) == "");
  }
}

TEST_CASE("shared memory is all or nothing: one rank with GPURUN_SHM=0 turns it off for all",
          "[gloo][shm]") {
  // 1.2 MB of the non-associative values: only the ring leaves 1s (see the rank-order test), so
  // finding one proves that no rank took the shared-memory path.
  auto errs = run_ranks(
      3,
      [](Context& ctx, int r) {
        const float mine[] = {1e8f, 1.0f, -1e8f};
        std::vector<float> v(300'000, mine[r]);
        ctx.comm().all_reduce(std::span(v));
        expect(std::count(v.begin(), v.end(), 1.0f) > 0, "ring path expected on every rank");
      },
      {}, {}, nullptr,
      [](int r) -> EnvMap {
        if (r == 1) return {{"GPURUN_SHM", "0"}};
        return {};
      });
  CHECK(join_errors(errs) == "");
}

TEST_CASE("GPURUN_GLOO_DIRECT_MAX_BYTES=0 selects the ring, a negative value is refused",
          "[gloo]") {
  // The ring reduces each segment starting at a different rank, so with the values above some
  // elements come out as 1: proof that the one-round path was not taken.
  auto errs = run_ranks(3,
                        [](Context& ctx, int r) {
                          const float mine[] = {1e8f, 1.0f, -1e8f};
                          std::vector<float> v(1000, mine[r]);
                          ctx.comm().all_reduce(std::span(v));
                          expect(std::count(v.begin(), v.end(), 1.0f) > 0, "ring path expected");
                        },
                        {{"GPURUN_GLOO_DIRECT_MAX_BYTES", "0"}, {"GPURUN_SHM", "0"}});
  CHECK(join_errors(errs) == "");
  auto bad = run_ranks(1, [](Context&, int) {}, {{"GPURUN_GLOO_DIRECT_MAX_BYTES", "-1"}});
  CHECK_THAT(join_errors(bad), Catch::Contains("GPURUN_GLOO_DIRECT_MAX_BYTES=-1 is negative"));
}

TEST_CASE("gather_host_flat: one buffer on the root, ranks may send nothing", "[gloo]") {
  auto errs = run_ranks(3, [](Context& ctx, int r) {
    // The root sends nothing (as windowed_image's rank 0 does); rank q sends q * 1000 bytes.
    std::vector<std::uint8_t> mine(static_cast<std::size_t>(r) * 1000,
                                   static_cast<std::uint8_t>(r));
    const auto got = ctx.comm().gather_host_flat(
        std::span<const std::uint8_t>(r == 0 ? nullptr : mine.data(), r == 0 ? 0 : mine.size()), 0);
    if (r != 0) {
      expect(got.data.empty() && got.ranks() == 0, "non-root gets nothing");
      return;
    }
    expect(got.ranks() == 3, "three blocks");
    expect(got.from(0).empty(), "root block empty");
    expect(got.data.size() == 3000, fmt::format("total {}", got.data.size()));
    for (int q = 1; q < 3; ++q) {
      const auto b = got.from(q);
      expect(b.size() == static_cast<std::size_t>(q) * 1000, "block size");
      for (auto x : b) expect(x == q, "block content");
    }
  });
  CHECK(join_errors(errs) == "");
}

TEST_CASE("host_broadcast: host buffers from any rank kind (fake GPU ranks too)", "[gloo]") {
  auto errs = run_ranks(3,
                        [](Context& ctx, int r) {
                          for (int root : {0, 2}) {
                            std::vector<std::uint8_t> v(
                                300'001, static_cast<std::uint8_t>(r == root ? 7 + root : 0));
                            ctx.comm().host_broadcast(v.data(), v.size(), DataType::kUInt8, root);
                            expect(v.front() == 7 + root && v.back() == 7 + root,
                                   fmt::format("host_broadcast from {}", root));
                          }
                        },
                        {{"GPURUN_FAKE_GPU_RANKS", "0"}});
  CHECK(join_errors(errs) == "");
}

TEST_CASE("gloo: float16 is refused with a fix", "[gloo]") {
  auto errs = run_ranks(1, [](Context& ctx, int) {
    std::uint16_t h[2] = {0, 0};
    ctx.comm().all_reduce(h, 2, DataType::kFloat16, ReduceOp::kSum);
  });
  CHECK_THAT(errs[0], Catch::Contains("float16 is not supported by the Gloo backend"));
}

TEST_CASE("gloo: bad root is refused without breaking the communicator", "[gloo]") {
  auto errs = run_ranks(2, [](Context& ctx, int) {
    std::vector<int> v(3);
    try {
      ctx.comm().broadcast(std::span(v), 2);
      expect(false, "no error for root 2");
    } catch (const CommError& e) {
      expect(std::string(e.what()).find("root 2 is not a rank") != std::string::npos, e.what());
    }
    ctx.comm().barrier();
  });
  CHECK(join_errors(errs) == "");
}

TEST_CASE("gloo: a rank that never arrives is named by the others", "[gloo]") {
  InitOptions o;
  o.timeout = std::chrono::milliseconds(1500);
  std::vector<std::string> seen(3);
  std::atomic<int> done{0};
  auto errs = run_ranks(
      3,
      [&](Context& ctx, int r) {
        ctx.comm().barrier();  // op #1: everyone
        if (r == 2) {
          // Never enters op #2; stays alive (connected) until the others have failed.
          while (done.load() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(5));
          return;
        }
        std::vector<float> v(1000, 1.0f);
        try {
          ctx.comm().all_reduce(std::span(v));
          seen[static_cast<std::size_t>(r)] = "no error";
        } catch (const CommError& e) {
          seen[static_cast<std::size_t>(r)] = e.what();
        }
        ++done;
      },
      {}, o);
  CHECK(join_errors(errs) == "");
  for (int r : {0, 1}) {
    INFO(seen[static_cast<std::size_t>(r)]);
    CHECK_THAT(seen[static_cast<std::size_t>(r)],
               Catch::Contains("rank 2 has not arrived at all_reduce #2"));
    CHECK_THAT(seen[static_cast<std::size_t>(r)], Catch::Contains("last seen in barrier #1"));
  }
}

TEST_CASE("gloo transport address: env interface, loopback, route to MASTER_ADDR", "[gloo]") {
  using gpurun::worker::detail::choose_transport_address;
  auto a = choose_transport_address({{"GPURUN_SOCKET_IFNAME", "lo"}, {"GLOO_SOCKET_IFNAME", "x"}},
                                    "10.1.2.3", 29500);
  CHECK(a.iface == "lo");
  CHECK(a.hostname.empty());
  CHECK(choose_transport_address({{"GLOO_SOCKET_IFNAME", "lo,eth0"}}, "", 0).iface == "lo");
  CHECK(choose_transport_address({}, "127.0.0.1", 29500).hostname == "127.0.0.1");
  CHECK(choose_transport_address({}, "localhost", 29500).hostname == "127.0.0.1");
  CHECK(choose_transport_address({}, "", 0).hostname == "127.0.0.1");
}

TEST_CASE("gloo on an interface named by GPURUN_SOCKET_IFNAME", "[gloo]") {
  auto errs = run_ranks(2,
                        [](Context& ctx, int r) {
                          auto v = ctx.comm().all_reduce_value<double>(r + 1.0);
                          expect(v == 3.0, fmt::format("sum {}", v));
                        },
                        {{"GPURUN_SOCKET_IFNAME", "lo"}});
  CHECK(join_errors(errs) == "");
}

TEST_CASE("gloo: a bad interface name fails with the fix", "[gloo]") {
  auto errs = run_ranks(1, [](Context&, int) {}, {{"GPURUN_SOCKET_IFNAME", "nosuchif0"}});
  CHECK_THAT(errs[0], Catch::Contains("GPURUN_SOCKET_IFNAME"));
  CHECK_THAT(errs[0], Catch::Contains("interface nosuchif0"));
  // The message lists the interfaces that exist (loopback always does).
  CHECK_THAT(errs[0], Catch::Contains("this host has: ") && Catch::Contains("lo"));
}
