// etcd v3 over the HTTP/JSON gateway with Boost.Beast (see etcd_client.h). Every socket operation
// is asynchronous on a private io_context run until the attempt's deadline, so no call can hang:
// at the deadline the socket is closed and the attempt counts as "no answer".
#include "etcd_client.h"

#include <fmt/format.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/detail/base64.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <thread>

#include "gpurun/common/error.h"

namespace gpurun::rendezvous::etcd {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using boost::system::error_code;

namespace {

constexpr milliseconds kAttemptTimeout{5'000};  // one member's chance to answer a unary call
constexpr milliseconds kMaxBackoff{500};        // between sweeps of the member list
constexpr milliseconds kCancelCheck{100};       // how soon a cancelled watch stops

std::int64_t i64(const json& j, const char* field) {
  auto it = j.find(field);
  if (it == j.end()) return 0;  // grpc-gateway omits zero values
  if (it->is_string()) return std::stoll(it->get<std::string>());
  return it->get<std::int64_t>();
}

// One connection to one member with a deadline over every operation on it.
class Attempt {
 public:
  Attempt(const HostPort& ep, Clock::time_point deadline, const std::atomic<bool>* cancel = nullptr)
      : ep_(ep), deadline_(deadline), cancel_(cancel) {}

  // Connects and sends POST `path` with `body`; then read_response() or read_some().
  error_code start(const std::string& path, const std::string& body) {
    tcp::resolver resolver(ioc_);
    tcp::resolver::results_type results;
    error_code ec = await([&](auto h) {
      resolver.async_resolve(ep_.host, ep_.port,
                             [&results, h](error_code e, tcp::resolver::results_type r) mutable {
                               results = std::move(r);
                               h(e);
                             });
    });
    if (ec) return ec;
    ec = await([&](auto h) {
      net::async_connect(sock_, results, [h](error_code e, const tcp::endpoint&) mutable { h(e); });
    });
    if (ec) return ec;
    req_ = {http::verb::post, path, 11};
    req_.set(http::field::host, ep_.str());
    req_.set(http::field::content_type, "application/json");
    req_.body() = body;
    req_.prepare_payload();
    ec = await([&](auto h) {
      http::async_write(sock_, req_, [h](error_code e, std::size_t) mutable { h(e); });
    });
    if (ec) return ec;
    parser_.body_limit(boost::none);
    return await([&](auto h) {
      http::async_read_header(sock_, buf_, parser_,
                              [h](error_code e, std::size_t) mutable { h(e); });
    });
  }

  error_code read_response() {
    if (parser_.is_done()) return {};
    return await([&](auto h) {
      http::async_read(sock_, buf_, parser_, [h](error_code e, std::size_t) mutable { h(e); });
    });
  }

  // Reads more of a streamed body (appended to body()); http::error::end_of_stream when done.
  error_code read_some() {
    if (parser_.is_done()) return http::error::end_of_stream;
    return await([&](auto h) {
      http::async_read_some(sock_, buf_, parser_, [h](error_code e, std::size_t) mutable { h(e); });
    });
  }

  unsigned status() const { return parser_.get().result_int(); }
  std::string& body() { return parser_.get().body(); }

 private:
  // Runs one asynchronous operation to completion or to the deadline (then: timed_out).
  template <class Start>
  error_code await(Start start) {
    std::optional<error_code> res;
    start([&res](error_code e) { res = e; });
    ioc_.restart();
    while (!res) {
      // With a cancel flag, wake every kCancelCheck to look at it (a long watch stays stoppable).
      const auto until = cancel_ ? std::min(deadline_, Clock::now() + kCancelCheck) : deadline_;
      if (ioc_.run_one_until(until) == 0 && !res) {
        if (Clock::now() < deadline_ && !(cancel_ && cancel_->load())) continue;
        error_code ignored;
        sock_.close(ignored);  // aborts what is pending
        ioc_.restart();
        while (!res && ioc_.run_one() > 0) {
        }
        return net::error::timed_out;
      }
    }
    return *res;
  }

  const HostPort& ep_;
  Clock::time_point deadline_;
  const std::atomic<bool>* cancel_;
  net::io_context ioc_;
  tcp::socket sock_{ioc_};
  beast::flat_buffer buf_;
  http::request<http::string_body> req_;
  http::response_parser<http::string_body> parser_;
};

std::string ec_text(const error_code& ec) {
  if (ec == net::error::timed_out) return "no answer in time";
  if (ec == net::error::connection_refused) return "connection refused";
  return ec.message();
}

// grpc status codes that mean "try another member": unavailable, deadline exceeded, aborted,
// unknown (etcd's "leader changed" / "timed out" travel as Unknown through the gateway).
bool transient(const json& err) {
  const int code = static_cast<int>(i64(err, "code"));
  const std::string msg = err.value("error", err.value("message", ""));
  return code == 14 || code == 4 || code == 10 ||
         (code == 2 &&
          (msg.find("leader") != std::string::npos || msg.find("timed out") != std::string::npos ||
           msg.find("stopped") != std::string::npos));
}

std::string gateway_missing(const HostPort& ep, const std::string& path, unsigned status) {
  return fmt::format(
      "{} answered HTTP {} for {}: no etcd v3 HTTP/JSON gateway there (etcd 3.4 or newer serves "
      "it on its client port; an older etcd serves only /v3beta, or another service listens on "
      "that port)",
      ep.str(), status, path);
}

void backoff(int sweep, Clock::time_point deadline) {
  const auto pause = std::min(milliseconds(25) * (1 << std::min(sweep, 5)), kMaxBackoff);
  std::this_thread::sleep_for(std::min(pause, remaining(deadline)));
}

}  // namespace

// ---- helpers ----

std::string b64encode(std::string_view bytes) {
  std::string out(beast::detail::base64::encoded_size(bytes.size()), '\0');
  out.resize(beast::detail::base64::encode(out.data(), bytes.data(), bytes.size()));
  return out;
}

std::string b64decode(std::string_view text) {
  std::string out(beast::detail::base64::decoded_size(text.size()), '\0');
  auto [written, read] = beast::detail::base64::decode(out.data(), text.data(), text.size());
  std::size_t data = text.size();  // Beast stops at the '=' padding
  while (data > 0 && text[data - 1] == '=') --data;
  if (read != data) throw ProtocolError("etcd: malformed base64 in an answer");
  out.resize(written);
  return out;
}

KeyValue kv_from_json(const json& j) {
  KeyValue kv;
  kv.key = b64decode(j.value("key", ""));
  kv.value = to_bytes(b64decode(j.value("value", "")));
  kv.create_revision = i64(j, "create_revision");
  kv.mod_revision = i64(j, "mod_revision");
  kv.lease = i64(j, "lease");
  return kv;
}

std::string HostPort::str() const {
  return host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port)
                                             : fmt::format("{}:{}", host, port);
}

std::vector<HostPort> parse_endpoints(const std::string& text) {
  std::vector<HostPort> out;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const auto comma = text.find(',', pos);
    std::string item =
        text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    pos = comma == std::string::npos ? text.size() + 1 : comma + 1;
    while (!item.empty() && item.front() == ' ') item.erase(0, 1);
    while (!item.empty() && item.back() == ' ') item.pop_back();
    if (item.empty()) continue;
    for (const char* scheme : {"http://", "https://"}) {
      if (item.rfind(scheme, 0) == 0) {
        if (std::string(scheme) == "https://") {
          throw ConfigError(fmt::format(
              "etcd endpoint '{}' uses TLS, which gpurun's etcd client does not speak; give the "
              "member's plain http client URL (HOST:2379)",
              item));
        }
        item.erase(0, std::string(scheme).size());
      }
    }
    while (!item.empty() && item.back() == '/') item.pop_back();
    HostPort hp;
    hp.port = "2379";
    if (item.front() == '[') {
      const auto close = item.find(']');
      if (close == std::string::npos)
        throw ConfigError("etcd endpoint '" + item + "': missing ']'");
      hp.host = item.substr(1, close - 1);
      if (close + 1 < item.size() && item[close + 1] == ':') hp.port = item.substr(close + 2);
    } else if (const auto colon = item.rfind(':');
               colon != std::string::npos && item.find(':') == colon) {
      hp.host = item.substr(0, colon);
      hp.port = item.substr(colon + 1);
    } else {
      hp.host = item;
    }
    if (hp.host.empty() || hp.port.empty() ||
        hp.port.find_first_not_of("0123456789") != std::string::npos) {
      throw ConfigError(
          fmt::format("etcd endpoint '{}' is not HOST[:PORT] (e.g. 10.0.0.5:2379)", item));
    }
    out.push_back(hp);
  }
  if (out.empty()) {
    throw ConfigError("no etcd endpoint given; pass --rdzv-endpoint HOST:2379[,HOST:2379...]");
  }
  return out;
}

