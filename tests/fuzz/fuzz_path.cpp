// normalise_path, build_url and glob_match (SPEC §2 "Paths", "HTTP_ALLOWED_PATHS").
// Input: byte 0 picks the base URL; then glob pattern 0xFF query pairs 0xFF path, where the
// query pairs are "name=value" lines, percent-encoded here as parse_request() does.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "hom/path.hpp"

namespace {

using hom_fuzz::show;

// As load_config() leaves HTTP_BASE_URL: curl's spelling, ending in '/'.
constexpr const char* kBases[] = {
    "http://127.0.0.1:9/base/",
    "http://localhost/",
    "https://[::1]:8443/api/v1/",
    "http://u:p@dev.local:8080/a%20b/",
};

std::string encode_pairs(std::string_view lines) {
  std::string query;
  while (!lines.empty()) {
    const std::size_t nl = lines.find('\n');
    const std::string_view line = lines.substr(0, nl);
    lines = nl == std::string_view::npos ? std::string_view() : lines.substr(nl + 1);
    const std::size_t eq = line.find('=');
    if (!query.empty()) query += '&';
    query += hom::percent_encode(line.substr(0, eq));
    query += '=';
    if (eq != std::string_view::npos) query += hom::percent_encode(line.substr(eq + 1));
  }
  return query;
}

// The URL must keep the base's scheme, authority and path prefix, whatever the path was; a
// normalised path cannot add a fragment either ('#' is encoded).
void check_under_base(const std::string& base, const std::string& url, std::string_view path,
                      bool normalised) {
  const auto want = hom_fuzz::parse_url(base);
  const auto got = hom_fuzz::parse_url(url);
  const std::string context = "path " + show(path) + " gave " + show(url);
  HOM_FUZZ_CHECK(want.has_value(), "base " + base);
  HOM_FUZZ_CHECK(got.has_value(), "curl cannot parse the URL: " + context);
  HOM_FUZZ_CHECK(got->scheme == want->scheme && got->host == want->host &&
                     got->port == want->port && got->user == want->user &&
                     got->password == want->password,
                 "another target: " + context);
  HOM_FUZZ_CHECK(got->path.compare(0, want->path.size(), want->path) == 0,
                 "left the base path: " + context);
  HOM_FUZZ_CHECK(!normalised || got->fragment.empty(), "fragment: " + context);
}

void check_normalise(const std::string& base, std::string_view raw, const std::string& query) {
  std::string error;
  const auto out = hom::normalise_path(raw, error);

  // SPEC: a NUL anywhere (raw or %00) or a "."/".." segment in any spelling is refused,
  // everything else is accepted.
  const std::string decoded = hom::percent_decode(raw);
  const bool nul =
      decoded.find('\0') != std::string::npos || raw.find('\0') != std::string_view::npos;
  const bool dots = hom_fuzz::has_dot_segment(raw.substr(0, raw.find('?')));
  HOM_FUZZ_CHECK(out.has_value() == !(nul || dots),
                 "path " + show(raw) + (out ? " accepted as " + show(*out) : " refused: " + error));
  if (!out) {
    HOM_FUZZ_CHECK(!error.empty(), "path " + show(raw) + " refused without a reason");
    return;
  }
  const std::string& norm = *out;
  const std::string context = "path " + show(raw) + " normalised to " + show(norm);
  HOM_FUZZ_CHECK(hom_fuzz::is_url_path_text(norm), "characters a URL may not hold: " + context);
  HOM_FUZZ_CHECK(norm.find('?') == std::string::npos || raw.find('?') != std::string_view::npos,
                 "a query appeared: " + context);
  HOM_FUZZ_CHECK(!hom_fuzz::has_dot_segment(norm.substr(0, norm.find('?'))),
                 "dot segment: " + context);
  HOM_FUZZ_CHECK(hom::percent_decode(norm) == decoded, "meaning changed: " + context);
  std::string again_error;
  const auto again = hom::normalise_path(norm, again_error);
  HOM_FUZZ_CHECK(again && *again == norm, "not idempotent: " + context);

  // A normalised path always joins the base, as base + path [+ query], unchanged by curl.
  std::string url_error;
  const auto url = hom::build_url(base, norm, query, url_error);
  HOM_FUZZ_CHECK(url.has_value(),
                 "build_url refused (" + url_error + ") " + context + " with query " + show(query));
  check_under_base(base, *url, norm, true);
  const std::size_t q = norm.find('?');
  std::string want_query = q == std::string::npos ? std::string() : norm.substr(q + 1);
  if (!want_query.empty() && !query.empty()) want_query += '&';
  want_query += query;
  const std::string want = base + norm.substr(0, q) + (want_query.empty() ? "" : "?" + want_query);
  HOM_FUZZ_CHECK(hom_fuzz::canonical_escapes(*url) == hom_fuzz::canonical_escapes(want),
                 "URL " + show(*url) + " expected " + show(want) + " for " + context);
}

// The guard inside build_url() holds for any path, normalised or not.
void check_build_url_guard(const std::string& base, std::string_view raw) {
  std::string error;
  if (const auto url = hom::build_url(base, raw, "", error)) {
    check_under_base(base, *url, raw, false);
  } else {
    HOM_FUZZ_CHECK(!error.empty(), "path " + show(raw) + " refused without a reason");
  }
}

void check_glob(std::string_view pattern, std::string_view raw) {
  // Patterns come from the configuration: bound their "**" count, which costs
  // O(segments^count) by design.
  std::size_t stars = 0;
  for (std::size_t at = pattern.find("**"); at != std::string_view::npos;
       at = pattern.find("**", at + 2))
    ++stars;
  if (pattern.size() > 64 || stars > 2) return;
  const std::string path = "/" + hom::percent_decode(raw.substr(0, raw.find('?')));
  const bool match = hom::glob_match(pattern, path);
  if (pattern.find('*') == std::string_view::npos) {
    HOM_FUZZ_CHECK(match == (pattern == path), "pattern " + show(pattern) + " path " + show(path));
  }
  HOM_FUZZ_CHECK(hom::glob_match("/**", path), "/** must match " + show(path));
  HOM_FUZZ_CHECK(hom::glob_match(path, path) || path.find('*') != std::string::npos,
                 "a path must match itself: " + show(path));
  HOM_FUZZ_CHECK(hom::path_allowed({}, path), "an empty list allows " + show(path));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string base = kBases[data[0] % std::size(kBases)];
  const auto fields = hom_fuzz::split_fields(
      std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1), 3);
  const std::string_view raw = fields[2];
  check_normalise(base, raw, encode_pairs(fields[1]));
  check_build_url_guard(base, raw);
  check_glob(fields[0], raw);
  return 0;
}
