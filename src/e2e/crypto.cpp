#include "crypto.hpp"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <sodium.h>

#include <memory>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <utility>

namespace hom::crypto {
namespace {

const unsigned char* u8(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}
unsigned char* u8(std::string& s) { return reinterpret_cast<unsigned char*>(s.data()); }

struct PkeyFree {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* p) const { EVP_CIPHER_CTX_free(p); }
};
struct KdfFree {
  void operator()(EVP_KDF* p) const { EVP_KDF_free(p); }
};
struct KdfCtxFree {
  void operator()(EVP_KDF_CTX* p) const { EVP_KDF_CTX_free(p); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;

[[noreturn]] void fail(const char* what) {
  throw std::runtime_error(std::string("crypto: ") + what + " failed");
}

std::string digest(const EVP_MD* md, std::string_view data) {
  std::string out(static_cast<std::size_t>(EVP_MD_get_size(md)), '\0');
  unsigned int n = 0;
  if (EVP_Digest(data.data(), data.size(), u8(out), &n, md, nullptr) != 1) fail("digest");
  return out;
}

Pkey raw_private(int type, std::string_view key) {
  Pkey p(EVP_PKEY_new_raw_private_key(type, nullptr, u8(key), key.size()));
  if (!p) fail("loading a private key");
  return p;
}

Pkey raw_public(int type, std::string_view key) {
  return Pkey(EVP_PKEY_new_raw_public_key(type, nullptr, u8(key), key.size()));
}

std::string raw_public_of(EVP_PKEY* key) {
  std::string out(32, '\0');
  std::size_t n = out.size();
  if (EVP_PKEY_get_raw_public_key(key, u8(out), &n) != 1 || n != 32) fail("public key");
  return out;
}

// What was derived from a public value (a device's or a requester's public key, age's tweak
// of one), kept so that the next message to or from the same key skips that work. Bounded
// (emptied when full); thread-safe. Never holds anything derived from a secret.
template <typename Value>
class PublicCache {
 public:
  std::optional<Value> find(const std::string& key) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = map_.find(key);
    if (it == map_.end()) return std::nullopt;
    return it->second;
  }
  void put(std::string key, Value value) {
    std::lock_guard<std::mutex> lock(mu_);
    if (map_.size() >= kMaxEntries) map_.clear();
    map_.insert_or_assign(std::move(key), std::move(value));
  }

 private:
  static constexpr std::size_t kMaxEntries = 1024;
  std::mutex mu_;
  std::unordered_map<std::string, Value> map_;
};

// X25519 with a loaded private key (loading one costs OpenSSL a scalar multiplication: it
// derives the public key). nullopt when the result is all zeros or `point` is unusable.
std::optional<std::string> derive(EVP_PKEY* priv, std::string_view point) {
  Pkey pub = raw_public(EVP_PKEY_X25519, point);
  if (!pub) return std::nullopt;
  std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree> ctx(EVP_PKEY_CTX_new(priv, nullptr));
  std::string out(32, '\0');
  std::size_t n = out.size();
  // OpenSSL fails the derivation when the shared secret is all zeros (RFC 7748 §6.1).
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1 ||
      EVP_PKEY_derive_set_peer(ctx.get(), pub.get()) != 1 ||
      EVP_PKEY_derive(ctx.get(), u8(out), &n) != 1 || n != 32) {
    wipe(out);
    return std::nullopt;
  }
  return out;
}

void sodium_ready() {
  static const int status = sodium_init();  // thread-safe, once
  if (status < 0) fail("sodium_init");
}

}  // namespace

void wipe(std::string& secret) {
  if (!secret.empty()) OPENSSL_cleanse(secret.data(), secret.size());
  secret.clear();
}

Secret& Secret::operator=(const Secret& other) {
  if (this != &other) {
    wipe(bytes_);
    bytes_ = other.bytes_;
  }
  return *this;
}

Secret& Secret::operator=(Secret&& other) noexcept {
  if (this != &other) {
    wipe(bytes_);
    bytes_ = std::move(other.bytes_);
    other.bytes_.clear();
  }
  return *this;
}

