#include "example_cli.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <boost/program_options/errors.hpp>
#include <boost/program_options/parsers.hpp>
#include <charconv>
#include <cmath>
#include <cstdlib>

namespace example_cli {
namespace {

// A notation: whether the option takes a value, its name in the usage text, and the conversion.
// The conversion runs from CommandLine::parse (through Notation::parse()), so it sees every
// occurrence in command-line order and never touches boost's variables_map.
class Notation final : public po::value_semantic {
 public:
  Notation(std::string metavar, bool takes_value, std::function<void(const std::string&)> apply)
      : metavar_(std::move(metavar)), takes_value_(takes_value), apply_(std::move(apply)) {}

  std::string name() const override { return metavar_; }
  unsigned min_tokens() const override { return takes_value_ ? 1 : 0; }
  unsigned max_tokens() const override { return takes_value_ ? 1 : 0; }
  bool is_composing() const override { return false; }
  bool is_required() const override { return false; }
  void parse(boost::any& /*value_store*/, const std::vector<std::string>& tokens,
             bool /*utf8*/) const override {
    apply_(tokens.empty() ? std::string() : tokens.front());
  }
  bool apply_default(boost::any& /*value_store*/) const override { return false; }
  void notify(const boost::any& /*value_store*/) const override {}

 private:
  std::string metavar_;
  bool takes_value_;
  std::function<void(const std::string&)> apply_;
};

// "--batch_size=8" -> "--batch_size": the flag as the user spelled it.
std::string flag_as_typed(const po::option& o) {
  const std::string& token = o.original_tokens.empty() ? o.string_key : o.original_tokens.front();
  return token.substr(0, token.find('='));
}

}  // namespace

bool CommandLine::names_option(const std::string& token) const {
  if (token.size() < 2 || token[0] != '-') return false;
  const std::string name = token[1] == '-' ? token.substr(2, token.find('=') - 2) : token;
  return options_->find_nothrow(name, false) != nullptr;
}

std::optional<long long> to_integer(const std::string& text) {
  long long out = 0;
  const char* end = text.data() + text.size();
  const auto [p, ec] = std::from_chars(text.data(), end, out);
  if (text.empty() || ec != std::errc() || p != end) return std::nullopt;
  return out;
}

std::optional<float> to_float(const std::string& text) {
  char* end = nullptr;
  const float out = std::strtof(text.c_str(), &end);
  if (text.empty() || *end != '\0' || !std::isfinite(out)) return std::nullopt;
  return out;
}

po::value_semantic* custom(std::string metavar, std::function<void(const std::string&)> apply) {
  return new Notation(std::move(metavar), true, std::move(apply));
}

po::value_semantic* flag(bool* out, bool value_when_given) {
  return new Notation("", false,
                      [out, value_when_given](const std::string&) { *out = value_when_given; });
}

po::value_semantic* text(std::string metavar, std::string* out) {
  return custom(std::move(metavar), [out](const std::string& v) { *out = v; });
}

po::value_semantic* choice(std::string metavar, std::string* out,
                           std::vector<std::string> allowed) {
  return custom(std::move(metavar), [out, allowed = std::move(allowed)](const std::string& v) {
    for (const std::string& a : allowed) {
      if (v == a) {
        *out = v;
        return;
      }
    }
    throw BadValue(fmt::format("one of: {}", fmt::join(allowed, ", ")));
  });
}

po::value_semantic* number(std::string metavar, float* out, float min) {
  return custom(std::move(metavar), [out, min](const std::string& v) {
    const std::optional<float> x = to_float(v);
    if (!x || *x < min) throw BadValue(fmt::format("a number >= {}", min));
    *out = *x;
  });
}

po::value_semantic* positive(std::string metavar, float* out) {
  return custom(std::move(metavar), [out](const std::string& v) {
    const std::optional<float> x = to_float(v);
    if (!x || !(*x > 0.0f)) throw BadValue("a positive number");
    *out = *x;
  });
}

CommandLine::CommandLine(std::string intro, std::size_t column, bool* help,
                         bool all_underscore_spellings)
    : usage_(std::move(intro)),
      column_(column),
      underscores_(all_underscore_spellings),
      options_(std::make_shared<po::options_description>()) {
  help_line_ = register_option("help,h", flag(help), "this text");
}

void CommandLine::section(const std::string& title) { usage_ += title + "\n"; }

std::string CommandLine::usage() const { return usage_ + help_line_; }

void CommandLine::add(const std::string& names, po::value_semantic* value,
                      const std::string& help) {
  usage_ += register_option(names, value, help);
}

std::string CommandLine::register_option(const std::string& names, po::value_semantic* value,
                                         const std::string& help) {
  // Boost's names: the long ones, each with its underscore twin if asked for, then the short one.
  std::string boost_names;
  std::string shown_long;
  std::string shown_short;
  std::size_t start = 0;
  while (start <= names.size()) {
    const std::size_t comma = std::min(names.find(',', start), names.size());
    const std::string name = names.substr(start, comma - start);
    start = comma + 1;
    if (name.size() == 1) {
      shown_short = name;
      continue;
    }
    if (shown_long.empty()) shown_long = name;
    boost_names += (boost_names.empty() ? "" : ",") + name;
    std::string twin = name;
    std::replace(twin.begin(), twin.end(), '-', '_');
    if (underscores_ && twin != name) boost_names += "," + twin;
  }
  if (!shown_short.empty()) boost_names += "," + shown_short;

  options_->add_options()(boost_names.c_str(), value, help.c_str());
  if (help.empty()) return "";

  // Usage line: "  -h, --help N" padded to the column, then the help text.
  std::string line = "  ";
  if (!shown_short.empty()) line += "-" + shown_short + ", ";
  line += "--" + shown_long;
  if (!value->name().empty()) line += " " + value->name();
  const std::string indent(column_, ' ');
  line += line.size() < column_ ? std::string(column_ - line.size(), ' ') : "\n" + indent;
  for (const char c : help) {
    line += c;
    if (c == '\n') line += indent;
  }
  return line + "\n";
}

std::string CommandLine::parse(int argc, const char* const* argv) const {
  namespace style = po::command_line_style;
  // No allow_guessing: an abbreviation is an unknown option, as in the hand-written parsers.
  constexpr int kStyle = style::allow_long | style::long_allow_adjacent | style::long_allow_next |
                         style::allow_short | style::allow_dash_for_short | style::short_allow_next;
  po::parsed_options parsed(nullptr);
  try {
    parsed = po::command_line_parser(argc, argv).options(*options_).style(kStyle).run();
  } catch (const po::unknown_option& e) {
    return fmt::format("unknown option '{}'; see --help", e.get_option_name());
  } catch (const po::invalid_command_line_syntax& e) {
    if (e.kind() == po::invalid_syntax::missing_parameter ||
        e.kind() == po::invalid_syntax::empty_adjacent_parameter) {
      return fmt::format("option {} needs a value; see --help", e.get_option_name());
    }
    if (e.kind() == po::invalid_syntax::extra_parameter) {
      return fmt::format("option {} takes no value; see --help", e.get_option_name());
    }
    return fmt::format("{}; see --help", e.what());
  } catch (const po::error& e) {
    return fmt::format("{}; see --help", e.what());
  }
  for (const po::option& o : parsed.options) {
    if (o.string_key.empty()) {  // a positional argument (or anything after "--")
      return fmt::format("unexpected argument '{}'; see --help",
                         o.original_tokens.empty() ? std::string() : o.original_tokens.front());
    }
    // Boost takes "--output --cpu" as --output="--cpu"; a value that is one of our flags is a
    // forgotten value. (A value that really starts with "--" can be given as --output=--x.)
    if (o.original_tokens.size() == 2 && names_option(o.original_tokens[1])) {
      return fmt::format("option {} needs a value; see --help", flag_as_typed(o));
    }
    const po::option_description& d = options_->find(o.string_key, false);
    try {
      boost::any unused;
      d.semantic()->parse(unused, o.value, true);
    } catch (const BadValue& e) {
      return fmt::format("invalid value '{}' for {} (expected {})",
                         o.value.empty() ? std::string() : o.value.front(), flag_as_typed(o),
                         e.what());
    }
  }
  return "";
}

}  // namespace example_cli
