// Typed errors used across gpurun. Inside the code we throw these; only the edges (main(), the
// worker SDK's run_main) turn them into text. Messages follow "<what> (<why>); <how to fix>".
#pragma once

#include <stdexcept>
#include <string>
#include <system_error>

namespace gpurun {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bad flags, environment or files given by the user. Maps to exit code 2 in the launcher.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// A blocking store operation ran out of time. The message names the address, op and keys.
class StoreTimeout : public Error {
 public:
  using Error::Error;
};

// Malformed bytes on the wire, or a peer that broke the protocol.
class ProtocolError : public Error {
 public:
  using Error::Error;
};

// A connection could not be made or broke (store, peer). Carries the errno-style code.
class NetworkError : public Error {
 public:
  NetworkError(const std::string& what, std::error_code code) : Error(what), code_(code) {}
  explicit NetworkError(const std::string& what) : Error(what) {}
  std::error_code code() const noexcept { return code_; }

 private:
  std::error_code code_;
};

// Could not bind a listening socket (address in use, permission, bad address).
class BindError : public NetworkError {
 public:
  BindError(const std::string& what, std::error_code code, std::string host, int port)
      : NetworkError(what, code), host_(std::move(host)), port_(port) {}
  const std::string& host() const noexcept { return host_; }
  int port() const noexcept { return port_; }

 private:
  std::string host_;
  int port_;
};

class SpawnError : public Error {
 public:
  using Error::Error;
};

class GpuProbeError : public Error {
 public:
  using Error::Error;
};

// A collective or communicator setup failed (NCCL/Gloo message included).
class CommError : public Error {
 public:
  using Error::Error;
};

// Exit codes of the gpurun binary (also listed in --help and the README). A failing worker's own
// exit code (or 128+signal) is passed through instead of kWorkerFailed whenever it is known.
enum class ExitCode : int {
  kOk = 0,
  kWorkerFailed = 1,
  kUsage = 2,
  kRendezvousFailed = 3,
  kNoGpu = 4,
  kTimeout = 124,
  kCannotExec = 127,  // a worker could not be executed (exec failed)
  kInterrupted = 130,
};

// Throws std::system_error for errno with "<what>: <strerror>".
[[noreturn]] void throw_errno(const std::string& what);
[[noreturn]] void throw_errno(int err, const std::string& what);

}  // namespace gpurun