std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  if (n > 0 && RAND_bytes(u8(out), static_cast<int>(n)) != 1) fail("RAND_bytes");
  return out;
}

std::string sha256(std::string_view data) { return digest(EVP_sha256(), data); }
std::string sha512(std::string_view data) { return digest(EVP_sha512(), data); }

std::string hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 0xf];
  }
  return out;
}

std::string hmac_sha256(std::string_view key, std::string_view data) {
  std::string out(32, '\0');
  unsigned int n = 0;
  if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), u8(data), data.size(), u8(out),
            &n))
    fail("HMAC");
  return out;
}

std::string hkdf_sha256(std::string_view ikm, std::string_view salt, std::string_view info,
                        std::size_t length) {
  std::unique_ptr<EVP_KDF, KdfFree> kdf(EVP_KDF_fetch(nullptr, OSSL_KDF_NAME_HKDF, nullptr));
  if (!kdf) fail("HKDF fetch");
  std::unique_ptr<EVP_KDF_CTX, KdfCtxFree> ctx(EVP_KDF_CTX_new(kdf.get()));
  if (!ctx) fail("HKDF context");
  char sha256_name[] = "SHA256";
  // OpenSSL refuses an absent key; a one-byte buffer with length 0 is the empty key.
  char empty = 0;
  OSSL_PARAM params[5];
  std::size_t i = 0;
  params[i++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, sha256_name, 0);
  params[i++] = OSSL_PARAM_construct_octet_string(
      OSSL_KDF_PARAM_KEY, ikm.empty() ? &empty : const_cast<char*>(ikm.data()), ikm.size());
  // No salt is the RFC's default: HashLen zero bytes, the same HMAC key as an empty salt.
  if (!salt.empty())
    params[i++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT,
                                                    const_cast<char*>(salt.data()), salt.size());
  params[i++] = OSSL_PARAM_construct_octet_string(
      OSSL_KDF_PARAM_INFO, info.empty() ? &empty : const_cast<char*>(info.data()), info.size());
  params[i] = OSSL_PARAM_construct_end();
  std::string out(length, '\0');
  if (EVP_KDF_derive(ctx.get(), u8(out), out.size(), params) != 1) fail("HKDF");
  return out;
}

bool equal_ct(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  return a.empty() || CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string ed25519_public(std::string_view seed) {
  return raw_public_of(raw_private(EVP_PKEY_ED25519, seed).get());
}

std::string ed25519_sign(std::string_view seed, std::string_view message) {
  Pkey key = raw_private(EVP_PKEY_ED25519, seed);
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  std::string sig(64, '\0');
  std::size_t n = sig.size();
  if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), u8(sig), &n, u8(message), message.size()) != 1 || n != 64)
    fail("Ed25519 sign");
  return sig;
}

bool ed25519_verify(std::string_view public_key, std::string_view message,
                    std::string_view signature) {
  if (public_key.size() != 32 || signature.size() != 64) return false;
  Pkey key = raw_public(EVP_PKEY_ED25519, public_key);
  if (!key) return false;
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1)
    return false;
  return EVP_DigestVerify(ctx.get(), u8(signature), signature.size(), u8(message),
                          message.size()) == 1;
}

std::optional<std::string> x25519(std::string_view scalar, std::string_view point) {
  if (scalar.size() != 32 || point.size() != 32) return std::nullopt;
  Pkey priv = raw_private(EVP_PKEY_X25519, scalar);
  return derive(priv.get(), point);
}

std::optional<std::string> x25519_public_scalar(std::string_view scalar, std::string_view point) {
  if (scalar.size() != 32 || point.size() != 32) return std::nullopt;
  static PublicCache<std::shared_ptr<EVP_PKEY>> keys;
  const std::string name(scalar);
  auto key = keys.find(name);
  if (!key) {
    key = std::shared_ptr<EVP_PKEY>(raw_private(EVP_PKEY_X25519, scalar).release(), PkeyFree());
    keys.put(name, *key);
  }
  return derive(key->get(), point);
}

