// store_interop_client: drives gpurun's TcpStore against a TCPStore-protocol server (PyTorch's own
// or gpurun-store) and prints one JSON object per operation on stdout, so a Python test can check
// both what this client saw and what the server holds afterwards.
//
//   store_interop_client --host H --port P [--dialect v113|v2|auto] [--torch-prefix]
//                        [--scenario all|share|connect] [--world-size N] [--timeout-ms T]
//                        [--connect-timeout-ms T]
//
// Scenario "all" exercises every Store op (see run_all). Scenario "share" is the short exchange
// with a torch client used by tests/store/torch_client_test.py; "connect" only connects (with
// --world-size: the ADD "init/" 1 a PyTorch client sends) and reads num_keys. Before an op that
// needs the Python side to act (a blocking wait/get) the client prints
// {"op":"wait_begin"|"get_begin"}.
#include <chrono>
#include <cstdio>
#include <exception>
#include <functional>
#include <iostream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "gpurun/common/error.h"
#include "gpurun/rendezvous/tcp_store.h"

namespace {

using gpurun::rendezvous::Bytes;
using gpurun::rendezvous::Dialect;
using gpurun::rendezvous::TcpStore;
using gpurun::rendezvous::TcpStoreOptions;
using gpurun::rendezvous::to_bytes;
using gpurun::rendezvous::to_string;
using json = nlohmann::json;
using std::chrono::milliseconds;

std::string hex(const Bytes& b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(b.size() * 2);
  for (auto c : b) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

void emit(json j) { std::cout << j.dump() << '\n' << std::flush; }

long long ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - t0).count();
}

// Runs one op; on an exception prints {"op":..., "ok":false, "error":..., "error_type":...}.
void step(const std::string& op, const std::function<void(json&)>& body) {
  json j{{"op", op}};
  auto t0 = std::chrono::steady_clock::now();
  try {
    body(j);
    j["ok"] = true;
  } catch (const gpurun::StoreTimeout& e) {
    j["ok"] = false;
    j["error_type"] = "StoreTimeout";
    j["error"] = e.what();
  } catch (const std::exception& e) {
    j["ok"] = false;
    j["error_type"] = "other";
    j["error"] = e.what();
  }
  j["ms"] = ms_since(t0);
  emit(std::move(j));
}

json bytes_list(const std::vector<Bytes>& v) {
  json out = json::array();
  for (const auto& b : v) out.push_back(hex(b));
  return out;
}

