#include "job_secret.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstdio>

#include "gpurun/common/error.h"
#include "gpurun/rendezvous/job_access.h"

namespace gpurun::rendezvous {

namespace auth {

std::string make_nonce() {
  std::string n(kNonceBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(n.data()), static_cast<int>(n.size())) != 1) {
    throw Error(
        "cannot draw random bytes for the store's job-secret challenge (OpenSSL RAND_bytes)");
  }
  return n;
}

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
  std::string raw(32, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(raw.size())) != 1) {
    throw Error("cannot draw random bytes for the job secret (OpenSSL RAND_bytes)");
  }
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
