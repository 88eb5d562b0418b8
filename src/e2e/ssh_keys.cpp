#include "hom/ssh_keys.hpp"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "crypto.hpp"
#include "hom/base64.hpp"
#include "ssh_wire.hpp"

namespace hom {
namespace {

constexpr std::string_view kEd25519 = "ssh-ed25519";
constexpr std::string_view kMagic{"openssh-key-v1\0", 15};
constexpr std::string_view kBegin = "-----BEGIN OPENSSH PRIVATE KEY-----";
constexpr std::string_view kEnd = "-----END OPENSSH PRIVATE KEY-----";

bool is_space(char c) { return c == ' ' || c == '\t'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && (is_space(s.front()) || s.front() == '\r' || s.front() == '\n'))
    s.remove_prefix(1);
  while (!s.empty() && (is_space(s.back()) || s.back() == '\r' || s.back() == '\n'))
    s.remove_suffix(1);
  return s;
}

std::string_view next_token(std::string_view& s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  std::size_t n = 0;
  while (n < s.size() && !is_space(s[n])) ++n;
  const std::string_view token = s.substr(0, n);
  s.remove_prefix(n);
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  return token;
}

bool equal_nocase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return (x >= 'A' && x <= 'Z' ? x + 32 : x) == (y >= 'A' && y <= 'Z' ? y + 32 : y);
         });
}

// Key types OpenSSH knows: a line of one of these that is not Ed25519 is skipped, not an error.
bool is_ssh_key_type(std::string_view t) {
  static constexpr std::string_view kTypes[] = {"ssh-ed25519",
                                                "ssh-rsa",
                                                "ssh-dss",
                                                "ecdsa-sha2-nistp256",
                                                "ecdsa-sha2-nistp384",
                                                "ecdsa-sha2-nistp521",
                                                "sk-ssh-ed25519@openssh.com",
                                                "sk-ecdsa-sha2-nistp256@openssh.com",
                                                "ssh-xmss@openssh.com"};
  if (std::find(std::begin(kTypes), std::end(kTypes), t) != std::end(kTypes)) return true;
  // Certificates: <type>-cert-v01@openssh.com.
  constexpr std::string_view kCert = "-cert-v01@openssh.com";
  return t.size() > kCert.size() && t.substr(t.size() - kCert.size()) == kCert;
}

std::string line_prefix(std::size_t line) { return "line " + std::to_string(line) + ": "; }

// Splits text into lines (LF, a CR before it dropped), numbering from 1.
template <typename F>
bool for_each_line(std::string_view text, F&& f) {
  std::size_t number = 0;
  while (!text.empty()) {
    ++number;
    std::size_t end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (!f(number, line)) return false;
  }
  return true;
}

// Reads "keytype base64 [comment]" from `rest`. Returns false with `error` when malformed;
// sets `skip` for a well-formed line of a key type other than Ed25519.
bool read_key(std::string_view rest, SshPublicKey& key, std::string& comment, bool& skip,
              std::string& error) {
  skip = false;
  const std::string_view type = next_token(rest);
  const std::string_view b64 = next_token(rest);
  if (type.empty()) {
    error = "no key";
    return false;
  }
  if (!is_ssh_key_type(type)) {
    error = "unknown key type '" + std::string(type.substr(0, 40)) + "'";
    return false;
  }
  if (b64.empty()) {
    error = "no key data after " + std::string(type);
    return false;
  }
  const auto blob = base64_decode(b64);
  if (!blob) {
    error = "key data is not base64";
    return false;
  }
  ssh_wire::Reader r(*blob);
  std::string_view blob_type;
  if (!r.string(blob_type) || blob_type != type) {
    error = "key data is not a " + std::string(type) + " key";
    return false;
  }
  if (type != kEd25519) {
    skip = true;
    return true;
  }
  std::string why;
  const auto parsed = parse_public_key_blob(*blob, why);
  if (!parsed) {
    error = why;
    return false;
  }
  key = *parsed;
  comment = std::string(trim(rest));
  return true;
}

