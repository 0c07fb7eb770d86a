#include "gpurun/common/hostlist.h"

#include <catch2/catch.hpp>

#include "gpurun/common/error.h"

using gpurun::expand_hostlist;
using V = std::vector<std::string>;

TEST_CASE("Slurm hostlists expand as scontrol show hostnames does", "[common]") {
  CHECK(expand_hostlist("node1") == V{"node1"});
  CHECK(expand_hostlist("gpu[01-04,07],login1") ==
        V{"gpu01", "gpu02", "gpu03", "gpu04", "gpu07", "login1"});
  CHECK(expand_hostlist("n[001-003]-ib") == V{"n001-ib", "n002-ib", "n003-ib"});
  CHECK(expand_hostlist("a,b[8-10],c") == V{"a", "b8", "b9", "b10", "c"});
  CHECK(expand_hostlist("r[1-2]n[1-2]") == V{"r1n1", "r1n2", "r2n1", "r2n2"});
  CHECK(expand_hostlist("x[7]") == V{"x7"});
  CHECK(expand_hostlist("h[098-101]") == V{"h098", "h099", "h100", "h101"});
  CHECK(expand_hostlist(" n1 , n2 ") == V{"n1", "n2"});
  CHECK(expand_hostlist("10.0.0.[1-2]") == V{"10.0.0.1", "10.0.0.2"});
}

TEST_CASE("malformed hostlists are errors that name the variable", "[common]") {
  for (const char* bad :
       {"", "gpu[01-04", "gpu01]", "n[4-2]", "n[a-b]", "a,,b", "n[1-2,]", "n[1-99999999]"}) {
    INFO(bad);
    CHECK_THROWS_AS(expand_hostlist(bad, "SLURM_JOB_NODELIST"), gpurun::ConfigError);
  }
  CHECK_THROWS_WITH(expand_hostlist("gpu[01-04", "SLURM_JOB_NODELIST"),
                    Catch::StartsWith("SLURM_JOB_NODELIST='gpu[01-04' is not a Slurm hostlist "
                                      "(a '[' without ']')"));
}
