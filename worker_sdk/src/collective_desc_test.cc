// Mismatched collectives: a pure check of the descriptor texts, then every mismatch kind on 2 and 3
// ranks (threads in one process), through shared memory and over Gloo's TCP pairs: every rank
// gets a CommError naming both sides, none returns normally, and no buffer is changed.
#include "collective_desc.h"

#include <catch2/catch.hpp>
#include <cstdint>
#include <functional>
#include <vector>

#include "gpurun/common/error.h"
#include "test_util.h"

using namespace gpurun;
using namespace gpurun::worker;
using namespace gpurun::worker::detail;
using gpurun::worker::testing::expect;
using gpurun::worker::testing::join_errors;
using gpurun::worker::testing::run_ranks;

TEST_CASE("collective descriptors describe what a rank called", "[worker]") {
  CHECK(describe(CollectiveDesc::all_reduce(1000, DataType::kFloat32, ReduceOp::kSum)) ==
        "all_reduce(1000 x float32, sum)");
  CHECK(describe(CollectiveDesc::broadcast(3, DataType::kInt64, 1)) ==
        "broadcast(3 x int64, root 1)");
  CHECK(describe(CollectiveDesc::all_gather(7, DataType::kUInt8)) ==
        "all_gather(7 x uint8 per rank)");
  CHECK(describe(CollectiveDesc::reduce_scatter(2, DataType::kFloat64, ReduceOp::kMax)) ==
        "reduce_scatter(2 x float64 per rank, max)");
  CHECK(describe(CollectiveDesc::barrier()) == "barrier()");
  CHECK(describe_args(CollectiveDesc::all_gather(7, DataType::kUInt8)) == "7 x uint8 per rank");
  CHECK_THAT(describe(CollectiveDesc::gather({1, 2}, DataType::kInt32, 0)),
             Catch::StartsWith("gather(3 x int32 in all, root 0, counts "));
  // Equal counts vectors give equal descriptors; a different split of the same total does not.
  CHECK(CollectiveDesc::gather({1, 2}, DataType::kInt32, 0) ==
        CollectiveDesc::gather({1, 2}, DataType::kInt32, 0));
  CHECK_FALSE(CollectiveDesc::gather({1, 2}, DataType::kInt32, 0) ==
              CollectiveDesc::gather({2, 1}, DataType::kInt32, 0));
}

TEST_CASE("a mismatch message groups the ranks and names both sides", "[worker]") {
  const auto a = CollectiveDesc::all_reduce(1000, DataType::kFloat32, ReduceOp::kSum);
  const auto b = CollectiveDesc::all_reduce(500, DataType::kFloat32, ReduceOp::kSum);
  std::vector<NumberedDesc> all{{7, a}, {7, b}, {7, a}};
  CHECK_FALSE(all_match(all));
  const std::string m = mismatch_message("gloo", 2, 3, all);
  CHECK_THAT(m, Catch::StartsWith("gloo all_reduce #7 mismatch on rank 2/3: ranks 0,2 called "
                                  "all_reduce(1000 x float32, sum), rank 1 called "
                                  "all_reduce(500 x float32, sum); every rank must call"));
  // Collective numbers are shown only when they differ.
  std::vector<NumberedDesc> skipped{{7, a}, {8, a}};
  CHECK_THAT(mismatch_message("nccl", 0, 2, skipped),
             Catch::Contains("rank 0 called all_reduce(1000 x float32, sum) as #7, rank 1 called "
                             "all_reduce(1000 x float32, sum) as #8"));
  CHECK(all_match({{3, a}, {3, a}}));
}

