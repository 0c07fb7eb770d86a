#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "run/run_internal.h"

using namespace gpurun;
using namespace gpurun::launcher;
namespace fs = std::filesystem;

namespace {
WorkerSpec spec(const std::string& out_path, bool console_out, const std::string& err_path,
                bool console_err) {
  WorkerSpec w;
  w.local_rank = 1;
  w.rank = 5;
  w.stdout_path = out_path;
  w.stderr_path = err_path;
  w.console_stdout = console_out;
  w.console_stderr = console_err;
  return w;
}
}  // namespace

TEST_CASE("wire_streams: tee, redirect, console, filtered", "[run]") {
  RankOutput ro;
  auto [o1, e1] = wire_streams(spec("/l/stdout.log", true, "/l/stderr.log", false), false, &ro);
  CHECK(o1.mode == StreamMode::kPipe);  // tee: gpurun writes file + console
  CHECK(ro.tee_stdout_path == "/l/stdout.log");
  CHECK(e1.mode == StreamMode::kFile);  // redirect only: the child writes the file
  CHECK(e1.path == "/l/stderr.log");
  CHECK(ro.rank == 5);

  auto [o2, e2] = wire_streams(spec("", true, "", true), false, &ro);
  CHECK(o2.mode == StreamMode::kInherit);  // single worker: the terminal itself
  CHECK(e2.mode == StreamMode::kInherit);
  auto [o3, e3] = wire_streams(spec("", true, "", true), true, &ro);
  CHECK(o3.mode == StreamMode::kPipe);  // several workers: tagged through gpurun
  CHECK(e3.mode == StreamMode::kPipe);

  auto [o4, e4] = wire_streams(spec("", false, "", false), true, &ro);
  CHECK(o4.mode == StreamMode::kNull);  // outside --local-ranks-filter, as torchrun
  CHECK(e4.mode == StreamMode::kPipe);  // ... but stderr is kept for the failure summary
  CHECK(!ro.console_stderr);
}

TEST_CASE("log tree: torchrun layout, attempts recreated, temp base removed when empty", "[run]") {
  char tmpl[] = "/tmp/gpurun_run_test_XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string root = tmpl;
  LaunchConfig cfg;
  EnvMap env{{"TMPDIR", root}};

  SECTION("--log-dir") {
    cfg.log_dir = root + "/logs";
    LogTree t = LogTree::create(cfg, "job", env);
    REQUIRE(!t.run_dir().empty());
    CHECK(fs::path(t.run_dir()).filename().string().rfind("job_", 0) == 0);
    CHECK(fs::path(t.run_dir()).filename().string().size() == 4 + 8);
    const std::string a0 = t.begin_attempt(0, 2);
    CHECK(a0 == t.run_dir() + "/attempt_0");
    CHECK(fs::is_directory(a0 + "/0"));
    CHECK(fs::is_directory(a0 + "/1"));
    std::ofstream(a0 + "/1/stale") << "x";
    CHECK(t.begin_attempt(0, 2) == a0);  // the same attempt again: recreated empty
    CHECK(!fs::exists(a0 + "/1/stale"));
    t.finish();
    CHECK(fs::is_directory(a0));  // a user's --log-dir is never cleaned up
  }
  SECTION("temporary base: removed when nothing was written, kept otherwise") {
    LogTree t = LogTree::create(cfg, "none", env);
    t.begin_attempt(0, 3);
    t.finish();
    CHECK(fs::is_empty(root));
    LogTree k = LogTree::create(cfg, "none", env);
    const std::string a = k.begin_attempt(0, 1);
    std::ofstream(a + "/0/error.json") << "{}";
    k.finish();
    CHECK(fs::exists(a + "/0/error.json"));
  }
  SECTION("/dev/null: no tree") {
    cfg.log_dir = "/dev/null";
    LogTree t = LogTree::create(cfg, "job", env);
    CHECK(t.run_dir().empty());
    CHECK(t.begin_attempt(0, 2).empty());
  }
  fs::remove_all(root);
}
