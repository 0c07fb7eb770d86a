// KvState on its own: the rules MemoryStore and the server share (the Store contract checks them
// again through every Store), and what only the server uses: wait registrations, deferred
// wake-ups, queues and the budget.
#include "kv_state.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

using namespace gpurun::rendezvous;

namespace {

struct Waiter final : KvWaiter {
  int woken = 0;
  void keys_ready() override { ++woken; }
};

std::vector<std::string_view> keys(std::initializer_list<std::string_view> k) { return k; }

}  // namespace

TEST_CASE("KvState: a waiter hears of its keys only on deliver, once all exist", "[kv]") {
  KvState kv;
  Waiter w;
  bool ready = true;
  auto k = keys({"a", "b", "a"});
  REQUIRE(kv.wait(w, k, ready).ok());
  CHECK_FALSE(ready);
  CHECK(kv.waiters() == 1);
  REQUIRE(kv.set("a", "1").ok());
  kv.deliver();
  CHECK(w.woken == 0);
  std::int64_t n = 0;
  REQUIRE(kv.add("b", 2, n).ok());
  CHECK(w.woken == 0);  // not before deliver()
  kv.deliver();
  CHECK(w.woken == 1);
  CHECK(kv.waiters() == 0);
  CHECK(kv.bytes() == kv.recount());
  CHECK(kv.audit_waits().empty());
}

TEST_CASE("KvState: a wait on present keys is ready at once and registers nothing", "[kv]") {
  KvState kv;
  Waiter w;
  REQUIRE(kv.set("x", "").ok());
  bool ready = false;
  auto k = keys({"x"});
  REQUIRE(kv.wait(w, k, ready).ok());
  CHECK(ready);
  CHECK(kv.waiters() == 0);
}

TEST_CASE("KvState: cancel_wait drops a registration, also one woken but not delivered", "[kv]") {
  KvState kv;
  Waiter w;
  bool ready = false;
  auto k = keys({"k"});
  REQUIRE(kv.wait(w, k, ready).ok());
  REQUIRE(kv.set("k", "v").ok());
  kv.cancel_wait(w);
  kv.deliver();
  CHECK(w.woken == 0);
  CHECK(kv.bytes() == kv.recount());
}

TEST_CASE("KvState: a queue push wakes one registration, pops are FIFO", "[kv]") {
  KvState kv;
  Waiter a, b;
  bool ready = false;
  auto k = keys({"q"});
  REQUIRE(kv.wait(a, k, ready).ok());
  REQUIRE(kv.wait(b, k, ready).ok());
  REQUIRE(kv.queue_push("q", "1").ok());
  REQUIRE(kv.queue_push("q", "2").ok());
  kv.deliver();
  CHECK(a.woken == 1);
  CHECK(b.woken == 1);
  CHECK(kv.exists("q"));
  CHECK(kv.num_keys() == 0);  // queues are not values
  CHECK(*kv.queue_front("q") == "1");
  kv.queue_pop("q");
  CHECK(*kv.queue_front("q") == "2");
  kv.queue_pop("q");
  CHECK_FALSE(kv.exists("q"));
  CHECK(kv.bytes() == 0);
}

TEST_CASE("KvState: a refused write changes nothing and says why", "[kv]") {
  KvState kv(KvLimits{/*max_store_bytes=*/200, /*max_value_bytes=*/8});
  REQUIRE(kv.set("k", "0123").ok());
  auto before = kv.bytes();
  auto st = kv.set("other", std::string(200, 'x'));
  CHECK(st.code == KvStatus::kOverBudget);
  CHECK(st.amount == KvState::entry_bytes("other", 200));
  CHECK_FALSE(kv.exists("other"));
  st = kv.append("k", "56789");
  CHECK(st.code == KvStatus::kValueTooLarge);
  CHECK(st.amount == 9);
  CHECK(*kv.find("k") == "0123");
  std::int64_t n = 0;
  REQUIRE(kv.set("txt", "x").ok());
  CHECK(kv.add("txt", 1, n).code == KvStatus::kNotInteger);
  const std::string sixty(60, 'a');
  std::vector<std::string_view> ks{"m1", "m2"}, vs{sixty, "b"};
  CHECK(kv.multi_set(ks, vs).code == KvStatus::kOverBudget);
  CHECK_FALSE(kv.exists("m2"));  // all or nothing
  CHECK(kv.bytes() == before + KvState::entry_bytes("txt", 1));
  CHECK(kv.bytes() == kv.recount());
}

TEST_CASE("KvState: parse_counter follows std::stoll", "[kv]") {
  CHECK(parse_counter("42") == 42);
  CHECK(parse_counter("  +7") == 7);
  CHECK(parse_counter("\n-3abc") == -3);
  CHECK_FALSE(parse_counter("+-5"));
  CHECK_FALSE(parse_counter(""));
  CHECK_FALSE(parse_counter("x1"));
  CHECK_FALSE(parse_counter("99999999999999999999"));  // out of range
}
