#include "output/failure_summary.h"

#include <catch2/catch.hpp>
#include <csignal>

using namespace gpurun;
using namespace gpurun::launcher;

namespace {

FailureReport failed_report(ExitStatus st) {
  FailureReport rep;
  rep.entrypoint = "train.py";
  rep.host = "node7";
  WorkerRecord w;
  w.rank = 1;
  w.local_rank = 1;
  w.pid = 1234;
  w.status = st;
  w.ended = std::chrono::system_clock::from_time_t(1732384523);
  WorkerRecord other;
  other.rank = 0;
  other.pid = 1233;
  other.status = ExitStatus::killed(SIGTERM);
  other.stopped_by_gpurun = true;
  rep.result.outcome = Outcome::kWorkerFailed;
  rep.result.exit_code = st.as_exit_code();
  rep.result.workers = {other, w};
  rep.result.first_failure = w;
  FailureEntry f;
  f.worker = w;
  f.last_lines = {"Traceback (most recent call last):", "RuntimeError: boom"};
  f.last_lines_from = "stderr";
  rep.root = f;
  return rep;
}

}  // namespace

TEST_CASE("summary: torchrun's block, byte for byte", "[summary]") {
  auto rep = failed_report(ExitStatus::exited(7));
  const std::string t = torchrun_time(1732384523);
  const std::string block = format_torchrun_block(rep);
  const std::string expected =
      "============================================================\n"
      "train.py FAILED\n"
      "------------------------------------------------------------\n"
      "Failures:\n"
      "  <NO_OTHER_FAILURES>\n"
      "------------------------------------------------------------\n"
      "Root Cause (first observed failure):\n"
      "[0]:\n"
      "  time      : " +
      t +
      "\n"
      "  host      : node7\n"
      "  rank      : 1 (local_rank: 1)\n"
      "  exitcode  : 7 (pid: 1234)\n"
      "  error_file: <N/A>\n"
      "  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html\n"
      "============================================================\n";
  CHECK(block == expected);
}

TEST_CASE("summary: signal death, explanation first, last lines", "[summary]") {
  auto rep = failed_report(ExitStatus::killed(SIGSEGV));
  const std::string s = format_failure_summary(rep);
  CHECK(s.rfind("gpurun: error: rank 1 (pid 1234) killed by SIGSEGV (exit 139); see its last "
                "output below\n",
                0) == 0);
  CHECK(s.find("  | RuntimeError: boom\n") != std::string::npos);
  CHECK(s.find("  exitcode  : -11 (pid: 1234)\n") != std::string::npos);
  CHECK(s.find("  traceback : Signal 11 (SIGSEGV) received by PID 1234\n") != std::string::npos);
  CHECK(s.find("stopped the other rank 0 after the failure") != std::string::npos);
}

TEST_CASE("summary: short title gives a narrow rule", "[summary]") {
  auto rep = failed_report(ExitStatus::exited(1));
  rep.root->worker.pid = 1;
  rep.root->worker.ended = {};
  // Width = min(longest line, 60): the traceback line is long, so 60.
  CHECK(format_torchrun_block(rep).rfind(std::string(60, '=') + "\n", 0) == 0);
}

TEST_CASE("error file: torchrun's format, the string form, corrupt files", "[summary]") {
  auto ef = parse_error_file(
      "/x/error.json",
      R"({"message": {"message": "RuntimeError: boom", "extraInfo": {"py_callstack": "Traceback (most recent call last):\n  File x\nRuntimeError: boom\n", "timestamp": "1732384523"}}})");
  CHECK(ef.problem.empty());
  CHECK(ef.message == "RuntimeError: boom");
  CHECK(ef.timestamp == 1732384523);
  CHECK(ef.traceback.find("File x") != std::string::npos);

  auto s = parse_error_file("/x", R"({"message": "plain", "timestamp": 17})");
  CHECK(s.message == "plain");
  CHECK(s.timestamp == 17);

  for (const char* bad : {"{not json", "[]", "{\"message\": 3}", ""}) {
    auto b = parse_error_file("/x", bad);
    CHECK(b.present);
    CHECK(!b.problem.empty());
  }
  CHECK(!read_error_file("/nonexistent/error.json").present);
}

