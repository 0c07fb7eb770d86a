#include "gpurun/worker/console.h"

#include <cxxabi.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <typeinfo>

#include "console_detail.h"
#include "gpurun/common/duration.h"
#include "gpurun/common/io.h"
#include "gpurun/common/log.h"

namespace gpurun::worker {
namespace detail {

std::string json_quote(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += fmt::format("\\u{:04x}", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

std::string error_file_json(std::string_view message, std::string_view traceback,
                            std::int64_t timestamp_s) {
  return fmt::format(
      "{{\"message\": {{\"message\": {}, \"extraInfo\": {{\"py_callstack\": {}, \"timestamp\": "
      "\"{}\"}}}}}}\n",
      json_quote(message), json_quote(traceback), timestamp_s);
}

namespace {
std::string hms(double secs) {
  if (!(secs >= 0) || secs > 359999) return "--:--";
  auto s = static_cast<long>(secs + 0.5);
  if (s >= 3600) return fmt::format("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60);
  return fmt::format("{:02}:{:02}", s / 60, s % 60);
}
}  // namespace

std::string format_progress(std::string_view label, std::uint64_t count, std::uint64_t total,
                            std::string_view unit, std::chrono::duration<double> elapsed,
                            std::string_view postfix) {
  const double secs = elapsed.count();
  const double rate = secs > 0 ? static_cast<double>(count) / secs : 0.0;
  std::string out(label);
  if (!out.empty()) out += ": ";
  if (total > 0) {
    const double frac = std::min(1.0, static_cast<double>(count) / static_cast<double>(total));
    const double eta =
        rate > 0 ? static_cast<double>(total > count ? total - count : 0) / rate : -1;
    out += fmt::format("{:3.0f}% {}/{} {} [{}<{}, {:.1f} {}/s]", frac * 100.0, count, total, unit,
                       hms(secs), hms(eta), rate, unit);
  } else {
    out += fmt::format("{} {} [{}, {:.1f} {}/s]", count, unit, hms(secs), rate, unit);
  }
  if (!postfix.empty()) {
    out += ' ';
    out += postfix;
  }
  return out;
}

}  // namespace detail

namespace {}  // namespace

void print_root(const Context& ctx, std::string_view text) {
  if (ctx.rank() != 0) return;
  std::string line(text);
  if (line.empty() || line.back() != '\n') line += '\n';
  std::fflush(stdout);
  write_all(STDOUT_FILENO, line);
}

struct ProgressBar::Impl {
  bool enabled = false;
  bool tty = false;
  bool done = false;
  std::string label;
  std::uint64_t total = 0;
  std::string unit;
  std::uint64_t count = 0;
  std::string postfix;
  Clock::time_point start = Clock::now();
  Clock::time_point last_draw{};
  int last_decile = -1;
  std::size_t last_width = 0;

  void draw(bool final_line) {
    auto now = Clock::now();
    std::string text = detail::format_progress(label, count, total, unit, now - start, postfix);
    last_draw = now;
    if (tty) {
      std::string pad = text.size() < last_width ? std::string(last_width - text.size(), ' ') : "";
      last_width = text.size();
      write_all(STDOUT_FILENO, "\r" + text + pad + (final_line ? "\n" : ""));
    } else {
      write_all(STDOUT_FILENO, text + "\n");
    }
  }
};

ProgressBar::ProgressBar(const Context& ctx, std::string label, std::uint64_t total,
                         std::string unit)
    : impl_(std::make_unique<Impl>()) {
  impl_->enabled = ctx.rank() == 0;
  impl_->tty = ::isatty(STDOUT_FILENO) == 1;
  impl_->label = std::move(label);
  impl_->total = total;
  impl_->unit = std::move(unit);
}

ProgressBar::~ProgressBar() {
  try {
    if (impl_ && impl_->enabled && !impl_->done) finish();
  } catch (...) {
  }
}

void ProgressBar::update(std::uint64_t n, std::string_view postfix) {
  auto& s = *impl_;
  if (!s.enabled || s.done) return;
  s.count += n;
  if (!postfix.empty()) s.postfix = std::string(postfix);
  auto now = Clock::now();
  if (s.tty) {
    // Redraw at most 10 times a second.
    if (now - s.last_draw >= std::chrono::milliseconds(100) || s.count >= s.total) s.draw(false);
    return;
  }
  // Not a terminal (a log file, gpurun's pipe): one line per 10% or every 30 s.
  int decile =
      s.total > 0 ? static_cast<int>(std::min<std::uint64_t>(10, s.count * 10 / s.total)) : -1;
  if ((s.total > 0 && decile > s.last_decile) || now - s.last_draw >= std::chrono::seconds(30)) {
    s.last_decile = std::max(s.last_decile, decile);
    if (s.total > 0 && s.count >= s.total) return;  // finish() prints the last line
    s.draw(false);
  }
}

void ProgressBar::finish(std::string_view postfix) {
  auto& s = *impl_;
  if (!s.enabled || s.done) return;
  if (!postfix.empty()) s.postfix = std::string(postfix);
  s.done = true;
  s.draw(true);
}

void write_error_file(std::string_view message, std::string_view traceback) {
  const char* path = std::getenv("TORCHELASTIC_ERROR_FILE");
  if (path == nullptr || *path == '\0') return;
  std::ofstream f(path, std::ios::trunc);
  if (!f) {
    GPURUN_LOG_WARN("worker", "cannot write the error file {} (TORCHELASTIC_ERROR_FILE)", path);
    return;
  }
  f << detail::error_file_json(message, traceback, static_cast<std::int64_t>(std::time(nullptr)));
}

namespace {
std::string demangle(const char* name) {
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string out = (status == 0 && d != nullptr) ? d : name;
  std::free(d);
  return out;
}

void report(const std::string& what, const std::string& type) {
  std::string prefix = log::prefix();
  if (prefix.empty()) prefix = "[worker]";
  std::fflush(stdout);
  write_all(STDERR_FILENO, fmt::format("{} error: {}\n", prefix, what));
  write_error_file(what, fmt::format("{}: {}", type, what));
}
}  // namespace

int run_main(const std::function<int()>& body) {
  try {
    return body();
  } catch (const std::exception& e) {
    report(e.what(), demangle(typeid(e).name()));
  } catch (...) {
    report("unknown exception (not derived from std::exception)", "unknown");
  }
  return 1;
}

}  // namespace gpurun::worker
