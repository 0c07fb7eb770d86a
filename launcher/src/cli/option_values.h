// Parsers for the values of gpurun's options (torchrun's syntaxes). Each throws ConfigError
// "invalid value 'V' for ORIGIN (expected ...)" naming the flag or variable it came from. Pure.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "cli/config.h"

namespace gpurun::launcher {

// An integer in [lo, hi]; anything else is invalid_value(origin, value, expected).
int parse_int_in(const std::string& value, const std::string& origin, long long lo, long long hi,
                 const std::string& expected);

// An empty value (e.g. PET_LOG_DIR="") means "not given", as argparse's falsy checks treat it.
std::optional<std::string> non_empty(const std::string& v);

// torchrun's Std.from_str: "0".."3", or "LOCAL_RANK:MASK,..." (torchrun allows one digit per
// entry; we accept any local rank number).
StdSpec parse_std_spec(const std::string& value, const std::string& origin);

// --signals-to-handle: "SIGTERM,USR1,sigint,2" (process_runner.h's parse_signal per item).
std::vector<int> parse_signal_list(const std::string& value, const std::string& origin);

// --nnodes: "N" or "MIN:MAX" -> (min, max).
std::pair<int, int> parse_nnodes(const std::string& value, const std::string& origin);

// --nproc-per-node: a number, gpu, cpu or auto (sets nproc_kind, and nproc_per_node for a number).
void parse_nproc(LaunchConfig& cfg, const std::string& value, const std::string& origin);

// --rdzv-conf: "K=V,K2=V2".
std::map<std::string, std::string> parse_rdzv_conf(const std::string& value,
                                                   const std::string& origin);

// --local-ranks-filter: "0,2"; empty = no filter.
std::optional<std::set<int>> parse_rank_filter(const std::string& value, const std::string& origin);

// torchrun's comma_separated_list: "a,b" -> {a, b}; ",," is a literal comma; empty items dropped.
std::vector<std::string> parse_filter_list(const std::string& value);

// A duration, where none, 0 and inf mean "no limit" (nullopt).
std::optional<std::chrono::milliseconds> parse_optional_timeout(const std::string& value,
                                                                const std::string& origin);

// "host:port", "[v6]:port", "host" -> (host, port or -1)
std::pair<std::string, int> split_endpoint(const std::string& ep, const std::string& origin);

}  // namespace gpurun::launcher
