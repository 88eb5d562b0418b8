// age_decrypt and AgeDecryptor (also bound to a header digest) / sshsig_verify / sshsig_unarmor /
// decode_signed_request / decode_signed_reply / RequestGate::admit (SPEC §8): what a sealed message
// from the broker goes through. The keys are fixed (seeds 0x01… for the device, 0x02… for the
// requester), so seeds encrypted to them reach the inner layers. Input: any bytes, given whole to
// each function; byte 0 also picks where the streamed decryption cuts the input.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "hom/age.hpp"
#include "hom/seal.hpp"
#include "hom/sshsig.hpp"

namespace {

using hom_fuzz::show;

const hom::SshPrivateKey& device() {
  static const auto key = hom::SshPrivateKey::from_seed(std::string(32, '\x01'), "device");
  return key;
}
const hom::SshPrivateKey& requester() {
  static const auto key = hom::SshPrivateKey::from_seed(std::string(32, '\x02'), "requester");
  return key;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string error;

  // Whole and streamed decryption agree, whatever the cut points.
  const auto whole = hom::age_decrypt(device(), input, error);
  HOM_FUZZ_CHECK(whole || !error.empty(), show(input));
  {
    hom::AgeDecryptor decryptor(device());
    std::string out;
    const std::size_t step = size == 0 ? 1 : 1 + data[0] % 97;
    bool ok = true;
    for (std::size_t pos = 0; ok && pos < size; pos += step)
      ok = decryptor.update(input.substr(pos, step), out);
    ok = ok && decryptor.finish(out);
    HOM_FUZZ_CHECK(ok == whole.has_value(), show(input) + ": " + decryptor.error() + " / " + error);
    if (ok) HOM_FUZZ_CHECK(out == *whole, show(input));
  }

  // Bound to the digest of its header and nonce (a sealed stream's head), a decryptor takes
  // that file and no other; refusing, it gives out nothing.
  if (whole) {
    const std::size_t mac = input.find("\n--- ");
    const std::size_t end = input.find('\n', mac + 1) + 1 + 16;
    HOM_FUZZ_CHECK(mac != std::string_view::npos && end <= size, show(input));
    const std::string bound = hom::sha256_hex(input.substr(0, end));
    for (const bool right : {true, false}) {
      hom::AgeDecryptor decryptor(device());
      decryptor.expect_header(right ? bound : std::string(64, '0'));
      std::string out;
      const bool ok = decryptor.update(input, out) && decryptor.finish(out);
      HOM_FUZZ_CHECK(ok == right, show(input) + ": " + decryptor.error());
      HOM_FUZZ_CHECK(right ? out == *whole : out.empty(), show(input));
    }
  }

  // A signature that verifies names an Ed25519 key; it fails for any other namespace.
  if (const auto signer = hom::sshsig_verify(input, hom::kRequestNamespace, "message", error)) {
    HOM_FUZZ_CHECK(signer->key.size() == 32, show(input));
    HOM_FUZZ_CHECK(!hom::sshsig_verify(input, hom::kReplyNamespace, "message", error), show(input));
  }
  if (const auto blob = hom::sshsig_unarmor(input, error)) {
    const auto again = hom::sshsig_unarmor(hom::sshsig_armor(*blob), error);
    HOM_FUZZ_CHECK(again && *again == *blob, show(input));
  }

  // The signed layouts are canonical: what decodes encodes back to the same bytes.
  if (const auto request = hom::decode_signed_request(input, error))
    HOM_FUZZ_CHECK(hom::encode_signed_request(*request) == input, show(input));
  if (const auto reply = hom::decode_signed_reply(input, error))
    HOM_FUZZ_CHECK(hom::encode_signed_reply(*reply) == input, show(input));

  // The gate: 0, 401 or 403 with a reason exactly when refusing; nothing but a request
  // signed by the authorized requester key passes the signature checks.
  static const std::string state = [] {
    const auto dir =
        std::filesystem::temp_directory_path() / ("hom-fuzz-sealed-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::atexit([] {
      std::error_code ignored;
      std::filesystem::remove_all(std::filesystem::temp_directory_path() /
                                      ("hom-fuzz-sealed-" + std::to_string(::getpid())),
                                  ignored);
    });
    return dir.string();
  }();
  static std::unique_ptr<hom::ReplayGuard> guard = [] {
    std::string why;
    auto g = hom::ReplayGuard::open({state, 300, 1 << 16}, 0, why);
    if (!g) hom_fuzz::fail(__FILE__, __LINE__, "replay guard", why);
    return g;
  }();
  static const hom::RequestGate gate = [] {
    std::string why;
    const auto keys = hom::parse_authorized_keys(
        "hom-allow=\"GET /gps/**\" " + requester().public_key().line() + "\n", why);
    return hom::RequestGate(device(), "itsme", "v1", *hom::Authorizer::create(*keys, why), *guard);
  }();
  // now = the signed timestamp when there is one, so that fresh nonces reach hom-allow.
  const auto verdict = gate.admit(input, {}, 1700000000);
  HOM_FUZZ_CHECK(verdict.status == 0 || verdict.status == 401 || verdict.status == 403,
                 show(input));
  HOM_FUZZ_CHECK(verdict.reason.empty() == (verdict.status == 0), show(input));
  if (verdict.request)
    HOM_FUZZ_CHECK(verdict.request->signer == requester().public_key(), show(input));
  return 0;
}
