// age v1 (age-encryption.org/v1) with `ssh-ed25519` recipients, binary form: what
// `age -R key.pub` writes and `age -d -i key` reads. A random 16-byte file key is wrapped for
// each recipient (X25519 of the Ed25519 key mapped to Curve25519, tweaked, HKDF-SHA256,
// ChaCha20-Poly1305); the header is authenticated with HMAC-SHA256; the payload is STREAM:
// 64 KiB chunks, each ChaCha20-Poly1305 with nonce = 11-byte counter ‖ last-chunk flag.
// age authenticates the content, not who wrote it: pair it with a signature (sshsig.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "hom/ssh_keys.hpp"

namespace hom {

inline constexpr std::size_t kAgeChunkBytes = 64 * 1024;

// Encrypts chunk by chunk, for bodies that do not fit in memory or are sent as they come.
// Not thread-safe; one object per file.
class AgeEncryptor {
 public:
  // nullopt with a reason when there is no recipient or a key is not a valid Ed25519 point.
  static std::optional<AgeEncryptor> create(const std::vector<SshPublicKey>& recipients,
                                            std::string& error);
  AgeEncryptor(AgeEncryptor&&) noexcept = default;
  AgeEncryptor& operator=(AgeEncryptor&&) noexcept = default;
  ~AgeEncryptor();

  // The file so far: the header and nonce on the first call, then every chunk that is
  // complete and known not to be the last (a full chunk waits until more data or finish()).
  std::string update(std::string_view plaintext);
  // The rest, ending with the chunk marked last. Call once.
  std::string finish();

 private:
  AgeEncryptor() = default;
  std::string take_header();
  std::string seal_chunk(std::string_view plaintext, bool last);

  std::string header_;  // not yet emitted when non-empty
  std::string payload_key_;
  std::string pending_;  // plaintext not yet sealed
  std::uint64_t counter_ = 0;
};

// Decrypts chunk by chunk. Each chunk is authenticated before its plaintext is given out;
// a stream cut after any chunk (also at a chunk boundary) fails at finish(). Not thread-safe.
class AgeDecryptor {
 public:
  explicit AgeDecryptor(const SshPrivateKey& identity);
  ~AgeDecryptor();
  AgeDecryptor(const AgeDecryptor&) = delete;
  AgeDecryptor& operator=(const AgeDecryptor&) = delete;

  // Feeds the next bytes of the file; appends the plaintext of every chunk that is complete
  // and authenticated to `out`. False once anything is wrong (then error() says what; the
  // object stays failed). Plaintext already given out was authenticated, but the file as a
  // whole is only vouched for once finish() returns true.
  bool update(std::string_view ciphertext, std::string& out);
  // The end of the file: the last chunk's plaintext. False when the file is truncated or
  // anything else is wrong.
  bool finish(std::string& out);
  const std::string& error() const { return error_; }
  // Takes only the file whose header and nonce hash to `sha256_hex` (64 lowercase hex): a
  // file made by whoever signed that digest, not merely one to this identity. Before update().
  void expect_header(std::string sha256_hex) { expected_header_ = std::move(sha256_hex); }

  // Headers longer than this are refused (one stanza per recipient is ~130 bytes).
  static constexpr std::size_t kMaxHeaderBytes = 16 * 1024;

 private:
  bool fail(std::string why);
  bool read_header();
  bool open_chunk(std::string_view chunk, bool last, std::string& out);

  enum class State { kHeader, kPayload, kDone, kFailed };
  State state_ = State::kHeader;
  std::string x25519_secret_;
  std::string x25519_public_;
  std::string ssh_blob_;
  std::string buffer_;
  std::string payload_key_;
  std::uint64_t counter_ = 0;
  std::string error_;
  std::string expected_header_;
};

// Whole messages.
std::optional<std::string> age_encrypt(const std::vector<SshPublicKey>& recipients,
                                       std::string_view plaintext, std::string& error);
std::optional<std::string> age_decrypt(const SshPrivateKey& identity, std::string_view file,
                                       std::string& error);

}  // namespace hom