std::string prefix_end(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    auto& c = end.back();
    if (static_cast<unsigned char>(c) < 0xff) {
      c = static_cast<char>(static_cast<unsigned char>(c) + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

// ---- the client ----

EtcdClient::EtcdClient(std::vector<HostPort> endpoints, milliseconds request_timeout)
    : eps_(std::move(endpoints)), timeout_(request_timeout) {}

std::string EtcdClient::describe() const {
  std::string out = "etcd ";
  for (std::size_t i = 0; i < eps_.size(); ++i) out += (i ? "," : "") + eps_[i].str();
  return out;
}

json EtcdClient::call(const std::string& path, const json& body) {
  return call(path, body, deadline_after(timeout_));
}

json EtcdClient::call(const std::string& path, const json& body, Clock::time_point deadline) {
  const std::string text = body.dump();
  std::vector<std::string> why(eps_.size());
  for (int sweep = 0;; ++sweep) {
    const std::size_t first = preferred_.load();
    for (std::size_t i = 0; i < eps_.size(); ++i) {
      const std::size_t idx = (first + i) % eps_.size();
      if (sweep > 0 && remaining(deadline) == milliseconds::zero()) break;  // keep the reasons
      const auto attempt_deadline = std::min(deadline, deadline_after(kAttemptTimeout));
      Attempt a(eps_[idx], attempt_deadline);
      error_code ec = a.start(path, text);
      if (!ec) ec = a.read_response();
      if (ec) {
        why[idx] = ec_text(ec);
        continue;
      }
      if (a.status() == 404) {
        why[idx] = gateway_missing(eps_[idx], path, 404);
        continue;
      }
      json j = json::parse(a.body(), nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded()) {
        why[idx] = fmt::format("HTTP {} with a body that is not JSON: {}", a.status(),
                               a.body().substr(0, 200));
        continue;
      }
      if (a.status() == 200) {
        preferred_ = idx;
        return j;
      }
      if (transient(j)) {
        why[idx] = j.value("error", fmt::format("HTTP {}", a.status()));
        continue;
      }
      throw ProtocolError(fmt::format("etcd at {} refused {}: {} (code {})", eps_[idx].str(), path,
                                      j.value("error", a.body()), i64(j, "code")));
    }
    if (remaining(deadline) == milliseconds::zero()) {
      std::string list;
      for (std::size_t i = 0; i < eps_.size(); ++i) {
        list += fmt::format("{}{} ({})", i ? ", " : "", eps_[i].str(),
                            why[i].empty() ? "not tried" : why[i]);
      }
      throw NetworkError(fmt::format(
          "cannot reach etcd for {}: every endpoint failed: {}; check that etcd runs and listens "
          "for clients on these addresses (etcd --listen-client-urls / --advertise-client-urls, "
          "`etcdctl --endpoints=... endpoint health`), that a majority of its members is up, and "
          "--rdzv-endpoint",
          path, list));
    }
    backoff(sweep, deadline);
  }
}

std::optional<KeyValue> EtcdClient::get(const std::string& key, std::int64_t* revision) {
  json r = call("/v3/kv/range", {{"key", b64encode(key)}});
  if (revision) *revision = i64(r.value("header", json::object()), "revision");
  if (!r.contains("kvs") || r["kvs"].empty()) return std::nullopt;
  return kv_from_json(r["kvs"][0]);
}

std::int64_t EtcdClient::put(const std::string& key, const Bytes& value, std::int64_t lease) {
  json body{{"key", b64encode(key)}, {"value", b64encode(to_string(value))}};
  if (lease != 0) body["lease"] = std::to_string(lease);
  json r = call("/v3/kv/put", body);
  return i64(r.value("header", json::object()), "revision");
}

std::int64_t EtcdClient::del(const std::string& key, const std::string& range_end) {
  json body{{"key", b64encode(key)}};
  if (!range_end.empty()) body["range_end"] = b64encode(range_end);
  return i64(call("/v3/kv/deleterange", body), "deleted");
}

std::int64_t EtcdClient::count(const std::string& key, const std::string& range_end) {
  json body{{"key", b64encode(key)}, {"range_end", b64encode(range_end)}, {"count_only", true}};
  return i64(call("/v3/kv/range", body), "count");
}

std::int64_t EtcdClient::lease_grant(std::int64_t ttl_seconds) {
  json r = call("/v3/lease/grant", {{"TTL", std::to_string(ttl_seconds)}});
  if (r.contains("error") && !r["error"].get<std::string>().empty()) {
    throw ProtocolError("etcd: lease grant failed: " + r["error"].get<std::string>());
  }
  return i64(r, "ID");
}

std::int64_t EtcdClient::lease_keepalive(std::int64_t id) {
  // A bidirectional stream through the gateway: one request body, one result, then EOF.
  json r = call("/v3/lease/keepalive", {{"ID", std::to_string(id)}});
  return i64(r.value("result", json::object()), "TTL");
}

void EtcdClient::lease_revoke(std::int64_t id) {
  try {
    call("/v3/lease/revoke", {{"ID", std::to_string(id)}});
  } catch (const ProtocolError&) {
    // Already gone (expired): what revoking wanted.
  }
}

bool EtcdClient::watch(const std::string& key, const std::string& range_end,
                       std::int64_t start_revision, bool prev_kv, Clock::time_point deadline,
                       const std::function<bool(const WatchEvent&)>& on_event,
                       const std::atomic<bool>* cancel) {
  std::int64_t next = start_revision;
  std::vector<std::string> why(eps_.size());
  auto failing_since = Clock::now();  // when no member last streamed anything
  for (int sweep = 0;; ++sweep) {
    const std::size_t first = preferred_.load();
    for (std::size_t i = 0; i < eps_.size(); ++i) {
      const std::size_t idx = (first + i) % eps_.size();
      json create{{"key", b64encode(key)}, {"start_revision", std::to_string(next)}};
      if (!range_end.empty()) create["range_end"] = b64encode(range_end);
      if (prev_kv) create["prev_kv"] = true;
      if (cancel && cancel->load()) return false;
      Attempt a(eps_[idx], deadline, cancel);
      error_code ec = a.start("/v3/watch", json{{"create_request", create}}.dump());
      if (!ec && a.status() != 200) {
        why[idx] = a.status() == 404 ? gateway_missing(eps_[idx], "/v3/watch", 404)
                                     : fmt::format("HTTP {}", a.status());
        continue;
      }
      std::size_t used = 0;  // bytes of body() already parsed (messages end with '\n')
      while (!ec) {
        std::string& body = a.body();
        for (auto nl = body.find('\n', used); nl != std::string::npos; nl = body.find('\n', used)) {
          json m = json::parse(body.begin() + static_cast<std::ptrdiff_t>(used),
                               body.begin() + static_cast<std::ptrdiff_t>(nl), nullptr, false);
          used = nl + 1;
          if (m.is_discarded()) continue;
          if (m.contains("error")) {
            why[idx] = m["error"].value("message", m["error"].dump());
            ec = net::error::connection_aborted;
            break;
          }
          const json& res = m.value("result", json::object());
          if (res.value("canceled", false)) {
            throw ProtocolError(fmt::format(
                "etcd at {} cancelled a watch on '{}' from revision {} ({}; compacted at {})",
                eps_[idx].str(), key, next, res.value("cancel_reason", ""),
                i64(res, "compact_revision")));
          }
          preferred_ = idx;
          failing_since = Clock::now();
          for (const auto& e : res.value("events", json::array())) {
            WatchEvent ev;
            ev.deleted = e.value("type", "PUT") == "DELETE";
            ev.kv = kv_from_json(e.at("kv"));
            if (e.contains("prev_kv")) ev.prev = kv_from_json(e["prev_kv"]);
            next = std::max(next, ev.kv.mod_revision + 1);
            if (!on_event(ev)) return true;
          }
        }
        if (used > 0) {
          body.erase(0, used);
          used = 0;
        }
        ec = a.read_some();
      }
      if (ec == net::error::timed_out &&
          (remaining(deadline) == milliseconds::zero() || (cancel && cancel->load()))) {
        return false;
      }
      if (why[idx].empty()) why[idx] = ec_text(ec);
    }
    if (remaining(deadline) == milliseconds::zero()) return false;
    if (Clock::now() - failing_since >= timeout_) {
      std::string list;
      for (std::size_t i = 0; i < eps_.size(); ++i) {
        list += fmt::format("{}{} ({})", i ? ", " : "", eps_[i].str(), why[i]);
      }
      throw NetworkError(fmt::format(
          "cannot watch '{}' in etcd: every endpoint failed for {}: {}; check that etcd runs, "
          "that a majority of its members is up, and --rdzv-endpoint",
          key, format_duration(timeout_), list));
    }
    backoff(sweep, deadline);
  }
}

}  // namespace gpurun::rendezvous::etcd
