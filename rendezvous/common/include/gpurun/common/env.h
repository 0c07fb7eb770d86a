// The process environment as a value, plus typed readers. Only two places read the real
// environment: the launcher's resolve_config and the worker SDK's init_from_env; everything
// else takes an EnvMap so tests never call setenv.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gpurun {

using EnvMap = std::map<std::string, std::string, std::less<>>;

// Snapshot of ::environ.
EnvMap current_environment();

// "KEY=VALUE" strings, for execve.
std::vector<std::string> to_envp_strings(const EnvMap& env);

std::optional<std::string> env_get(const EnvMap& env, std::string_view key);

// Typed readers. Missing key -> std::nullopt. Malformed value -> ConfigError naming the variable,
// the value and what was expected.
std::optional<long long> env_int(const EnvMap& env, std::string_view key);
// Accepts 1/0, true/false, yes/no, on/off (any case).
std::optional<bool> env_bool(const EnvMap& env, std::string_view key);
std::optional<std::chrono::milliseconds> env_duration(const EnvMap& env, std::string_view key);

// Strict integer parse of a whole string (no trailing junk). Throws ConfigError mentioning `what`.
long long parse_int(std::string_view text, std::string_view what);
bool parse_bool(std::string_view text, std::string_view what);

// Splits on `sep`, keeping empty fields.
std::vector<std::string> split(std::string_view text, char sep);

// `text` without leading and trailing whitespace.
std::string trim(std::string_view text);

// True for a non-empty string of ASCII digits only.
bool all_digits(std::string_view text);

}  // namespace gpurun
