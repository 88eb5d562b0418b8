// OpenSSH Ed25519 keys as operators already have them (SPEC §8): the private key file
// (`ssh-keygen -t ed25519`, unencrypted), public key lines, `authorized_keys` with options,
// and the requester's `known_devices` file. Parsers of untrusted text: they never throw and
// never read past their input. Pure: no I/O.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hom {

// An Ed25519 public key. Only this key type is used end to end.
struct SshPublicKey {
  std::string key;  // the 32 raw bytes

  // The SSH wire form: string "ssh-ed25519" ‖ string key (what the base64 of a line holds).
  std::string blob() const;
  // "ssh-ed25519 AAAA…" plus " comment" when there is one.
  std::string line(std::string_view comment = {}) const;
  // "SHA256:<base64 without padding>", as `ssh-keygen -l` prints it.
  std::string fingerprint() const;
  bool operator==(const SshPublicKey& other) const { return key == other.key; }
  bool operator!=(const SshPublicKey& other) const { return key != other.key; }
};

// An Ed25519 private key. The seed is wiped when the object goes; it is never printed.
class SshPrivateKey {
 public:
  // A fresh key from the system's random generator.
  static SshPrivateKey generate(std::string comment = {});
  // From the 32-byte seed (RFC 8032's private key).
  static SshPrivateKey from_seed(std::string_view seed, std::string comment = {});

  SshPrivateKey(const SshPrivateKey& other);
  SshPrivateKey& operator=(const SshPrivateKey& other);
  SshPrivateKey(SshPrivateKey&& other) noexcept;
  SshPrivateKey& operator=(SshPrivateKey&& other) noexcept;
  ~SshPrivateKey();

  const SshPublicKey& public_key() const { return public_; }
  const std::string& comment() const { return comment_; }
  // The seed, for the signing and decryption code only.
  std::string_view seed() const { return seed_; }

  // The unencrypted "-----BEGIN OPENSSH PRIVATE KEY-----" file, as ssh-keygen writes it.
  std::string to_openssh() const;

 private:
  SshPrivateKey() = default;
  std::string seed_;
  SshPublicKey public_;
  std::string comment_;
};

// Reads an unencrypted OpenSSH private key file holding one Ed25519 key. nullopt with a reason
// in `error` for anything else (encrypted, RSA/ECDSA, PEM/PKCS#8, corrupt).
std::optional<SshPrivateKey> parse_private_key(std::string_view text, std::string& error);

// Reads a public key blob (SSH wire form). Only "ssh-ed25519".
std::optional<SshPublicKey> parse_public_key_blob(std::string_view blob, std::string& error);

struct PublicKeyLine {
  SshPublicKey key;
  std::string comment;
};
// Reads "ssh-ed25519 AAAA… [comment]" (a .pub file's line; surrounding whitespace allowed).
std::optional<PublicKeyLine> parse_public_key_line(std::string_view line, std::string& error);

// An authorized_keys option: `name` or `name="value"` (inside the quotes, \" is a quote).
struct KeyOption {
  std::string name;  // as written; compare ignoring case, as OpenSSH does
  std::optional<std::string> value;
};

struct AuthorizedKey {
  std::vector<KeyOption> options;  // in order, unknown ones kept
  SshPublicKey key;
  std::string comment;
  std::size_t line = 0;  // 1-based
};

struct AuthorizedKeys {
  std::vector<AuthorizedKey> keys;
  // Well-formed lines that are not used: other key types, certificates ("line 3: ssh-rsa keys
  // are not used end to end").
  std::vector<std::string> skipped;
};

// Reads an authorized_keys file (sshd(8) "AUTHORIZED_KEYS FILE FORMAT"): blank lines and
// '#' comments are ignored; each line is [options] keytype base64 [comment]. A malformed line
// (unterminated quote, bad base64, a blob of another type than its line says) fails the whole
// file, naming the line: a daemon must not start on a half-read list of who may call it.
std::optional<AuthorizedKeys> parse_authorized_keys(std::string_view text, std::string& error);

// The values of every option called `name` (case-insensitive), in order; a flag gives "".
std::vector<std::string> option_values(const AuthorizedKey& key, std::string_view name);

struct KnownDevice {
  std::string id;  // the device id (MQTT_TOPIC_ID)
  SshPublicKey key;
  std::string comment;
  std::size_t line = 0;
};

struct KnownDevices {
  std::vector<KnownDevice> devices;  // a device may be listed with several keys (rotation)
  std::vector<std::string> skipped;

  // The keys listed for `id`, in file order.
  std::vector<SshPublicKey> keys_for(std::string_view id) const;
};

// Reads a known_devices file: "device-id ssh-ed25519 AAAA… [comment]" per line, blank lines
// and '#' comments ignored. A device id holds no whitespace, '+', '#' or control character.
std::optional<KnownDevices> parse_known_devices(std::string_view text, std::string& error);

}  // namespace hom
