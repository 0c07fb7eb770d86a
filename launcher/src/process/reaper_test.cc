// The Reaper through the real runner: a setsid grandchild (which PR_SET_PDEATHSIG and the
// worker's process group miss) dies when the runner goes away, with and without a cgroup; the
// watchdog stands down on an orderly teardown. kill -9 gpurun: tests/launcher/test_reaper.py.
#include "process/reaper.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <string>

#include "process/process_runner.h"

using namespace gpurun;
using namespace gpurun::launcher;
using namespace std::chrono_literals;

namespace {

// Alive and not a zombie (a zombie of ours is reaped here).
bool running(pid_t pid) {
  ::waitpid(pid, nullptr, WNOHANG);
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  if (!std::getline(in, stat)) return false;
  const auto p = stat.rfind(')');
  return p != std::string::npos && stat.size() > p + 2 && stat[p + 2] != 'Z';
}

// Starts `sh -c 'setsid sleep 1000 & echo $!; wait'` and returns the setsid grandchild's pid.
pid_t start_setsid_grandchild(ProcessRunner& runner) {
  SpawnRequest r;
  r.id = 0;
  r.argv = {"/bin/sh", "-c", "setsid sleep 1000 & echo $!; wait"};
  r.env = current_environment();
  r.out.mode = StreamMode::kPipe;
  r.err.mode = StreamMode::kNull;
  r.stdin_null = true;
  runner.spawn(r);
  std::string out;
  const auto deadline = Clock::now() + 10s;
  while (out.find('\n') == std::string::npos && Clock::now() < deadline) {
    for (auto& ev : runner.wait(deadline)) {
      if (ev.kind == RunnerEvent::Kind::kOutput) out += ev.data;
    }
  }
  REQUIRE(out.find('\n') != std::string::npos);
  return static_cast<pid_t>(std::stoi(out));
}

}  // namespace

TEST_CASE("reaper: a setsid grandchild dies with the runner", "[runner][reaper]") {
  for (const bool cgroup : {true, false}) {
    CAPTURE(cgroup);
    ReaperOptions options;
    options.use_cgroup = cgroup;
    auto runner = make_posix_process_runner(options);
    const pid_t grandchild = start_setsid_grandchild(*runner);
    REQUIRE(running(grandchild));
    // Really in a session of its own (setsid runs after sh printed the pid: bounded wait).
    for (int i = 0; i < 5000 && ::getsid(grandchild) != grandchild; ++i) ::usleep(1000);
    REQUIRE(::getsid(grandchild) == grandchild);
    runner.reset();
    for (int i = 0; i < 1000 && running(grandchild); ++i) ::usleep(1000);  // SIGKILL is async
    const bool survived = running(grandchild);
    if (survived) ::kill(grandchild, SIGKILL);
    CHECK_FALSE(survived);
  }
}

TEST_CASE("reaper: the watchdog stands down on an orderly teardown", "[reaper]") {
  char tmpl[] = "/tmp/gpurun_reaper_test_XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  pid_t watchdog = -1;
  {
    ReaperOptions options;
    options.cleanup_dir = tmpl;
    Reaper reaper(options);
    watchdog = reaper.watchdog_pid();
    REQUIRE(watchdog > 0);
    CHECK(running(watchdog));
    // Out of gpurun's process group and terminal (once it ran setsid: bounded wait).
    for (int i = 0; i < 5000 && ::getsid(watchdog) != watchdog; ++i) ::usleep(1000);
    CHECK(::getsid(watchdog) == watchdog);
    CHECK_FALSE(reaper.mechanism().empty());
  }
  CHECK_FALSE(running(watchdog));
  struct stat st {};
  CHECK(::stat(tmpl, &st) == 0);  // standing down is not gpurun's death: the directory stays
  ::rmdir(tmpl);
}

TEST_CASE("reaper: the watchdog cleans up when its gpurun dies", "[reaper]") {
  char tmpl[] = "/tmp/gpurun_reaper_test_XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string file = std::string(tmpl) + "/error.json";
  std::ofstream(file) << "{}";
  const pid_t launcher = ::fork();
  REQUIRE(launcher >= 0);
  if (launcher == 0) {  // a "gpurun" that dies without tearing down (as kill -9)
    ReaperOptions options;
    options.cleanup_dir = tmpl;
    new Reaper(options);
    ::_exit(0);
  }
  int st = 0;
  REQUIRE(::waitpid(launcher, &st, 0) == launcher);
  struct stat sb {};
  for (int i = 0; i < 10000 && ::stat(tmpl, &sb) == 0; ++i) ::usleep(1000);
  const bool removed = ::stat(tmpl, &sb) != 0;
  if (!removed) ::unlink(file.c_str()), ::rmdir(tmpl);
  CHECK(removed);
}

TEST_CASE("reaper: oom_kill is read from memory.events", "[reaper]") {
  CHECK(oom_kill_count("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n") == 2);
  CHECK(oom_kill_count("low 0\nhigh 0\nmax 0\noom 0\n") == 0);
  CHECK(oom_kill_count("") == 0);
}