Bytes descending_bytes() {
  Bytes b(256);
  for (int i = 0; i < 256; ++i) b[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(255 - i);
  return b;
}

void run_all(TcpStore& store) {
  step("set", [&](json& j) {
    store.set("c/k1", "v1");
    j["key"] = "c/k1";
  });
  step("get", [&](json& j) {
    j["key"] = "c/k1";
    j["value_hex"] = hex(store.get("c/k1"));
  });
  step("set_binary", [&](json&) { store.set("c/bin", descending_bytes()); });
  step("get_binary", [&](json& j) { j["value_hex"] = hex(store.get("c/bin")); });
  step("set_empty", [&](json&) { store.set("c/empty", Bytes{}); });
  step("get_empty", [&](json& j) { j["value_hex"] = hex(store.get("c/empty")); });
  step("get_py", [&](json& j) { j["value_hex"] = hex(store.get("py/bin")); });
  step("add", [&](json& j) {
    j["first"] = store.add("c/ctr", 5);
    j["second"] = store.add("c/ctr", -2);
    j["py_ctr"] = store.add("py/ctr", 1);
  });
  step("compare_set", [&](json& j) {
    j["absent_empty"] = to_string(store.compare_set("c/cs", Bytes{}, to_bytes("x")));
    j["absent_nonempty"] = to_string(store.compare_set("c/cs2", to_bytes("e"), to_bytes("d")));
    j["equal"] = to_string(store.compare_set("c/cs", to_bytes("x"), to_bytes("y")));
    j["mismatch"] = to_string(store.compare_set("c/cs", to_bytes("zzz"), to_bytes("q")));
  });
  step("check", [&](json& j) {
    j["present"] = store.check({"c/k1", "c/ctr"});
    j["missing"] = store.check({"c/k1", "c/missing"});
    j["none"] = store.check({});
  });
  step("wait_present", [&](json&) { store.wait({"c/k1", "c/bin"}, milliseconds(1000)); });
  step("wait_timeout", [&](json&) { store.wait({"c/never"}, milliseconds(300)); });
  step("num_keys", [&](json& j) { j["result"] = store.num_keys(); });
  step("delete_key", [&](json& j) {
    j["first"] = store.delete_key("c/k1");
    j["second"] = store.delete_key("c/k1");
  });
  step("append", [&](json& j) {
    store.append("c/app", to_bytes("ab"));
    store.append("c/app", to_bytes("cd"));
    j["value"] = to_string(store.get("c/app"));
  });
  step("multi_set", [&](json&) {
    store.multi_set({"c/m1", "c/m2"}, {to_bytes("one"), to_bytes("two")});
  });
  step("multi_get", [&](json& j) {
    j["values_hex"] = bytes_list(store.multi_get({"c/m2", "c/m1"}));
  });
  // Blocking ops woken by the Python side: it acts when it reads the *_begin line.
  step("wait_begin", [&](json& j) { j["key"] = "c/late"; });
  step("wait", [&](json& j) {
    store.wait({"c/late"}, milliseconds(30000));
    j["key"] = "c/late";
  });
  step("get_begin", [&](json& j) { j["key"] = "c/late2"; });
  step("get_blocking", [&](json& j) { j["value_hex"] = hex(store.get("c/late2")); });
  step("set_keep", [&](json&) { store.set("c/keep", "cpp"); });
  step("final_num_keys", [&](json& j) { j["result"] = store.num_keys(); });
}

void run_share(TcpStore& store) {
  step("get", [&](json& j) { j["value_hex"] = hex(store.get("shared/from_py")); });
  step("set", [&](json&) { store.set("shared/from_cpp", Bytes{'c', 'p', 'p', 1}); });
  step("add", [&](json& j) { j["result"] = store.add("shared/ctr", 7); });
  step("wait_begin", [&](json& j) { j["key"] = "shared/late"; });
  step("wait", [&](json&) { store.wait({"shared/late"}, milliseconds(30000)); });
  step("num_keys", [&](json& j) { j["result"] = store.num_keys(); });
}

int usage(const char* why) {
  std::fprintf(
      stderr,
      "store_interop_client: error: %s\nusage: store_interop_client --host H --port P "
      "[--dialect v113|v2|auto] [--torch-prefix] [--scenario all|share|connect] [--world-size N] "
      "[--timeout-ms T] [--connect-timeout-ms T]\n",
      why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  TcpStoreOptions opts;
  opts.timeout = milliseconds(10000);
  opts.connect_timeout = milliseconds(10000);
  std::string scenario = "all";
  bool have_port = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::optional<std::string> {
      if (i + 1 >= argc) return std::nullopt;
      return std::string(argv[++i]);
    };
    std::optional<std::string> v;
    if (a == "--torch-prefix") {
      opts.torch_key_prefix = true;
      continue;
    }
    if (!(v = value())) return usage(("missing value for " + a).c_str());
    try {
      if (a == "--host") {
        opts.host = *v;
      } else if (a == "--port") {
        opts.port = static_cast<std::uint16_t>(std::stoi(*v));
        have_port = true;
      } else if (a == "--dialect") {
        if (*v == "v113") {
          opts.dialect = Dialect::kV113;
        } else if (*v == "v2") {
          opts.dialect = Dialect::kV2;
        } else if (*v == "auto") {
          opts.dialect = Dialect::kAuto;
        } else {
          return usage("--dialect must be v113, v2 or auto");
        }
      } else if (a == "--scenario") {
        scenario = *v;
      } else if (a == "--world-size") {
        opts.world_size = std::stoi(*v);
      } else if (a == "--timeout-ms") {
        opts.timeout = milliseconds(std::stoll(*v));
      } else if (a == "--connect-timeout-ms") {
        opts.connect_timeout = milliseconds(std::stoll(*v));
      } else {
        return usage(("unknown option " + a).c_str());
      }
    } catch (const std::logic_error&) {
      return usage(("bad value for " + a + ": " + *v).c_str());
    }
  }
  if (!have_port) return usage("--port is required");
  if (scenario != "all" && scenario != "share" && scenario != "connect") {
    return usage("--scenario must be all, share or connect");
  }

  std::optional<TcpStore> store;
  json j{{"op", "connect"}};
  try {
    store.emplace(opts);
    j["ok"] = true;
    j["describe"] = store->describe();
  } catch (const std::exception& e) {
    j["ok"] = false;
    j["error"] = e.what();
    emit(j);
    return 1;
  }
  emit(j);
  if (scenario == "all") {
    run_all(*store);
  } else if (scenario == "share") {
    run_share(*store);
  } else {
    step("num_keys", [&](json& k) { k["result"] = store->num_keys(); });
  }
  emit({{"op", "done"}, {"ok", true}});
  return 0;
}
