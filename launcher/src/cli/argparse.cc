// The argparse engine: lookup (exact spelling, then unique prefix), short options in argparse's
// three forms, values, REMAINDER after the program, environment fallbacks.
#include "cli/argparse.h"

#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <string_view>

#include "gpurun/common/error.h"
#include "gpurun/common/log.h"

namespace gpurun::launcher::argparse {

namespace {

// "--nproc-per-node" -> "NPROC_PER_NODE"
std::string dest_of(const char* name) {
  std::string d(name + 2);
  for (auto& c : d)
    c = c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return d;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

bool looks_like_negative_number(const std::string& s) {
  if (s.size() < 2 || s[0] != '-') return false;
  bool digit = false;
  for (std::size_t i = 1; i < s.size(); ++i) {
    if (std::isdigit(static_cast<unsigned char>(s[i])))
      digit = true;
    else if (s[i] != '.')
      return false;
  }
  return digit;
}

bool looks_like_option(const std::string& s) {
  return s.size() > 1 && s[0] == '-' && !looks_like_negative_number(s);
}

std::string display_name(const Option& o) {
  return o.short_name ? fmt::format("-{}/{}", o.short_name, o.name) : std::string(o.name);
}

}  // namespace

void invalid_value(const std::string& origin, const std::string& value,
                   const std::string& expected) {
  throw ConfigError(
      fmt::format("invalid value '{}' for {} (expected {})", value, origin, expected));
}

std::vector<std::string> spellings(const Option& o) {
  std::vector<std::string> out{o.name};
  std::string under = o.name;
  std::replace(under.begin() + 2, under.end(), '-', '_');
  if (under != o.name) out.push_back(under);
  return out;
}

std::string env_name(const Option& o) {
  return o.env.prefix ? o.env.prefix + dest_of(o.name) : std::string();
}

Parser::Parser(std::vector<Option> options, std::string prog)
    : options_(std::move(options)), prog_(std::move(prog)) {}

void Parser::unknown_option(const std::string& flag) const {
  std::string best;
  std::size_t best_d = std::string::npos;
  std::string probe = flag;
  std::replace(probe.begin(), probe.end(), '_', '-');
  for (const auto& o : options_) {
    std::size_t d = edit_distance(probe, o.name);
    if (d < best_d) {
      best_d = d;
      best = o.name;
    }
  }
  std::size_t limit = std::max<std::size_t>(2, probe.size() / 3);
  if (!best.empty() && best_d <= limit) {
    throw ConfigError(fmt::format("unknown option '{}'; did you mean '{}'?", flag, best));
  }
  throw ConfigError(fmt::format("unknown option '{}'; see {} --help", flag, prog_));
}

// argparse's lookup for a long option: exact spelling first, then unique prefix. A prefix that
// matches only spellings of one option is that option (argparse would call --nproc ambiguous).
const Option& Parser::find_long(const std::string& flag) const {
  const Option* exact = nullptr;
  std::vector<const Option*> prefixed;
  for (const auto& o : options_) {
    for (const auto& s : spellings(o)) {
      if (s == flag) exact = &o;
      if (s.size() > flag.size() && s.compare(0, flag.size(), flag) == 0) {
        if (std::find(prefixed.begin(), prefixed.end(), &o) == prefixed.end()) {
          prefixed.push_back(&o);
        }
      }
    }
  }
  if (exact) return *exact;
  if (prefixed.size() == 1 && flag.size() > 2) return *prefixed.front();
  if (prefixed.size() > 1 && flag.size() > 2) {
    std::string names;
    for (const auto* o : prefixed) names += (names.empty() ? "" : ", ") + std::string(o->name);
    throw ConfigError(
        fmt::format("ambiguous option '{}' could match {}; spell out more of it", flag, names));
  }
  unknown_option(flag);
}

const Option& Parser::find_short(char c, const std::string& arg) const {
  for (const auto& o : options_) {
    if (o.short_name == c) return o;
  }
  unknown_option(arg);
}

void Parser::apply_value(const Option& o, const std::string& value, const std::string& origin) {
  o.set_value(value, origin);
  given_.insert(o.name);
}

void Parser::apply_flag(const Option& o, bool on) {
  o.set_flag(on);
  given_.insert(o.name);
}

std::size_t Parser::parse(const std::vector<std::string>& args, std::size_t i) {
  while (i < args.size()) {
    const std::string& arg = args[i];
    if (arg == "--") return i + 1;          // everything after is the program and its args
    if (!looks_like_option(arg)) return i;  // the program: the rest is passed through untouched
    ++i;
    const Option* opt = nullptr;
    std::optional<std::string> inline_value;
    std::string shown;  // how the user spelled it, for messages
    if (arg.rfind("--", 0) == 0) {
      auto eq = arg.find('=');
      std::string flag = arg.substr(0, eq);
      if (eq != std::string::npos) inline_value = arg.substr(eq + 1);
      opt = &find_long(flag);
      shown = flag;
    } else {
      // -m, -r 1, -r1, -r=1 (argparse accepts all three for single-letter options)
      opt = &find_short(arg[1], arg);
      shown = arg.substr(0, 2);
      if (arg.size() > 2) inline_value = arg[2] == '=' ? arg.substr(3) : arg.substr(2);
    }
    if (!opt->takes_value) {
      if (inline_value) {
        throw ConfigError(fmt::format("option {} takes no value (got '{}'); remove '={}'", shown,
                                      *inline_value, *inline_value));
      }
      apply_flag(*opt, true);
      if (opt->stops_parsing) return args.size();
      continue;
    }
    std::string value;
    if (inline_value) {
      value = *inline_value;
    } else {
      if (i >= args.size() || looks_like_option(args[i])) {
        throw ConfigError(fmt::format("option {} expects a value ({}){}", display_name(*opt),
                                      opt->metavar,
                                      i < args.size() ? fmt::format(", got '{}'", args[i]) : ""));
      }
      value = args[i++];
    }
    apply_value(*opt, value, display_name(*opt));
  }
  return i;
}

// torchrun's env action: explicit flags win; booleans use check_env (an integer, nonzero = on)
// or, for BoolRule::kWords, 1/0, true/false, yes/no.
void Parser::apply_env(const EnvMap& env) {
  for (const auto& o : options_) {
    if (!o.env.prefix || given_.count(o.name)) continue;
    std::string name = env_name(o);
    auto v = env_get(env, name);
    if (!v) continue;
    std::string origin = fmt::format("environment variable {}", name);
    GPURUN_LOG_INFO("cli", "{}={} set by environment ({})", name, *v, o.name);
    if (o.takes_value) {
      apply_value(o, *v, origin);
      continue;
    }
    bool on = false;
    if (o.env.bools == BoolRule::kCheckEnv) {
      try {
        on = parse_int(*v, origin) != 0;
      } catch (const ConfigError&) {
        invalid_value(origin, *v, "1 (on) or 0 (off)");
      }
    } else {
      on = parse_bool(*v, origin);
    }
    apply_flag(o, on);
  }
}

}  // namespace gpurun::launcher::argparse
