// The requester's side of end-to-end security (SPEC §8), for hom and hom-gateway: signs with
// an OpenSSH Ed25519 identity, seals to the device's keys from a known_devices file, opens
// and verifies the replies (seal.hpp).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "hom/requester.hpp"
#include "hom/ssh_keys.hpp"

namespace hom {

class E2eRequester : public CallSealer {
 public:
  // Reads the identity (unencrypted OpenSSH Ed25519 private key) and the known_devices file;
  // nullptr with one line saying why.
  static std::shared_ptr<E2eRequester> load(const std::string& identity_file,
                                            const std::string& known_devices_file,
                                            std::string& error);
  E2eRequester(SshPrivateKey identity, KnownDevices devices, std::string devices_file);

  std::optional<std::string> seal(const Input& input, std::string& error) const override;
  std::optional<std::string> open(std::string_view sealed_reply, std::string_view sealed_request,
                                  const std::string& device, std::string& error) const override;
  std::unique_ptr<BodyOpener> open_body(const std::string& binding) const override;

  const SshPrivateKey& identity() const { return identity_; }

 private:
  const SshPrivateKey identity_;
  const KnownDevices devices_;
  const std::string devices_file_;
};

}  // namespace hom
