// The demo UI's logo, drawn per pixel with signed distances (anti-aliased edges) and written
// as a PNG by hand: zlib "stored" blocks need no compressor, only CRC-32 and Adler-32.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <string>

#include "web_assets.hpp"

namespace hom::demo {
namespace {

struct Rgba {
  double r, g, b, a;
};

double clamp01(double v) { return std::clamp(v, 0.0, 1.0); }

// The drawing lives on a 256 x 256 canvas: (x, y) is a point on it, `pixel` one pixel's width.
Rgba shade(double x, double y, double pixel) {
  // Coverage of a shape whose signed distance (canvas units, < 0 inside) is `d`.
  const auto cover = [pixel](double d) { return clamp01(0.5 - d / pixel); };

  // The tile: a rounded square, 8..248, corner radius 52.
  const double qx = std::abs(x - 128) - (120 - 52), qy = std::abs(y - 128) - (120 - 52);
  const double tile =
      std::hypot(std::max(qx, 0.0), std::max(qy, 0.0)) + std::min(std::max(qx, qy), 0.0) - 52;
  // A diagonal gradient from teal to indigo, lighter towards the top left.
  const double t = clamp01((x + y) / 512);
  const double light = 36 * clamp01(1 - std::hypot(x - 56, y - 40) / 260);
  Rgba c{15 + (67 - 15) * t + light, 118 + (56 - 118) * t + light, 110 + (202 - 110) * t + light,
         cover(tile)};

  // The mark: a dot and three quarter rings with round caps, opening up and to the right.
  const double ox = 78, oy = 178;
  double mark = std::hypot(x - ox, y - oy) - 22;
  for (const double radius : {56.0, 96.0, 136.0}) {
    constexpr double kHalfWidth = 12;
    double d;
    if (x >= ox && y <= oy) {
      d = std::abs(std::hypot(x - ox, y - oy) - radius) - kHalfWidth;
    } else {
      d = std::min(std::hypot(x - ox, y - oy + radius), std::hypot(x - ox - radius, y - oy)) -
          kHalfWidth;
    }
    mark = std::min(mark, d);
  }
  const double white = cover(mark);
  c.r += (255 - c.r) * white;
  c.g += (255 - c.g) * white;
  c.b += (255 - c.b) * white;
  return c;
}

const std::array<std::uint32_t, 256>& crc_table() {
  static const auto table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t n = 0; n < 256; ++n) {
      std::uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  return table;
}

std::uint32_t crc32(const std::string& bytes, std::size_t from) {
  std::uint32_t c = 0xFFFFFFFFu;
  for (std::size_t i = from; i < bytes.size(); ++i)
    c = crc_table()[(c ^ static_cast<unsigned char>(bytes[i])) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

void put32(std::string& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((v >> shift) & 0xFF);
}

// Appends a chunk: length, type, data, CRC of type and data.
void chunk(std::string& png, const char* type, const std::string& data) {
  put32(png, static_cast<std::uint32_t>(data.size()));
  const std::size_t crc_from = png.size();
  png += type;
  png += data;
  put32(png, crc32(png, crc_from));
}

// A zlib stream of `raw` in stored (uncompressed) deflate blocks of at most 65 535 bytes.
std::string zlib_stored(const std::string& raw) {
  std::string out = "\x78\x01";
  std::uint32_t a = 1, b = 0;
  for (const char ch : raw) {
    a = (a + static_cast<unsigned char>(ch)) % 65521;
    b = (b + a) % 65521;
  }
  std::size_t at = 0;
  do {
    const std::size_t n = std::min<std::size_t>(raw.size() - at, 65535);
    const bool last = at + n == raw.size();
    out += static_cast<char>(last ? 1 : 0);
    out += static_cast<char>(n & 0xFF);
    out += static_cast<char>(n >> 8);
    out += static_cast<char>(~n & 0xFF);
    out += static_cast<char>((~n >> 8) & 0xFF);
    out.append(raw, at, n);
    at += n;
  } while (at < raw.size());
  put32(out, (b << 16) | a);
  return out;
}

}  // namespace

std::string logo_png(int size) {
  const double pixel = 256.0 / size;
  std::string raw;
  raw.reserve(static_cast<std::size_t>(size) * (1 + 4 * static_cast<std::size_t>(size)));
  for (int y = 0; y < size; ++y) {
    raw += '\0';  // filter: none
    for (int x = 0; x < size; ++x) {
      const Rgba c = shade((x + 0.5) * pixel, (y + 0.5) * pixel, pixel);
      for (const double v : {c.r, c.g, c.b, c.a * 255})
        raw += static_cast<char>(std::lround(std::clamp(v, 0.0, 255.0)));
    }
  }
  std::string header;
  put32(header, static_cast<std::uint32_t>(size));
  put32(header, static_cast<std::uint32_t>(size));
  header += std::string("\x08\x06\x00\x00\x00", 5);  // 8 bits, RGBA, deflate, no interlace

  std::string png = "\x89PNG\r\n\x1a\n";
  chunk(png, "IHDR", header);
  chunk(png, "IDAT", zlib_stored(raw));
  chunk(png, "IEND", "");
  return png;
}

}  // namespace hom::demo
