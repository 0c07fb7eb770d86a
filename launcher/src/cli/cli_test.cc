#include <catch2/catch.hpp>
#include <csignal>
#include <nlohmann/json.hpp>

#include "cli/cli_test_util.h"
#include "cli/config.h"

using namespace gpurun;
using namespace gpurun::launcher;
using gpurun::launcher::testing::Args;
using gpurun::launcher::testing::error_of;
using gpurun::launcher::testing::parse;

TEST_CASE("defaults match torchrun for a plain program", "[cli]") {
  auto c = parse({"./app"});
  CHECK(c.action == Action::kRun);
  CHECK(c.program == "./app");
  CHECK(c.program_args.empty());
  CHECK(c.nproc_kind == NprocKind::kNumber);
  CHECK(c.nproc_per_node == 1);
  CHECK(c.nnodes_min == 1);
  CHECK(c.nnodes_max == 1);
  CHECK(c.rdzv_backend == "static");
  CHECK(c.rdzv_id == "none");
  CHECK(c.master_addr == "127.0.0.1");
  CHECK_FALSE(c.master_port.has_value());  // single node: a free port, bound atomically
  CHECK(c.role == "default");
  CHECK(c.max_restarts == 0);
  CHECK(c.python == "python3");
  CHECK(c.signals_to_handle == std::vector<int>{SIGTERM, SIGINT, SIGHUP, SIGQUIT});
  CHECK(c.tag_output);
  CHECK(c.color == ColorMode::kAuto);
}

TEST_CASE("both spellings, = and space forms", "[cli]") {
  for (const Args& a : {Args{"--nproc-per-node", "4", "x"}, Args{"--nproc_per_node", "4", "x"},
                        Args{"--nproc-per-node=4", "x"}, Args{"--nproc_per_node=4", "x"}}) {
    INFO(a[0]);
    auto c = parse(a);
    CHECK(c.nproc_per_node == 4);
    CHECK(c.program == "x");
  }
  auto c = parse({"--master_addr", "10.0.0.1", "--master-port=1234", "--max_restarts=2",
                  "--log_dir", "/tmp/l", "--node_rank", "0", "--rdzv_id", "job7", "x"});
  CHECK(c.master_addr == "10.0.0.1");
  CHECK(c.master_port == 1234);
  CHECK(c.max_restarts == 2);
  CHECK(c.log_dir == "/tmp/l");
  CHECK(c.rdzv_id == "job7");
}

TEST_CASE("nproc-per-node accepts a number, gpu, cpu, auto", "[cli]") {
  CHECK(parse({"--nproc-per-node", "gpu", "x"}).nproc_kind == NprocKind::kGpu);
  CHECK(parse({"--nproc-per-node", "cpu", "x"}).nproc_kind == NprocKind::kCpu);
  CHECK(parse({"--nproc-per-node", "auto", "x"}).nproc_kind == NprocKind::kAuto);
  CHECK(parse({"--nproc-per-node", "8", "x"}).nproc_per_node == 8);
  auto err = error_of({"--nproc-per-node", "four", "x"});
  CHECK(err ==
        "invalid value 'four' for --nproc-per-node (expected a positive number of workers, "
        "gpu, cpu or auto)");
  CHECK_THAT(error_of({"--nproc-per-node", "0", "x"}), Catch::Contains("--nproc-per-node"));
  CHECK_THAT(error_of({"--nproc-per-node", "-2", "x"}), Catch::Contains("'-2'"));
}

TEST_CASE("unique prefixes are accepted, as argparse does", "[cli]") {
  CHECK(parse({"--nproc=3", "x"}).nproc_per_node == 3);  // matches both spellings of one option
  CHECK(parse({"--nproc_per=3", "x"}).nproc_per_node == 3);
  CHECK(parse({"--nn", "2", "--master-port", "5", "x"}).nnodes_max == 2);
  CHECK(parse({"--max-r", "4", "x"}).max_restarts == 4);
  CHECK(parse({"--stand", "x"}).standalone);
  CHECK(parse({"--per-worker", "x"}).narrow_visible_devices);
}

