// The examples' command lines on Boost.Program_options: one option table per example whose
// entries write straight into its Options struct, range-checked value notations, a usage text
// printed from the same table, and every mistake reported in one style:
//   invalid value 'abc' for --window (expected an integer >= 3)
//   unknown option '--foo'; see --help
//   option --window needs a value; see --help
// Rules: long options (plus -h), "--flag value" or "--flag=value", no abbreviations (--strid is
// not --stride), no positional arguments ("--" ends the options and nothing may follow), a value
// that is itself one of the flags means the value was forgotten ("--output --cpu"; write
// --output=--cpu if meant), and the last of a repeated flag wins.
#pragma once

#include <boost/program_options/options_description.hpp>
#include <boost/program_options/value_semantic.hpp>
#include <cstddef>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace example_cli {

namespace po = boost::program_options;

// Largest value an integer option takes unless it says otherwise.
inline constexpr long long kMaxInt = 1'000'000'000;

// Thrown by a notation's conversion: `expected` describes the accepted form ("an integer >= 3").
// The parser adds the flag and the value to the message.
class BadValue : public std::invalid_argument {
 public:
  explicit BadValue(const std::string& expected) : std::invalid_argument(expected) {}
};

// The whole text as a decimal integer / finite number, or nullopt (empty, trailing text,
// overflow, inf, nan).
std::optional<long long> to_integer(const std::string& text);
std::optional<float> to_float(const std::string& text);

// Value notations. `metavar` names the value in the usage text ("N", "PATH").
// custom: `apply` converts and stores the text, throwing BadValue when it is not what it expects.
po::value_semantic* custom(std::string metavar, std::function<void(const std::string&)> apply);
po::value_semantic* flag(bool* out, bool value_when_given = true);  // takes no value
po::value_semantic* text(std::string metavar, std::string* out);
po::value_semantic* choice(std::string metavar, std::string* out, std::vector<std::string> allowed);
po::value_semantic* number(std::string metavar, float* out, float min);  // >= min
po::value_semantic* positive(std::string metavar, float* out);           // > 0

// An integer in [min, max] stored into any integer type that holds that range.
template <class T>
po::value_semantic* integer(std::string metavar, T* out, long long min, long long max = kMaxInt) {
  static_assert(std::numeric_limits<T>::is_integer);
  return custom(std::move(metavar), [out, min, max](const std::string& v) {
    const std::optional<long long> x = to_integer(v);
    if (!x || *x < min) throw BadValue("an integer >= " + std::to_string(min));
    if (*x > max) throw BadValue("an integer <= " + std::to_string(max));
    *out = static_cast<T>(*x);
  });
}

// An option table plus the usage text printed from it. -h/--help is always there, last.
//
//   example_cli::CommandLine table(Options& opt) {
//     example_cli::CommandLine cl("usage: ...\n\n", 22, &opt.help);
//     cl.section("options:");
//     cl.add("window", example_cli::integer("N", &opt.window, 3), "window side in pixels");
//     cl.add("batch-size,batch_size", example_cli::integer("N", &opt.batch, 1), "per batch");
//     return cl;
//   }
//   ... example_cli::parse<Options, UsageError>(table, argc, argv);
class CommandLine {
 public:
  // intro: the usage text above the options. column: where help texts start. help: set by
  // -h/--help. all_underscore_spellings: every --long-name is also accepted as --long_name.
  CommandLine(std::string intro, std::size_t column, bool* help,
              bool all_underscore_spellings = false);

  // Starts a titled group ("options:") of the usage text.
  void section(const std::string& title);
  // Adds an option. names: comma-separated long names, the first one shown in the usage text,
  // then optionally a one-letter short name ("help,h"). help: '\n' starts a continuation line;
  // "" leaves the option out of the usage text (say where another option's help mentions it).
  // Takes ownership of `value`.
  void add(const std::string& names, po::value_semantic* value, const std::string& help);

  std::string usage() const;

  // Applies argv[1..] to the variables the notations point at, in order. Returns "" or the
  // message for the first mistake.
  std::string parse(int argc, const char* const* argv) const;

 private:
  // Declares the option to boost; returns its usage line ("" for a hidden one).
  std::string register_option(const std::string& names, po::value_semantic* value,
                              const std::string& help);

  // Whether `token` ("--cpu", "--window=3", "-h") spells one of the options.
  bool names_option(const std::string& token) const;

  std::string usage_;
  std::size_t column_;
  bool underscores_;
  std::string help_line_;
  std::shared_ptr<po::options_description> options_;
};

// An example's usage() and parse_args() from its option table `table(Options&)`; parse throws
// Error(message) at the first mistake.
template <class Options>
std::string usage(CommandLine (*table)(Options&)) {
  Options unused;
  return table(unused).usage();
}
template <class Options, class Error>
Options parse(CommandLine (*table)(Options&), int argc, const char* const* argv) {
  Options opt;
  if (std::string error = table(opt).parse(argc, argv); !error.empty()) throw Error(error);
  return opt;
}

}  // namespace example_cli