namespace {

struct Case {
  const char* name;
  // Runs rank r's side of the mismatch (after a matching barrier, so it is collective #2).
  std::function<void(Communicator&, int)> run;
  std::vector<std::string> expected;  // in every rank's message
};

template <typename T>
bool all_equal(const std::vector<T>& v, T x) {
  for (const T& e : v) {
    if (e != x) return false;
  }
  return true;
}

// Runs `op`; when it throws CommError, checks `unchanged()` first (a changed buffer becomes a
// different error, which the test reports).
template <typename Op, typename Check>
void keeps(Op&& op, Check&& unchanged) {
  try {
    op();
  } catch (const CommError& e) {
    if (!unchanged()) throw std::runtime_error(std::string("buffers changed after: ") + e.what());
    throw;
  }
}

std::vector<Case> cases() {
  return {
      {"count",
       [](Communicator& c, int r) {
         std::vector<float> v(r == 1 ? 500 : 1000, 1.5f);
         keeps([&] { c.all_reduce(std::span(v)); }, [&] { return all_equal(v, 1.5f); });
       },
       {"all_reduce(1000 x float32, sum)", "rank 1 called all_reduce(500 x float32, sum)"}},
      {"skipped",  // rank 1 skips the float all_reduce and goes on to the integer max
       [](Communicator& c, int r) {
         std::vector<float> v(1000, 1.0f);
         std::int32_t x = 7;
         keeps(
             [&] {
               if (r != 1) c.all_reduce(std::span(v));
               c.all_reduce(std::span(&x, 1), ReduceOp::kMax);
             },
             [&] { return all_equal(v, 1.0f) && x == 7; });
       },
       {"all_reduce(1000 x float32, sum)", "rank 1 called all_reduce(1 x int32, max)"}},
      {"collective",
       [](Communicator& c, int r) {
         std::vector<double> v(10, 2.0);
         keeps(
             [&] {
               if (r == 1) {
                 c.broadcast(std::span(v), 0);
               } else {
                 c.all_reduce(std::span(v));
               }
             },
             [&] { return all_equal(v, 2.0); });
       },
       {"all_reduce(10 x float64, sum)", "rank 1 called broadcast(10 x float64, root 0)"}},
      {"root",
       [](Communicator& c, int r) {
         std::vector<std::int64_t> v(4, r);
         keeps([&] { c.broadcast(std::span(v), r == 1 ? 1 : 0); },
               [&] { return all_equal(v, static_cast<std::int64_t>(r)); });
       },
       {"broadcast(4 x int64, root 0)", "rank 1 called broadcast(4 x int64, root 1)"}},
      {"type",
       [](Communicator& c, int r) {
         std::vector<std::int32_t> i(64, 3);
         std::vector<float> f(64, 3.0f);
         keeps(
             [&] {
               if (r == 1) {
                 c.all_reduce(std::span(i));
               } else {
                 c.all_reduce(std::span(f));
               }
             },
             [&] { return all_equal(i, 3) && all_equal(f, 3.0f); });
       },
       {"all_reduce(64 x float32, sum)", "rank 1 called all_reduce(64 x int32, sum)"}},
      {"reduce op",
       [](Communicator& c, int r) {
         std::vector<float> v(8, 1.0f);
         keeps([&] { c.all_reduce(std::span(v), r == 1 ? ReduceOp::kMax : ReduceOp::kSum); },
               [&] { return all_equal(v, 1.0f); });
       },
       {"all_reduce(8 x float32, sum)", "rank 1 called all_reduce(8 x float32, max)"}},
      {"zero count",
       [](Communicator& c, int r) {
         std::vector<float> v(r == 1 ? 0 : 16, 1.0f);
         keeps([&] { c.all_reduce(std::span(v)); }, [&] { return all_equal(v, 1.0f); });
       },
       {"all_reduce(16 x float32, sum)", "rank 1 called all_reduce(0 x float32, sum)"}},
      {"all_gather",
       [](Communicator& c, int r) {
         std::vector<std::uint8_t> mine(r == 1 ? 100 : 300, 9);
         std::vector<std::uint8_t> out(mine.size() * static_cast<std::size_t>(c.size()), 0);
         keeps([&] { c.all_gather(mine.data(), out.data(), mine.size(), DataType::kUInt8); },
               [&] { return all_equal(mine, std::uint8_t{9}) && all_equal(out, std::uint8_t{0}); });
       },
       {"all_gather(300 x uint8 per rank)", "rank 1 called all_gather(100 x uint8 per rank)"}},
      {"gather counts",
       [](Communicator& c, int r) {
         std::vector<std::size_t> counts(static_cast<std::size_t>(c.size()), 2);
         if (r == 1) {
           counts[0] = 3;
           counts[1] = 1;
         }
         std::vector<float> mine(counts[static_cast<std::size_t>(r)], 4.0f);
         std::vector<float> out(2 * static_cast<std::size_t>(c.size()), 0.0f);
         keeps([&] { c.gather(mine.data(), out.data(), counts, DataType::kFloat32, 0); },
               [&] { return all_equal(mine, 4.0f) && all_equal(out, 0.0f); });
       },
       {"different counts vectors"}},
      {"reduce_scatter",
       [](Communicator& c, int r) {
         const std::size_t n = r == 1 ? 2 : 3;
         std::vector<float> send(n * static_cast<std::size_t>(c.size()), 1.0f);
         std::vector<float> recv(n, 0.0f);
         keeps(
             [&] {
               c.reduce_scatter(send.data(), recv.data(), n, DataType::kFloat32, ReduceOp::kSum);
             },
             [&] { return all_equal(send, 1.0f) && all_equal(recv, 0.0f); });
       },
       {"reduce_scatter(3 x float32 per rank, sum)",
        "rank 1 called reduce_scatter(2 x float32 per rank, sum)"}},
  };
}

}  // namespace

