#include "checkpoint.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include "dataset.h"
#include "gpurun/common/io.h"

namespace train {
namespace {

constexpr const char* kMagic = "GPURUN-TRAIN-CHECKPOINT";
constexpr int kVersion = 1;

void write_all(int fd, const void* data, std::size_t n, const std::string& path) {
  if (!gpurun::write_all(fd, data, n)) {
    throw std::system_error(errno, std::generic_category(), "write " + path);
  }
}

std::map<std::string, std::string> parse_lines(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const auto sp = line.find('=');
    if (sp != std::string::npos) out[line.substr(0, sp)] = line.substr(sp + 1);
  }
  return out;
}

}  // namespace

void save_checkpoint(const std::string& path, const Checkpoint& ck) {
  std::string header = fmt::format(
      "{}\nversion={}\nepoch={}\nstep={}\nworld_size={}\nrng_seed={}\nn_params={}\n"
      "state_tensors={}\n",
      kMagic, kVersion, ck.epoch, ck.state.step, ck.world_size, ck.rng_seed, ck.state.params.size(),
      ck.state.v.empty() ? 1 : 2);
  std::istringstream sig(ck.signature);
  for (std::string line; std::getline(sig, line);) header += "cfg." + line + "\n";
  header += "end\n";

  std::string blob = header;
  auto append = [&blob](const std::vector<float>& v) {
    blob.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
  };
  append(ck.state.params);
  append(ck.state.m);
  append(ck.state.v);
  const std::uint64_t sum = fnv1a(blob.data(), blob.size());
  blob.append(reinterpret_cast<const char*>(&sum), sizeof sum);

  namespace fs = std::filesystem;
  const fs::path target(path);
  if (target.has_parent_path()) fs::create_directories(target.parent_path());
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "open " + tmp);
  try {
    write_all(fd, blob.data(), blob.size(), tmp);
    if (::fsync(fd) != 0) throw std::system_error(errno, std::generic_category(), "fsync " + tmp);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw std::system_error(err, std::generic_category(), "rename " + tmp + " -> " + path);
  }
  // Make the rename itself durable.
  const std::string dir = target.has_parent_path() ? target.parent_path().string() : ".";
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

Checkpoint load_checkpoint(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UsageError("cannot open checkpoint '" + path + "' (" + std::strerror(errno) + ")");
  std::string blob((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto corrupt = [&path](const std::string& why) {
    return UsageError("checkpoint '" + path + "' is unusable (" + why +
                      "); delete it to start fresh or point --save-dir elsewhere");
  };
  if (blob.rfind(kMagic, 0) != 0) throw corrupt("not a gpurun train checkpoint");
  const auto end = blob.find("\nend\n");
  if (end == std::string::npos) throw corrupt("truncated header");
  const std::size_t data_at = end + 5;
  auto kv = parse_lines(blob.substr(0, end));
  Checkpoint ck;
  std::size_t n = 0;
  int tensors = 0;
  try {
    if (std::stoi(kv.at("version")) != kVersion) throw corrupt("version " + kv.at("version"));
    ck.epoch = std::stoull(kv.at("epoch"));
    ck.state.step = std::stoull(kv.at("step"));
    ck.world_size = std::stoi(kv.at("world_size"));
    ck.rng_seed = std::stoull(kv.at("rng_seed"));
    n = std::stoull(kv.at("n_params"));
    tensors = std::stoi(kv.at("state_tensors"));
  } catch (const UsageError&) {
    throw;
  } catch (const std::exception&) {
    throw corrupt("header field missing or malformed");
  }
  if (tensors < 1 || tensors > 2) throw corrupt("bad state_tensors");
  const std::size_t floats = n * static_cast<std::size_t>(1 + tensors);
  if (blob.size() != data_at + floats * sizeof(float) + sizeof(std::uint64_t)) {
    throw corrupt(fmt::format("size {} bytes, expected {}", blob.size(),
                              data_at + floats * sizeof(float) + sizeof(std::uint64_t)));
  }
  std::uint64_t sum = 0;
  std::memcpy(&sum, blob.data() + blob.size() - sizeof sum, sizeof sum);
  if (sum != fnv1a(blob.data(), blob.size() - sizeof sum)) throw corrupt("checksum mismatch");
  for (const auto& [k, v] : kv) {
    if (k.rfind("cfg.", 0) == 0) ck.signature += k.substr(4) + "=" + v + "\n";
  }
  const char* p = blob.data() + data_at;
  auto take = [&p, n](std::vector<float>& v) {
    v.resize(n);
    std::memcpy(v.data(), p, n * sizeof(float));
    p += n * sizeof(float);
  };
  take(ck.state.params);
  take(ck.state.m);
  if (tensors == 2) take(ck.state.v);
  return ck;
}

std::string signature_diff(const std::string& checkpoint, const std::string& current) {
  const auto a = parse_lines(checkpoint);
  const auto b = parse_lines(current);
  std::string out;
  for (const auto& [k, v] : b) {
    const auto it = a.find(k);
    const std::string old = it == a.end() ? "(absent)" : it->second;
    if (old != v) out += (out.empty() ? "" : "; ") + k + ": checkpoint " + old + ", this run " + v;
  }
  return out;
}

}  // namespace train
