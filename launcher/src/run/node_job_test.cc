// run_node / run(): the orchestration of a node's job with a fake GPU probe and a fake process
// runner (virtual time, scripted workers) but the real store (port 0), the real planner, output
// mux, supervisor and failure report. Messages on stderr are read back from a temporary file.
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "gpurun/rendezvous/store_server.h"
#include "probe/gpu_probe.h"
#include "process/fake_process_runner.h"
#include "run/run.h"
#include "run/run_internal.h"

using namespace gpurun;
using namespace gpurun::launcher;
using namespace std::chrono_literals;

namespace {

// The job owns its runner (made after the log tree); the test keeps the fake to look at it.
class RunnerRef final : public ProcessRunner {
 public:
  explicit RunnerRef(FakeProcessRunner& fake) : fake_(fake) {}
  pid_t spawn(const SpawnRequest& r) override { return fake_.spawn(r); }
  void signal_group(pid_t pid, int sig) override { fake_.signal_group(pid, sig); }
  bool exiting(pid_t pid) const override { return fake_.exiting(pid); }
  std::vector<RunnerEvent> wait(Clock::time_point d) override { return fake_.wait(d); }
  void watch_signals(const std::vector<int>& s) override { fake_.watch_signals(s); }
  Clock::time_point now() const override { return fake_.now(); }

 private:
  FakeProcessRunner& fake_;
};

struct Harness {
  FakeProcessRunner fake;
  int runners_made = 0;
  ReaperOptions reaper_seen;
  ProcessRunnerFactory factory() {
    return [this](const ReaperOptions& r) {
      ++runners_made;
      reaper_seen = r;
      return std::make_unique<RunnerRef>(fake);
    };
  }
  std::string env_of(std::size_t spawn, const std::string& key) const {
    REQUIRE(spawn < fake.spawned.size());
    const auto& env = fake.spawned[spawn].request.env;
    auto it = env.find(key);
    return it == env.end() ? "<unset>" : it->second;
  }
};

// Everything written to fd 2 while it lives (write_stderr writes there directly).
class StderrCapture {
 public:
  StderrCapture() {
    std::fflush(stderr);
    char tmpl[] = "/tmp/gpurun_node_job_test_XXXXXX";
    fd_ = ::mkstemp(tmpl);
    REQUIRE(fd_ >= 0);
    path_ = tmpl;
    saved_ = ::dup(2);
    ::dup2(fd_, 2);
  }
  ~StderrCapture() {
    restore();
    ::unlink(path_.c_str());
  }
  std::string text() {
    restore();
    std::ifstream in(path_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    ::close(fd_);
    saved_ = -1;
  }
  int fd_ = -1;
  int saved_ = -1;
  std::string path_;
};

LaunchConfig config(std::vector<std::string> args) {
  std::vector<std::string> all = {"--log-dir", "/dev/null"};
  all.insert(all.end(), args.begin(), args.end());
  return resolve_config(all, {});
}

// Counts the probes: the orchestration must probe the GPUs once per gpurun.
class CountingProbe final : public GpuProbe {
 public:
  explicit CountingProbe(int gpus) : fake_(gpus) {}
  GpuInventory probe(const EnvMap& env) override {
    ++calls;
    return fake_.probe(env);
  }
  int calls = 0;