TEST_CASE("a mismatched collective is a CommError on every rank, never wrong data", "[worker]") {
  for (const char* shm : {"1", "0"}) {
    if (std::string(shm) == "1" && !gpurun::worker::testing::shm_available()) {
      WARN("no usable /dev/shm here: the shared-memory half of this test is skipped");
      continue;
    }
    for (int world : {2, 3}) {
      for (const Case& c : cases()) {
        INFO("GPURUN_SHM=" << shm << ", " << world << " ranks, case " << c.name);
        auto errs = run_ranks(world,
                              [&](Context& ctx, int r) {
                                ctx.comm().barrier();  // #1 matches
                                try {
                                  c.run(ctx.comm(), r);
                                } catch (const CommError& e) {
                                  throw std::runtime_error(fmt::format("CommError: {}", e.what()));
                                }
                                expect(false, "returned normally");
                              },
                              {{"GPURUN_SHM", shm}});
        for (int r = 0; r < world; ++r) {
          const std::string& e = errs[static_cast<std::size_t>(r)];
          INFO("rank " << r << ": " << e);
          CHECK_THAT(e, Catch::StartsWith("CommError: gloo "));
          CHECK_THAT(e, Catch::Contains(" #2 mismatch on rank " + std::to_string(r) + "/" +
                                        std::to_string(world)));
          for (const auto& x : c.expected) CHECK_THAT(e, Catch::Contains(x));
        }
      }
    }
  }
}

TEST_CASE("a mismatch leaves every buffer unchanged and the communicator refuses later calls",
          "[worker]") {
  auto errs = run_ranks(2, [](Context& ctx, int r) {
    std::vector<float> v(r == 0 ? 1000 : 500, 1.5f);
    try {
      ctx.comm().all_reduce(std::span(v));
      expect(false, "returned normally");
    } catch (const CommError&) {
    }
    expect(all_equal(v, 1.5f), "the buffer changed");
    try {
      ctx.comm().barrier();
      expect(false, "a later barrier returned normally");
    } catch (const CommError& e) {
      expect(std::string(e.what()).find("refused") != std::string::npos, e.what());
    }
  });
  CHECK(join_errors(errs).empty());
  INFO(join_errors(errs));
}
