#include "process/supervisor.h"

#include <catch2/catch.hpp>

#include "process/fake_process_runner.h"

using namespace gpurun;
using namespace gpurun::launcher;
using namespace std::chrono_literals;

namespace {

Supervisor::PlanFn plan_n(int n, std::vector<int>* attempts_seen = nullptr) {
  return [n, attempts_seen](int restart_count) {
    if (attempts_seen) attempts_seen->push_back(restart_count);
    std::vector<PlannedWorker> out;
    for (int i = 0; i < n; ++i) {
      PlannedWorker w;
      w.rank = 10 + i;  // distinct from local rank on purpose
      w.request.id = i;
      w.request.argv = {"worker"};
      w.request.env["TORCHELASTIC_RESTART_COUNT"] = std::to_string(restart_count);
      out.push_back(w);
    }
    return out;
  };
}

FakeChild sleeper() { return FakeChild{}; }  // runs until signalled

struct Harness {
  FakeProcessRunner fake;
  SupervisorOptions opts;
  std::vector<std::string> notices;
  SupervisorResult go(int n, std::vector<int>* attempts = nullptr) {
    Supervisor sup(fake, opts, nullptr, [this](const std::string& s) { notices.push_back(s); });
    return sup.run(plan_n(n, attempts));
  }
  int signals_to(int id, int sig) const {
    int count = 0;
    for (const auto& s : fake.sent) count += (s.id == id && s.sig == sig);
    return count;
  }
};

}  // namespace

TEST_CASE("all workers succeed -> exit 0, no signals sent", "[supervisor]") {
  Harness h;
  auto r = h.go(4);
  CHECK(r.outcome == Outcome::kSucceeded);
  CHECK(r.exit_code == 0);
  CHECK(r.workers.size() == 4);
  CHECK(h.fake.sent.empty());
  CHECK(h.fake.spawned.size() == 4);
}

TEST_CASE("first failure's exit code is passed through and the others are stopped at once",
          "[supervisor]") {
  Harness h;
  h.fake.script = [](int id, int) {
    if (id == 2) return FakeChild{}.exit_after(50ms, ExitStatus::exited(3));
    return sleeper();
  };
  auto r = h.go(4);
  CHECK(r.outcome == Outcome::kWorkerFailed);
  CHECK(r.exit_code == 3);
  REQUIRE(r.first_failure);
  CHECK(r.first_failure->local_rank == 2);
  CHECK(r.first_failure->rank == 12);
  CHECK(r.other_failures.empty());  // the rest were stopped by us: not failures
  for (int id : {0, 1, 3}) CHECK(h.signals_to(id, SIGTERM) == 1);
  CHECK(h.signals_to(2, SIGTERM) == 0);
  // SIGTERM went out at the moment of the failure, not a poll period later.
  for (const auto& s : h.fake.sent) CHECK(s.at == 50ms);
  CHECK(h.fake.elapsed() == 50ms);
  REQUIRE(!h.notices.empty());
  CHECK(h.notices[0] ==
        "gpurun: rank 12 (pid 1002) exited with code 3; stopping the other 3 workers");
}

TEST_CASE("a signal death maps to 128+signal", "[supervisor]") {
  Harness h;
  h.fake.script = [](int id, int) {
    if (id == 1) return FakeChild{}.exit_after(5ms, ExitStatus::killed(SIGSEGV));
    return sleeper();
  };
  auto r = h.go(2);
  CHECK(r.exit_code == 139);
  REQUIRE(r.first_failure);
  CHECK(r.first_failure->status->describe() == "killed by SIGSEGV");
}

TEST_CASE("workers ignoring SIGTERM get SIGKILL after the grace period", "[supervisor]") {
  Harness h;
  h.opts.failure_shutdown_timeout = 2s;
  h.fake.script = [](int id, int) {
    if (id == 0) return FakeChild{}.exit_after(100ms, ExitStatus::exited(1));
    FakeChild c;
    c.ignore_term = true;
    return c;
  };
  auto r = h.go(3);
  CHECK(r.exit_code == 1);
  CHECK(h.fake.elapsed() == 2100ms);
  for (int id : {1, 2}) {
    CHECK(h.signals_to(id, SIGTERM) == 1);
    CHECK(h.signals_to(id, SIGKILL) == 1);
  }
  for (const auto& w : r.workers) {
    if (w.local_rank != 0) CHECK(w.sigkilled);
  }
  CHECK(h.notices.back().find("still running 2s after SIGTERM; sending SIGKILL") !=
        std::string::npos);
}

