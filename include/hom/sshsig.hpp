// SSHSIG signatures (OpenSSH PROTOCOL.sshsig, what `ssh-keygen -Y sign/verify` make and
// check) with Ed25519 keys. The signed data is
//   "SSHSIG" ‖ string namespace ‖ string reserved ‖ string hash_algorithm ‖ string H(message)
// so a signature made for one namespace is worthless in any other. Pure: no I/O.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "hom/ssh_keys.hpp"

namespace hom {

// The namespaces of SPEC §8.
inline constexpr std::string_view kRequestNamespace = "hom-request@v1";
inline constexpr std::string_view kReplyNamespace = "hom-reply@v1";

// The binary SSHSIG blob over `message` (hash sha512, as ssh-keygen makes by default).
std::string sshsig_sign(const SshPrivateKey& key, std::string_view name_space,
                        std::string_view message);

// "-----BEGIN SSH SIGNATURE-----", base64 in lines of 70, "-----END SSH SIGNATURE-----".
std::string sshsig_armor(std::string_view blob);
// The blob inside an armored signature; nullopt with a reason when it is not one.
std::optional<std::string> sshsig_unarmor(std::string_view text, std::string& error);

// Checks a binary blob: version 1, an ssh-ed25519 key, the expected namespace, hash sha512 or
// sha256, and the signature over `message`. Returns the signer's key; whether that key is
// trusted is the caller's question. nullopt with a reason otherwise.
std::optional<SshPublicKey> sshsig_verify(std::string_view blob, std::string_view name_space,
                                          std::string_view message, std::string& error);

}  // namespace hom
