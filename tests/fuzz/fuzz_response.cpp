// to_json(Response), is_valid_utf8, json_depth (SPEC §2 "Response payload"), and the way back:
// decode_reply() gives status, body and req_id (verbatim) again.
//
// Input: bytes 0-1 status (little endian, signed), byte 2 flags (bit 0 include_headers, bit 1
// a body, bit 2 an error text); then req_id JSON 0xFF error 0xFF header lines "name: value"
// 0xFF body.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_support.hpp"
#include "hom/base64.hpp"
#include "hom/envelope.hpp"
#include "hom/response.hpp"

namespace {

using hom_fuzz::show;
using nlohmann::json;

hom::HeaderList parse_headers(std::string_view lines) {
  hom::HeaderList out;
  while (!lines.empty()) {
    const std::size_t nl = lines.find('\n');
    const std::string_view line = lines.substr(0, nl);
    lines = nl == std::string_view::npos ? std::string_view() : lines.substr(nl + 1);
    const std::size_t colon = line.find(':');
    const std::string_view value =
        colon == std::string_view::npos ? std::string_view() : line.substr(colon + 1);
    out.emplace_back(std::string(line.substr(0, colon)),
                     std::string(value.substr(value.empty() || value[0] != ' ' ? 0 : 1)));
  }
  return out;
}

void check_headers(const json& doc, const hom::HeaderList& headers, const std::string& context) {
  HOM_FUZZ_CHECK(doc.is_object(), "headers is not an object: " + context);
  // Expected: names and values with bad bytes replaced (so names that differ only there are
  // one header), set-cookie as an array, other repeated names joined with ", ".
  std::map<std::string, std::vector<std::string>> want;
  for (const auto& [name, value] : headers) {
    const std::string clean_name = hom::to_valid_utf8(name);
    const std::string clean_value = hom::to_valid_utf8(value);
    HOM_FUZZ_CHECK(hom_fuzz::utf8_by_json(clean_name) && hom_fuzz::utf8_by_json(clean_value),
                   "to_valid_utf8 left bad bytes: " + context);
    HOM_FUZZ_CHECK(!hom_fuzz::utf8_by_json(name) || clean_name == name,
                   "to_valid_utf8 changed valid " + show(name) + ": " + context);
    want[clean_name].push_back(clean_value);
  }
  HOM_FUZZ_CHECK(doc.size() == want.size(), "header names: " + doc.dump() + ": " + context);
  for (const auto& [name, values] : want) {
    HOM_FUZZ_CHECK(doc.contains(name), "missing header " + show(name) + ": " + context);
    const json& got = doc[name];
    if (name == "set-cookie") {
      HOM_FUZZ_CHECK(got == json(values), "set-cookie " + got.dump() + ": " + context);
    } else {
      std::string joined;
      for (const auto& v : values) {
        if (&v != &values.front()) joined += ", ";
        joined += v;
      }
      HOM_FUZZ_CHECK(got == joined, "header " + show(name) + " = " + got.dump() + ": " + context);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 3) return 0;
  hom::Response response;
  response.status = static_cast<std::int16_t>(data[0] | data[1] << 8);
  const std::uint8_t flags = data[2];
  const auto fields = hom_fuzz::split_fields(
      std::string_view(reinterpret_cast<const char*>(data) + 3, size - 3), 4);
  // req_id as spelled in the input when that is one JSON value (1.50 stays 1.50), else null.
  std::string_view id_text = fields[0];
  while (!id_text.empty() && std::strchr(" \t\r\n", id_text.front())) id_text.remove_prefix(1);
  while (!id_text.empty() && std::strchr(" \t\r\n", id_text.back())) id_text.remove_suffix(1);
  // At most 99 levels: what a request payload (an object, at most 100) can carry; a BOM is
  // not part of a value (the parser skips it at the start of a document only).
  auto id_value = hom_fuzz::parse_strict(id_text);
  if (id_value && (hom_fuzz::dom_depth(*id_value) > 99 || id_text.rfind("\xEF\xBB\xBF", 0) == 0))
    id_value.reset();
  if (id_value) response.req_id = hom::RawJson::from_text(std::string(id_text));
  response.include_headers = flags & 0x01;
  if (flags & 0x02) response.body = std::string(fields[3]);
  if (flags & 0x04) response.error = std::string(fields[1]);
  response.headers = parse_headers(fields[2]);
  const std::string body(fields[3]);

  // is_valid_utf8 agrees with nlohmann::json's validator; json_depth with the parsed depth.
  const bool utf8 = hom::is_valid_utf8(body);
  HOM_FUZZ_CHECK(utf8 == hom_fuzz::utf8_by_json(body),
                 "is_valid_utf8 says " + std::string(utf8 ? "yes" : "no") + " for " + show(body));
  const auto parsed = hom_fuzz::parse_strict(body);
  if (parsed) {
    const int depth = hom_fuzz::dom_depth(*parsed);
    const int lexical = hom::json_depth(body, 100);
    HOM_FUZZ_CHECK(lexical == std::min(depth, 101), "json_depth " + std::to_string(lexical) +
                                                        ", parsed depth " + std::to_string(depth) +
                                                        " for " + show(body));
  }

  const std::string text = hom::to_json(response);
  const std::string context = "body " + show(body) + " reply " + show(text);
  HOM_FUZZ_CHECK(hom_fuzz::utf8_by_json(text), "reply is not UTF-8: " + context);
  const json doc = hom_fuzz::parse_strict(text).value_or(json());
  HOM_FUZZ_CHECK(doc.is_object(), "reply is not a JSON object: " + context);
  // Serialising the parsed document again gives the same bytes (no key appears twice), when
  // the req_id was spelled canonically.
  HOM_FUZZ_CHECK(!id_value || id_value->dump() != id_text || doc.dump() == text,
                 "reply is not canonical (a repeated key?): " + context);
  HOM_FUZZ_CHECK(doc.contains("content") && doc.contains("status") && doc.contains("req_id"),
                 "a required key is missing: " + context);
  HOM_FUZZ_CHECK(doc["status"] == response.status, "status: " + context);
  HOM_FUZZ_CHECK(doc["req_id"] == (id_value ? *id_value : json()), "req_id: " + context);
  HOM_FUZZ_CHECK(doc.contains("error") == !response.error.empty(), "error: " + context);

  const json& content = doc["content"];
  const bool is_json = parsed && hom_fuzz::dom_depth(*parsed) <= 100;
  const bool want_base64 = response.body && !body.empty() && !is_json && !utf8;
  HOM_FUZZ_CHECK(
      doc.contains("content_encoding") == want_base64,
      "content_encoding present: " + std::string(want_base64 ? "no" : "yes") + ": " + context);
  if (!response.body) {
    HOM_FUZZ_CHECK(content.is_null(), "content of no body: " + context);
  } else if (body.empty()) {
    HOM_FUZZ_CHECK(content == "", "content of an empty body: " + context);
  } else if (is_json) {
    HOM_FUZZ_CHECK(content == *parsed, "JSON content: " + context);
  } else if (utf8) {
    HOM_FUZZ_CHECK(content == body, "text content: " + context);
  } else {
    HOM_FUZZ_CHECK(doc["content_encoding"] == "base64", "content_encoding: " + context);
    HOM_FUZZ_CHECK(content.is_string(), "base64 content is not a string: " + context);
    const auto decoded = hom::base64_decode(content.get_ref<const std::string&>());
    HOM_FUZZ_CHECK(decoded && *decoded == body, "base64 does not decode to the body: " + context);
  }
  // The way back: status, req_id byte for byte, error; hom prints what the device's API
  // sent, the exact bytes unless the body was JSON.
  const auto back = hom::decode_reply(text);
  HOM_FUZZ_CHECK(back.has_value(), "decode_reply: " + context);
  HOM_FUZZ_CHECK(back->req_id == response.req_id,
                 "req_id " + show(back->req_id.text()) + " sent " + show(response.req_id.text()));
  HOM_FUZZ_CHECK(
      back->status == (response.status >= 0 && response.status <= 999 ? response.status : 0),
      "status: " + context);
  HOM_FUZZ_CHECK(back->error == doc.value("error", std::string()), "error: " + context);
  if (response.body && !is_json) {
    HOM_FUZZ_CHECK(back->content == body, "content: " + context);
  }

  HOM_FUZZ_CHECK(doc.contains("headers") == (response.include_headers && response.body.has_value()),
                 "headers present: " + context);
  if (doc.contains("headers")) check_headers(doc["headers"], response.headers, context);
  return 0;
}
