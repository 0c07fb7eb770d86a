// `gpurun store` / `gpurun-store`: runs a StoreServer in the foreground until SIGINT/SIGTERM.
#include "gpurun/tools/store_main.h"

#include <signal.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>

#include "gpurun/common/duration.h"
#include "gpurun/common/env.h"
#include "gpurun/common/error.h"
#include "gpurun/common/log.h"
#include "gpurun/rendezvous/bind_error.h"
#include "gpurun/rendezvous/store_server.h"

namespace gpurun::rendezvous {

namespace po = boost::program_options;

int store_main(int argc, char** argv) {
  StoreServerOptions opts;
  std::string log_level;
  bool no_raise = false;
  bool no_peer_check = false;
  std::string frame_timeout;
  std::vector<std::string> allow;
  try {
    apply_store_env(opts, current_environment());
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "gpurun: error: %s\n", e.what());
    return static_cast<int>(ExitCode::kUsage);
  }
  po::options_description desc(
      "Usage: gpurun store [options]\n"
      "Runs gpurun's TCPStore-compatible key-value store (PyTorch 1.13 and 2.x clients) in the\n"
      "foreground; prints 'gpurun store listening on <host>:<port>' once it accepts connections\n"
      "and stops on SIGINT/SIGTERM.\n\nOptions");
  unsigned port = 0;
  desc.add_options()("help,h", "print this help")(
      "host", po::value(&opts.host)->default_value(opts.host),
      "address to bind: 127.0.0.1, 0.0.0.0 (every IPv4 interface), :: (every interface), ::1, "
      "or a host name")("port,p", po::value(&port)->default_value(0),
                        "TCP port; 0 picks a free port")(
      "max-connections", po::value(&opts.max_connections)->default_value(opts.max_connections),
      "refuse connections beyond this many (0: RLIMIT_NOFILE minus a reserve of a quarter)")(
      "max-output-bytes", po::value(&opts.max_output_bytes)->default_value(opts.max_output_bytes),
      "replies queued for one connection (a single value is always allowed)")(
      "max-store-bytes", po::value(&opts.max_store_bytes)->default_value(opts.max_store_bytes),
      "stored keys, values, queue items and wait registrations together "
      "(GPURUN_STORE_MAX_BYTES)")(
      "max-buffer-bytes", po::value(&opts.max_buffer_bytes)->default_value(opts.max_buffer_bytes),
      "read buffers and queued replies of all connections together")(
      "frame-timeout", po::value(&frame_timeout),
      "close a connection whose started request is incomplete after this long, e.g. 60s; 0 = "
      "never (GPURUN_STORE_FRAME_TIMEOUT; default 60s)")(
      "no-peer-uid-check", po::bool_switch(&no_peer_check),
      "accept local connections from any user (default: only the uid running the store; "
      "GPURUN_STORE_CHECK_PEER_UID=0)")(
      "allow", po::value(&allow)->composing(),
      "a host, address or address block (10.0.0.0/8) of another node that may connect "
      "(repeatable, or comma-separated; any = every host; default: any remote address; "
      "GPURUN_STORE_ALLOW=h1,h2)")(
      "max-key-bytes", po::value(&opts.max_key_bytes)->default_value(opts.max_key_bytes),
      "longest key accepted (PyTorch's libuv server: 8192)")(
      "max-value-bytes", po::value(&opts.max_value_bytes)->default_value(opts.max_value_bytes),
      "largest value accepted (PyTorch's libuv server: 8 MiB)")(
      "max-keys-per-request",
      po::value(&opts.max_keys_per_request)->default_value(opts.max_keys_per_request),
      "most keys in one WAIT/CHECK/MULTI_GET/MULTI_SET (PyTorch's libuv server: 131072)")(
      "no-raise-fd-limit", po::bool_switch(&no_raise),
      "keep RLIMIT_NOFILE as it is (default: raise the soft limit to the hard limit)")(
      "log-level", po::value(&log_level),
      "error|warn|info|debug|trace (default: GPURUN_LOG_LEVEL or warn)");
  try {
    po::variables_map vm;
    po::store(po::command_line_parser(argc, argv).options(desc).run(), vm);
    po::notify(vm);
    if (vm.count("help")) {
      std::cout << desc << "\n";
      return 0;
    }
    if (port > 65535) {
      throw ConfigError(fmt::format("invalid --port {} (out of range); use 0..65535", port));
    }
    if (!log_level.empty()) log::configure(log::parse_level(log_level));
    if (!frame_timeout.empty())
      opts.frame_timeout = parse_duration(frame_timeout, "--frame-timeout");
    if (no_peer_check) opts.check_peer_uid = false;
    if (!allow.empty()) {
      opts.allow_hosts.clear();
      opts.allow_origin = "--allow";
      for (const auto& a : allow) {
        for (const auto& h : split(a, ',')) {
          if (auto t = trim(h); !t.empty()) opts.allow_hosts.push_back(t);
        }
      }
    }
  } catch (const po::error& e) {
    std::fprintf(stderr, "gpurun: error: %s; see 'gpurun store --help'\n", e.what());
    return static_cast<int>(ExitCode::kUsage);
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "gpurun: error: %s\n", e.what());
    return static_cast<int>(ExitCode::kUsage);
  }
  opts.port = static_cast<std::uint16_t>(port);
  opts.raise_fd_limit = !no_raise;

  try {
    boost::asio::io_context io(1);
    StoreServer server(io, opts);
    boost::asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const boost::system::error_code& ec, int sig) {
      if (ec) return;
      GPURUN_LOG_INFO("store", "signal {} received, stopping", sig);
      server.stop();
    });
    std::printf("gpurun store listening on %s\n", server.address().c_str());
    std::fflush(stdout);
    io.run();
    return 0;
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "gpurun: error: %s\n", e.what());
    return static_cast<int>(ExitCode::kUsage);
  } catch (const BindError& e) {
    return report_bind_failure(e,
                               {.in_use = "pass --port 0 or pick a free port",
                                .other = "check --host (it must be a local address) and --port"});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpurun: error: store failed (%s)\n", e.what());
    return static_cast<int>(ExitCode::kRendezvousFailed);
  }
}

}  // namespace gpurun::rendezvous
