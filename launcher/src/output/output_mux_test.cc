#include "output/output_mux.h"

#include <sys/mman.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>

using namespace gpurun;
using namespace gpurun::launcher;

namespace {

struct MemFile {
  int fd = ::memfd_create("gpurun-test", 0);
  ~MemFile() { ::close(fd); }
  std::string read() const {
    std::string out;
    char buf[4096];
    ssize_t n;
    off_t off = 0;
    while ((n = ::pread(fd, buf, sizeof buf, off)) > 0) {
      out.append(buf, static_cast<std::size_t>(n));
      off += n;
    }
    return out;
  }
};

std::vector<RankOutput> ranks(int n) {
  std::vector<RankOutput> out;
  for (int i = 0; i < n; ++i) {
    RankOutput r;
    r.local_rank = i;
    r.rank = i;
    out.push_back(r);
  }
  return out;
}

}  // namespace

TEST_CASE("mux: whole lines only, prefixed, never interleaved mid-line", "[mux]") {
  MemFile out, err;
  OutputOptions o;
  o.stdout_fd = out.fd;
  o.stderr_fd = err.fd;
  OutputMux mux(o);
  mux.begin_attempt(ranks(2));
  mux.on_output(0, Stream::kStdout, "hel");
  mux.on_output(1, Stream::kStdout, "wor");
  mux.on_output(0, Stream::kStdout, "lo\nsecond ");
  mux.on_output(1, Stream::kStdout, "ld\n");
  mux.on_output(1, Stream::kStderr, "oops\n");
  CHECK(out.read() == "[rank 0] hello\n[rank 1] world\n");
  CHECK(err.read() == "[rank 1] oops\n");
  mux.on_closed(0, Stream::kStdout);  // the partial last line is flushed at EOF
  CHECK(out.read() == "[rank 0] hello\n[rank 1] world\n[rank 0] second \n");
}

TEST_CASE("mux: carriage returns (progress bars) end a line, CR LF is one ending", "[mux]") {
  MemFile out;
  OutputOptions o;
  o.stdout_fd = out.fd;
  OutputMux mux(o);
  mux.begin_attempt(ranks(1));
  mux.on_output(0, Stream::kStdout, "10%\r20%\r");
  mux.on_output(0, Stream::kStdout, "\ndone\r\n");
  CHECK(out.read() == "[rank 0] 10%\r[rank 0] 20%\r\n[rank 0] done\r\n");
}

TEST_CASE("mux: ring buffer keeps the last lines, even off the console", "[mux]") {
  MemFile out, err;
  OutputOptions o;
  o.stdout_fd = out.fd;
  o.stderr_fd = err.fd;
  o.ring_lines = 3;
  OutputMux mux(o);
  auto r = ranks(1);
  r[0].console_stderr = false;
  mux.begin_attempt(r);
  mux.on_output(0, Stream::kStderr, "a\nb\nc\nd\ne");
  CHECK(err.read().empty());
  CHECK(mux.last_lines(0, Stream::kStderr) == std::vector<std::string>{"c", "d", "e"});
  mux.on_exit(0);
  CHECK(mux.last_lines(0, Stream::kStderr) == std::vector<std::string>{"c", "d", "e"});
}

TEST_CASE("mux: prefix template, colours, untagged", "[mux]") {
  OutputOptions o;
  o.prefix_template = "[${role_name}${local_rank}|$rank]:";
  CHECK(OutputMux(o).prefix_for(1, 5) == "[default1|5]:");
  o.prefix_template = "";
  o.host = "node7";
  CHECK(OutputMux(o).prefix_for(1, 5) == "[node7 rank 5] ");
  CHECK(OutputMux(o).prefix_for(1, 5, /*teed=*/true) == "[default1]:");  // no host (torchrun)
  o.role = "trainer";
  CHECK(OutputMux(o).prefix_for(3, 5, /*teed=*/true) == "[trainer3]:");
  o.tag = false;
  CHECK(OutputMux(o).prefix_for(1, 5).empty());

  MemFile out;
  OutputOptions c;
  c.color = true;
  c.stdout_fd = out.fd;
  OutputMux mux(c);
  mux.begin_attempt(ranks(1));
  mux.on_output(0, Stream::kStdout, "x\n");
  CHECK(out.read() == "\x1b[36m[rank 0] \x1b[0mx\n");
}

