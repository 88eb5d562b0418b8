// The pure half of hom (SPEC §4): parse_duration, build_payload, what hom reads from a reply
// (decode_reply, status_and_headers), and parse_presence.
//
// Input: byte 0 flags (bits 0-1: 0 no body, 1 -d, 2 --data-raw, 3 --data-binary; bit 2: a
// second body option too; bit 3 -i; bit 4 --timeout from the duration); then duration 0xFF
// body 0xFF header lines 0xFF "name=value" lines 0xFF a reply or presence document.
#include <cctype>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "fuzz_support.hpp"
#include "hom/cli_request.hpp"
#include "hom/presence.hpp"
#include "hom/request.hpp"
#include "hom/response.hpp"

namespace {

using hom_fuzz::show;
using nlohmann::json;

std::vector<std::string> lines_of(std::string_view text) {
  std::vector<std::string> out;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    out.emplace_back(text.substr(0, nl));
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
  }
  return out;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

void check_duration(std::string_view text) {
  const auto d = hom::parse_duration(text);
  if (!d) return;
  HOM_FUZZ_CHECK(d->count() >= 1 && d->count() <= 1'000'000'000'000LL,
                 show(text) + " gave " + std::to_string(d->count()) + " ms");
  // Grammar: digits, optionally '.' digits, optionally one of ms, s, m, h.
  std::size_t i = 0;
  while (i < text.size() && is_digit(text[i])) ++i;
  const std::size_t int_digits = i;
  bool fraction = false;
  if (i < text.size() && text[i] == '.') {
    const std::size_t dot = i++;
    while (i < text.size() && is_digit(text[i])) ++i;
    fraction = true;
    HOM_FUZZ_CHECK(i > dot + 1, show(text) + " accepted");
  }
  const std::string_view unit = text.substr(i);
  HOM_FUZZ_CHECK(
      int_digits > 0 && (unit.empty() || unit == "ms" || unit == "s" || unit == "m" || unit == "h"),
      show(text) + " accepted");
  if (!fraction && int_digits <= 9) {
    const long long n = std::stoll(std::string(text.substr(0, int_digits)));
    const long long scale = unit == "ms" ? 1 : unit == "m" ? 60000 : unit == "h" ? 3600000 : 1000;
    HOM_FUZZ_CHECK(d->count() == n * scale, show(text) + " gave " + std::to_string(d->count()));
  }
}

bool header_line_ok(const std::string& h) {
  const auto colon = h.find(':');
  return colon != std::string::npos && colon != 0;
}

bool param_line_ok(const std::string& p) {
  const auto eq = p.find('=');
  return eq != std::string::npos && eq != 0;
}

// What hom sends, homd accepts: unless a header is one homd refuses, the payload parses.
void check_accepted_by_homd(const hom::RequestOptions& o, const json& payload,
                            const std::string& text) {
  if (const auto it = payload.find("headers"); it != payload.end()) {
    std::vector<std::string> seen;
    std::size_t bytes = 0;
    for (const auto& [name, value] : it->items()) {
      const auto& v = value.get_ref<const std::string&>();
      if (!hom::is_token(name)) return;
      for (const char ch : v) {
        const auto c = static_cast<unsigned char>(ch);
        if ((c < 0x20 && c != '\t') || c == 0x7F) return;  // a control character but HTAB
      }
      bytes += name.size() + v.size();
      if (bytes > 64 * 1024) return;  // HTTP_MAX_HEADER_BYTES
      std::string l = name;
      for (auto& c : l) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      for (const auto& s : seen)
        if (s == l) return;
      seen.push_back(l);
    }
  }
  // SPEC: deeper than 100 levels is refused, whoever built it.
  if (hom::json_depth(text, 100) > 100) return;
  static const hom::RequestPolicy policy{
      hom::Topics("v1", "itsme"),
      "http://127.0.0.1:9/base/",
      {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"},
      {},
      std::size_t{2} * 1024 * 1024,
      std::size_t{1024} * 1024,
      std::chrono::milliseconds(30000),
      false};
  const auto r = hom::parse_request(policy, "v1/req/itsme/post/x", text);
  HOM_FUZZ_CHECK(r && !r->rejection, "homd refuses what hom sends: " + show(text) + ": " +
                                         (r && r->rejection ? r->rejection->error : ""));
  if (o.data_raw) HOM_FUZZ_CHECK(r->body == o.data_raw, "--data-raw body: " + show(text));
  if (o.data_binary) HOM_FUZZ_CHECK(r->body == o.data_binary, "--data-binary body: " + show(text));
}

void check_payload(std::uint8_t flags, const std::vector<std::string_view>& fields,
                   std::optional<std::chrono::milliseconds> timeout) {
  hom::RequestOptions o;
  const std::string body(fields[1]);
  const int kind = flags & 0x03;
  if (kind == 1 || (flags & 0x04 && kind != 0)) o.data = body;
  if (kind == 2) o.data_raw = body;
  if (kind == 3) o.data_binary = body;
  o.headers = lines_of(fields[2]);
  o.params = lines_of(fields[3]);
  o.include_headers = flags & 0x08;
  if (flags & 0x10) o.timeout = timeout;

  bool refusable = o.data.has_value() + o.data_raw.has_value() + o.data_binary.has_value() > 1;
  for (const auto& h : o.headers)
    refusable = refusable || !header_line_ok(h) || !hom::is_valid_utf8(h);
  for (const auto& p : o.params)
    refusable = refusable || !param_line_ok(p) || !hom::is_valid_utf8(p);
  if (o.data_raw) refusable = refusable || !hom::is_valid_utf8(*o.data_raw);
  json payload;
  try {
    payload = hom::build_payload(o);
  } catch (const std::invalid_argument& e) {
    HOM_FUZZ_CHECK(refusable, std::string("refused: ") + e.what());
    return;
  }
  HOM_FUZZ_CHECK(!refusable,
                 "accepted: " + payload.dump(-1, ' ', false, json::error_handler_t::replace));
  HOM_FUZZ_CHECK(payload.is_object(), payload.dump());
  // hom publishes payload.dump(): it must be serialisable (strict UTF-8).
  std::string text;
  try {
    text = payload.dump();
  } catch (const json::exception& e) {
    if (hom_fuzz::ignored("payload-utf8")) return;
    hom_fuzz::fail(__FILE__, __LINE__, "payload.dump() throws",
                   std::string(e.what()) + "; body " + show(body) + " headers " + show(fields[2]) +
                       " params " + show(fields[3]));
  }
  check_accepted_by_homd(o, payload, text);
}

void check_reply(std::string_view text) {
  const json reply = hom_fuzz::parse_strict(text).value_or(json());
  std::optional<hom::ReplyEnvelope> decoded;
  try {
    decoded = hom::decode_reply(text);
    // Reads "status" and "headers" whatever their types.
    if (decoded) (void)hom::status_and_headers(*decoded);
  } catch (const std::exception& e) {
    hom_fuzz::fail(__FILE__, __LINE__, "reading a reply throws",
                   std::string(e.what()) + "; reply " + show(text));
  }
  // The requester keeps only replies that are JSON objects.
  HOM_FUZZ_CHECK(decoded.has_value() == reply.is_object(), "decoded or not: " + show(text));
  if (!decoded) return;
  HOM_FUZZ_CHECK(decoded->status >= 0 && decoded->status <= 999, show(text));
  // req_id: a slice of the reply's text with the value the parser read.
  if (reply.contains("req_id")) {
    HOM_FUZZ_CHECK(text.find(decoded->req_id.text()) != std::string_view::npos &&
                       decoded->req_id.value() == reply["req_id"],
                   "req_id " + show(decoded->req_id.text()) + " in " + show(text));
  } else {
    HOM_FUZZ_CHECK(decoded->req_id.is_null(), "req_id without one: " + show(text));
  }
}

void check_presence(std::string_view text) {
  const auto p = hom::parse_presence(text);
  if (!p) return;
  const json doc = hom_fuzz::parse_strict(text).value_or(json());
  HOM_FUZZ_CHECK(doc.is_object() && doc["online"].is_boolean() && doc["online"] == p->online,
                 show(text));
  if (doc.contains("version") && doc["version"].is_string())
    HOM_FUZZ_CHECK(doc["version"] == p->version, show(text));
  if (p->since && !hom_fuzz::ignored("presence-since")) {
    const json& since = doc["since"];
    const bool exact =
        since.is_number_unsigned()
            ? since.get<std::uint64_t>() <= std::numeric_limits<std::int64_t>::max() &&
                  static_cast<std::int64_t>(since.get<std::uint64_t>()) == *p->since
            : since.is_number_integer() && since.get<std::int64_t>() == *p->since;
    HOM_FUZZ_CHECK(exact, "since " + std::to_string(*p->since) + " from " + show(text));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const auto fields = hom_fuzz::split_fields(
      std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1), 5);
  check_duration(fields[0]);
  check_payload(data[0], fields, hom::parse_duration(fields[0]));
  check_reply(fields[4]);
  check_presence(fields[4]);
  return 0;
}
