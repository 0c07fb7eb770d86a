#include "job_secret.h"

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "gpurun/common/error.h"
#include "gpurun/rendezvous/job_access.h"

namespace gpurun::rendezvous {

namespace {

// The kernel's CSPRNG (getrandom(2)): no library state to set up (OpenSSL's RAND would load its
// configuration and providers at every gpurun start, for one nonce).
std::string random_bytes(std::size_t n, const char* what) {
  std::string out(n, '\0');
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = ::getrandom(out.data() + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      throw Error(fmt::format("cannot draw random bytes for {} (getrandom: {})", what,
                              std::strerror(errno)));
    }
    got += static_cast<std::size_t>(r);
  }
  return out;
}

}  // namespace

namespace auth {

std::string make_nonce() { return random_bytes(kNonceBytes, "the store's job-secret challenge"); }

std::string proof(std::string_view secret, std::string_view nonce) {
  std::string msg;
  msg.reserve(kAuthContext.size() + nonce.size());
  msg.append(kAuthContext).append(nonce);
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
           reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), mac, &len) == nullptr ||
      len != kProofBytes) {
    throw Error("cannot compute the job-secret proof (OpenSSL HMAC-SHA256 failed)");
  }
  return std::string(reinterpret_cast<const char*>(mac), len);
}

bool proof_matches(std::string_view secret, std::string_view nonce, std::string_view claimed) {
  if (claimed.size() != kProofBytes) return false;
  const std::string want = proof(secret, nonce);
  return CRYPTO_memcmp(want.data(), claimed.data(), kProofBytes) == 0;
}

}  // namespace auth

std::string generate_job_secret() {
  const std::string raw = random_bytes(32, "the job secret");
  std::string hex;
  hex.reserve(64);
  char b[3];
  for (unsigned char c : raw) {
    std::snprintf(b, sizeof b, "%02x", c);
    hex += b;
  }
  return hex;
}

}  // namespace gpurun::rendezvous