TEST_CASE("workers that die on SIGTERM are not killed", "[supervisor]") {
  Harness h;
  h.fake.script = [](int id, int) {
    if (id == 0) return FakeChild{}.exit_after(10ms, ExitStatus::exited(7));
    FakeChild c;
    c.term_delay = 30ms;
    return c;
  };
  auto r = h.go(2);
  CHECK(r.exit_code == 7);
  CHECK(h.signals_to(1, SIGKILL) == 0);
  CHECK(h.fake.elapsed() == 40ms);
}

TEST_CASE("SIGINT to gpurun is forwarded, exit 130", "[supervisor]") {
  Harness h;
  h.fake.script = [](int, int) { return sleeper(); };
  h.fake.incoming_signals = {{20ms, SIGINT}};
  auto r = h.go(3);
  CHECK(r.outcome == Outcome::kInterrupted);
  CHECK(r.exit_code == 130);
  CHECK(!r.first_failure);
  for (int id : {0, 1, 2}) {
    CHECK(h.signals_to(id, SIGINT) == 1);
    CHECK(h.signals_to(id, SIGKILL) == 0);
  }
  CHECK(h.fake.elapsed() == 20ms);
}

TEST_CASE("SIGTERM to gpurun -> 143", "[supervisor]") {
  Harness h;
  h.fake.script = [](int, int) { return sleeper(); };
  h.fake.incoming_signals = {{5ms, SIGTERM}};
  auto r = h.go(1);
  CHECK(r.exit_code == 143);
}

TEST_CASE("a received signal gets the long grace, a failure the short one", "[supervisor]") {
  auto stubborn = [](int, int) {
    FakeChild c;
    c.ignore_term = true;
    return c;
  };
  {
    Harness h;  // defaults: 30 s for a signal gpurun received
    h.fake.script = stubborn;
    h.fake.incoming_signals = {{10ms, SIGTERM}};
    auto r = h.go(2);
    CHECK(r.exit_code == 143);
    CHECK(h.fake.elapsed() == 30010ms);
    CHECK(h.notices[0].find("SIGKILL in 30s") != std::string::npos);
    CHECK(h.notices.back().find("still running 30s after SIGTERM") != std::string::npos);
  }
  {
    Harness h;  // 5 s after a worker's failure
    h.fake.script = [&](int id, int n) {
      if (id == 0) return FakeChild{}.exit_after(10ms, ExitStatus::exited(1));
      return stubborn(id, n);
    };
    auto r = h.go(2);
    CHECK(r.exit_code == 1);
    CHECK(h.fake.elapsed() == 5010ms);
    CHECK(h.notices.back().find("still running 5s after SIGTERM") != std::string::npos);
  }
}

TEST_CASE("ranks that had already exited when the stop went out are failures too", "[supervisor]") {
  Harness h;
  h.fake.script = [](int id, int) {
    if (id == 0) return sleeper();
    // Ranks 1-3 fail at the same moment; gpurun sees 2 and 3 only after it signalled them.
    FakeChild c = FakeChild{}.exit_after(50ms, ExitStatus::exited(3));
    if (id > 1) c.reap_delay = 1ms;
    return c;
  };
  auto r = h.go(4);
  CHECK(r.exit_code == 3);
  REQUIRE(r.first_failure);
  CHECK(r.first_failure->local_rank == 1);
  REQUIRE(r.other_failures.size() == 2);
  CHECK(r.other_failures[0].local_rank + r.other_failures[1].local_rank == 5);
  for (const auto& w : r.workers) CHECK(w.stopped_by_gpurun == (w.local_rank == 0));
}