// OpenSSH's opt_dequote: inside the quotes, \" is a quote and every other byte is itself.
// `s` starts at the opening quote; on success it is left after the closing one.
bool dequote(std::string_view& s, std::string& out) {
  if (s.empty() || s.front() != '"') return false;
  std::size_t i = 1;
  out.clear();
  while (i < s.size() && s[i] != '"') {
    if (s[i] == '\\' && i + 1 < s.size() && s[i + 1] == '"') ++i;
    out.push_back(s[i++]);
  }
  if (i >= s.size()) return false;
  s.remove_prefix(i + 1);
  return true;
}

bool is_option_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '@' || c == '.';
}

// Reads the options at the front of `line` up to the first unquoted blank (OpenSSH's
// sshkey_advance_past_options and sshauthopt_parse).
bool read_options(std::string_view& line, std::vector<KeyOption>& options, std::string& error) {
  while (true) {
    std::size_t n = 0;
    while (n < line.size() && is_option_name_char(line[n])) ++n;
    if (n == 0) {
      error = "bad option syntax";
      return false;
    }
    KeyOption option;
    option.name = std::string(line.substr(0, n));
    line.remove_prefix(n);
    if (!line.empty() && line.front() == '=') {
      line.remove_prefix(1);
      std::string value;
      if (!dequote(line, value)) {
        error = "option " + option.name + ": value must be in double quotes, closed";
        return false;
      }
      option.value = std::move(value);
    }
    options.push_back(std::move(option));
    if (line.empty() || is_space(line.front())) return true;
    if (line.front() != ',') {
      error = "bad option syntax after " + options.back().name;
      return false;
    }
    line.remove_prefix(1);
  }
}

std::string armor(std::string_view begin, std::string_view end, std::string_view blob) {
  const std::string b64 = base64_encode(blob);
  std::string out(begin);
  out += '\n';
  for (std::size_t i = 0; i < b64.size(); i += 70) {
    out.append(b64, i, 70);
    out += '\n';
  }
  out.append(end);
  out += '\n';
  return out;
}

}  // namespace

std::string SshPublicKey::blob() const {
  std::string out;
  ssh_wire::put_string(out, kEd25519);
  ssh_wire::put_string(out, key);
  return out;
}

std::string SshPublicKey::line(std::string_view comment) const {
  std::string out(kEd25519);
  out += ' ';
  out += base64_encode(blob());
  if (!comment.empty()) {
    out += ' ';
    out.append(comment);
  }
  return out;
}

std::string SshPublicKey::fingerprint() const {
  std::string b64 = base64_encode(crypto::sha256(blob()));
  while (!b64.empty() && b64.back() == '=') b64.pop_back();
  return "SHA256:" + b64;
}

SshPrivateKey SshPrivateKey::generate(std::string comment) {
  std::string seed = crypto::random_bytes(32);
  SshPrivateKey key = from_seed(seed, std::move(comment));
  crypto::wipe(seed);
  return key;
}

SshPrivateKey SshPrivateKey::from_seed(std::string_view seed, std::string comment) {
  SshPrivateKey key;
  key.seed_ = std::string(seed);
  key.public_.key = crypto::ed25519_public(seed);
  key.comment_ = std::move(comment);
  return key;
}

SshPrivateKey::SshPrivateKey(const SshPrivateKey& other)
    : seed_(other.seed_), public_(other.public_), comment_(other.comment_) {}

SshPrivateKey& SshPrivateKey::operator=(const SshPrivateKey& other) {
  if (this != &other) {
    crypto::wipe(seed_);
    seed_ = other.seed_;
    public_ = other.public_;
    comment_ = other.comment_;
  }
  return *this;
}

SshPrivateKey::SshPrivateKey(SshPrivateKey&& other) noexcept
    : seed_(std::move(other.seed_)),
      public_(std::move(other.public_)),
      comment_(std::move(other.comment_)) {
  other.seed_.clear();
}

SshPrivateKey& SshPrivateKey::operator=(SshPrivateKey&& other) noexcept {
  if (this != &other) {
    crypto::wipe(seed_);
    seed_ = std::move(other.seed_);
    other.seed_.clear();
    public_ = std::move(other.public_);
    comment_ = std::move(other.comment_);
  }
  return *this;
}

SshPrivateKey::~SshPrivateKey() { crypto::wipe(seed_); }