TEST_CASE("summary: error file traceback is shown indented, corrupt one is named", "[summary]") {
  auto rep = failed_report(ExitStatus::exited(1));
  rep.root->error_file = parse_error_file(
      "/logs/error.json",
      R"({"message": {"message": "E", "extraInfo": {"py_callstack": "Traceback:\nE", "timestamp": "1732384523"}}})");
  const std::string s = format_failure_summary(rep);
  CHECK(s.find("  error_file: /logs/error.json\n  traceback : Traceback:\n  E\n") !=
        std::string::npos);

  rep.root->error_file = parse_error_file("/logs/error.json", "{garbage");
  const std::string c = format_failure_summary(rep);
  CHECK(c.find("gpurun: warning: error file /logs/error.json is unreadable") != std::string::npos);
  CHECK(c.find("error_file: /logs/error.json\n  traceback : To enable traceback") !=
        std::string::npos);
}

TEST_CASE("summary: exec failure is one line", "[summary]") {
  auto rep = failed_report(ExitStatus::exited(127));
  rep.root->worker.exec_error = "No such file or directory";
  rep.root->worker.argv0 = "./nope";
  CHECK(format_failure_summary(rep) ==
        "gpurun: error: cannot run './nope': No such file or directory; check the path\n"
        "gpurun: exit code 127, from gpurun: rank 1 could not be executed\n");
  rep.root->worker.exec_error = "Permission denied";
  CHECK(format_failure_summary(rep).find("check that it is executable (chmod +x)") !=
        std::string::npos);
  CHECK(format_failure_summary(rep).find("--no-python") == std::string::npos);
  rep.root->worker.argv0 = "/tmp";  // execve of a directory fails with EACCES
  CHECK(format_failure_summary(rep).find("cannot run '/tmp': Permission denied; it is a "
                                         "directory, not a program") != std::string::npos);
  rep.root->worker.exec_error = "Argument list too long";
  rep.root->python_program = "train";  // E2BIG is about the size, not about Python
  CHECK(format_failure_summary(rep).find("arguments and environment together pass the kernel's "
                                         "limit") != std::string::npos);
  CHECK(format_failure_summary(rep).find("PYTHON_EXEC") == std::string::npos);
  rep.root->python_program.clear();
  // The interpreter itself is missing: that is what the advice is about.
  rep.root->worker.exec_error = "No such file or directory";
  rep.root->worker.argv0 = "python9";
  rep.root->python_program = "train";
  CHECK(format_failure_summary(rep) ==
        "gpurun: error: cannot run the Python interpreter 'python9' for 'train': No such file or "
        "directory; install Python or point PYTHON_EXEC at one (if 'train' is not a Python "
        "program, pass --no-python)\n"
        "gpurun: exit code 127, from gpurun: rank 1 could not be executed\n");
}

TEST_CASE("summary json", "[summary]") {
  auto rep = failed_report(ExitStatus::killed(SIGSEGV));
  auto j = summary_json(rep);
  CHECK(j["outcome"] == "worker_failed");
  CHECK(j["exit_code"] == 139);
  CHECK(j["root_cause"]["rank"] == 1);
  CHECK(j["root_cause"]["signal"] == "SIGSEGV");
  CHECK(j["root_cause"]["exitcode"] == -11);
  CHECK(j["root_cause"]["last_lines"].size() == 2);
  CHECK(j["workers"].size() == 2);
  CHECK(j["workers"][0]["stopped_by_gpurun"] == true);
  // A worker's own code, even one of gpurun's reserved values, says where it came from.
  auto three = failed_report(ExitStatus::exited(3));
  CHECK(summary_json(three)["exit_code"] == 3);
  CHECK(summary_json(three)["exit_code_origin"] == "worker");
  CHECK(summary_json(three)["exit_code_reason"] == "rank 1's own exit code");
  CHECK(format_failure_summary(three).find(
            "\ngpurun: exit code 3, from the worker: rank 1's own exit code\n") !=
        std::string::npos);
  three.torchrun_exit_codes = true;
  CHECK(exit_origin(three).exit_code == 1);
  CHECK(torchrun_exit_code(2) == 2);
  CHECK(torchrun_exit_code(0) == 0);
  CHECK(torchrun_exit_code(124) == 1);
}

