// Thin wrappers over OpenSSL 3 and libsodium for the end-to-end layer: every primitive comes
// from those libraries, these functions only move bytes in and out. Bytes are std::string.
// Internal to hom_e2e. Thread-safe (no shared state but libsodium's one-time init).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace hom::crypto {

// Overwrites `secret` with zeros (not optimised away), then clears it.
void wipe(std::string& secret);

// Holds secret bytes and wipes them when it goes.
class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string bytes) : bytes_(std::move(bytes)) {}
  Secret(const Secret& other) : bytes_(other.bytes_) {}
  Secret& operator=(const Secret& other);
  Secret(Secret&& other) noexcept : bytes_(std::move(other.bytes_)) { other.bytes_.clear(); }
  Secret& operator=(Secret&& other) noexcept;
  ~Secret() { wipe(bytes_); }
  const std::string& bytes() const { return bytes_; }
  std::string_view view() const { return bytes_; }
  bool empty() const { return bytes_.empty(); }

 private:
  std::string bytes_;
};

// Cryptographically secure random bytes (OpenSSL's DRBG); throws std::runtime_error only
// when the DRBG fails, which leaves nothing safe to do.
std::string random_bytes(std::size_t n);

std::string sha256(std::string_view data);
// Lowercase hex digits of `bytes`.
std::string hex(std::string_view bytes);
std::string sha512(std::string_view data);
std::string hmac_sha256(std::string_view key, std::string_view data);
// HKDF-SHA256 (RFC 5869), extract and expand; an empty salt is the RFC's default salt.
std::string hkdf_sha256(std::string_view ikm, std::string_view salt, std::string_view info,
                        std::size_t length);

// Equal length and equal bytes, in time that depends only on the length.
bool equal_ct(std::string_view a, std::string_view b);

// Ed25519 (RFC 8032): `seed` is the 32-byte private key, `public_key` 32 bytes.
std::string ed25519_public(std::string_view seed);
std::string ed25519_sign(std::string_view seed, std::string_view message);
bool ed25519_verify(std::string_view public_key, std::string_view message,
                    std::string_view signature);

// X25519 (RFC 7748). nullopt when the result is all zeros (a low-order point).
std::optional<std::string> x25519(std::string_view scalar, std::string_view point);
// The same for a scalar that is no secret (age's tweak, derived from a public key): the key
// object OpenSSL makes of it is kept for the next call with the same scalar.
std::optional<std::string> x25519_public_scalar(std::string_view scalar, std::string_view point);
// A fresh key pair's public key (age's share) and its shared secret with `point`, from one
// key generation. nullopt when the result is all zeros.
std::optional<std::pair<std::string, Secret>> x25519_ephemeral(std::string_view point);

// libsodium's birational maps. nullopt when `public_key` is not a valid Ed25519 point.
std::optional<std::string> ed25519_pk_to_x25519(std::string_view public_key);
Secret ed25519_seed_to_x25519(std::string_view seed, std::string_view public_key);

// ChaCha20-Poly1305 (RFC 8439), 32-byte key, 12-byte nonce, no associated data. The
// ciphertext is followed by the 16-byte tag. open() gives nullopt when the tag is wrong.
std::string chacha20poly1305_seal(std::string_view key, std::string_view nonce,
                                  std::string_view plaintext);
std::optional<std::string> chacha20poly1305_open(std::string_view key, std::string_view nonce,
                                                 std::string_view ciphertext);
inline constexpr std::size_t kTagBytes = 16;

}  // namespace hom::crypto
