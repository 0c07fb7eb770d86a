#include "cli/option_values.h"

#include <fmt/format.h>

#include <algorithm>
#include <csignal>

#include "cli/argparse.h"
#include "gpurun/common/duration.h"
#include "gpurun/common/env.h"
#include "process/process_runner.h"

namespace gpurun::launcher {

using argparse::invalid_value;

int parse_int_in(const std::string& value, const std::string& origin, long long lo, long long hi,
                 const std::string& expected) {
  long long v = 0;
  try {
    v = parse_int(value, origin);
  } catch (const ConfigError&) {
    invalid_value(origin, value, expected);
  }
  if (v < lo || v > hi) invalid_value(origin, value, expected);
  return static_cast<int>(v);
}

std::optional<std::string> non_empty(const std::string& v) {
  return v.empty() ? std::nullopt : std::optional<std::string>(v);
}

StdSpec parse_std_spec(const std::string& value, const std::string& origin) {
  static const char* kExpected =
      "0-3 (1 = stdout, 2 = stderr, 3 = both) or a per-local-rank map like 0:1,1:2";
  StdSpec spec;
  std::string v = trim(value);
  if (v.size() == 1 && v[0] >= '0' && v[0] <= '3') {
    spec.all = v[0] - '0';
    return spec;
  }
  if (v.empty()) invalid_value(origin, value, kExpected);
  for (const auto& entry : split(v, ',')) {
    auto colon = entry.find(':');
    if (colon == std::string::npos || colon == 0 || colon + 2 != entry.size()) {
      invalid_value(origin, value, kExpected);
    }
    std::string rank_text = entry.substr(0, colon);
    if (!std::all_of(rank_text.begin(), rank_text.end(),
                     [](unsigned char c) { return std::isdigit(c); })) {
      invalid_value(origin, value, kExpected);
    }
    char mask = entry[colon + 1];
    if (mask < '0' || mask > '3') invalid_value(origin, value, kExpected);
    spec.per_rank[parse_int_in(rank_text, origin, 0, 1 << 20, kExpected)] = mask - '0';
  }
  return spec;
}

std::vector<int> parse_signal_list(const std::string& value, const std::string& origin) {
  std::vector<int> out;
  for (const auto& s : split(value, ',')) {
    const std::string name = trim(s);
    if (name.empty()) continue;
    auto sig = parse_signal(name);
    if (!sig && name.find_first_not_of("0123456789") == std::string::npos) {
      invalid_value(origin, name, fmt::format("a signal number 1-{}", NSIG - 1));
    }
    if (!sig) {
      invalid_value(origin, s,
                    "a comma-separated list of signal names such as SIGTERM,SIGINT,SIGHUP,SIGUSR1");
    }
    out.push_back(*sig);
  }
  return out;
}

std::pair<int, int> parse_nnodes(const std::string& value, const std::string& origin) {
  static const char* kExpected = "N or MIN:MAX with 0 < MIN <= MAX";
  std::string v = trim(value);
  auto colon = v.find(':');
  if (colon == std::string::npos) {
    int n = parse_int_in(v, origin, 1, 1 << 20, kExpected);
    return {n, n};
  }
  int lo = parse_int_in(v.substr(0, colon), origin, 1, 1 << 20, kExpected);
  int hi = parse_int_in(v.substr(colon + 1), origin, 1, 1 << 20, kExpected);
  if (lo > hi) invalid_value(origin, value, kExpected);
  return {lo, hi};
}

void parse_nproc(LaunchConfig& c, const std::string& value, const std::string& origin) {
  std::string v = trim(value);
  if (v == "gpu") {
    c.nproc_kind = NprocKind::kGpu;
  } else if (v == "cpu") {
    c.nproc_kind = NprocKind::kCpu;
  } else if (v == "auto") {
    c.nproc_kind = NprocKind::kAuto;
  } else {
    c.nproc_kind = NprocKind::kNumber;
    c.nproc_per_node =
        parse_int_in(v, origin, 1, 1 << 16, "a positive number of workers, gpu, cpu or auto");
  }
}

std::map<std::string, std::string> parse_rdzv_conf(const std::string& value,
                                                   const std::string& origin) {
  std::map<std::string, std::string> conf;
  if (trim(value).empty()) return conf;
  for (const auto& kv : split(value, ',')) {
    auto eq = kv.find('=');
    std::string key = eq == std::string::npos ? trim(kv) : trim(kv.substr(0, eq));
    std::string val = eq == std::string::npos ? "" : trim(kv.substr(eq + 1));
    if (key.empty() || val.empty()) {
      invalid_value(origin, value,
                    "KEY=VALUE pairs separated by commas, with no empty key or value");
    }
    conf[key] = val;
  }
  return conf;
}

std::optional<std::set<int>> parse_rank_filter(const std::string& value,
                                               const std::string& origin) {
  std::string v = trim(value);
  if (v.empty()) return std::nullopt;
  std::set<int> ranks;
  for (const auto& r : split(v, ',')) {
    ranks.insert(parse_int_in(trim(r), origin, 0, 1 << 20,
                              "a comma-separated list of local ranks such as 0,2"));
  }
  return ranks;
}

std::vector<std::string> parse_filter_list(const std::string& value) {
  std::vector<std::string> out;
  std::string cur;
  for (std::size_t i = 0; i < value.size(); ++i) {
    if (value[i] != ',') {
      cur += value[i];
    } else if (i + 1 < value.size() && value[i + 1] == ',') {
      cur += ',';
      ++i;
    } else {
      if (!cur.empty()) out.push_back(cur);
      cur.clear();
    }
  }
  if (!cur.empty()) out.push_back(cur);
  return out;
}

std::optional<std::chrono::milliseconds> parse_optional_timeout(const std::string& value,
                                                                const std::string& origin) {
  std::string v = trim(value);
  if (v == "none" || v == "0" || v == "inf") return std::nullopt;
  std::chrono::milliseconds d = parse_duration(v, origin);
  if (d == kNoTimeout) return std::nullopt;
  return d;
}

std::pair<std::string, int> split_endpoint(const std::string& ep, const std::string& origin) {
  std::string host = ep;
  std::string port;
  if (!ep.empty() && ep[0] == '[') {
    auto close = ep.find(']');
    if (close == std::string::npos) invalid_value(origin, ep, "HOST[:PORT] with IPv6 in brackets");
    host = ep.substr(1, close - 1);
    if (close + 1 < ep.size()) {
      if (ep[close + 1] != ':') invalid_value(origin, ep, "HOST[:PORT]");
      port = ep.substr(close + 2);
    }
  } else {
    auto colon = ep.rfind(':');
    if (colon != std::string::npos && ep.find(':') == colon) {
      host = ep.substr(0, colon);
      port = ep.substr(colon + 1);
    }
  }
  if (port.empty()) return {host, -1};
  return {host, parse_int_in(port, origin, 0, 65535, "HOST[:PORT] with a port 0-65535")};
}

}  // namespace gpurun::launcher
