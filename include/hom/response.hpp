// The reply document, SPEC §2 "Response payload".
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "hom/raw_json.hpp"
#include "hom/stream.hpp"

namespace hom {

// Response header fields in arrival order, names lower-case.
using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct Response {
  int status = 0;
  // The HTTP response body; nullopt when the bridge produced the status itself.
  std::optional<std::string> body;
  // Set when the bridge produced the status: the reason, for humans.
  std::string error;
  RawJson req_id;  // the request's, verbatim; null when absent
  bool include_headers = false;
  bool raw = false;  // `content` never parsed as JSON (the request's `raw`)
  HeaderList headers;
  // A streamed reply's head (SPEC §7): status and headers now, the body in chunks after it.
  std::optional<StreamHead> stream;
};

// A response the bridge produced itself (content null, `error` set).
Response bridge_error(int status, std::string error, RawJson req_id = nullptr);

// The reply document: encode_reply() of the wire format (envelope.hpp).
std::string to_json(const Response& response);

// True when `bytes` is well-formed UTF-8 (no overlongs, no surrogates).
bool is_valid_utf8(std::string_view bytes);

// `bytes` with every byte that starts no well-formed sequence replaced by U+FFFD; valid
// UTF-8 comes back unchanged.
std::string to_valid_utf8(std::string_view bytes);

// Max JSON nesting depth of a document, counted without parsing it (strings skipped).
// Stops counting once `limit` is exceeded and returns limit + 1.
int json_depth(std::string_view text, int limit);

// Parses untrusted JSON text: nullopt when it is not valid JSON (UTF-8), nests deeper than
// `max_depth`, or holds a NUL byte (nlohmann's lexer would take it for the end of input and
// silently ignore what follows).
std::optional<nlohmann::json> parse_json(std::string_view text, int max_depth = 100);

}  // namespace hom