TEST_CASE("ambiguous prefixes list the candidates", "[cli]") {
  auto err = error_of({"--no", "x"});
  CHECK_THAT(err, Catch::StartsWith("ambiguous option '--no' could match"));
  CHECK_THAT(err, Catch::Contains("--no-python"));
  CHECK_THAT(err, Catch::Contains("--node-rank"));
  CHECK_THAT(err, Catch::Contains("--no-tag-output"));
  CHECK_THAT(error_of({"--rdzv", "x", "y"}), Catch::Contains("--rdzv-backend"));
  CHECK_THAT(error_of({"--m", "x"}), Catch::Contains("--master-addr"));
}

TEST_CASE("unknown options suggest the closest flag", "[cli]") {
  CHECK(error_of({"--nprocs-per-node", "2", "x"}) ==
        "unknown option '--nprocs-per-node'; did you mean '--nproc-per-node'?");
  CHECK(error_of({"--nproc_per_nodes=2", "x"}) ==
        "unknown option '--nproc_per_nodes'; did you mean '--nproc-per-node'?");
  CHECK(error_of({"--masterport", "1", "x"}) ==
        "unknown option '--masterport'; did you mean '--master-port'?");
  CHECK(error_of({"--completely-bogus", "x"}) ==
        "unknown option '--completely-bogus'; see gpurun --help");
  CHECK_THAT(error_of({"-z", "x"}), Catch::StartsWith("unknown option '-z'"));
}

TEST_CASE("malformed values name the flag and the expectation", "[cli]") {
  CHECK_THAT(error_of({"--log-dir"}), Catch::Contains("option --log-dir expects a value"));
  CHECK_THAT(error_of({"--log-dir", "--tee", "3", "x"}),
             Catch::Contains("option --log-dir expects a value (DIR), got '--tee'"));
  CHECK(error_of({"--standalone=1", "x"}) ==
        "option --standalone takes no value (got '1'); remove '=1'");
  CHECK(error_of({"--master-port", "70000", "x"}) ==
        "invalid value '70000' for --master-port (expected a port number 0-65535)");
  CHECK_THAT(error_of({"--max-restarts", "-1", "x"}), Catch::Contains("--max-restarts"));
  CHECK_THAT(error_of({"--timeout", "soon", "x"}), Catch::Contains("--timeout"));
  CHECK_THAT(error_of({"--color", "pink", "x"}),
             Catch::Contains("(expected auto, always or never)"));
  CHECK_THAT(error_of({"--start-method", "thread", "x"}),
             Catch::Contains("spawn, fork or forkserver"));
  CHECK_THAT(error_of({"--rdzv-backend", "zookeeper", "x"}),
             Catch::Contains("(expected static, c10d or etcd)"));
  CHECK(parse({"--rdzv-backend", "etcd-v2", "x"}).rdzv_backend == "etcd");
  CHECK_THAT(error_of({"--rdzv-backend", "etcd", "--nnodes", "2", "x"}),
             Catch::Contains("needs --rdzv-endpoint HOST:2379"));
  CHECK_THAT(error_of({"--rdzv-conf", "a=1,=2", "x"}), Catch::Contains("--rdzv-conf"));
  CHECK_THAT(error_of({"--signals-to-handle", "SIGNOPE", "x"}),
             Catch::Contains("--signals-to-handle"));
}

TEST_CASE("nnodes N or MIN:MAX", "[cli]") {
  auto c = parse({"--nnodes", "1:1", "x"});
  CHECK(c.nnodes_min == 1);
  CHECK(c.nnodes_max == 1);
  c = parse({"--nnodes", "2:4", "--rdzv-backend", "c10d", "--rdzv-endpoint", "h:29400", "x"});
  CHECK(c.nnodes_min == 2);
  CHECK(c.nnodes_max == 4);
  c = parse({"--nnodes", "3", "--node-rank", "2", "x"});
  CHECK(c.nnodes_min == 3);
  CHECK(c.master_port == 29500);  // nodes must agree: torchrun's default port
  CHECK_THAT(error_of({"--nnodes", "3:2", "x"}), Catch::Contains("MIN:MAX with 0 < MIN <= MAX"));
  CHECK_THAT(error_of({"--nnodes", "0", "x"}), Catch::Contains("--nnodes"));
  CHECK_THAT(error_of({"--nnodes", "a:b", "x"}), Catch::Contains("--nnodes"));
  CHECK_THAT(error_of({"--nnodes", "2", "--node-rank", "2", "x"}),
             Catch::Contains("--node-rank 2 is out of range"));
  CHECK_THAT(error_of({"--nnodes", "2:3", "x"}), Catch::Contains("static"));
  CHECK_THAT(error_of({"--nnodes", "2", "--rdzv-backend", "c10d", "x"}),
             Catch::Contains("needs --rdzv-endpoint"));
}

