#include "store_contract.h"

#include "gpurun/rendezvous/memory_store.h"
#include "gpurun/rendezvous/prefix_store.h"

using namespace gpurun::rendezvous;

TEST_CASE("MemoryStore meets the Store contract", "[store]") {
  testing::check_store_contract([] { return std::make_shared<MemoryStore>(); });
}

TEST_CASE("PrefixStore over MemoryStore meets the Store contract", "[store]") {
  testing::check_store_contract(
      [] { return std::make_shared<PrefixStore>("p", std::make_shared<MemoryStore>()); });
}

TEST_CASE("PrefixStore isolates and nests prefixes", "[store]") {
  auto base = std::make_shared<MemoryStore>();
  auto a = std::make_shared<PrefixStore>("a", base);
  auto b = std::make_shared<PrefixStore>("b", base);
  a->set("k", "from-a");
  b->set("k", "from-b");
  CHECK(to_string(a->get("k")) == "from-a");
  CHECK(to_string(b->get("k")) == "from-b");
  CHECK(to_string(base->get("a/k")) == "from-a");
  PrefixStore nested("inner", a);
  nested.set("x", "1");
  CHECK(base->check({"a/inner/x"}));
}
