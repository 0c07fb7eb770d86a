#include "gpurun/common/env.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>

#include "gpurun/common/duration.h"
#include "gpurun/common/error.h"

extern char** environ;  // NOLINT

namespace gpurun {

EnvMap current_environment() {
  EnvMap env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view kv(*e);
    auto eq = kv.find('=');
    if (eq == std::string_view::npos) continue;
    env.emplace(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
  }
  return env;
}

std::vector<std::string> to_envp_strings(const EnvMap& env) {
  std::vector<std::string> out;
  out.reserve(env.size());
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

std::optional<std::string> env_get(const EnvMap& env, std::string_view key) {
  auto it = env.find(key);
  if (it == env.end()) return std::nullopt;
  return it->second;
}

long long parse_int(std::string_view text, std::string_view what) {
  std::string_view t = text;
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.front()))) t.remove_prefix(1);
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.remove_suffix(1);
  if (!t.empty() && t.front() == '+') t.remove_prefix(1);
  long long value = 0;
  auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), value);
  if (t.empty() || ec != std::errc() || ptr != t.data() + t.size()) {
    throw ConfigError(
        fmt::format("invalid {} '{}' (not an integer); pass a whole number", what, text));
  }
  return value;
}

bool parse_bool(std::string_view text, std::string_view what) {
  std::string t(text);
  std::transform(t.begin(), t.end(), t.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (t == "1" || t == "true" || t == "t" || t == "yes" || t == "y" || t == "on") return true;
  if (t == "0" || t == "false" || t == "f" || t == "no" || t == "n" || t == "off") return false;
  throw ConfigError(
      fmt::format("invalid {} '{}' (not a boolean); use 1/0, true/false, yes/no", what, text));
}

std::optional<long long> env_int(const EnvMap& env, std::string_view key) {
  auto v = env_get(env, key);
  if (!v) return std::nullopt;
  return parse_int(*v, fmt::format("environment variable {}", key));
}

std::optional<bool> env_bool(const EnvMap& env, std::string_view key) {
  auto v = env_get(env, key);
  if (!v) return std::nullopt;
  return parse_bool(*v, fmt::format("environment variable {}", key));
}

std::optional<std::chrono::milliseconds> env_duration(const EnvMap& env, std::string_view key) {
  auto v = env_get(env, key);
  if (!v) return std::nullopt;
  return parse_duration(*v, fmt::format("environment variable {}", key));
}

std::string trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

bool all_digits(std::string_view s) {
  return !s.empty() &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
}

std::vector<std::string> split(std::string_view text, char sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    auto pos = text.find(sep, start);
    if (pos == std::string_view::npos) {
      out.emplace_back(text.substr(start));
      return out;
    }
    out.emplace_back(text.substr(start, pos - start));
    start = pos + 1;
  }
}

}  // namespace gpurun