TEST_CASE("program arguments pass through untouched", "[cli]") {
  auto c = parse(
      {"--nproc-per-node", "2", "train.py", "--nproc-per-node", "7", "--lr=0.1", "-m", "--", "x"});
  CHECK(c.nproc_per_node == 2);
  CHECK(c.program == "train.py");
  CHECK(c.program_args == Args{"--nproc-per-node", "7", "--lr=0.1", "-m", "--", "x"});
  CHECK_FALSE(c.module);
}

TEST_CASE("a bare -- separates launcher options from the program", "[cli]") {
  auto c = parse({"--nproc-per-node", "2", "--", "-weird-name", "--help"});
  CHECK(c.program == "-weird-name");
  CHECK(c.program_args == Args{"--help"});
  CHECK(c.action == Action::kRun);
  c = parse({"--", "./app"});
  CHECK(c.program == "./app");
}

TEST_CASE("a negative number is a value, not an option", "[cli]") {
  CHECK_THAT(error_of({"--max-restarts", "-1", "x"}),
             Catch::Contains("invalid value '-1' for --max-restarts"));
}

TEST_CASE("short options -m -r -t in all argparse forms", "[cli]") {
  auto c = parse({"-m", "pkg.train"});
  CHECK(c.module);
  c = parse({"-r", "3", "-t1", "x"});
  CHECK(c.redirects.all == 3);
  CHECK(c.tee.all == 1);
  c = parse({"-r=2", "x"});
  CHECK(c.redirects.all == 2);
  c = parse({"--redirects", "0:1,1:2,3:3", "--tee=0:3", "x"});
  CHECK(c.redirects.all == 0);
  CHECK(c.redirects.per_rank == std::map<int, int>{{0, 1}, {1, 2}, {3, 3}});
  CHECK(c.redirects.for_rank(1) == 2);
  CHECK(c.redirects.for_rank(2) == 0);
  CHECK(c.tee.for_rank(0) == 3);
  CHECK_THAT(error_of({"-r", "4", "x"}), Catch::Contains("expected 0-3"));
  CHECK_THAT(error_of({"-t", "0:5", "x"}), Catch::Contains("-t/--tee"));
  CHECK_THAT(error_of({"-t", "0:1,", "x"}), Catch::Contains("-t/--tee"));
  CHECK_THAT(error_of({"-r", "x"}), Catch::Contains("-r/--redirects"));
}

TEST_CASE("local ranks filter", "[cli]") {
  auto c = parse({"--local-ranks-filter", "0,3", "x"});
  REQUIRE(c.local_ranks_filter);
  CHECK(*c.local_ranks_filter == std::set<int>{0, 3});
  CHECK_FALSE(parse({"--local-ranks-filter=", "x"}).local_ranks_filter);
  CHECK_THAT(error_of({"--local-ranks-filter", "0,a", "x"}),
             Catch::Contains("--local-ranks-filter"));
}

TEST_CASE("numa binding: torchrun's four modes in both spellings", "[cli]") {
  CHECK_FALSE(parse({"x"}).numa_binding);
  CHECK(parse({"--numa-binding", "node", "x"}).numa_binding == NumaBinding::kNode);
  CHECK(parse({"--numa_binding=socket", "x"}).numa_binding == NumaBinding::kSocket);
  CHECK(parse({"--numa-binding", "exclusive", "x"}).numa_binding == NumaBinding::kExclusive);
  CHECK(parse({"--numa-binding", "core-complex", "x"}).numa_binding == NumaBinding::kCoreComplex);
  CHECK_THAT(error_of({"--numa-binding", "numa", "x"}),
             Catch::Contains("--numa-binding") && Catch::Contains("'numa'") &&
                 Catch::Contains("node, socket, exclusive or core-complex"));
  CHECK_THAT(config_to_json(parse({"--numa-binding", "core-complex", "x"})),
             Catch::Contains("\"numa_binding\": \"core-complex\""));
}

