// Shared by the fuzz targets: invariant checks that print what failed and trap, input
// framing, and independent oracles (curl's URL parser, RFC 3986 dot segments).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace hom_fuzz {

// Prints "<file>:<line>: invariant failed: <condition>\n  <detail>" on stderr, then traps so
// libFuzzer records the input as a crash.
[[noreturn]] void fail(const char* file, int line, const char* condition,
                       const std::string& detail);

// True when HOM_FUZZ_IGNORE (a comma-separated list) names `bug`: a check for a known, reported
// bug can then be skipped so that a long run explores past it. README.md lists the names.
bool ignored(std::string_view bug);

// `detail` is evaluated only when the check fails, so it may be costly.
#define HOM_FUZZ_CHECK(condition, detail)                                         \
  do {                                                                            \
    if (!(condition)) ::hom_fuzz::fail(__FILE__, __LINE__, #condition, (detail)); \
  } while (false)

// The bytes as a C string literal body: printable ASCII as is, the rest as \xNN.
std::string show(std::string_view bytes, std::size_t max = 400);

// Splits `input` at the first `parts - 1` bytes 0xFF: the last part keeps the rest (0xFF
// included). Missing parts are empty. 0xFF never occurs in UTF-8, so text fields stay
// readable in the seed files.
std::vector<std::string_view> split_fields(std::string_view input, std::size_t parts);

// The URL as curl parses it (dot segments resolved, as a server would).
struct UrlParts {
  std::string scheme, user, password, host, port, path, query, fragment;
};
std::optional<UrlParts> parse_url(const std::string& url);

// True when `path` (no query), split at '/', has a segment that decodes to something with a
// "." or ".." piece between '/' or '\' (the SPEC's "any spelling").
bool has_dot_segment(std::string_view path);

// RFC 3986 pchar plus '/' and '?', and %XX escapes: what an encoded path with query may hold.
bool is_url_path_text(std::string_view text);

// True when `text` is well-formed UTF-8, decided by nlohmann::json's own validator (an oracle
// independent of hom::is_valid_utf8).
bool utf8_by_json(std::string_view text);

// Valid JSON text as nlohmann::json parses it, except that a NUL byte is never valid (nlohmann's
// lexer takes it for the end of input). Written apart from hom::parse_json on purpose.
std::optional<nlohmann::json> parse_strict(std::string_view text);

// Upper-cases the hex digits of %XX escapes: curl prints them in lower case, and RFC 3986
// §2.1 makes the two spellings equivalent.
std::string canonical_escapes(std::string text);

// Nesting depth of a parsed JSON document (the outermost object or array is 1).
int dom_depth(const nlohmann::json& value);

}  // namespace hom_fuzz
