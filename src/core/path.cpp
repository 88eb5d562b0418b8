#include "hom/path.hpp"

#include <curl/curl.h>

#include <memory>

namespace hom {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool is_escape_at(std::string_view s, std::size_t i) {
  return i + 2 < s.size() && s[i] == '%' && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0;
}

bool is_unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

// Characters kept as they are in a path or query (RFC 3986 pchar, plus '/' and '?').
bool is_kept(unsigned char c) {
  if (is_unreserved(c)) return true;
  switch (c) {
    case '!':
    case '$':
    case '&':
    case '\'':
    case '(':
    case ')':
    case '*':
    case '+':
    case ',':
    case ';':
    case '=':
    case ':':
    case '@':
    case '/':
    case '?':
      return true;
    default:
      return false;
  }
}

void append_escape(std::string& out, unsigned char c) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  out += '%';
  out += kHex[c >> 4];
  out += kHex[c & 0xF];
}

// A segment is a dot segment when its decoded form, split at '/' or '\' as some servers
// do after decoding, has a "." or ".." piece.
bool has_dot_segment(std::string_view decoded) {
  std::size_t start = 0;
  while (start <= decoded.size()) {
    std::size_t end = decoded.find_first_of("/\\", start);
    if (end == std::string_view::npos) end = decoded.size();
    std::string_view piece = decoded.substr(start, end - start);
    // "..;x" is ".." to servers that strip path parameters (Tomcat, Jetty).
    piece = piece.substr(0, piece.find(';'));
    if (piece == "." || piece == "..") return true;
    start = end + 1;
  }
  return false;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t end = s.find(sep, start);
    if (end == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
}

bool segment_match(std::string_view pattern, std::string_view text) {
  std::size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
  while (t < text.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = t;
    } else if (p < pattern.size() && pattern[p] == text[t]) {
      ++p, ++t;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      t = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

// Dynamic programming over (pattern segment, path segment): O(P x S) whatever the number
// of "**" (a backtracking matcher is exponential in them, and this runs on every request).
bool segments_match(const std::vector<std::string_view>& pat,
                    const std::vector<std::string_view>& segs) {
  const std::size_t n = segs.size();
  // next[j]: pattern segments i+1.. match path segments j..
  std::vector<char> next(n + 1, 0), cur(n + 1, 0);
  next[n] = 1;  // the empty pattern matches the empty rest
  for (std::size_t i = pat.size(); i-- > 0;) {
    if (pat[i] == "**") {
      cur[n] = next[n];
      for (std::size_t j = n; j-- > 0;) cur[j] = next[j] || cur[j + 1];
    } else {
      cur[n] = 0;
      for (std::size_t j = 0; j < n; ++j) cur[j] = segment_match(pat[i], segs[j]) && next[j + 1];
    }
    std::swap(cur, next);
  }
  return next[0] != 0;
}

struct UrlDeleter {
  void operator()(CURLU* u) const { curl_url_cleanup(u); }
};
using UrlPtr = std::unique_ptr<CURLU, UrlDeleter>;

std::string url_part(CURLU* u, CURLUPart part) {
  char* value = nullptr;
  if (curl_url_get(u, part, &value, 0) != CURLUE_OK || value == nullptr) return {};
  std::string out(value);
  curl_free(value);
  return out;
}

}  // namespace

std::string percent_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (is_escape_at(text, i)) {
      out += static_cast<char>(hex_value(text[i + 1]) * 16 + hex_value(text[i + 2]));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

std::string percent_encode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (is_unreserved(c)) {
      out += ch;
    } else {
      append_escape(out, c);
    }
  }
  return out;
}

std::optional<std::string> normalise_path(std::string_view raw, std::string& error) {
  if (raw.find('\0') != std::string_view::npos) {
    error = "path contains a NUL byte";
    return std::nullopt;
  }
  const std::size_t q = raw.find('?');
  const std::string_view path = raw.substr(0, q);
  for (const std::string_view segment : split(path, '/')) {
    const std::string decoded = percent_decode(segment);
    if (decoded.find('\0') != std::string::npos) {
      error = "path contains a NUL byte";
      return std::nullopt;
    }
    if (has_dot_segment(decoded)) {
      error = "path contains a '.' or '..' segment";
      return std::nullopt;
    }
  }
  if (q != std::string_view::npos &&
      percent_decode(raw.substr(q)).find('\0') != std::string::npos) {
    error = "query contains a NUL byte";
    return std::nullopt;
  }
  std::string out;
  out.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    const auto c = static_cast<unsigned char>(raw[i]);
    if (c == '%') {
      if (is_escape_at(raw, i)) {
        out.append(raw.substr(i, 3));
        i += 2;
      } else {
        out += "%25";
      }
    } else if (is_kept(c) && !(c == '?' && i < q)) {
      out += raw[i];
    } else if (c == '?' && i == q) {
      out += '?';
    } else {
      append_escape(out, c);
    }
  }
  return out;
}

bool glob_match(std::string_view pattern, std::string_view path) {
  return segments_match(split(pattern, '/'), split(path, '/'));
}

bool path_allowed(const std::vector<std::string>& globs, std::string_view path) {
  if (globs.empty()) return true;
  for (const auto& glob : globs)
    if (glob_match(glob, path)) return true;
  return false;
}

std::optional<std::string> build_url(const std::string& base_url, std::string_view path,
                                     std::string_view extra_query, std::string& error) {
  UrlPtr base(curl_url());
  UrlPtr url(curl_url());
  if (!base || !url || curl_url_set(base.get(), CURLUPART_URL, base_url.c_str(), 0) != CURLUE_OK ||
      curl_url_set(url.get(), CURLUPART_URL, base_url.c_str(), 0) != CURLUE_OK) {
    error = "invalid base URL";
    return std::nullopt;
  }
  const std::string base_path = url_part(base.get(), CURLUPART_PATH);
  const std::size_t q = path.find('?');
  std::string full_path = base_path;
  full_path.append(path.substr(0, q));
  std::string query;
  if (q != std::string_view::npos) query = std::string(path.substr(q + 1));
  if (!extra_query.empty()) {
    if (!query.empty()) query += '&';
    query.append(extra_query);
  }
  if (curl_url_set(url.get(), CURLUPART_PATH, full_path.c_str(), 0) != CURLUE_OK ||
      curl_url_set(url.get(), CURLUPART_QUERY, query.empty() ? nullptr : query.c_str(), 0) !=
          CURLUE_OK) {
    error = "path is not valid in a URL";
    return std::nullopt;
  }
  std::string result = url_part(url.get(), CURLUPART_URL);

  // Guard: parse the result afresh as a server would (dot segments resolved); it must keep
  // the base's scheme, host, port and path.
  UrlPtr check(curl_url());
  if (result.empty() || !check ||
      curl_url_set(check.get(), CURLUPART_URL, result.c_str(), 0) != CURLUE_OK) {
    error = "path does not form a valid URL";
    return std::nullopt;
  }
  for (const CURLUPart part : {CURLUPART_SCHEME, CURLUPART_HOST, CURLUPART_PORT}) {
    if (url_part(check.get(), part) != url_part(base.get(), part)) {
      error = "path would change the target host";
      return std::nullopt;
    }
  }
  if (url_part(check.get(), CURLUPART_PATH).compare(0, base_path.size(), base_path) != 0) {
    error = "path would leave the base path";
    return std::nullopt;
  }
  return result;
}

}  // namespace hom
