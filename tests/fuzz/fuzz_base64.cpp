// base64_encode / base64_decode (RFC 4648 §4, strict).
// Input: any bytes, used both as data to encode and as text to decode.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "hom/base64.hpp"

namespace {

using hom_fuzz::show;

int alphabet_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// The reference: length a multiple of 4, the alphabet, then at most two '='.
bool valid(std::string_view text, std::size_t& padding) {
  if (text.size() % 4 != 0) return false;
  padding = 0;
  while (padding < text.size() && text[text.size() - 1 - padding] == '=') ++padding;
  if (padding > 2) return false;
  for (std::size_t i = 0; i + padding < text.size(); ++i)
    if (alphabet_value(text[i]) < 0) return false;
  return true;
}

// Canonical: the bits below the last whole byte are zero (RFC 4648 §3.5).
bool canonical(std::string_view text, std::size_t padding) {
  if (padding == 0) return true;
  const int last = alphabet_value(text[text.size() - 1 - padding]);
  return (last & (padding == 1 ? 0x3 : 0xF)) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  const std::string encoded = hom::base64_encode(input);
  HOM_FUZZ_CHECK(encoded.size() == (size + 2) / 3 * 4, "encoded length of " + show(input));
  std::size_t padding = 0;
  HOM_FUZZ_CHECK(valid(encoded, padding) && canonical(encoded, padding),
                 show(input) + " encoded as " + show(encoded));
  const auto back = hom::base64_decode(encoded);
  HOM_FUZZ_CHECK(back && *back == input, show(input) + " encoded as " + show(encoded) +
                                             " decoded as " + show(back.value_or("(refused)")));

  const auto decoded = hom::base64_decode(input);
  const bool want = valid(input, padding);
  HOM_FUZZ_CHECK(decoded.has_value() == want, show(input) + (want ? " refused" : " accepted"));
  if (decoded) {
    HOM_FUZZ_CHECK(decoded->size() == size / 4 * 3 - padding,
                   show(input) + " decoded to " + std::to_string(decoded->size()) + " bytes");
    // Non-canonical spellings ("QR==" for "A") are accepted; only canonical ones round-trip.
    const std::string again = hom::base64_encode(*decoded);
    HOM_FUZZ_CHECK((again == input) == canonical(input, padding),
                   show(input) + " decoded and encoded again as " + show(again));
  }
  return 0;
}
