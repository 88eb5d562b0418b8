#include "hom/e2e_requester.hpp"

#include <chrono>
#include <fstream>
#include <sstream>

#include "hom/age.hpp"
#include "hom/seal.hpp"

namespace hom {

namespace {

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return std::nullopt;
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

std::shared_ptr<E2eRequester> E2eRequester::load(const std::string& identity_file,
                                                 const std::string& known_devices_file,
                                                 std::string& error) {
  auto text = read_file(identity_file);
  if (!text) {
    error = "cannot read the identity " + identity_file;
    return nullptr;
  }
  std::string why;
  auto key = parse_private_key(*text, why);
  std::fill(text->begin(), text->end(), '\0');
  if (!key) {
    error = "the identity " + identity_file + " is not usable: " + why;
    return nullptr;
  }
  const auto devices_text = read_file(known_devices_file);
  if (!devices_text) {
    error = "cannot read the known devices file " + known_devices_file;
    return nullptr;
  }
  auto devices = parse_known_devices(*devices_text, why);
  if (!devices) {
    error = known_devices_file + ": " + why;
    return nullptr;
  }
  return std::make_shared<E2eRequester>(std::move(*key), std::move(*devices), known_devices_file);
}

E2eRequester::E2eRequester(SshPrivateKey identity, KnownDevices devices, std::string devices_file)
    : identity_(std::move(identity)),
      devices_(std::move(devices)),
      devices_file_(std::move(devices_file)) {}

std::optional<std::string> E2eRequester::seal(const Input& input, std::string& error) const {
  const auto keys = devices_.keys_for(input.device);
  if (keys.empty()) {
    error = "device " + input.device + " has no key in " + devices_file_;
    return std::nullopt;
  }
  SignedRequest r;
  r.device_id = input.device;
  r.topic_start = input.start;
  r.verb = input.verb;
  r.path = input.path;
  r.response_topic = input.response_topic;
  r.correlation_data = input.correlation_data;
  r.timestamp = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  r.nonce = make_nonce();
  r.payload = input.payload;
  return seal_request(r, identity_, keys, error);
}

std::optional<std::string> E2eRequester::open(std::string_view sealed_reply,
                                              std::string_view sealed_request,
                                              const std::string& device, std::string& error) const {
  const auto keys = devices_.keys_for(device);
  return open_reply(sealed_reply, identity_, keys, device, sealed_request, error);
}

namespace {

class AgeBodyOpener : public BodyOpener {
 public:
  AgeBodyOpener(const SshPrivateKey& identity, const std::string& binding) : decryptor_(identity) {
    decryptor_.expect_header(binding);
  }
  bool update(std::string_view ciphertext, std::string& out) override {
    return decryptor_.update(ciphertext, out);
  }
  bool finish(std::string& out) override { return decryptor_.finish(out); }
  const std::string& error() const override { return decryptor_.error(); }

 private:
  AgeDecryptor decryptor_;
};

}  // namespace

std::unique_ptr<BodyOpener> E2eRequester::open_body(const std::string& binding) const {
  return std::make_unique<AgeBodyOpener>(identity_, binding);
}

}  // namespace hom