TEST_CASE("duplicate filters, event handler and logs specs (torchrun 2.x)", "[cli]") {
  auto c = parse({"--duplicate-stdout-filters", "loss,acc,,top5,", "--duplicate_stderr_filters",
                  "Error", "x"});
  CHECK(c.duplicate_stdout_filters == std::vector<std::string>{"loss", "acc,top5"});
  CHECK(c.duplicate_stderr_filters == std::vector<std::string>{"Error"});
  CHECK(parse({"x"}, {{"PET_DUPLICATE_STDOUT_FILTERS", "a,b"}}).duplicate_stdout_filters ==
        std::vector<std::string>{"a", "b"});
  CHECK(parse({"x"}).event_log_handler == "null");
  CHECK(parse({"--event-log-handler", "console", "x"}).event_log_handler == "console");
  CHECK(parse({"x"}, {{"PET_EVENT_LOG_HANDLER", "console"}}).event_log_handler == "console");
  CHECK_THAT(error_of({"--event-log-handler", "dynamic_rendezvous", "x"}),
             Catch::Contains("null or console"));
  CHECK_THAT(error_of({"--logs-specs", "my_specs", "x"}),
             Catch::Contains("--logs-specs my_specs") && Catch::Contains("Python entry points") &&
                 Catch::Contains("drop --logs-specs"));
}

TEST_CASE("PET_* environment fallbacks, an explicit flag wins", "[cli]") {
  EnvMap env{{"PET_NPROC_PER_NODE", "3"}, {"PET_NNODES", "2"},
             {"PET_NODE_RANK", "1"},      {"PET_MASTER_ADDR", "10.1.1.1"},
             {"PET_MASTER_PORT", "2222"}, {"PET_MAX_RESTARTS", "5"},
             {"PET_ROLE", "trainer"},     {"PET_TEE", "3"},
             {"PET_LOG_DIR", "/logs"}};
  auto c = parse({"x"}, env);
  CHECK(c.nproc_per_node == 3);
  CHECK(c.nnodes_max == 2);
  CHECK(c.node_rank == 1);
  CHECK(c.master_addr == "10.1.1.1");
  CHECK(c.master_port == 2222);
  CHECK(c.max_restarts == 5);
  CHECK(c.role == "trainer");
  CHECK(c.tee.all == 3);
  CHECK(c.log_dir == "/logs");
  CHECK_FALSE(parse({"x"}, {{"PET_LOG_DIR", ""}}).log_dir);  // empty = not given
  c = parse({"--nproc_per_node=5", "--master-port", "7", "x"}, env);
  CHECK(c.nproc_per_node == 5);
  CHECK(c.master_port == 7);
  // The env value is validated and the message names the variable.
  CHECK(error_of({"x"}, {{"PET_NPROC_PER_NODE", "lots"}}) ==
        "invalid value 'lots' for environment variable PET_NPROC_PER_NODE (expected a positive "
        "number of workers, gpu, cpu or auto)");
}

TEST_CASE("PET_* booleans use torchrun's check_env rule", "[cli]") {
  CHECK(parse({"x"}, {{"PET_STANDALONE", "1"}}).standalone);
  CHECK_FALSE(parse({"x"}, {{"PET_STANDALONE", "0"}}).standalone);
  CHECK(parse({"x"}, {{"PET_NO_PYTHON", "1"}}).no_python);
  CHECK(parse({"x"}, {{"PET_VIRTUAL_LOCAL_RANK", "1"}}).virtual_local_rank);
  CHECK(parse({"pkg"}, {{"PET_MODULE", "1"}}).module);
  CHECK_THAT(error_of({"x"}, {{"PET_STANDALONE", "yes"}}),
             Catch::Contains("environment variable PET_STANDALONE (expected 1 (on) or 0 (off))"));
  // GPURUN_* extras take ordinary booleans.
  CHECK(parse({"x"}, {{"GPURUN_PER_WORKER_VISIBLE_DEVICES", "true"}}).narrow_visible_devices);
  CHECK_FALSE(parse({"x"}, {{"GPURUN_NO_TAG_OUTPUT", "yes"}}).tag_output);
  CHECK(parse({"x"}, {{"GPURUN_TIMEOUT", "5m"}}).run_timeout == std::chrono::minutes(5));
}

