#include "allow_list.h"

#include <catch2/catch.hpp>

#include "gpurun/common/env.h"
#include "gpurun/common/error.h"
#include "gpurun/common/net.h"
#include "gpurun/common/slurm.h"

using boost::asio::ip::make_address;
using gpurun::rendezvous::AllowList;

TEST_CASE("an allow list matches addresses, CIDR blocks and names", "[allow]") {
  AllowList l({"10.77.0.11", "10.88.0.0/16", "fd00::/64", "localhost"}, "--rdzv-allow");
  CHECK(l.restricts());
  CHECK(l.allows(make_address("10.77.0.11")));
  CHECK_FALSE(l.allows(make_address("10.77.0.12")));
  CHECK(l.allows(make_address("10.88.255.1")));
  CHECK_FALSE(l.allows(make_address("10.89.0.1")));
  CHECK(l.allows(make_address("fd00::5")));
  CHECK_FALSE(l.allows(make_address("fd01::5")));
  CHECK(l.allows(make_address("::ffff:10.77.0.11")));  // IPv4-mapped counts as IPv4
  CHECK(l.allows(make_address("127.0.0.1")));          // "localhost" resolved
  CHECK_THAT(l.describe(), Catch::Contains("10.77.0.11, 10.88.0.0/16, fd00::/64") &&
                               Catch::Contains("(from --rdzv-allow)"));
  AllowList zero({"0.0.0.0/0"}, "x");
  CHECK(zero.allows(make_address("1.2.3.4")));
  CHECK_FALSE(zero.allows(make_address("fd00::1")));
}

TEST_CASE("no entries or any lets everyone in", "[allow]") {
  CHECK_FALSE(AllowList().restricts());
  CHECK_FALSE(AllowList({}, "x").restricts());
  AllowList any({"10.0.0.1", "any"}, "x");
  CHECK_FALSE(any.restricts());
  CHECK(any.allows(make_address("192.0.2.1")));
}

TEST_CASE("malformed blocks and unknown names are errors that name the origin", "[allow]") {
  for (const char* bad : {"10.0.0.0/33", "10.0.0.0/", "10.0.0.0/x", "fd00::/129", "zz/8"}) {
    INFO(bad);
    CHECK_THROWS_WITH(AllowList({bad}, "--rdzv-allow"),
                      Catch::Contains("--rdzv-allow") && Catch::Contains("not an address block"));
  }
  CHECK_THROWS_WITH(AllowList({"no-such-host.invalid"}, "PET_RDZV_ALLOW"),
                    Catch::Contains("cannot resolve 'no-such-host.invalid' of PET_RDZV_ALLOW"));
}

TEST_CASE("the Slurm job's nodes come from SLURM_JOB_NODELIST", "[allow]") {
  gpurun::EnvMap env{{"SLURM_JOB_NODELIST", "n[1-2],gpu07"}, {"SLURM_NODELIST", "other"}};
  auto nodes = gpurun::slurm_job_nodes(env);
  REQUIRE(nodes);
  CHECK(nodes->nodes == std::vector<std::string>{"n1", "n2", "gpu07"});
  CHECK(nodes->from == "SLURM_JOB_NODELIST=n[1-2],gpu07");
  CHECK(gpurun::slurm_job_nodes({{"SLURM_NODELIST", "a[1-2]"}})->nodes.size() == 2);
  CHECK_FALSE(gpurun::slurm_job_nodes({}));
  CHECK_THROWS_AS(gpurun::slurm_job_nodes({{"SLURM_JOB_NODELIST", "n[2-1]"}}), gpurun::ConfigError);
}

TEST_CASE("a store binds where its endpoint is", "[allow]") {
  CHECK(gpurun::bind_address_for("localhost") == "127.0.0.1");
  CHECK(gpurun::bind_address_for("127.0.0.2") == "127.0.0.2");
  CHECK(gpurun::bind_address_for("::1") == "::1");
  // Not an address of this host: every interface of the endpoint's family.
  CHECK(gpurun::bind_address_for("192.0.2.1") == "0.0.0.0");
  CHECK(gpurun::bind_address_for("2001:db8::1") == "::");
  // An address of this host that is not loopback binds exactly that address.
  for (const auto& i : gpurun::list_interfaces()) {
    if (i.loopback || !i.up) continue;
    for (const auto& a : i.addresses) {
      if (a.find('%') != std::string::npos || a.rfind("fe80", 0) == 0) continue;
      INFO(a);
      CHECK(gpurun::bind_address_for(a) == a);
    }
  }
}
