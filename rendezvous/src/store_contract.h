// The Store contract as a reusable Catch2 check: every Store implementation runs it (with and
// without a prefix), as c10d's StoreTestCommon does. `make` returns a fresh, empty store.
#pragma once

#include <atomic>
#include <catch2/catch.hpp>
#include <functional>
#include <limits>
#include <memory>
#include <thread>

#include "gpurun/common/error.h"
#include "gpurun/rendezvous/store.h"

namespace gpurun::rendezvous::testing {

inline void check_store_contract(const std::function<std::shared_ptr<Store>()>& make) {
  using std::chrono::milliseconds;
  auto s = make();

  SECTION("set/get round trip, overwrite, binary values") {
    s->set("k1", "v1");
    CHECK(to_string(s->get("k1")) == "v1");
    s->set("k1", "v2");
    CHECK(to_string(s->get("k1")) == "v2");
    Bytes bin{0, 1, 2, 255, 0};
    s->set("bin", bin);
    CHECK(s->get("bin") == bin);
    s->set("empty", Bytes{});
    CHECK(s->get("empty").empty());
    CHECK(s->check({"k1", "bin", "empty"}));
  }
  SECTION("add counts from zero, stores ASCII decimal, accepts negatives") {
    CHECK(s->add("ctr", 5) == 5);
    CHECK(s->add("ctr", -2) == 3);
    CHECK(s->add("ctr", 0) == 3);
    CHECK(to_string(s->get("ctr")) == "3");
  }
  SECTION("add wraps at the int64 bounds (two's complement, no overflow)") {
    constexpr auto kMax = std::numeric_limits<std::int64_t>::max();
    constexpr auto kMin = std::numeric_limits<std::int64_t>::min();
    CHECK(s->add("big", kMax) == kMax);
    CHECK(s->add("big", 1) == kMin);
    CHECK(to_string(s->get("big")) == std::to_string(kMin));
    CHECK(s->add("big", -1) == kMax);
  }
  SECTION("add parses like std::stoll and refuses '+-5'") {
    s->set("plus", "+5");
    CHECK(s->add("plus", 1) == 6);
    s->set("spaced", " \t-7xyz");
    CHECK(s->add("spaced", 0) == -7);
    s->set("bad", "+-5");
    CHECK_THROWS_AS(s->add("bad", 1), Error);
    CHECK(to_string(s->get("bad")) == "+-5");  // unchanged, and the store is still usable
  }
  SECTION("compare_set follows c10d's four cases") {
    CHECK(to_string(s->compare_set("cs", to_bytes(""), to_bytes("a"))) == "a");
    CHECK(to_string(s->compare_set("absent", to_bytes("x"), to_bytes("y"))) == "x");
    CHECK_FALSE(s->check({"absent"}));
    CHECK(to_string(s->compare_set("cs", to_bytes("a"), to_bytes("b"))) == "b");
    CHECK(to_string(s->compare_set("cs", to_bytes("zzz"), to_bytes("c"))) == "b");
    CHECK(to_string(s->get("cs")) == "b");
  }
  SECTION("check, delete_key and num_keys") {
    CHECK(s->check({}));
    CHECK_FALSE(s->check({"nope"}));
    auto before = s->num_keys();
    s->set("d", "1");
    CHECK(s->num_keys() == before + 1);
    CHECK(s->delete_key("d"));
    CHECK_FALSE(s->delete_key("d"));
    CHECK(s->num_keys() == before);
  }
  SECTION("multi_set/multi_get keep order; append concatenates") {
    s->multi_set({"m1", "m2"}, {to_bytes("a"), to_bytes("b")});
    auto vals = s->multi_get({"m2", "m1"});
    REQUIRE(vals.size() == 2);
    CHECK(to_string(vals[0]) == "b");
    CHECK(to_string(vals[1]) == "a");
    s->append("ap", to_bytes("x"));
    s->append("ap", to_bytes("yz"));
    CHECK(to_string(s->get("ap")) == "xyz");
  }
  SECTION("wait times out naming the missing key") {
    s->set("present", "1");
    CHECK_THROWS_AS(s->wait({"present", "never"}, milliseconds(100)), StoreTimeout);
    try {
      s->wait({"present", "never"}, milliseconds(100));
    } catch (const StoreTimeout& e) {
      CHECK_THAT(e.what(), Catch::Contains("never"));
      CHECK_THAT(e.what(), !Catch::Contains("'present'"));
    }
  }
  SECTION("get blocks until another thread sets the key") {
    std::atomic<bool> setter_ran{false};
    std::thread t([&] {
      std::this_thread::sleep_for(milliseconds(50));
      setter_ran = true;
      s->set("late", "here");
    });
    CHECK(to_string(s->get("late")) == "here");
    CHECK(setter_ran);
    t.join();
  }
  SECTION("wait is woken by add, append and compare_set") {
    std::thread t([&] {
      std::this_thread::sleep_for(milliseconds(20));
      s->add("w_add", 1);
      s->append("w_app", to_bytes("x"));
      s->compare_set("w_cas", Bytes{}, to_bytes("y"));
    });
    s->wait({"w_add", "w_app", "w_cas"}, milliseconds(5000));
    t.join();
  }
}

}  // namespace gpurun::rendezvous::testing
