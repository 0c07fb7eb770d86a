#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <map>

#include "process/process_runner.h"

using namespace gpurun;
using namespace gpurun::launcher;
using namespace std::chrono_literals;

namespace {

SpawnRequest sh(int id, const std::string& script, StreamMode mode = StreamMode::kPipe) {
  SpawnRequest r;
  r.id = id;
  r.argv = {"/bin/sh", "-c", script};
  r.env = current_environment();
  r.out.mode = mode;
  r.err.mode = mode;
  r.stdin_null = true;
  return r;
}

struct Collected {
  std::map<int, std::string> out, err;
  std::map<int, RunnerEvent> exits;
  std::vector<int> signals;
};

// Runs the runner until `n` children exited (or 10 s pass: a failure, not a hang).
void collect(ProcessRunner& runner, Collected& c, std::size_t n) {
  const auto deadline = Clock::now() + 10s;
  while (c.exits.size() < n && Clock::now() < deadline) {
    for (auto& ev : runner.wait(deadline)) {
      switch (ev.kind) {
        case RunnerEvent::Kind::kOutput:
          (ev.stream == Stream::kStdout ? c.out : c.err)[ev.id] += ev.data;
          break;
        case RunnerEvent::Kind::kExited:
          c.exits[ev.id] = ev;
          break;
        case RunnerEvent::Kind::kSignal:
          c.signals.push_back(ev.signo);
          break;
        default:
          break;
      }
    }
  }
  REQUIRE(c.exits.size() == n);
}

bool alive(pid_t pid) { return ::kill(pid, 0) == 0; }

}  // namespace

TEST_CASE("posix runner: output arrives before the exit, exit codes and signals", "[runner]") {
  auto runner = make_posix_process_runner();
  Collected c;
  runner->spawn(sh(0, "echo out0; echo err0 >&2; exit 3"));
  runner->spawn(sh(1, "printf partial; kill -SEGV $$"));
  runner->spawn(sh(2, "exec cat"));  // stdin is /dev/null: EOF at once
  collect(*runner, c, 3);
  CHECK(c.out[0] == "out0\n");
  CHECK(c.err[0] == "err0\n");
  CHECK(c.exits[0].status.as_exit_code() == 3);
  CHECK(c.out[1] == "partial");
  CHECK(c.exits[1].status.signaled);
  CHECK(c.exits[1].status.as_exit_code() == 139);
  CHECK(c.exits[1].status.describe() == "killed by SIGSEGV");
  CHECK(c.exits[2].status.success());
}

TEST_CASE("posix runner: exec failure is reported through the error pipe", "[runner]") {
  auto runner = make_posix_process_runner();
  SpawnRequest r;
  r.id = 0;
  r.argv = {"/nonexistent/gpurun-test-binary"};
  r.env = current_environment();
  SpawnRequest r2 = r;
  r2.id = 1;
  r2.argv = {"no-such-program-gpurun-test"};
  runner->spawn(r);
  runner->spawn(r2);
  Collected c;
  collect(*runner, c, 2);
  CHECK(c.exits[0].exec_error == "No such file or directory");
  CHECK(c.exits[0].status.as_exit_code() == 127);
  CHECK(c.exits[1].exec_error == "No such file or directory");
}

TEST_CASE(
    "posix runner: each child leads its own process group, signal_group reaches "
    "grandchildren",
    "[runner]") {
  auto runner = make_posix_process_runner();
  char tmpl[] = "/tmp/gpurun_runner_test_XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string pidfile = std::string(tmpl) + "/grandchild";
  // The grandchild writes its pid; the child waits on it.
  const pid_t pid = runner->spawn(sh(
      0, "sleep 30 & echo $! > " + pidfile + ".tmp; mv " + pidfile + ".tmp " + pidfile + "; wait"));
  CHECK(::getpgid(pid) == pid);
  pid_t grandchild = 0;
  const auto until = Clock::now() + 5s;
  while (grandchild == 0 && Clock::now() < until) {
    std::ifstream f(pidfile);
    if (f >> grandchild) break;
    runner->wait(Clock::now() + 5ms);
  }
  REQUIRE(grandchild > 0);
  CHECK(::getpgid(grandchild) == pid);
  runner->signal_group(pid, SIGTERM);
  Collected c;
  collect(*runner, c, 1);
  CHECK(c.exits[0].status.signaled);
  CHECK(c.exits[0].status.signal == SIGTERM);
  // The grandchild got SIGTERM too. Orphaned, it was reparented to us (the runner makes the
  // process a child subreaper, reaper.h) and the runner's wait() reaps it.
  const auto gone_by = Clock::now() + 5s;
  while (alive(grandchild) && Clock::now() < gone_by) runner->wait(Clock::now() + 1ms);
  CHECK(!alive(grandchild));
  std::remove(pidfile.c_str());
  ::rmdir(tmpl);
}

TEST_CASE("posix runner: watched signals come back as events, exit is seen at once", "[runner]") {
  auto runner = make_posix_process_runner();
  runner->watch_signals({SIGUSR1});
  ::kill(::getpid(), SIGUSR1);
  auto events = runner->wait(Clock::now() + 2s);
  REQUIRE(events.size() == 1);
  CHECK(events[0].kind == RunnerEvent::Kind::kSignal);
  CHECK(events[0].signo == SIGUSR1);

  const auto t0 = Clock::now();
  runner->spawn(sh(0, "exit 0", StreamMode::kInherit));
  Collected c;
  collect(*runner, c, 1);
  CHECK(Clock::now() - t0 < 2s);  // event-driven: no poll period to wait out
}

TEST_CASE("posix runner: file and null streams", "[runner]") {
  auto runner = make_posix_process_runner();
  char tmpl[] = "/tmp/gpurun_runner_test_XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  auto req = sh(0, "echo to-file; echo to-null >&2");
  req.out = {StreamMode::kFile, std::string(tmpl) + "/stdout.log"};
  req.err = {StreamMode::kNull, ""};
  runner->spawn(req);
  Collected c;
  collect(*runner, c, 1);
  std::ifstream f(std::string(tmpl) + "/stdout.log");
  std::string line;
  std::getline(f, line);
  CHECK(line == "to-file");
  CHECK(c.err[0].empty());
  std::remove((std::string(tmpl) + "/stdout.log").c_str());
  ::rmdir(tmpl);
}

TEST_CASE("signal names", "[runner]") {
  CHECK(signal_name(SIGSEGV) == "SIGSEGV");
  CHECK(parse_signal("SIGUSR1") == SIGUSR1);
  CHECK(parse_signal("usr2") == SIGUSR2);
  CHECK(parse_signal("15") == SIGTERM);
  CHECK(!parse_signal("SIGNOPE"));
  CHECK(ExitStatus::exited(3).describe() == "exited with code 3");
}
