#include "hom/age.hpp"

#include <utility>

#include "crypto.hpp"
#include "hom/base64.hpp"

namespace hom {
namespace {

constexpr std::string_view kIntro = "age-encryption.org/v1\n";
constexpr std::string_view kEd25519Label = "age-encryption.org/v1/ssh-ed25519";
constexpr std::size_t kFileKeyBytes = 16;
constexpr std::size_t kNonceBytes = 16;
constexpr std::size_t kSealedChunkBytes = kAgeChunkBytes + crypto::kTagBytes;
constexpr std::size_t kColumns = 64;

// age's base64: standard alphabet, no padding, canonical (the unused low bits zero).
std::string b64_raw(std::string_view bytes) {
  std::string out = base64_encode(bytes);
  while (!out.empty() && out.back() == '=') out.pop_back();
  return out;
}

std::optional<std::string> b64_raw_decode(std::string_view text) {
  if (text.size() % 4 == 1 || text.find('=') != std::string_view::npos) return std::nullopt;
  std::string padded(text);
  while (padded.size() % 4 != 0) padded.push_back('=');
  auto out = base64_decode(padded);
  if (!out || b64_raw(*out) != text) return std::nullopt;
  return out;
}

std::string chunk_nonce(std::uint64_t counter, bool last) {
  std::string nonce(12, '\0');
  for (int i = 0; i < 8; ++i) nonce[10 - i] = static_cast<char>((counter >> (8 * i)) & 0xff);
  nonce[11] = last ? 1 : 0;
  return nonce;
}

std::string tweak_for(std::string_view ssh_blob) {
  return crypto::hkdf_sha256("", ssh_blob, kEd25519Label, 32);
}

std::string header_mac(std::string_view file_key, std::string_view header_without_mac) {
  crypto::Secret key(crypto::hkdf_sha256(file_key, "", "header", 32));
  return crypto::hmac_sha256(key.view(), header_without_mac);
}

bool is_arg_char(char c) { return c >= 33 && c <= 126; }

struct Stanza {
  std::vector<std::string_view> args;  // args[0] is the type
  std::string body;
};

// Parses the header at the front of `data` strictly (age's format.Parse). Returns the size
// of the header up to and including "---" in `mac_offset`, the MAC and the size consumed up
// to and including the final newline. 0 when more bytes are needed; npos on a syntax error.
constexpr std::size_t kNeedMore = 0;
constexpr std::size_t kBad = std::string_view::npos;

std::size_t parse_header(std::string_view data, std::vector<Stanza>& stanzas,
                         std::size_t& mac_offset, std::string& mac, std::string& error) {
  std::size_t pos = 0;
  const auto line = [&](std::string_view& out) {
    const std::size_t nl = data.find('\n', pos);
    if (nl == std::string_view::npos) return false;
    out = data.substr(pos, nl - pos);
    pos = nl + 1;
    return true;
  };
  if (data.size() < kIntro.size()) {
    if (kIntro.substr(0, data.size()) != data) {
      error = "not an age file";
      return kBad;
    }
    return kNeedMore;
  }
  if (data.substr(0, kIntro.size()) != kIntro) {
    error = "not an age v1 file";
    return kBad;
  }
  pos = kIntro.size();
  std::string_view l;
  if (!line(l)) return kNeedMore;
  while (true) {
    if (l.substr(0, 4) == "--- ") {
      mac_offset = pos - l.size() - 1 + 3;
      const auto decoded = b64_raw_decode(l.substr(4));
      if (!decoded || decoded->size() != 32) {
        error = "age header: malformed MAC";
        return kBad;
      }
      mac = *decoded;
      return pos;
    }
    if (l.substr(0, 3) != "-> ") {
      error = "age header: malformed stanza";
      return kBad;
    }
    Stanza stanza;
    std::string_view rest = l.substr(3);
    while (true) {
      const std::size_t sp = rest.find(' ');
      const std::string_view arg = rest.substr(0, sp);
      if (arg.empty()) {
        error = "age header: empty stanza argument";
        return kBad;
      }
      for (char c : arg)
        if (!is_arg_char(c)) {
          error = "age header: bad stanza argument";
          return kBad;
        }
      stanza.args.push_back(arg);
      if (sp == std::string_view::npos) break;
      rest.remove_prefix(sp + 1);
    }
    // The body: lines of 64 columns, ending with a shorter (maybe empty) one.
    while (true) {
      if (!line(l)) return kNeedMore;
      if (l.size() > kColumns) {
        error = "age header: stanza body line too long";
        return kBad;
      }
      const auto chunk = b64_raw_decode(l);
      if (!chunk) {
        error = "age header: stanza body is not base64";
        return kBad;
      }
      stanza.body += *chunk;
      if (l.size() < kColumns) break;
    }
    stanzas.push_back(std::move(stanza));
    if (!line(l)) return kNeedMore;
  }
}

}  // namespace

// ---- Encryption --------------------------------------------------------------------------

std::optional<AgeEncryptor> AgeEncryptor::create(const std::vector<SshPublicKey>& recipients,
                                                 std::string& error) {
  if (recipients.empty()) {
    error = "no recipient";
    return std::nullopt;
  }
  crypto::Secret file_key(crypto::random_bytes(kFileKeyBytes));
  std::string header(kIntro);
  for (const auto& recipient : recipients) {
    const std::string blob = recipient.blob();
    const auto their_x = crypto::ed25519_pk_to_x25519(recipient.key);
    if (!their_x) {
      error = "recipient " + recipient.fingerprint() + " is not a valid Ed25519 key";
      return std::nullopt;
    }
    auto ephemeral = crypto::x25519_ephemeral(*their_x);
    if (!ephemeral) {
      error = "recipient " + recipient.fingerprint() + " is a low-order point";
      return std::nullopt;
    }
    const std::string& share = ephemeral->first;
    const crypto::Secret& raw_shared = ephemeral->second;
    auto tweaked = crypto::x25519_public_scalar(tweak_for(blob), raw_shared.view());
    if (!tweaked) {
      error = "recipient " + recipient.fingerprint() + ": key agreement failed";
      return std::nullopt;
    }
    crypto::Secret secret(std::move(*tweaked));
    crypto::Secret wrap_key(
        crypto::hkdf_sha256(secret.view(), share + *their_x, kEd25519Label, 32));
    const std::string body =
        crypto::chacha20poly1305_seal(wrap_key.view(), std::string(12, '\0'), file_key.view());
    header += "-> ssh-ed25519 ";
    header += b64_raw(crypto::sha256(blob).substr(0, 4));
    header += ' ';
    header += b64_raw(share);
    header += '\n';
    const std::string text = b64_raw(body);
    for (std::size_t i = 0; i <= text.size(); i += kColumns) {
      header.append(text, i, kColumns);
      header += '\n';
    }
  }
  header += "---";
  const std::string mac = header_mac(file_key.view(), header);
  header += ' ';
  header += b64_raw(mac);
  header += '\n';
  const std::string nonce = crypto::random_bytes(kNonceBytes);
  header += nonce;

  AgeEncryptor out;
  out.header_ = std::move(header);
  out.payload_key_ = crypto::hkdf_sha256(file_key.view(), nonce, "payload", 32);
  return out;
}

AgeEncryptor::~AgeEncryptor() {
  crypto::wipe(payload_key_);
  crypto::wipe(pending_);
}

std::string AgeEncryptor::take_header() {
  std::string out = std::move(header_);
  header_.clear();
  return out;
}

std::string AgeEncryptor::seal_chunk(std::string_view plaintext, bool last) {
  return crypto::chacha20poly1305_seal(payload_key_, chunk_nonce(counter_++, last), plaintext);
}

std::string AgeEncryptor::update(std::string_view plaintext) {
  std::string out = take_header();
  std::size_t used = 0;
  // Whole chunks straight from the input while more data follows them.
  if (!pending_.empty()) {
    const std::size_t fill = std::min(kAgeChunkBytes - pending_.size(), plaintext.size());
    pending_.append(plaintext.substr(0, fill));
    used = fill;
    if (pending_.size() == kAgeChunkBytes && used < plaintext.size()) {
      out += seal_chunk(pending_, false);
      crypto::wipe(pending_);
    }
  }
  while (pending_.empty() && plaintext.size() - used > kAgeChunkBytes) {
    out += seal_chunk(plaintext.substr(used, kAgeChunkBytes), false);
    used += kAgeChunkBytes;
  }
  pending_.append(plaintext.substr(used));
  return out;
}

std::string AgeEncryptor::finish() {
  std::string out = take_header();
  out += seal_chunk(pending_, true);
  crypto::wipe(pending_);
  return out;
}

// ---- Decryption --------------------------------------------------------------------------

AgeDecryptor::AgeDecryptor(const SshPrivateKey& identity)
    : x25519_public_(crypto::ed25519_pk_to_x25519(identity.public_key().key).value_or("")),
      ssh_blob_(identity.public_key().blob()) {
  x25519_secret_ =
      crypto::ed25519_seed_to_x25519(identity.seed(), identity.public_key().key).bytes();
}

AgeDecryptor::~AgeDecryptor() {
  crypto::wipe(x25519_secret_);
  crypto::wipe(payload_key_);
  crypto::wipe(buffer_);
}

bool AgeDecryptor::fail(std::string why) {
  state_ = State::kFailed;
  error_ = std::move(why);
  crypto::wipe(buffer_);
  crypto::wipe(payload_key_);
  return false;
}

bool AgeDecryptor::read_header() {
  std::vector<Stanza> stanzas;
  std::size_t mac_offset = 0;
  std::string mac, why;
  const std::size_t end = parse_header(buffer_, stanzas, mac_offset, mac, why);
  if (end == kBad) return fail(why);
  if (end == kNeedMore) {
    if (buffer_.size() > kMaxHeaderBytes) return fail("age header too long");
    return true;
  }
  if (end > kMaxHeaderBytes) return fail("age header too long");
  if (buffer_.size() < end + kNonceBytes) return true;
  if (!expected_header_.empty() && crypto::hex(crypto::sha256(std::string_view(buffer_).substr(
                                       0, end + kNonceBytes))) != expected_header_)
    return fail("the age header is not the one the signed head names");
  if (x25519_public_.empty()) return fail("the identity is not a valid Ed25519 key");

  const std::string tag = crypto::sha256(ssh_blob_).substr(0, 4);
  const std::string tweak = tweak_for(ssh_blob_);
  std::optional<crypto::Secret> file_key;
  bool any = false;
  for (const auto& stanza : stanzas) {
    if (stanza.args[0] != "ssh-ed25519") continue;  // another recipient type: not ours
    if (stanza.args.size() != 3) return fail("malformed ssh-ed25519 stanza");
    const auto their_tag = b64_raw_decode(stanza.args[1]);
    const auto share = b64_raw_decode(stanza.args[2]);
    if (!their_tag || their_tag->size() != 4 || !share || share->size() != 32 ||
        stanza.body.size() != kFileKeyBytes + crypto::kTagBytes)
      return fail("malformed ssh-ed25519 stanza");
    if (*their_tag != tag) continue;
    any = true;
    auto shared = crypto::x25519(x25519_secret_, *share);
    if (!shared) return fail("invalid ssh-ed25519 stanza (low-order share)");
    crypto::Secret raw_shared(std::move(*shared));
    auto tweaked = crypto::x25519_public_scalar(tweak, raw_shared.view());
    if (!tweaked) return fail("invalid ssh-ed25519 stanza");
    crypto::Secret secret(std::move(*tweaked));
    crypto::Secret wrap_key(
        crypto::hkdf_sha256(secret.view(), *share + x25519_public_, kEd25519Label, 32));
    auto unwrapped =
        crypto::chacha20poly1305_open(wrap_key.view(), std::string(12, '\0'), stanza.body);
    if (unwrapped) {
      file_key.emplace(std::move(*unwrapped));
      break;
    }
  }
  if (!file_key)
    return fail(any ? "the file key does not open with this identity"
                    : "the file is not encrypted to this key");
  const std::string expected =
      header_mac(file_key->view(), std::string_view(buffer_).substr(0, mac_offset));
  if (!crypto::equal_ct(expected, mac)) return fail("age header MAC mismatch (tampered)");
  payload_key_ =
      crypto::hkdf_sha256(file_key->view(), buffer_.substr(end, kNonceBytes), "payload", 32);
  buffer_.erase(0, end + kNonceBytes);
  state_ = State::kPayload;
  return true;
}

bool AgeDecryptor::open_chunk(std::string_view chunk, bool last, std::string& out) {
  auto plain = crypto::chacha20poly1305_open(payload_key_, chunk_nonce(counter_, last), chunk);
  if (!plain) {
    if (!last && crypto::chacha20poly1305_open(payload_key_, chunk_nonce(counter_, true), chunk))
      return fail("data after the last chunk");
    if (last && chunk.size() == kSealedChunkBytes &&
        crypto::chacha20poly1305_open(payload_key_, chunk_nonce(counter_, false), chunk))
      return fail("truncated: the stream ends before its last chunk");
    return fail("chunk " + std::to_string(counter_) + " failed authentication (tampered)");
  }
  if (last && plain->empty() && counter_ > 0) return fail("empty last chunk");
  ++counter_;
  out += *plain;
  crypto::wipe(*plain);
  return true;
}

bool AgeDecryptor::update(std::string_view ciphertext, std::string& out) {
  if (state_ == State::kFailed) return false;
  if (state_ == State::kDone) return fail("data after the end of the file");
  buffer_.append(ciphertext);
  if (state_ == State::kHeader && (!read_header() || state_ == State::kHeader))
    return state_ != State::kFailed;
  // A full chunk is known not to be the last only once a byte after it has arrived.
  std::size_t used = 0;
  while (buffer_.size() - used > kSealedChunkBytes) {
    if (!open_chunk(std::string_view(buffer_).substr(used, kSealedChunkBytes), false, out))
      return false;
    used += kSealedChunkBytes;
  }
  buffer_.erase(0, used);
  return true;
}

bool AgeDecryptor::finish(std::string& out) {
  if (state_ == State::kFailed) return false;
  if (state_ == State::kDone) return fail("finish() called twice");
  if (state_ == State::kHeader) return fail("truncated: the age header is incomplete");
  if (buffer_.size() < crypto::kTagBytes)
    return fail(counter_ > 0 ? "truncated: the stream ends before its last chunk"
                             : "truncated: no payload");
  if (!open_chunk(buffer_, true, out)) return false;
  crypto::wipe(buffer_);
  state_ = State::kDone;
  return true;
}

std::optional<std::string> age_encrypt(const std::vector<SshPublicKey>& recipients,
                                       std::string_view plaintext, std::string& error) {
  auto encryptor = AgeEncryptor::create(recipients, error);
  if (!encryptor) return std::nullopt;
  std::string out = encryptor->update(plaintext);
  out += encryptor->finish();
  return out;
}

std::optional<std::string> age_decrypt(const SshPrivateKey& identity, std::string_view file,
                                       std::string& error) {
  AgeDecryptor decryptor(identity);
  std::string out;
  if (!decryptor.update(file, out) || !decryptor.finish(out)) {
    crypto::wipe(out);
    error = decryptor.error();
    return std::nullopt;
  }
  return out;
}

}  // namespace hom