std::optional<std::pair<std::string, Secret>> x25519_ephemeral(std::string_view point) {
  if (point.size() != 32) return std::nullopt;
  Pkey priv(EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519"));
  if (!priv) fail("X25519 key generation");
  auto shared = derive(priv.get(), point);
  if (!shared) return std::nullopt;
  return std::make_pair(raw_public_of(priv.get()), Secret(std::move(*shared)));
}

std::optional<std::string> ed25519_pk_to_x25519(std::string_view public_key) {
  sodium_ready();
  if (public_key.size() != crypto_sign_ed25519_PUBLICKEYBYTES) return std::nullopt;
  static PublicCache<std::string> mapped;
  const std::string name(public_key);
  if (auto known = mapped.find(name)) return known;
  std::string out(crypto_scalarmult_curve25519_BYTES, '\0');
  if (crypto_sign_ed25519_pk_to_curve25519(u8(out), u8(public_key)) != 0) return std::nullopt;
  mapped.put(name, out);
  return out;
}

Secret ed25519_seed_to_x25519(std::string_view seed, std::string_view public_key) {
  sodium_ready();
  // libsodium's secret key is seed ‖ public key; only the seed is used.
  std::string sk;
  sk.reserve(64);
  sk.append(seed);
  sk.append(public_key);
  std::string out(crypto_scalarmult_curve25519_BYTES, '\0');
  const int status = crypto_sign_ed25519_sk_to_curve25519(u8(out), u8(sk));
  wipe(sk);
  if (status != 0) fail("Ed25519 to X25519");
  return Secret(std::move(out));
}

namespace {

std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> chacha(std::string_view key, std::string_view nonce,
                                                      int encrypt) {
  std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree> ctx(EVP_CIPHER_CTX_new());
  if (!ctx || key.size() != 32 || nonce.size() != 12 ||
      EVP_CipherInit_ex(ctx.get(), EVP_chacha20_poly1305(), nullptr, nullptr, nullptr, encrypt) !=
          1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_SET_IVLEN, 12, nullptr) != 1 ||
      EVP_CipherInit_ex(ctx.get(), nullptr, nullptr, u8(key), u8(nonce), encrypt) != 1)
    fail("ChaCha20-Poly1305 init");
  return ctx;
}

}  // namespace

std::string chacha20poly1305_seal(std::string_view key, std::string_view nonce,
                                  std::string_view plaintext) {
  auto ctx = chacha(key, nonce, 1);
  std::string out(plaintext.size() + kTagBytes, '\0');
  int n = 0;
  if (!plaintext.empty() && (EVP_EncryptUpdate(ctx.get(), u8(out), &n, u8(plaintext),
                                               static_cast<int>(plaintext.size())) != 1 ||
                             static_cast<std::size_t>(n) != plaintext.size()))
    fail("ChaCha20-Poly1305 encrypt");
  int tail = 0;
  if (EVP_EncryptFinal_ex(ctx.get(), u8(out) + n, &tail) != 1 || tail != 0 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_GET_TAG, kTagBytes,
                          u8(out) + plaintext.size()) != 1)
    fail("ChaCha20-Poly1305 tag");
  return out;
}

std::optional<std::string> chacha20poly1305_open(std::string_view key, std::string_view nonce,
                                                 std::string_view ciphertext) {
  if (ciphertext.size() < kTagBytes) return std::nullopt;
  const std::size_t size = ciphertext.size() - kTagBytes;
  auto ctx = chacha(key, nonce, 0);
  std::string out(size, '\0');
  int n = 0;
  if (size > 0 &&
      EVP_DecryptUpdate(ctx.get(), u8(out), &n, u8(ciphertext), static_cast<int>(size)) != 1) {
    wipe(out);
    return std::nullopt;
  }
  std::string tag(ciphertext.substr(size));
  int tail = 0;
  if (EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_AEAD_SET_TAG, kTagBytes, tag.data()) != 1 ||
      EVP_DecryptFinal_ex(ctx.get(), u8(out) + n, &tail) != 1) {
    wipe(out);
    return std::nullopt;
  }
  return out;
}

}  // namespace hom::crypto
