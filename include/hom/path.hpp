// Request paths and URLs, SPEC §2 "Paths" and "HTTP_ALLOWED_PATHS". Pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace hom {

// Checks a path from a topic and percent-encodes what a URL path may not hold.
// Keeps `%XX` escapes and a `?query`; a lone '%' becomes "%25". On a NUL (raw or %00) or a
// "."/".." segment in any spelling, returns nullopt and sets `error`.
std::optional<std::string> normalise_path(std::string_view raw, std::string& error);

// Decodes %XX escapes; anything else is copied as it is.
std::string percent_decode(std::string_view text);

// Percent-encodes everything but RFC 3986 unreserved characters (a space is "%20").
std::string percent_encode(std::string_view text);

// Matches a whole path ("/a/b", no query) against a glob: `*` within a segment, `**` across
// segments; "/x/**" also matches "/x".
bool glob_match(std::string_view pattern, std::string_view path);

// True when `path` (leading '/', decoded, no query) matches one of `globs`; empty: all allowed.
bool path_allowed(const std::vector<std::string>& globs, std::string_view path);

// Joins the base URL (ending in '/'), the normalised path and extra query parameters
// ("a=1&b=2", already encoded) with curl's URL API. Returns nullopt and sets `error` if the
// result would not have the base's scheme, host and port, or would leave its path.
std::optional<std::string> build_url(const std::string& base_url, std::string_view path,
                                     std::string_view extra_query, std::string& error);

}  // namespace hom
