// What the benchmark's local API serves and what the load generator expects back. The one
// place these bytes are defined: nginx serves the files `hom-loadgen --write-fixtures`
// writes, hom-slow-api and hom-echo use the constants directly.
#pragma once

#include <cstddef>
#include <string>

namespace hom::bench {

// GET /gps/latitude: a JSON document, so the reply's `content` is that JSON value.
inline constexpr const char* kLatitudePath = "gps/latitude";
inline constexpr const char* kLatitudeJson = R"({"latitude":52.520008,"unit":"deg"})";

// POST /food/dessert with a JSON body: 201 and a plain-text body (not JSON, valid UTF-8), so
// the reply's `content` is that string.
inline constexpr const char* kDessertPath = "food/dessert";
inline constexpr const char* kDessertBody = R"({"dessert":"tiramisu","servings":2})";
inline constexpr const char* kDessertText = "dessert created";
inline constexpr int kDessertStatus = 201;

// GET /slow/gps/latitude (bench/soak.sh): nginx passes it to hom-slow-api, which answers
// /gps/latitude after its delay; the same reply as kLatitudePath, only later.
inline constexpr const char* kSlowLatitudePath = "slow/gps/latitude";

// GET /bin: every byte value once (not UTF-8), so the reply carries base64 and
// "content_encoding":"base64".
inline constexpr const char* kBinPath = "bin";
inline constexpr std::size_t kBinSize = 256;

inline std::string bin_bytes() {
  std::string out(kBinSize, '\0');
  for (std::size_t i = 0; i < kBinSize; ++i) out[i] = static_cast<char>(i & 0xFF);
  return out;
}

inline std::string base64(const std::string& in) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const unsigned v = (static_cast<unsigned char>(in[i]) << 16) |
                       (static_cast<unsigned char>(in[i + 1]) << 8) |
                       static_cast<unsigned char>(in[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (i < in.size()) {
    unsigned v = static_cast<unsigned char>(in[i]) << 16;
    if (i + 1 < in.size()) v |= static_cast<unsigned char>(in[i + 1]) << 8;
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += i + 1 < in.size() ? kAlphabet[(v >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

}  // namespace hom::bench
