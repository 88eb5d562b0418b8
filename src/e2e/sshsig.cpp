#include "hom/sshsig.hpp"

#include <cstdint>

#include "crypto.hpp"
#include "hom/base64.hpp"
#include "ssh_wire.hpp"

namespace hom {
namespace {

constexpr std::string_view kPreamble = "SSHSIG";
constexpr std::uint32_t kVersion = 1;
constexpr std::string_view kBegin = "-----BEGIN SSH SIGNATURE-----";
constexpr std::string_view kEnd = "-----END SSH SIGNATURE-----";

std::string signed_data(std::string_view name_space, std::string_view reserved,
                        std::string_view hash_name, std::string_view hash) {
  std::string out(kPreamble);
  ssh_wire::put_string(out, name_space);
  ssh_wire::put_string(out, reserved);
  ssh_wire::put_string(out, hash_name);
  ssh_wire::put_string(out, hash);
  return out;
}

}  // namespace

std::string sshsig_sign(const SshPrivateKey& key, std::string_view name_space,
                        std::string_view message) {
  const std::string data = signed_data(name_space, "", "sha512", crypto::sha512(message));
  std::string signature;
  ssh_wire::put_string(signature, "ssh-ed25519");
  ssh_wire::put_string(signature, crypto::ed25519_sign(key.seed(), data));

  std::string blob(kPreamble);
  ssh_wire::put_u32(blob, kVersion);
  ssh_wire::put_string(blob, key.public_key().blob());
  ssh_wire::put_string(blob, name_space);
  ssh_wire::put_string(blob, "");
  ssh_wire::put_string(blob, "sha512");
  ssh_wire::put_string(blob, signature);
  return blob;
}

std::string sshsig_armor(std::string_view blob) {
  const std::string b64 = base64_encode(blob);
  std::string out(kBegin);
  out += '\n';
  for (std::size_t i = 0; i < b64.size(); i += 70) {
    out.append(b64, i, 70);
    out += '\n';
  }
  out.append(kEnd);
  out += '\n';
  return out;
}

std::optional<std::string> sshsig_unarmor(std::string_view text, std::string& error) {
  const std::size_t begin = text.find(kBegin);
  const std::size_t end =
      begin == std::string_view::npos ? begin : text.find(kEnd, begin + kBegin.size());
  if (begin == std::string_view::npos || end == std::string_view::npos) {
    error = "not an armored SSH signature";
    return std::nullopt;
  }
  std::string b64;
  for (char c : text.substr(begin + kBegin.size(), end - begin - kBegin.size()))
    if (c != '\n' && c != '\r' && c != ' ' && c != '\t') b64.push_back(c);
  auto blob = base64_decode(b64);
  if (!blob) error = "armored SSH signature: not base64";
  return blob;
}

std::optional<SshPublicKey> sshsig_verify(std::string_view blob, std::string_view name_space,
                                          std::string_view message, std::string& error) {
  const auto bad = [&error](std::string why) {
    error = std::move(why);
    return std::nullopt;
  };
  if (blob.substr(0, kPreamble.size()) != kPreamble) return bad("not an SSHSIG signature");
  ssh_wire::Reader r(blob.substr(kPreamble.size()));
  std::uint32_t version = 0;
  std::string_view public_blob, ns, reserved, hash_name, signature;
  if (!r.u32(version) || !r.string(public_blob) || !r.string(ns) || !r.string(reserved) ||
      !r.string(hash_name) || !r.string(signature) || !r.empty())
    return bad("malformed SSHSIG signature");
  if (version != kVersion) return bad("SSHSIG version " + std::to_string(version) + " is unknown");
  std::string why;
  auto key = parse_public_key_blob(public_blob, why);
  if (!key) return bad("signature key: " + why);
  if (ns != name_space)
    return bad("signature is for namespace '" + std::string(ns.substr(0, 64)) + "', not '" +
               std::string(name_space) + "'");
  std::string hash;
  if (hash_name == "sha512")
    hash = crypto::sha512(message);
  else if (hash_name == "sha256")
    hash = crypto::sha256(message);
  else
    return bad("signature hash '" + std::string(hash_name.substr(0, 32)) + "' is not supported");
  ssh_wire::Reader s(signature);
  std::string_view sig_type, sig;
  if (!s.string(sig_type) || !s.string(sig) || !s.empty() || sig_type != "ssh-ed25519")
    return bad("malformed ssh-ed25519 signature");
  if (!crypto::ed25519_verify(key->key, signed_data(ns, reserved, hash_name, hash), sig))
    return bad("bad signature");
  return key;
}

}  // namespace hom