std::string SshPrivateKey::to_openssh() const {
  std::string secret;
  const std::string check = crypto::random_bytes(4);
  secret += check;
  secret += check;
  ssh_wire::put_string(secret, kEd25519);
  ssh_wire::put_string(secret, public_.key);
  std::string pair = seed_ + public_.key;
  ssh_wire::put_string(secret, pair);
  crypto::wipe(pair);
  ssh_wire::put_string(secret, comment_);
  for (char pad = 1; secret.size() % 8 != 0; ++pad) secret.push_back(pad);

  std::string blob(kMagic);
  ssh_wire::put_string(blob, "none");
  ssh_wire::put_string(blob, "none");
  ssh_wire::put_string(blob, "");
  ssh_wire::put_u32(blob, 1);
  ssh_wire::put_string(blob, public_.blob());
  ssh_wire::put_string(blob, secret);
  crypto::wipe(secret);
  std::string out = armor(kBegin, kEnd, blob);
  crypto::wipe(blob);
  return out;
}

std::optional<SshPrivateKey> parse_private_key(std::string_view text, std::string& error) {
  const std::size_t begin = text.find(kBegin);
  if (begin == std::string_view::npos) {
    if (text.find("-----BEGIN ") != std::string_view::npos)
      error = "not an OpenSSH private key (a PEM/PKCS#8 key: convert it with ssh-keygen -p)";
    else
      error = "not an OpenSSH private key (no '" + std::string(kBegin) + "' line)";
    return std::nullopt;
  }
  const std::size_t end = text.find(kEnd, begin + kBegin.size());
  if (end == std::string_view::npos) {
    error = "OpenSSH private key without its END line";
    return std::nullopt;
  }
  std::string b64;
  for (char c : text.substr(begin + kBegin.size(), end - begin - kBegin.size()))
    if (c != '\n' && c != '\r' && c != ' ' && c != '\t') b64.push_back(c);
  std::optional<std::string> blob = base64_decode(b64);
  crypto::wipe(b64);
  if (!blob) {
    error = "OpenSSH private key: not base64";
    return std::nullopt;
  }
  struct Wipe {
    std::string& s;
    ~Wipe() { crypto::wipe(s); }
  } wipe_blob{*blob};

  const auto corrupt = [&error](const std::string& what) {
    error = "OpenSSH private key: " + what;
    return std::nullopt;
  };
  if (blob->compare(0, kMagic.size(), kMagic) != 0) return corrupt("bad magic");
  ssh_wire::Reader r(std::string_view(*blob).substr(kMagic.size()));
  std::string_view cipher, kdf, kdf_options, public_blob, secret;
  std::uint32_t count = 0;
  if (!r.string(cipher) || !r.string(kdf) || !r.string(kdf_options) || !r.u32(count))
    return corrupt("truncated header");
  if (cipher != "none" || kdf != "none") {
    error =
        "the OpenSSH private key is encrypted with a passphrase; a daemon cannot ask for it "
        "(make an unencrypted copy readable only by the service: ssh-keygen -p -N '')";
    return std::nullopt;
  }
  if (count != 1) return corrupt("holds " + std::to_string(count) + " keys, not one");
  if (!r.string(public_blob) || !r.string(secret) || !r.empty()) return corrupt("truncated");
  std::string why;
  {
    ssh_wire::Reader pr(public_blob);
    std::string_view type;
    if (pr.string(type) && type != kEd25519) {
      error = "the OpenSSH private key is " + std::string(type.substr(0, 40)) +
              ", not ssh-ed25519 (make one with ssh-keygen -t ed25519)";
      return std::nullopt;
    }
  }
  const auto pub = parse_public_key_blob(public_blob, why);
  if (!pub) return corrupt(why);
  if (secret.size() % 8 != 0) return corrupt("private section not padded");
  ssh_wire::Reader s(secret);
  std::uint32_t check1 = 0, check2 = 0;
  std::string_view type, pk, sk, comment;
  if (!s.u32(check1) || !s.u32(check2) || !s.string(type) || !s.string(pk) || !s.string(sk) ||
      !s.string(comment))
    return corrupt("truncated private section");
  if (check1 != check2) return corrupt("check values differ");
  if (type != kEd25519 || pk.size() != 32 || sk.size() != 64)
    return corrupt("private section is not an Ed25519 key");
  const std::string_view padding = s.rest();
  for (std::size_t i = 0; i < padding.size(); ++i)
    if (static_cast<unsigned char>(padding[i]) != i + 1) return corrupt("bad padding");
  if (!crypto::equal_ct(pk, pub->key) || !crypto::equal_ct(sk.substr(32), pk))
    return corrupt("public and private parts differ");
  SshPrivateKey key = SshPrivateKey::from_seed(sk.substr(0, 32), std::string(comment));
  if (!crypto::equal_ct(key.public_key().key, pk))
    return corrupt("the public key does not belong to the private key");
  return key;
}

