// The job secret's challenge-response (issue 16 section 2 "Across hosts"): a store that knows the
// job's secret lets a peer from a host outside its allow-list in once the peer proves it knows the
// secret too, without sending it: the server sends a fresh random nonce (AUTH_CHALLENGE), the
// client answers HMAC-SHA256(secret, kAuthContext || nonce) (AUTH_PROOF). A recorded proof is
// worthless for another connection (another nonce). OpenSSL's libcrypto does the HMAC, the
// kernel (getrandom) the random bytes; the comparison takes constant time.
#pragma once

#include <string>
#include <string_view>

namespace gpurun::rendezvous::auth {

inline constexpr std::size_t kNonceBytes = 32;
inline constexpr std::size_t kProofBytes = 32;  // SHA-256
inline constexpr std::string_view kAuthContext = "gpurun-store-auth-v1";

// kNonceBytes from the kernel's CSPRNG (getrandom). Throws Error if it fails.
std::string make_nonce();
// HMAC-SHA256(secret, kAuthContext || nonce), kProofBytes raw bytes.
std::string proof(std::string_view secret, std::string_view nonce);
// Whether `claimed` is proof(secret, nonce), compared in constant time.
bool proof_matches(std::string_view secret, std::string_view nonce, std::string_view claimed);

}  // namespace gpurun::rendezvous::auth
