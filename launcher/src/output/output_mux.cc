#include "output/output_mux.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>

#include "gpurun/common/error.h"
#include "gpurun/common/io.h"

namespace gpurun::launcher {

namespace {

constexpr const char* kColors[] = {"\x1b[36m", "\x1b[32m", "\x1b[33m", "\x1b[35m",
                                   "\x1b[34m", "\x1b[96m", "\x1b[92m", "\x1b[93m"};
constexpr const char* kReset = "\x1b[0m";

std::string substitute(std::string templ, const std::string& key, const std::string& value) {
  const std::string patterns[] = {"${" + key + "}", "$" + key};
  for (const auto& pat : patterns) {
    std::size_t pos = 0;
    while ((pos = templ.find(pat, pos)) != std::string::npos) {
      // "$rank" must not match the start of "$ranks": Template identifiers end at a non-word char.
      const std::size_t end = pos + pat.size();
      if (pat[1] != '{' && end < templ.size() &&
          (std::isalnum(static_cast<unsigned char>(templ[end])) || templ[end] == '_')) {
        pos = end;
        continue;
      }
      templ.replace(pos, pat.size(), value);
      pos += value.size();
    }
  }
  return templ;
}

}  // namespace

OutputMux::OutputMux(OutputOptions options) : options_(std::move(options)) {}

OutputMux::~OutputMux() { flush_all(); }

std::string OutputMux::prefix_for(int local_rank, int rank, bool teed) const {
  if (!options_.tag) return "";
  if (!options_.prefix_template.empty()) {
    std::string p = options_.prefix_template;
    p = substitute(p, "role_name", options_.role);
    p = substitute(p, "local_rank", std::to_string(local_rank));
    p = substitute(p, "rank", std::to_string(rank));
    return p;
  }
  if (teed) return fmt::format("[{}{}]:", options_.role, local_rank);  // torchrun's, no space
  if (!options_.host.empty()) return fmt::format("[{} rank {}] ", options_.host, rank);
  return fmt::format("[rank {}] ", rank);
}

void OutputMux::begin_attempt(const std::vector<RankOutput>& ranks,
                              const std::string& filtered_stdout_path,
                              const std::string& filtered_stderr_path) {
  flush_all();
  ranks_.clear();
  auto open_log = [](const std::string& path, UniqueFd& fd) {
    fd.reset();
    if (path.empty()) return;
    fd.reset(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
    if (!fd) {
      throw SpawnError(fmt::format("cannot open log file '{}' ({}); check --log-dir", path,
                                   std::strerror(errno)));
    }
  };
  open_log(options_.stdout_filters.empty() ? "" : filtered_stdout_path, filtered_out_);
  open_log(options_.stderr_filters.empty() ? "" : filtered_stderr_path, filtered_err_);
  for (const auto& info : ranks) {
    Rank r;
    r.info = info;
    auto set_prefix = [&](Channel& c, bool teed) {
      c.plain_prefix = prefix_for(info.local_rank, info.rank, teed);
      c.prefix = c.plain_prefix;
      // torchrun's tee header and a user template stay exactly as given (log scrapers).
      if (options_.color && !c.prefix.empty() && !teed && options_.prefix_template.empty()) {
        c.prefix = std::string(kColors[static_cast<std::size_t>(info.rank) % std::size(kColors)]) +
                   c.prefix + kReset;
      }
    };
    set_prefix(r.out, !info.tee_stdout_path.empty());
    set_prefix(r.err, !info.tee_stderr_path.empty());
    r.out.console = info.console_stdout;
    r.err.console = info.console_stderr;
    open_log(info.tee_stdout_path, r.out.tee);
    open_log(info.tee_stderr_path, r.err.tee);
    ranks_.emplace(info.local_rank, std::move(r));
  }
}

void OutputMux::on_output(int local_rank, Stream stream, std::string_view data) {
  auto it = ranks_.find(local_rank);
  if (it == ranks_.end()) {
    // Not announced (a straggler from a previous attempt): pass it through untagged.
    write_console(stream, data);
    return;
  }
  Channel& c = channel(it->second, stream);
  if (c.tee) write_all(c.tee.get(), data);  // exact bytes, no prefix (torchrun's files)
  c.partial.append(data);
  emit_lines(it->second, stream, /*flush_partial=*/false);
}

void OutputMux::on_closed(int local_rank, Stream stream) {
  auto it = ranks_.find(local_rank);
  if (it != ranks_.end()) emit_lines(it->second, stream, /*flush_partial=*/true);
}

void OutputMux::on_exit(int local_rank) {
  auto it = ranks_.find(local_rank);
  if (it == ranks_.end()) return;
  emit_lines(it->second, Stream::kStdout, true);
  emit_lines(it->second, Stream::kStderr, true);
}

void OutputMux::flush_all() {
  for (auto& [lr, r] : ranks_) {
    emit_lines(r, Stream::kStdout, true);
    emit_lines(r, Stream::kStderr, true);
  }
}

void OutputMux::remember(Channel& c, std::string_view line) {
  if (options_.ring_lines == 0) return;
  if (c.ring.size() == options_.ring_lines) c.ring.pop_front();
  c.ring.emplace_back(line);
}

// Moves every complete line ('\n', or '\r' for progress bars) of the channel to the console in
// one write. With flush_partial, a trailing partial line goes too, ended with '\n'.
void OutputMux::emit_lines(Rank& r, Stream s, bool flush_partial) {
  Channel& c = channel(r, s);
  if (c.partial.empty()) return;
  // --duplicate-*-filters: lines of tee'd streams that contain a filter, prefixed as on the
  // console (without colour), into the attempt's one filtered file.
  const int filtered_fd =
      c.tee ? (s == Stream::kStdout ? filtered_out_.get() : filtered_err_.get()) : -1;
  const auto& filters = s == Stream::kStdout ? options_.stdout_filters : options_.stderr_filters;
  std::string filtered;
  std::string batch;
  std::size_t start = 0;
  const std::string& buf = c.partial;
  for (;;) {
    std::size_t end = buf.find_first_of("\n\r", start);
    std::string_view line;
    std::string_view terminator = "\n";
    if (end == std::string::npos) {
      const std::size_t left = buf.size() - start;
      if (left == 0) break;
      if (!flush_partial && left < options_.max_line_bytes) break;
      end = buf.size();
      line = std::string_view(buf).substr(start, left);
    } else if (buf[end] == '\r' && end + 1 == buf.size() && !flush_partial) {
      break;  // "\r" or "\r\n"? wait for the next byte
    } else {
      line = std::string_view(buf).substr(start, end - start);
      if (buf[end] == '\r' && end + 1 < buf.size() && buf[end + 1] == '\n') {
        terminator = "\r\n";
      } else {
        terminator = std::string_view(buf).substr(end, 1);
      }
      end += terminator.size();
    }
    remember(c, line);
    if (filtered_fd >= 0 && std::any_of(filters.begin(), filters.end(), [&](const std::string& f) {
          return line.find(f) != std::string_view::npos;
        })) {
      filtered += c.plain_prefix;
      filtered += line;
      filtered += '\n';
    }
    if (c.console) {
      batch += c.prefix;
      batch += line;
      batch += terminator;
    }
    start = end;
  }
  c.partial.erase(0, start);
  if (!filtered.empty()) write_all(filtered_fd, filtered);
  if (!batch.empty()) write_console(s, batch);
}

void OutputMux::write_console(Stream s, std::string_view text) {
  bool& broken = s == Stream::kStdout ? stdout_broken_ : stderr_broken_;
  if (broken) return;
  const int fd = s == Stream::kStdout ? options_.stdout_fd : options_.stderr_fd;
  if (!write_all(fd, text)) broken = true;  // reader gone: drop console output, keep running
}

std::vector<std::string> OutputMux::last_lines(int local_rank, Stream stream) const {
  auto it = ranks_.find(local_rank);
  if (it == ranks_.end()) return {};
  const Channel& c = stream == Stream::kStdout ? it->second.out : it->second.err;
  std::vector<std::string> out(c.ring.begin(), c.ring.end());
  // Include a partial line not yet flushed.
  if (!c.partial.empty()) out.push_back(c.partial);
  if (out.size() > options_.ring_lines) out.erase(out.begin(), out.end() - options_.ring_lines);
  return out;
}

std::vector<std::string> tail_file(const std::string& path, std::size_t n) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return {};
  f.seekg(0, std::ios::end);
  const auto size = static_cast<long long>(f.tellg());
  const long long from = std::max(0LL, size - 65536);
  f.seekg(from);
  std::string data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < data.size()) {
    std::size_t end = data.find('\n', start);
    if (end == std::string::npos) end = data.size();
    lines.push_back(data.substr(start, end - start));
    start = end + 1;
  }
  if (from > 0 && !lines.empty()) lines.erase(lines.begin());  // cut mid-line
  if (lines.size() > n) lines.erase(lines.begin(), lines.end() - static_cast<long>(n));
  return lines;
}

}  // namespace gpurun::launcher