std::optional<SshPublicKey> parse_public_key_blob(std::string_view blob, std::string& error) {
  ssh_wire::Reader r(blob);
  std::string_view type, key;
  if (!r.string(type) || !r.string(key) || !r.empty()) {
    error = "malformed public key";
    return std::nullopt;
  }
  if (type != kEd25519) {
    error = "key type " + std::string(type.substr(0, 40)) + " is not ssh-ed25519";
    return std::nullopt;
  }
  if (key.size() != 32) {
    error = "ssh-ed25519 key of " + std::to_string(key.size()) + " bytes, not 32";
    return std::nullopt;
  }
  return SshPublicKey{std::string(key)};
}

std::optional<PublicKeyLine> parse_public_key_line(std::string_view line, std::string& error) {
  PublicKeyLine out;
  bool skip = false;
  if (!read_key(trim(line), out.key, out.comment, skip, error)) return std::nullopt;
  if (skip) {
    error = "not an ssh-ed25519 key";
    return std::nullopt;
  }
  return out;
}

std::optional<AuthorizedKeys> parse_authorized_keys(std::string_view text, std::string& error) {
  AuthorizedKeys out;
  const bool ok = for_each_line(text, [&](std::size_t number, std::string_view line) {
    while (!line.empty() && is_space(line.front())) line.remove_prefix(1);
    if (line.empty() || line.front() == '#') return true;
    AuthorizedKey entry;
    entry.line = number;
    std::string_view probe = line;
    const std::string_view first = next_token(probe);
    if (!is_ssh_key_type(first)) {
      if (!read_options(line, entry.options, error)) {
        error = line_prefix(number) + error;
        return false;
      }
    }
    bool skip = false;
    if (!read_key(line, entry.key, entry.comment, skip, error)) {
      error = line_prefix(number) + error;
      return false;
    }
    if (skip) {
      std::string_view rest = line;
      out.skipped.push_back(line_prefix(number) + std::string(next_token(rest)) +
                            " keys are not used end to end");
      return true;
    }
    out.keys.push_back(std::move(entry));
    return true;
  });
  if (!ok) return std::nullopt;
  return out;
}

std::vector<std::string> option_values(const AuthorizedKey& key, std::string_view name) {
  std::vector<std::string> out;
  for (const auto& option : key.options)
    if (equal_nocase(option.name, name)) out.push_back(option.value.value_or(""));
  return out;
}

std::vector<SshPublicKey> KnownDevices::keys_for(std::string_view id) const {
  std::vector<SshPublicKey> out;
  for (const auto& device : devices)
    if (device.id == id) out.push_back(device.key);
  return out;
}

std::optional<KnownDevices> parse_known_devices(std::string_view text, std::string& error) {
  KnownDevices out;
  const bool ok = for_each_line(text, [&](std::size_t number, std::string_view line) {
    while (!line.empty() && is_space(line.front())) line.remove_prefix(1);
    if (line.empty() || line.front() == '#') return true;
    KnownDevice entry;
    entry.line = number;
    const std::string_view id = next_token(line);
    const bool control = std::any_of(id.begin(), id.end(), [](char c) {
      return static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
    });
    if (control || id.find_first_of("+#") != std::string_view::npos) {
      error = line_prefix(number) + "a device id holds no '+', '#' or control character";
      return false;
    }
    entry.id = std::string(id);
    bool skip = false;
    if (!read_key(line, entry.key, entry.comment, skip, error)) {
      error = line_prefix(number) + error;
      return false;
    }
    if (skip) {
      out.skipped.push_back(line_prefix(number) + "only ssh-ed25519 keys are used end to end");
      return true;
    }
    out.devices.push_back(std::move(entry));
    return true;
  });
  if (!ok) return std::nullopt;
  return out;
}

}  // namespace hom