TEST_CASE("actions: help, version, info, dry-run, dump-config, store", "[cli]") {
  CHECK(parse({"--help"}).action == Action::kHelp);
  CHECK(parse({"-h"}).action == Action::kHelp);
  CHECK(parse({"--nproc-per-node", "2", "--he"}).action == Action::kHelp);
  CHECK(parse({"--version"}).action == Action::kVersion);
  CHECK(parse({"--info"}).action == Action::kInfo);
  auto info = parse({"info", "--master-port", "29500"});
  CHECK(info.action == Action::kInfo);
  CHECK(info.master_port == 29500);
  CHECK_THAT(error_of({"info", "prog"}), Catch::Contains("takes only options"));
  CHECK(parse({"--dry-run", "--nproc-per-node", "2", "x"}).action == Action::kDryRun);
  CHECK(parse({"--dump-config"}).action == Action::kDumpConfig);
  auto store = parse({"store", "--port", "0", "--host", "::"});
  CHECK(store.action == Action::kStore);
  CHECK(store.store_args == Args{"--port", "0", "--host", "::"});
  // "store"/"info" only mean a subcommand in first position; a program can still be named so.
  CHECK(parse({"--", "info"}).program == "info");
  CHECK(parse({"--nproc-per-node", "1", "store"}).program == "store");
  CHECK_THAT(error_of({}), Catch::Contains("missing PROGRAM"));
  CHECK_THAT(error_of({"--dry-run"}), Catch::Contains("missing PROGRAM"));
}

TEST_CASE("gpurun extras", "[cli]") {
  auto c =
      parse({"--timeout", "30s", "--rdzv-timeout", "2m", "--summary-json", "/tmp/s.json", "--color",
             "never", "--per-worker-visible-devices", "--no-tag-output", "--virtual-local-rank",
             "--shutdown-timeout", "60", "--signals-to-handle", "SIGTERM,USR1,sigint,2", "x"});
  CHECK(c.run_timeout == std::chrono::seconds(30));
  CHECK(c.rdzv_timeout == std::chrono::minutes(2));
  CHECK(c.summary_json == "/tmp/s.json");
  CHECK(c.color == ColorMode::kNever);
  CHECK(c.narrow_visible_devices);
  CHECK_FALSE(c.tag_output);
  CHECK(c.virtual_local_rank);
  CHECK(c.shutdown_timeout == std::chrono::seconds(60));
  CHECK(c.failure_shutdown_timeout == std::chrono::seconds(60));
  CHECK(c.signals_to_handle == std::vector<int>{SIGTERM, SIGUSR1, SIGINT, 2});
  CHECK_FALSE(parse({"--timeout", "0", "x"}).run_timeout);
  CHECK_FALSE(parse({"--timeout", "none", "x"}).run_timeout);
  CHECK(parse({"x"}, {{"NO_COLOR", "1"}}).color == ColorMode::kNever);
  CHECK(parse({"--color=always", "x"}, {{"NO_COLOR", "1"}}).color == ColorMode::kAlways);
  CHECK(parse({"x"}, {{"TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "45"}}).shutdown_timeout ==
        std::chrono::seconds(45));
  // Defaults: torchrun's 30 s for a received signal, 5 s for the teardown after a failure.
  CHECK(parse({"x"}).shutdown_timeout == std::chrono::seconds(30));
  CHECK(parse({"x"}).failure_shutdown_timeout == std::chrono::seconds(5));
  CHECK(parse({"--exit-barrier-timeout", "20", "x"}).exit_barrier_timeout ==
        std::chrono::seconds(20));
  CHECK(parse({"--exit_barrier_timeout=1m", "x"}).exit_barrier_timeout == std::chrono::minutes(1));
  CHECK(parse({"--rdzv-conf", "timeout=120,read_timeout=60", "x"}).rdzv_timeout ==
        std::chrono::seconds(120));
  CHECK(parse({"--monitor-interval", "5", "x"}).monitor_interval == std::chrono::seconds(5));
}

TEST_CASE("the rdzv-allow flag and its PET_RDZV_ALLOW fallback", "[cli]") {
  CHECK_FALSE(parse({"x"}).rdzv_allow);
  CHECK(parse({"--rdzv-allow", "n1,10.0.0.0/8", "x"}).rdzv_allow == "n1,10.0.0.0/8");
  CHECK(parse({"x"}, {{"PET_RDZV_ALLOW", "job-master-0,job-worker-0"}}).rdzv_allow ==
        "job-master-0,job-worker-0");
  CHECK(parse({"--rdzv_allow=any", "x"}, {{"PET_RDZV_ALLOW", "a"}}).rdzv_allow == "any");
  CHECK_THAT(help_text(), Catch::Contains("--rdzv-allow HOSTS"));
}
