#include "fuzz_support.hpp"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <memory>

namespace hom_fuzz {

namespace {

struct UrlFree {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};

std::string url_get(CURLU* u, CURLUPart part) {
  char* value = nullptr;
  if (curl_url_get(u, part, &value, 0) != CURLUE_OK || value == nullptr) return {};
  std::string out(value);
  curl_free(value);
  return out;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Written apart from hom::percent_decode on purpose: the oracle must not share its bugs.
std::string decode(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && hex_value(text[i + 1]) >= 0 &&
        hex_value(text[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(text[i + 1]) << 4 | hex_value(text[i + 2]));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

}  // namespace

void fail(const char* file, int line, const char* condition, const std::string& detail) {
  std::fprintf(stderr, "\n%s:%d: invariant failed: %s\n  %s\n", file, line, condition,
               detail.c_str());
  std::fflush(stderr);
  __builtin_trap();
}

bool ignored(std::string_view bug) {
  static const std::string list = [] {
    const char* env = std::getenv("HOM_FUZZ_IGNORE");
    return "," + std::string(env ? env : "") + ",";
  }();
  return list.find("," + std::string(bug) + ",") != std::string::npos;
}

std::string show(std::string_view bytes, std::size_t max) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out = "\"";
  for (std::size_t i = 0; i < bytes.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7F) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    }
  }
  out += '"';
  if (bytes.size() > max) out += "... (" + std::to_string(bytes.size()) + " bytes)";
  return out;
}

std::vector<std::string_view> split_fields(std::string_view input, std::size_t parts) {
  std::vector<std::string_view> out;
  while (out.size() + 1 < parts) {
    const std::size_t sep = input.find('\xFF');
    if (sep == std::string_view::npos) break;
    out.push_back(input.substr(0, sep));
    input.remove_prefix(sep + 1);
  }
  out.push_back(input);
  out.resize(parts);
  return out;
}

std::optional<UrlParts> parse_url(const std::string& url) {
  std::unique_ptr<CURLU, UrlFree> u(curl_url());
  if (!u || curl_url_set(u.get(), CURLUPART_URL, url.c_str(), 0) != CURLUE_OK) return std::nullopt;
  UrlParts p;
  p.scheme = url_get(u.get(), CURLUPART_SCHEME);
  p.user = url_get(u.get(), CURLUPART_USER);
  p.password = url_get(u.get(), CURLUPART_PASSWORD);
  p.host = url_get(u.get(), CURLUPART_HOST);
  p.port = url_get(u.get(), CURLUPART_PORT);
  p.path = url_get(u.get(), CURLUPART_PATH);
  p.query = url_get(u.get(), CURLUPART_QUERY);
  p.fragment = url_get(u.get(), CURLUPART_FRAGMENT);
  return p;
}

bool has_dot_segment(std::string_view path) {
  const std::string decoded = decode(path);
  std::size_t start = 0;
  while (start <= decoded.size()) {
    std::size_t end = decoded.find_first_of("/\\", start);
    if (end == std::string::npos) end = decoded.size();
    std::string_view piece = std::string_view(decoded).substr(start, end - start);
    piece = piece.substr(0, piece.find(';'));  // "..;x" is ".." to some servers
    if (piece == "." || piece == "..") return true;
    start = end + 1;
  }
  return false;
}

bool is_url_path_text(std::string_view text) {
  static constexpr std::string_view kKept = "-._~!$&'()*+,;=:@/?";
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '%') {
      if (i + 2 >= text.size() || hex_value(text[i + 1]) < 0 || hex_value(text[i + 2]) < 0)
        return false;
      i += 2;
    } else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 kKept.find(static_cast<char>(c)) != std::string_view::npos)) {
      return false;
    }
  }
  return true;
}

bool utf8_by_json(std::string_view text) {
  try {
    (void)nlohmann::json(std::string(text)).dump();
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

std::optional<nlohmann::json> parse_strict(std::string_view text) {
  if (text.find('\0') != std::string_view::npos) return std::nullopt;
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return std::nullopt;
  return doc;
}

std::string canonical_escapes(std::string text) {
  for (std::size_t i = 0; i + 2 < text.size(); ++i) {
    if (text[i] != '%' || hex_value(text[i + 1]) < 0 || hex_value(text[i + 2]) < 0) continue;
    text[i + 1] = static_cast<char>(std::toupper(static_cast<unsigned char>(text[i + 1])));
    text[i + 2] = static_cast<char>(std::toupper(static_cast<unsigned char>(text[i + 2])));
    i += 2;
  }
  return text;
}

int dom_depth(const nlohmann::json& value) {
  if (!value.is_structured()) return 0;
  int deepest = 0;
  for (const auto& child : value) deepest = std::max(deepest, dom_depth(child));
  return deepest + 1;
}

}  // namespace hom_fuzz
