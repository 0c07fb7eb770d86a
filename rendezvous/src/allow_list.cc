#include "allow_list.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "gpurun/common/error.h"
#include "gpurun/common/net.h"

namespace gpurun::rendezvous {
namespace {

namespace ip = boost::asio::ip;

ip::address unmapped(ip::address a) {
  if (a.is_v6() && a.to_v6().is_v4_mapped()) {
    return ip::make_address_v4(ip::v4_mapped, a.to_v6());
  }
  return a;
}

// The first `bits` bits of a and b are equal (same family).
bool same_prefix(const ip::address& a, const ip::address& b, int bits) {
  if (a.is_v4() != b.is_v4()) return false;
  if (a.is_v4()) {
    if (bits == 0) return true;
    const std::uint32_t mask = bits >= 32 ? ~0u : ~((1u << (32 - bits)) - 1);
    return (a.to_v4().to_uint() & mask) == (b.to_v4().to_uint() & mask);
  }
  const auto x = a.to_v6().to_bytes();
  const auto y = b.to_v6().to_bytes();
  for (std::size_t i = 0; i < x.size() && bits > 0; ++i, bits -= 8) {
    const unsigned mask = bits >= 8 ? 0xffu : (0xffu << (8 - bits)) & 0xffu;
    if ((x[i] & mask) != (y[i] & mask)) return false;
  }
  return true;
}

}  // namespace

AllowList::AllowList(const std::vector<std::string>& entries, std::string origin)
    : origin_(std::move(origin)), any_(entries.empty()) {
  for (const auto& e : entries) {
    if (e == "any" || e == "*") {
      any_ = true;
      nets_.clear();
      return;
    }
    boost::system::error_code ec;
    if (auto slash = e.find('/'); slash != std::string::npos) {
      const std::string base = e.substr(0, slash), bits = e.substr(slash + 1);
      auto a = ip::make_address(base, ec);
      int prefix = -1;
      auto [p, err] = std::from_chars(bits.data(), bits.data() + bits.size(), prefix);
      const int max = !ec && a.is_v4() ? 32 : 128;
      if (ec || err != std::errc() || p != bits.data() + bits.size() || prefix < 0 ||
          prefix > max) {
        throw ConfigError(fmt::format(
            "'{}' in {} is not an address block; write ADDRESS/BITS, e.g. 10.0.0.0/8 or fd00::/64",
            e, origin_));
      }
      nets_.push_back({unmapped(a), prefix, e});
      continue;
    }
    std::string host = e;
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
      host = host.substr(1, host.size() - 2);
    }
    if (auto a = ip::make_address(host, ec); !ec) {
      a = unmapped(a);
      nets_.push_back({a, a.is_v4() ? 32 : 128, e});
      continue;
    }
    std::string why;
    const auto addrs = resolve_addresses(host, &why);
    if (addrs.empty()) {
      throw ConfigError(fmt::format(
          "cannot resolve '{}' of {} ({}); give its address or an address block (10.0.0.0/8) "
          "instead",
          e, origin_, why));
    }
    for (const auto& text : addrs) {
      auto a = unmapped(ip::make_address(text));
      nets_.push_back({a, a.is_v4() ? 32 : 128, fmt::format("{}={}", e, text)});
    }
  }
}

bool AllowList::allows(ip::address a) const {
  if (any_) return true;
  a = unmapped(a);
  return std::any_of(nets_.begin(), nets_.end(),
                     [&](const Net& n) { return same_prefix(a, n.base, n.prefix); });
}

std::string AllowList::describe() const {
  if (any_) return "any host";
  std::string out;
  for (std::size_t i = 0; i < nets_.size() && i < 8; ++i) {
    out += (i ? ", " : "") + nets_[i].text;
  }
  if (nets_.size() > 8) out += fmt::format(" and {} more", nets_.size() - 8);
  return fmt::format("{} (from {})", out, origin_);
}

}  // namespace gpurun::rendezvous