TEST_CASE("a second Ctrl-C kills at once", "[supervisor]") {
  Harness h;
  h.opts.shutdown_timeout = 30s;
  h.fake.script = [](int, int) {
    FakeChild c;
    c.ignore_term = true;
    return c;
  };
  h.fake.incoming_signals = {{10ms, SIGINT}, {25ms, SIGINT}};
  auto r = h.go(2);
  CHECK(r.exit_code == 130);
  CHECK(h.fake.elapsed() == 25ms);
  CHECK(h.signals_to(0, SIGKILL) == 1);
  CHECK(h.signals_to(1, SIGKILL) == 1);
}

TEST_CASE("SIGUSR1 is forwarded and the run goes on", "[supervisor]") {
  Harness h;
  h.fake.script = [](int, int) { return FakeChild{}.exit_after(100ms, ExitStatus::exited(0)); };
  h.fake.incoming_signals = {{10ms, SIGUSR1}};
  auto r = h.go(2);
  CHECK(r.outcome == Outcome::kSucceeded);
  CHECK(h.signals_to(0, SIGUSR1) == 1);
  CHECK(h.signals_to(1, SIGUSR1) == 1);
  CHECK(h.fake.elapsed() == 100ms);
  // The runner was asked to watch the stop and forward signals.
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2}) {
    CHECK(std::find(h.fake.watched.begin(), h.fake.watched.end(), s) != h.fake.watched.end());
  }
}

TEST_CASE("restarts: the whole group restarts with the restart count incremented", "[supervisor]") {
  Harness h;
  h.opts.max_restarts = 2;
  h.fake.script = [](int id, int attempt) {
    if (attempt == 0 && id == 1) return FakeChild{}.exit_after(10ms, ExitStatus::exited(1));
    if (attempt == 0) return sleeper();
    return FakeChild{}.exit_after(10ms, ExitStatus::exited(0));
  };
  std::vector<int> attempts;
  auto r = h.go(3, &attempts);
  CHECK(r.outcome == Outcome::kSucceeded);
  CHECK(r.restarts == 1);
  CHECK(attempts == std::vector<int>{0, 1});
  CHECK(h.fake.spawned.size() == 6);
  CHECK(h.fake.spawned.back().request.env.at("TORCHELASTIC_RESTART_COUNT") == "1");
  CHECK(h.notices.back().find("restarting all 3 workers (restart 1 of 2)") != std::string::npos);
}

TEST_CASE("restarts exhausted -> the last failure's code", "[supervisor]") {
  Harness h;
  h.opts.max_restarts = 2;
  h.fake.script = [](int id, int attempt) {
    if (id == 0) return FakeChild{}.exit_after(10ms, ExitStatus::exited(40 + attempt));
    return sleeper();
  };
  std::vector<int> attempts;
  auto r = h.go(2, &attempts);
  CHECK(attempts == std::vector<int>{0, 1, 2});
  CHECK(r.exit_code == 42);
  CHECK(r.restarts == 2);
}

TEST_CASE("exec failure is not restarted", "[supervisor]") {
  Harness h;
  h.opts.max_restarts = 3;
  h.fake.script = [](int, int) {
    FakeChild c;
    c.exec_error = "No such file or directory";
    return c;
  };
  std::vector<int> attempts;
  auto r = h.go(2, &attempts);
  CHECK(attempts.size() == 1);
  CHECK(r.exit_code == 127);
  REQUIRE(r.first_failure);
  CHECK(r.first_failure->exec_error == "No such file or directory");
}

TEST_CASE("run timeout stops the run and names the ranks still running", "[supervisor]") {
  Harness h;
  h.opts.run_timeout = 1s;
  h.fake.script = [](int id, int) {
    if (id == 0) return FakeChild{}.exit_after(10ms, ExitStatus::exited(0));
    return sleeper();
  };
  auto r = h.go(3);
  CHECK(r.outcome == Outcome::kTimedOut);
  CHECK(r.exit_code == 124);
  CHECK(r.running_at_timeout == std::vector<int>{11, 12});
  CHECK(h.fake.elapsed() == 1s);
}

