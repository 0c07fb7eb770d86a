// The typed helpers users write without thinking about DataType: all_reduce of a std::vector or
// a scalar, all_gather from a non-const span or a vector, broadcast of std::string (resized on
// the receivers), raw bytes, bool and std::uint64_t. Ranks are threads on one MemoryStore (2 and
// 3 ranks), over shared memory and over TCP (GPURUN_SHM=0).
#include <array>
#include <catch2/catch.hpp>
#include <cstddef>
#include <cstring>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "gpurun/worker/worker.h"
#include "test_util.h"

using namespace gpurun;
using namespace gpurun::worker;
using gpurun::worker::testing::expect;
using gpurun::worker::testing::join_errors;
using gpurun::worker::testing::run_ranks;

static_assert(data_type_of<std::size_t>() == DataType::kUInt64);
static_assert(data_type_of<std::uint64_t>() == DataType::kUInt64);
static_assert(data_type_of<long long>() == DataType::kInt64);
static_assert(data_type_of<int>() == DataType::kInt32);
static_assert(data_type_of<bool>() == DataType::kUInt8);
static_assert(data_type_of<std::byte>() == DataType::kUInt8);
static_assert(data_type_of<const char>() == DataType::kUInt8);

namespace {

constexpr std::uint64_t kHigh = std::uint64_t{1} << 63;  // negative if read as int64

// Runs body on 2 and 3 ranks, over shared memory and over TCP.
void on_every_path(const std::function<void(Context&, int)>& body) {
  for (int world : {2, 3}) {
    for (const char* shm : {"1", "0"}) {
      INFO("world " << world << ", GPURUN_SHM=" << shm);
      CHECK(join_errors(run_ranks(world, body, {{"GPURUN_SHM", shm}})) == "");
    }
  }
}

}  // namespace

TEST_CASE("typed: all_reduce of a std::vector and of scalars", "[typed]") {
  on_every_path([](Context& ctx, int r) {
    auto& c = ctx.comm();
    const int w = ctx.world_size();
    std::vector<float> f{1.0f * static_cast<float>(r), 2.0f, 3.0f};
    c.all_reduce(f);  // std::vector<T>& , default sum
    expect(f[0] == static_cast<float>(w * (w - 1) / 2) && f[1] == 2.0f * static_cast<float>(w),
           "vector<float> sum");
    std::vector<std::int64_t> i{r, -r};
    c.all_reduce(i, ReduceOp::kMax);
    expect(i[0] == w - 1 && i[1] == 0, "vector<int64> max");
    std::array<double, 2> a{static_cast<double>(r), 1.0};
    c.all_reduce(a, ReduceOp::kMin);
    expect(a[0] == 0.0 && a[1] == 1.0, "std::array<double> min");
    int n = r + 1;
    c.all_reduce(n);  // a scalar in place
    expect(n == w * (w + 1) / 2, "int scalar sum");
    expect(c.all_reduce_value(r, ReduceOp::kMax) == w - 1, "all_reduce_value");
  });
}

