// Protocol v1 on the wire (SPEC §2 "Request payload" and "Response payload"): the request and
// reply envelopes, encoded and decoded. The only place a JSON key of the protocol is spelled;
// homd decodes requests and encodes replies, requesters (hom) do the reverse. Pure: no I/O.
//
// `raw` (SPEC §6): the reply's `content` is never parsed as JSON, so the requester gets the
// body byte for byte. `stream` (protocol v1.1, SPEC §7): the reply, and with `upload` the
// request body, in chunks (stream.hpp).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "hom/raw_json.hpp"
#include "hom/response.hpp"
#include "hom/stream.hpp"

namespace hom {

// What a request payload says, with the wire's types resolved. Policy (limits, allowed paths,
// which headers are forwarded) is not applied here: parse_request() does that.
struct RequestEnvelope {
  enum class Body {
    kNone,
    kJson,   // `body` was an object, array, number or bool: sent as JSON
    kText,   // `body` was a string: sent as its UTF-8 bytes
    kBytes,  // `body_base64`
  };

  // Query parameters in order, a repeated name once per value; scalars in their JSON spelling
  // (5, 2.5, true); null values are left out.
  std::vector<std::pair<std::string, std::string>> params;
  HeaderList headers;  // names as given; not yet checked beyond "object of strings"
  Body body_kind = Body::kNone;
  std::string body;                         // kJson: JSON text; kText: the text; kBytes: the bytes
  RawJson req_id;                           // verbatim; null when absent
  std::optional<std::uint64_t> timeout_ms;  // positive
  bool include_headers = false;
  bool raw = false;  // the reply's content as a string or base64, never parsed as JSON
  std::optional<StreamRequest> stream;  // v1.1: the requester takes (and sends) chunks
};

struct DecodedRequest {
  RequestEnvelope envelope;
  // Empty, or why the payload is not a valid envelope (a 400). req_id is read whenever the
  // payload is a JSON object, so that the error can echo it.
  std::string error;
};

// Decodes a request payload: empty, or a JSON object no deeper than `max_depth`. Linear in
// the payload's size; never throws.
DecodedRequest decode_request(std::string_view payload, int max_depth = 100);

// The payload text. req_id is written verbatim; a kJson body must be valid JSON text.
std::string encode_request(const RequestEnvelope& envelope);
// The same as a document, for callers that pass documents on (a req_id is parsed then, so an
// integer beyond 64 bits loses precision: prefer encode_request).
nlohmann::json request_document(const RequestEnvelope& envelope);

// How a reply's `content` was encoded.
enum class ContentKind { kNull, kJson, kText, kBase64 };

struct ReplyEnvelope {
  int status = 0;  // 0 when missing or not an integer from 0 to 999 (a reply is untrusted)
  ContentKind content_kind = ContentKind::kNull;
  std::string content;       // bytes: text as is, base64 decoded, JSON serialised; "" when null
  bool has_headers = false;  // the reply carried `headers`
  HeaderList headers;        // in the reply's order; an array value gives one field per item
  RawJson req_id;            // verbatim; null when absent
  std::string error;         // the bridge's reason; empty when absent
  std::optional<StreamHead> stream;  // a streamed reply's head: chunks follow
};

// The reply document: content as JSON (unless `response.raw`) / UTF-8 text / base64, `status`,
// `req_id` (verbatim), and `content_encoding`, `headers`, `error` when they apply. Always valid
// JSON.
std::string encode_reply(const Response& response);

// Reads a reply; nullopt when it is not a JSON object. Never throws, whatever the types.
std::optional<ReplyEnvelope> decode_reply(std::string_view text);

// The text of the value of the top-level member `key` of the JSON object `text` (the last one
// when the key repeats, as a parser keeps), without surrounding whitespace; nullopt when
// absent or `text` is not an object. `text` must be valid JSON: this only scans it. Linear.
std::optional<std::string_view> top_level_member(std::string_view text, std::string_view key);

}  // namespace hom