TEST_CASE("summary: an @record traceback is shown once, other failures are named", "[summary]") {
  auto rep = failed_report(ExitStatus::exited(1));
  rep.root->error_file = parse_error_file(
      "/logs/error.json",
      R"({"message": {"message": "E", "extraInfo": {"py_callstack": "Traceback:\nE", "timestamp": "1732384523"}}})");
  const std::string s = format_failure_summary(rep);
  CHECK(s.find("its traceback (from its error file) is below") != std::string::npos);
  CHECK(s.find("  | ") == std::string::npos);  // the last lines are not quoted again
  CHECK(s.find("traceback : Traceback:\n  E\n") != std::string::npos);
  FailureEntry other;
  other.worker.rank = 3;
  other.worker.local_rank = 3;
  other.worker.status = ExitStatus::exited(1);
  rep.others.push_back(other);
  CHECK(format_failure_summary(rep).find(
            "gpurun: rank 3 failed on its own too, before gpurun stopped anything") !=
        std::string::npos);
}

TEST_CASE("summary: interrupted and timed out", "[summary]") {
  FailureReport rep;
  rep.result.outcome = Outcome::kInterrupted;
  rep.result.interrupt_signal = SIGINT;
  rep.result.exit_code = 130;
  rep.result.workers.resize(2);
  CHECK(format_failure_summary(rep) ==
        "gpurun: interrupted by SIGINT; all 2 workers stopped (exit 130)\n"
        "gpurun: exit code 130, from gpurun: it was stopped by SIGINT (128+2)\n");
  rep.torchrun_exit_codes = true;
  CHECK(format_failure_summary(rep) ==
        "gpurun: interrupted by SIGINT; all 2 workers stopped (exit 1)\n"
        "gpurun: exit code 1 (--exit-code-mode torchrun; 130 from gpurun: it was stopped by "
        "SIGINT (128+2))\n");
  CHECK(summary_json(rep)["exit_code"] == 1);
  CHECK(summary_json(rep)["gpurun_exit_code"] == 130);
  CHECK(summary_json(rep)["exit_code_origin"] == "gpurun");
  rep.torchrun_exit_codes = false;
  rep.result.outcome = Outcome::kTimedOut;
  rep.result.running_at_timeout = {1, 2, 3};
  CHECK(format_failure_summary(rep).find("ranks 1-3 still running") != std::string::npos);
}

TEST_CASE("events: one torchelastic worker-status event per worker", "[summary][events]") {
  auto rep = failed_report(ExitStatus::exited(3));
  rep.root->error_file.present = true;
  rep.root->error_file.raw = {{"message", "boom"}};
  EventContext ctx;
  ctx.run_id = "job7";
  ctx.group_world_size = 2;
  ctx.rdzv_backend = "c10d";
  ctx.total_run_time_s = 12.7;
  ctx.timestamp_s = 1732384523;
  const auto events = worker_events(rep, ctx);
  REQUIRE(events.size() == 2);
  // Rank 0 was stopped after rank 1 failed: TERMINATED, as torch's agent calls it.
  CHECK(events[0]["name"] == "torchelastic.worker.status.TERMINATED");
  CHECK(events[1]["name"] == "torchelastic.worker.status.FAILED");
  const auto& md = events[1]["metadata"];
  CHECK(events[1]["source"] == "WORKER");
  CHECK(events[1]["timestamp"] == 1732384523);
  CHECK(md["run_id"] == "job7");
  CHECK(md["global_rank"] == 1);
  CHECK(md["worker_id"] == "1234");
  CHECK(md["hostname"] == "node7");
  CHECK(md["state"] == "FAILED");
  CHECK(md["total_run_time"] == 12);
  CHECK(md["rdzv_backend"] == "c10d");
  CHECK(md["raw_error"] == "{\"message\":\"boom\"}");
  CHECK(md["metadata"] == "{\"entry_point\":\"train.py\",\"group_world_size\":2}");
  CHECK(events[0]["metadata"]["raw_error"].is_null());

  rep.result.outcome = Outcome::kSucceeded;
  rep.root.reset();
  for (const auto& e : worker_events(rep, ctx)) {
    CHECK(e["name"] == "torchelastic.worker.status.SUCCEEDED");
  }
}