TEST_CASE("typed: std::uint64_t is unsigned (max over 2^63, sum wraps)", "[typed]") {
  on_every_path([](Context& ctx, int r) {
    auto& c = ctx.comm();
    const auto w = static_cast<std::uint64_t>(ctx.world_size());
    const auto ur = static_cast<std::uint64_t>(r);
    // Rank r holds kHigh + r: as int64 these are negative and max would pick rank 0's.
    std::vector<std::uint64_t> v{kHigh + ur, ur, std::numeric_limits<std::uint64_t>::max()};
    std::vector<std::uint64_t> mx = v, mn = v, sum = v;
    c.all_reduce(mx, ReduceOp::kMax);
    c.all_reduce(mn, ReduceOp::kMin);
    c.all_reduce(sum, ReduceOp::kSum);
    expect(mx[0] == kHigh + (w - 1) && mx[1] == w - 1, "uint64 max");
    expect(mn[0] == kHigh && mn[1] == 0, "uint64 min");
    expect(sum[2] == std::numeric_limits<std::uint64_t>::max() * w, "uint64 sum wraps mod 2^64");
    std::size_t count = 10;  // std::size_t is uint64 here
    c.all_reduce(count);
    expect(count == 10 * w, "size_t sum");
    // A large one goes through Gloo's ring (or the shared-memory chunks) with the uint64 kernel.
    std::vector<std::uint64_t> big(300'000, kHigh + ur);
    c.all_reduce(big, ReduceOp::kMax);
    for (auto x : big) expect(x == kHigh + (w - 1), "large uint64 max");
  });
}

TEST_CASE("typed: bool all_reduce is any/all, avg is refused on every rank", "[typed]") {
  on_every_path([](Context& ctx, int r) {
    auto& c = ctx.comm();
    bool mine = r == 1;
    bool any = mine, any_sum = mine, all = mine;
    c.all_reduce(any, ReduceOp::kMax);
    c.all_reduce(any_sum, ReduceOp::kSum);  // a logical OR, never the byte 2 or 3
    c.all_reduce(all, ReduceOp::kMin);
    expect(any && any_sum && !all, "bool any/all");
    std::vector<std::uint8_t> bytes_of_sum(1);
    static_assert(sizeof(bool) == 1);
    std::memcpy(bytes_of_sum.data(), &any_sum, 1);
    expect(bytes_of_sum[0] == 1, "bool sum holds the byte 1");
    bool t = true;
    c.all_reduce(t, ReduceOp::kMin);
    expect(t, "every rank true");
    try {
      bool b = true;
      c.all_reduce(b, ReduceOp::kAvg);
      expect(false, "avg of bool did not throw");
    } catch (const ConfigError& e) {
      expect(std::string(e.what()).find("all_reduce of bool with ReduceOp::kAvg") == 0,
             std::string("message: ") + e.what());
    }
    c.barrier();  // the refused call sent nothing: the group is still in step
  });
}

TEST_CASE("typed: all_gather from a non-const span, a vector, a string, a scalar", "[typed]") {
  on_every_path([](Context& ctx, int r) {
    auto& c = ctx.comm();
    const auto w = static_cast<std::size_t>(ctx.world_size());
    std::vector<std::int32_t> v{r, r * 10};
    std::span<std::int32_t> s(v);  // non-const span
    auto from_span = c.all_gather(s);
    auto from_vector = c.all_gather(v);
    expect(from_span == from_vector && from_span.size() == 2 * w, "span == vector gather");
    for (std::size_t q = 0; q < w; ++q) {
      expect(from_span[2 * q] == static_cast<int>(q) && from_span[2 * q + 1] == 10 * int(q),
             "all_gather values");
    }
    std::string name = "r" + std::to_string(r);
    std::vector<char> names = c.all_gather(name);
    expect(names.size() == 2 * w && names[0] == 'r' && names[1] == '0', "all_gather string");
    auto ids = c.all_gather_value(kHigh + static_cast<std::uint64_t>(r));
    expect(ids.size() == w && ids.back() == kHigh + (w - 1), "all_gather_value uint64");
    auto per_rank = c.gather_host(v, 0);  // gather_host from a vector
    if (r == 0) expect(per_rank.size() == w && per_rank[w - 1][1] == 10 * int(w - 1), "gather");
  });
}

TEST_CASE("typed: broadcast of std::string resizes the receivers", "[typed]") {
  on_every_path([](Context& ctx, int r) {
    auto& c = ctx.comm();
    const int root = ctx.world_size() - 1;
    // The receivers start longer, shorter and empty: every one ends with the root's text.
    std::string s = r == root ? std::string("from the root \0 with a NUL", 26)
                              : std::string(static_cast<std::size_t>(r) * 40, 'x');
    c.broadcast(s, root);
    expect(s == std::string("from the root \0 with a NUL", 26), "string: '" + s + "'");
    std::string empty = r == 0 ? "" : "not empty";
    c.broadcast(empty);
    expect(empty.empty(), "empty string from rank 0");
  });
}

TEST_CASE("typed: broadcast of raw bytes, bool and std::uint64_t", "[typed]") {
  on_every_path([](Context& ctx, int r) {
    auto& c = ctx.comm();
    // Raw bytes of unknown length on the receivers (a serialized blob): a vector is resized.
    std::vector<std::byte> blob;
    if (r == 0) {
      for (int i = 0; i < 300; ++i) blob.push_back(static_cast<std::byte>(i * 7));
    }
    c.broadcast(blob);
    expect(blob.size() == 300 && blob[299] == static_cast<std::byte>(299 * 7), "byte vector");
    // A fixed-size byte span (same length everywhere) and a std::array keep their size.
    std::array<std::uint8_t, 4> fixed{};
    if (r == 1) fixed = {1, 2, 3, 4};
    c.broadcast(std::span<std::uint8_t>(fixed), 1);
    expect(fixed == std::array<std::uint8_t, 4>{1, 2, 3, 4}, "byte span");
    bool flag = r == 1;
    c.broadcast(flag, 1);
    expect(flag, "bool from rank 1");
    std::uint64_t seed = r == 0 ? kHigh + 12345 : 0;
    c.broadcast(seed);
    expect(seed == kHigh + 12345, "uint64 broadcast");
    expect(c.broadcast_value(r == 0 ? 7.5 : 0.0) == 7.5, "broadcast_value double");
    std::vector<float> grown(static_cast<std::size_t>(r), 1.0f);  // 0 on rank 0
    c.broadcast(grown);
    expect(grown.empty(), "vector resized to the root's (empty)");
  });
}