TEST_CASE("mux: a tee'd stream gets torchrun's header, the other gpurun's prefix", "[mux]") {
  MemFile out, err;
  const std::string dir = "/tmp/gpurun_mux_tee_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  OutputOptions o;
  o.stdout_fd = out.fd;
  o.stderr_fd = err.fd;
  o.color = true;  // never on torchrun's header: scrapers match it exactly
  OutputMux mux(o);
  auto rs = ranks(2);
  rs[1].tee_stderr_path = dir + "/stderr.log";
  mux.begin_attempt(rs);
  mux.on_output(1, Stream::kStderr, "e\n");
  mux.on_output(1, Stream::kStdout, "o\n");
  CHECK(err.read() == "[default1]:e\n");
  CHECK(out.read() == "\x1b[32m[rank 1] \x1b[0mo\n");
  std::filesystem::remove_all(dir);
}

TEST_CASE("mux: tee files get the exact bytes, very long lines are cut", "[mux]") {
  char tmpl[] = "/tmp/gpurun_mux_test_XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string path = std::string(tmpl) + "/stdout.log";
  MemFile out;
  OutputOptions o;
  o.stdout_fd = out.fd;
  o.max_line_bytes = 8;
  OutputMux mux(o);
  auto r = ranks(1);
  r[0].tee_stdout_path = path;
  mux.begin_attempt(r);
  mux.on_output(0, Stream::kStdout, "0123456789");
  mux.on_output(0, Stream::kStdout, "ab\n");
  mux.flush_all();
  std::ifstream f(path);
  std::string content((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  CHECK(content == "0123456789ab\n");
  CHECK(out.read() == "[default0]:0123456789\n[default0]:ab\n");  // torchrun's tee header
  std::remove(path.c_str());
  ::rmdir(tmpl);
}

TEST_CASE("tail_file returns the last lines", "[mux]") {
  char tmpl[] = "/tmp/gpurun_mux_test_XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string path = std::string(tmpl) + "/stderr.log";
  {
    std::ofstream f(path);
    for (int i = 0; i < 20; ++i) f << "line " << i << "\n";
  }
  CHECK(tail_file(path, 2) == std::vector<std::string>{"line 18", "line 19"});
  CHECK(tail_file(path + ".missing", 2).empty());
  std::remove(path.c_str());
  ::rmdir(tmpl);
}

TEST_CASE("mux: --duplicate-*-filters copy matching tee'd lines of every rank to one file",
          "[mux]") {
  MemFile out, err;
  const std::string dir = "/tmp/gpurun_mux_filtered_" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  OutputOptions o;
  o.stdout_fd = out.fd;
  o.stderr_fd = err.fd;
  o.stdout_filters = {"loss", "acc"};
  OutputMux mux(o);
  auto rs = ranks(3);
  rs[0].tee_stdout_path = dir + "/0.log";
  rs[1].tee_stdout_path = dir + "/1.log";  // rank 2 is not tee'd: its lines are not copied
  mux.begin_attempt(rs, dir + "/filtered_stdout.log", dir + "/filtered_stderr.log");
  mux.on_output(0, Stream::kStdout, "step 1 loss 0.5\nstep 1 lr 0.1\n");
  mux.on_output(1, Stream::kStdout, "epoch acc 93%\n");
  mux.on_output(2, Stream::kStdout, "loss from rank 2\n");
  mux.on_output(0, Stream::kStderr, "loss on stderr\n");  // no stderr filters
  mux.on_output(1, Stream::kStdout, "partial loss");
  mux.flush_all();
  auto slurp = [](const std::string& p) {
    std::ifstream f(p);
    return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  };
  CHECK(slurp(dir + "/filtered_stdout.log") ==
        "[default0]:step 1 loss 0.5\n[default1]:epoch acc 93%\n[default1]:partial loss\n");
  CHECK_FALSE(std::filesystem::exists(dir + "/filtered_stderr.log"));
  CHECK(slurp(dir + "/0.log") == "step 1 loss 0.5\nstep 1 lr 0.1\n");  // tee files unchanged
  std::filesystem::remove_all(dir);
}