TEST_CASE("other workers failing on their own are listed apart from the root cause",
          "[supervisor]") {
  Harness h;
  h.fake.script = [](int id, int) {
    if (id == 0) return FakeChild{}.exit_after(10ms, ExitStatus::exited(5));
    if (id == 1) return FakeChild{}.exit_after(10ms, ExitStatus::exited(6));
    return sleeper();
  };
  auto r = h.go(3);
  CHECK(r.exit_code == 5);
  REQUIRE(r.other_failures.size() == 1);
  CHECK(r.other_failures[0].local_rank == 1);
}

TEST_CASE("spawn failure stops the workers already started", "[supervisor]") {
  Harness h;
  h.fake.fail_spawn_of_id = 2;
  h.fake.script = [](int, int) { return sleeper(); };
  auto r = h.go(4);
  CHECK(r.outcome == Outcome::kSpawnFailed);
  CHECK(r.exit_code == 1);
  CHECK(r.spawn_error.find("cannot start rank 12") != std::string::npos);
  CHECK(h.signals_to(0, SIGTERM) == 1);
  CHECK(h.signals_to(1, SIGTERM) == 1);
  CHECK(h.fake.spawned.size() == 2);
}

TEST_CASE("shutdown timeout 0 kills at once", "[supervisor]") {
  Harness h;
  h.opts.failure_shutdown_timeout = 0ms;
  h.fake.script = [](int id, int) {
    if (id == 0) return FakeChild{}.exit_after(10ms, ExitStatus::exited(2));
    FakeChild c;
    c.ignore_term = true;
    return c;
  };
  auto r = h.go(2);
  CHECK(r.exit_code == 2);
  CHECK(h.signals_to(1, SIGKILL) == 1);
  CHECK(h.fake.elapsed() == 10ms);
}

TEST_CASE("output reaches the sink before the exit", "[supervisor]") {
  struct Sink : OutputSink {
    std::vector<std::string> log;
    void on_output(int r, Stream s, std::string_view d) override {
      log.push_back(std::to_string(r) + (s == Stream::kStderr ? "E:" : "O:") + std::string(d));
    }
    void on_closed(int, Stream) override {}
    void on_exit(int r) override { log.push_back(std::to_string(r) + " exit"); }
  } sink;
  FakeProcessRunner fake;
  fake.script = [](int, int) {
    return FakeChild{}
        .print(1ms, Stream::kStdout, "hi\n")
        .print(5ms, Stream::kStderr, "boom")
        .exit_after(5ms, ExitStatus::exited(0));
  };
  Supervisor sup(fake, {}, &sink);
  auto r = sup.run(plan_n(1));
  CHECK(r.exit_code == 0);
  CHECK(sink.log == std::vector<std::string>{"0O:hi\n", "0E:boom", "0 exit"});
}

TEST_CASE("stop_requested stops every worker within a poll period and does not restart",
          "[supervisor]") {
  Harness h;
  h.opts.max_restarts = 3;
  h.opts.stop_poll = 20ms;
  h.fake.script = [](int, int) { return sleeper(); };
  h.opts.stop_requested = [&h] { return h.fake.elapsed() >= 100ms; };
  std::vector<int> attempts;
  auto r = h.go(2, &attempts);
  CHECK(r.stopped_by_request);
  CHECK(r.outcome == Outcome::kInterrupted);
  CHECK_FALSE(r.first_failure);
  CHECK(attempts == std::vector<int>{0});
  for (int id : {0, 1}) CHECK(h.signals_to(id, SIGTERM) == 1);
  for (const auto& s : h.fake.sent) CHECK(s.at <= 120ms);
}

TEST_CASE("a worker's own failure wins over a later stop request", "[supervisor]") {
  Harness h;
  h.fake.script = [](int id, int) {
    if (id == 0) return FakeChild{}.exit_after(10ms, ExitStatus::exited(5));
    return sleeper();
  };
  h.opts.stop_requested = [&h] { return h.fake.elapsed() >= 100ms; };
  auto r = h.go(2);
  CHECK_FALSE(r.stopped_by_request);
  CHECK(r.outcome == Outcome::kWorkerFailed);
  CHECK(r.exit_code == 5);
}