 private:
  FakeGpuProbe fake_;
};

}  // namespace

TEST_CASE("node job: a failing worker gives the summary and its exit code, the others stopped",
          "[node_job]") {
  Harness h;
  h.fake.script = [](int id, int) {
    return id == 1 ? FakeChild{}.exit_after(50ms, ExitStatus::exited(3)) : FakeChild{};
  };
  const auto cfg = config({"--nproc-per-node", "2", "./app"});
  const GpuInventory gpus = FakeGpuProbe(0).probe({});
  std::string summary;
  NodeFacts node;
  node.summary_out = &summary;
  const int rc = run_node(cfg, {}, node, NodeTools{gpus, h.factory()});
  CHECK(rc == 3);
  CHECK(h.runners_made == 1);
  REQUIRE(h.fake.spawned.size() == 2);
  INFO(summary);
  CHECK_THAT(summary, Catch::Contains("rank 1"));
  CHECK_THAT(summary, Catch::Contains("exit code 3") || Catch::Contains("exited with code 3"));
  // Rank 0 ran until stopped: it got SIGTERM once rank 1 failed.
  bool term_to_0 = false;
  for (const auto& s : h.fake.sent) term_to_0 |= s.id == 0 && s.sig == SIGTERM;
  CHECK(term_to_0);
  // The store was bound first, on a port the kernel picked, and every worker was told it.
  const std::string port = h.env_of(0, "MASTER_PORT");
  CHECK(port != "0");
  CHECK(std::stoi(port) > 0);
  CHECK(h.env_of(1, "MASTER_PORT") == port);
  CHECK(h.env_of(1, "RANK") == "1");
  CHECK(h.env_of(1, "WORLD_SIZE") == "2");
}

TEST_CASE("node job: a busy --master-port is exit 3 with the bind message and no worker started",
          "[node_job]") {
  rendezvous::StoreServerOptions so;
  so.host = "127.0.0.1";
  so.port = 0;
  rendezvous::StoreServerThread holder(so);  // this process holds the port
  Harness h;
  auto cfg = config({"--master-port", std::to_string(holder.port()), "./app"});
  const GpuInventory gpus = FakeGpuProbe(0).probe({});
  StderrCapture err;
  const int rc = run_node(cfg, {}, NodeFacts{}, NodeTools{gpus, h.factory()});
  const std::string text = err.text();
  INFO(text);
  CHECK(rc == static_cast<int>(ExitCode::kRendezvousFailed));
  CHECK_THAT(text, Catch::Contains(fmt::format(
                       "gpurun: error: cannot bind store on 127.0.0.1:{} (address already in use",
                       holder.port())));
  CHECK_THAT(text, Catch::Contains("; pass --master-port 0 (auto) or pick a free port"));
  CHECK(h.runners_made == 0);
  CHECK(h.fake.spawned.empty());
}

TEST_CASE("node job: an external store (multi-node) is used as is and restarts count on",
          "[node_job]") {
  Harness h;
  h.fake.script = [](int, int attempt) {
    return FakeChild{}.exit_after(10ms, ExitStatus::exited(attempt == 0 ? 1 : 0));
  };
  const auto cfg = config({"--nproc-per-node", "1", "--max-restarts", "1", "./app"});
  const GpuInventory gpus = FakeGpuProbe(0).probe({});
  NodeFacts node;
  node.external_store = true;
  node.master_addr = "127.0.0.9";
  node.master_port = 4242;
  node.group_rank = 1;
  node.group_world_size = 2;
  node.base_global_rank = 1;
  node.world_size = 2;
  std::string summary;
  node.summary_out = &summary;
  StderrCapture err;  // the restart notice
  const int rc = run_node(cfg, {}, node, NodeTools{gpus, h.factory()});
  const std::string text = err.text();
  INFO(text);
  CHECK(rc == 0);
  REQUIRE(h.fake.spawned.size() == 2);
  CHECK(h.env_of(0, "MASTER_ADDR") == "127.0.0.9");
  CHECK(h.env_of(0, "MASTER_PORT") == "4242");
  CHECK(h.env_of(0, "RANK") == "1");
  CHECK(h.env_of(0, "GROUP_RANK") == "1");
  CHECK(h.env_of(0, "TORCHELASTIC_RESTART_COUNT") == "0");
  CHECK(h.env_of(1, "TORCHELASTIC_RESTART_COUNT") == "1");
}

TEST_CASE("run: the GPUs are probed once and the workers get them", "[node_job]") {
  Harness h;
  CountingProbe probe(2);
  const auto cfg = config({"--nproc-per-node", "gpu", "./app"});
  const int rc = run(cfg, {}, probe, h.factory());
  CHECK(rc == 0);
  CHECK(probe.calls == 1);
  REQUIRE(h.fake.spawned.size() == 2);
  CHECK(h.env_of(0, "GPURUN_GPU") == "0");
  CHECK(h.env_of(1, "GPURUN_GPU") == "1");
  CHECK(h.env_of(1, "LOCAL_RANK") == "1");
}

TEST_CASE("run: --nproc-per-node gpu without a GPU is NoGpuError before any store or worker",
          "[node_job]") {
  Harness h;
  CountingProbe probe(0);
  const auto cfg = config({"--nproc-per-node", "gpu", "./app"});
  CHECK_THROWS_AS(run(cfg, {}, probe, h.factory()), NoGpuError);
  CHECK(probe.calls == 1);
  CHECK(h.runners_made == 0);
}
