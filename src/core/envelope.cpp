#include "hom/envelope.hpp"

#include <cstring>

#include "hom/base64.hpp"

namespace hom {

using nlohmann::json;

namespace {

// The keys of protocol v1.
constexpr const char* kParams = "params";
constexpr const char* kBody = "body";
constexpr const char* kBodyBase64 = "body_base64";
constexpr const char* kHeaders = "headers";
constexpr const char* kReqId = "req_id";
constexpr const char* kTimeoutMs = "timeout_ms";
constexpr const char* kIncludeHeaders = "include_headers";
constexpr const char* kRaw = "raw";
constexpr const char* kStream = "stream";
constexpr const char* kContent = "content";
constexpr const char* kStatus = "status";
constexpr const char* kContentEncoding = "content_encoding";
constexpr const char* kError = "error";
constexpr const char* kBase64 = "base64";

// Deeper JSON bodies are returned as text instead of parsed (mirrors the request limit).
constexpr int kMaxContentDepth = 100;
// The reply object around such content.
constexpr int kMaxReplyDepth = kMaxContentDepth + 1;

// Serialises without throwing: bad UTF-8 (in an error text made from a decoded path, say)
// becomes U+FFFD.
std::string dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

// ---- Scanning valid JSON text -------------------------------------------------------------

std::size_t skip_space(std::string_view t, std::size_t i) {
  while (i < t.size() && (t[i] == ' ' || t[i] == '\t' || t[i] == '\n' || t[i] == '\r')) ++i;
  return i;
}

// `i` at an opening quote: the index just past the closing one.
std::size_t skip_string(std::string_view t, std::size_t i) {
  for (++i; i < t.size();) {
    if (t[i] == '\\') {
      i += 2;
    } else if (t[i] == '"') {
      return i + 1;
    } else {
      ++i;
    }
  }
  return t.size();
}

// `i` at the first byte of a value: the index just past it. Iterative, so depth costs nothing.
std::size_t skip_value(std::string_view t, std::size_t i) {
  if (i >= t.size()) return t.size();
  if (t[i] == '"') return skip_string(t, i);
  if (t[i] == '{' || t[i] == '[') {
    std::size_t depth = 0;
    while (i < t.size()) {
      const char c = t[i];
      if (c == '"') {
        i = skip_string(t, i);
        continue;
      }
      if (c == '{' || c == '[') {
        ++depth;
      } else if ((c == '}' || c == ']') && --depth == 0) {
        return i + 1;
      }
      ++i;
    }
    return t.size();
  }
  while (i < t.size() && std::strchr(",}] \t\r\n", t[i]) == nullptr) ++i;  // number, literal
  return i;
}

// A key as a parser reads it: escapes (\u005f...) resolved.
bool key_equals(std::string_view raw, std::string_view key) {
  if (raw.find('\\') == std::string_view::npos) return raw == key;
  std::string quoted;
  quoted.reserve(raw.size() + 2);
  quoted.append(1, '"').append(raw).append(1, '"');
  const json decoded = json::parse(quoted, nullptr, /*allow_exceptions=*/false);
  return decoded.is_string() && decoded.get_ref<const std::string&>() == key;
}

// ---- Request ------------------------------------------------------------------------------

bool is_scalar(const json& v) { return v.is_string() || v.is_number() || v.is_boolean(); }

std::string scalar_text(const json& v) {
  if (v.is_string()) return v.get<std::string>();
  return v.dump();  // numbers and bools in their JSON spelling
}

// A member that is present and not null.
const json* member(const json& doc, const char* key) {
  const auto it = doc.find(key);
  return it == doc.end() || it->is_null() ? nullptr : &*it;
}

std::optional<std::uint64_t> unsigned_of(const json& v) {
  if (v.is_number_unsigned()) return v.get<std::uint64_t>();
  if (v.is_number_integer() && v.get<std::int64_t>() >= 0)
    return static_cast<std::uint64_t>(v.get<std::int64_t>());
  return std::nullopt;
}

// `stream`: true, false, or {"id", "window", "chunk_bytes", "upload"}.
std::string read_stream(const json& v, RequestEnvelope& e) {
  if (v.is_boolean()) {
    if (v.get<bool>()) e.stream = StreamRequest{};
    return {};
  }
  if (!v.is_object()) return "'stream' must be true, false or an object";
  StreamRequest s;
  if (const json* id = member(v, "id")) {
    if (!id->is_string() || !is_stream_id(id->get_ref<const std::string&>()))
      return "'stream.id' must be 1 to 64 characters [A-Za-z0-9_-]";
    s.id = id->get<std::string>();
  }
  if (const json* window = member(v, "window")) {
    const auto n = unsigned_of(*window);
    if (!n || *n < 1 || *n > kMaxStreamWindow) return "'stream.window' must be 1 to 64";
    s.window = static_cast<std::size_t>(*n);
  }
  if (const json* chunk = member(v, "chunk_bytes")) {
    const auto n = unsigned_of(*chunk);
    if (!n || *n < kMinChunkBytes || *n > (1ULL << 28))
      return "'stream.chunk_bytes' must be 256 to 268435456";
    s.max_chunk_bytes = static_cast<std::size_t>(*n);
  }
  if (const json* upload = member(v, "upload")) {
    if (upload->is_boolean()) {
      s.upload = upload->get<bool>();
    } else if (const auto n = unsigned_of(*upload)) {
      s.upload = true;
      s.upload_length = *n;
    } else {
      return "'stream.upload' must be true, false or the body's length";
    }
  }
  if (s.upload && s.id.empty()) return "'stream.upload' needs 'stream.id'";
  if (s.upload && e.body_kind != RequestEnvelope::Body::kNone)
    return "'stream.upload' and 'body' are both set";
  e.stream = std::move(s);
  return {};
}

// Reads the typed members of a request object into `e`; returns an error text or "".
std::string read_request(const json& doc, RequestEnvelope& e) {
  if (const json* params = member(doc, kParams)) {
    if (!params->is_object()) return std::string("'") + kParams + "' must be an object";
    for (const auto& [name, value] : params->items()) {
      const std::string bad =
          std::string("'") + kParams + "." + name + "' must be a scalar or an array of scalars";
      if (value.is_null()) continue;
      if (is_scalar(value)) {
        e.params.emplace_back(name, scalar_text(value));
      } else if (value.is_array()) {
        for (const auto& item : value) {
          if (item.is_null()) continue;
          if (!is_scalar(item)) return bad;
          e.params.emplace_back(name, scalar_text(item));
        }
      } else {
        return bad;
      }
    }
  }
  if (const json* headers = member(doc, kHeaders)) {
    if (!headers->is_object())
      return std::string("'") + kHeaders + "' must be an object of strings";
    e.headers.reserve(headers->size());
    for (const auto& [name, value] : headers->items()) {
      if (!value.is_string()) return "header '" + name + "' must have a string value";
      e.headers.emplace_back(name, value.get_ref<const std::string&>());
    }
  }
  const json* body = member(doc, kBody);
  const json* body64 = member(doc, kBodyBase64);
  if (body && body64) return std::string("'") + kBody + "' and '" + kBodyBase64 + "' are both set";
  if (body64) {
    if (!body64->is_string()) return std::string("'") + kBodyBase64 + "' must be a string";
    auto bytes = base64_decode(body64->get_ref<const std::string&>());
    if (!bytes) return std::string("'") + kBodyBase64 + "' is not valid base64";
    e.body_kind = RequestEnvelope::Body::kBytes;
    e.body = std::move(*bytes);
  } else if (body) {
    if (body->is_string()) {
      e.body_kind = RequestEnvelope::Body::kText;
      e.body = body->get<std::string>();
    } else {
      e.body_kind = RequestEnvelope::Body::kJson;
      e.body = body->dump();
    }
  }
  if (const json* timeout = member(doc, kTimeoutMs)) {
    const bool positive = timeout->is_number_unsigned()  ? timeout->get<std::uint64_t>() > 0
                          : timeout->is_number_integer() ? timeout->get<std::int64_t>() > 0
                                                         : false;
    if (!positive) return std::string("'") + kTimeoutMs + "' must be a positive integer";
    e.timeout_ms = timeout->get<std::uint64_t>();
  }
  if (const json* include = member(doc, kIncludeHeaders)) {
    if (!include->is_boolean())
      return std::string("'") + kIncludeHeaders + "' must be true or false";
    e.include_headers = include->get<bool>();
  }
  if (const json* raw = member(doc, kRaw)) {
    if (!raw->is_boolean()) return std::string("'") + kRaw + "' must be true or false";
    e.raw = raw->get<bool>();
  }
  if (const json* stream = member(doc, kStream)) {
    auto error = read_stream(*stream, e);
    if (!error.empty()) return error;
  }
  return {};
}

// ---- Reply --------------------------------------------------------------------------------

// `raw`: never parsed as JSON, so `{ "a" :1 }` comes back with its spacing.
json encode_content(const std::string& body, bool raw, bool& is_base64) {
  is_base64 = false;
  if (body.empty()) return "";
  if (!raw) {
    if (auto parsed = parse_json(body, kMaxContentDepth)) return std::move(*parsed);
  }
  if (is_valid_utf8(body)) return body;
  is_base64 = true;
  return base64_encode(body);
}

// Names and values are made valid UTF-8 here, before they become keys: replacing bad bytes
// only when the document is serialised could give two keys the same text.
json encode_headers(const HeaderList& headers) {
  json out = json::object();
  for (const auto& [raw_name, raw_value] : headers) {
    const std::string name = to_valid_utf8(raw_name);
    const std::string value = to_valid_utf8(raw_value);
    if (name == "set-cookie") {
      json& cookies = out[name];
      if (cookies.is_null()) cookies = json::array();
      cookies.push_back(value);
    } else if (auto it = out.find(name); it != out.end()) {
      *it = it->get<std::string>() + ", " + value;
    } else {
      out[name] = value;
    }
  }
  return out;
}

int status_of(const json& reply) {
  const auto it = reply.find(kStatus);
  if (it == reply.end()) return 0;
  if (it->is_number_unsigned()) {
    const auto v = it->get<std::uint64_t>();
    return v <= 999 ? static_cast<int>(v) : 0;
  }
  if (it->is_number_integer()) {
    const auto v = it->get<std::int64_t>();
    return v >= 0 && v <= 999 ? static_cast<int>(v) : 0;
  }
  return 0;
}

// `"key":` as it appears in an encoded document.
std::string key(const char* name) { return std::string(1, '"') + name + "\":"; }

}  // namespace

// ---- Envelopes ------------------------------------------------------------------------------

std::optional<std::string_view> top_level_member(std::string_view t, std::string_view wanted) {
  std::size_t i = 0;
  if (t.substr(0, 3) == "\xEF\xBB\xBF") i = 3;  // a BOM, which the parser skips too
  i = skip_space(t, i);
  if (i >= t.size() || t[i] != '{') return std::nullopt;
  i = skip_space(t, i + 1);
  std::optional<std::string_view> found;
  while (i < t.size() && t[i] == '"') {
    const std::size_t key_end = skip_string(t, i);
    if (key_end >= t.size()) break;
    const bool match = key_equals(t.substr(i + 1, key_end - i - 2), wanted);
    i = skip_space(t, key_end);
    if (i >= t.size() || t[i] != ':') break;
    i = skip_space(t, i + 1);
    const std::size_t value_end = skip_value(t, i);
    if (match) found = t.substr(i, value_end - i);
    i = skip_space(t, value_end);
    if (i >= t.size() || t[i] != ',') break;
    i = skip_space(t, i + 1);
  }
  return found;
}

DecodedRequest decode_request(std::string_view payload, int max_depth) {
  DecodedRequest out;
  if (payload.empty()) return out;
  const auto doc = parse_json(payload, max_depth);
  if (!doc) {
    out.error = json_depth(payload, max_depth) > max_depth
                    ? "payload JSON is nested deeper than " + std::to_string(max_depth) + " levels"
                    : "payload is not valid JSON (UTF-8, no NUL bytes)";
    return out;
  }
  if (!doc->is_object()) {
    out.error = "payload must be a JSON object";
    return out;
  }
  if (doc->contains(kReqId)) {
    if (const auto raw = top_level_member(payload, kReqId))
      out.envelope.req_id = RawJson::from_text(std::string(*raw));
  }
  out.error = read_request(*doc, out.envelope);
  return out;
}

json request_document(const RequestEnvelope& e) {
  json doc = json::object();
  for (const auto& [name, value] : e.params) {
    json& slot = doc[kParams][name];
    if (slot.is_null()) {
      slot = value;
    } else {
      if (!slot.is_array()) slot = json::array({slot});
      slot.push_back(value);  // a repeated name repeats the key
    }
  }
  for (const auto& [name, value] : e.headers) doc[kHeaders][name] = value;
  switch (e.body_kind) {
    case RequestEnvelope::Body::kNone:
      break;
    case RequestEnvelope::Body::kJson:
      doc[kBody] = json::parse(e.body, nullptr, /*allow_exceptions=*/false);
      break;
    case RequestEnvelope::Body::kText:
      doc[kBody] = e.body;
      break;
    case RequestEnvelope::Body::kBytes:
      doc[kBodyBase64] = base64_encode(e.body);
      break;
  }
  if (e.timeout_ms) doc[kTimeoutMs] = *e.timeout_ms;
  if (e.include_headers) doc[kIncludeHeaders] = true;
  if (e.raw) doc[kRaw] = true;
  if (e.stream) {
    const StreamRequest& st = *e.stream;
    json s = json::object();
    if (!st.id.empty()) s["id"] = st.id;
    if (st.window != kDefaultStreamWindow) s["window"] = st.window;
    if (st.max_chunk_bytes) s["chunk_bytes"] = st.max_chunk_bytes;
    if (st.upload_length) {
      s["upload"] = *st.upload_length;
    } else if (st.upload) {
      s["upload"] = true;
    }
    doc[kStream] = s.empty() ? json(true) : s;
  }
  if (!e.req_id.is_null()) doc[kReqId] = e.req_id.value();
  return doc;
}

std::string encode_request(const RequestEnvelope& e) {
  RequestEnvelope without_id = e;
  without_id.req_id = nullptr;
  std::string text = dump(request_document(without_id));
  if (!e.req_id.is_null()) {
    text.pop_back();  // '}'
    text += (text.size() > 1 ? "," : "") + key(kReqId) + e.req_id.text() + "}";
  }
  return text;
}

std::string encode_reply(const Response& response) {
  bool is_base64 = false;
  const json content =
      response.body ? encode_content(*response.body, response.raw, is_base64) : json(nullptr);
  // Keys in sorted order, as a document would write them; req_id spliced in verbatim.
  std::string out = "{" + key(kContent) + dump(content);
  if (is_base64) out += "," + key(kContentEncoding) + "\"" + kBase64 + "\"";
  if (!response.error.empty()) out += "," + key(kError) + dump(json(response.error));
  if (response.include_headers && (response.body || response.stream))
    out += "," + key(kHeaders) + dump(encode_headers(response.headers));
  out += "," + key(kReqId) + response.req_id.text();
  out += "," + key(kStatus) + std::to_string(response.status);
  if (const auto& s = response.stream) {
    json head{{"id", s->id}, {"chunk_bytes", s->chunk_bytes}, {"window", s->window}};
    if (!s->sealed.empty()) head["sealed"] = s->sealed;
    out += "," + key(kStream) + dump(head);
  }
  out += "}";
  return out;
}

std::optional<ReplyEnvelope> decode_reply(std::string_view text) {
  const auto doc = parse_json(text, kMaxReplyDepth);
  if (!doc || !doc->is_object()) return std::nullopt;
  ReplyEnvelope r;
  r.status = status_of(*doc);
  if (const auto content = doc->find(kContent); content != doc->end() && !content->is_null()) {
    if (content->is_string()) {
      const auto& value = content->get_ref<const std::string&>();
      const auto encoding = doc->find(kContentEncoding);
      if (encoding != doc->end() && *encoding == kBase64) {
        r.content_kind = ContentKind::kBase64;
        r.content = base64_decode(value).value_or("");
      } else {
        r.content_kind = ContentKind::kText;
        r.content = value;
      }
    } else {
      r.content_kind = ContentKind::kJson;
      r.content = content->dump();
    }
  }
  if (const auto headers = doc->find(kHeaders); headers != doc->end() && headers->is_object()) {
    r.has_headers = true;
    for (const auto& [name, value] : headers->items()) {
      if (value.is_string()) {
        r.headers.emplace_back(name, value.get<std::string>());
      } else if (value.is_array()) {
        for (const auto& v : value)
          if (v.is_string()) r.headers.emplace_back(name, v.get<std::string>());
      }
    }
  }
  if (doc->contains(kReqId)) {
    if (const auto raw = top_level_member(text, kReqId))
      r.req_id = RawJson::from_text(std::string(*raw));
  }
  if (const auto error = doc->find(kError); error != doc->end() && error->is_string())
    r.error = error->get<std::string>();
  if (const auto s = doc->find(kStream); s != doc->end() && s->is_object()) {
    const auto id = s->find("id");
    const auto chunk = s->find("chunk_bytes");
    const auto window = s->find("window");
    if (id != s->end() && id->is_string() && is_stream_id(id->get_ref<const std::string&>())) {
      StreamHead head;
      head.id = id->get<std::string>();
      if (chunk != s->end() && chunk->is_number_unsigned())
        head.chunk_bytes = chunk->get<std::size_t>();
      if (window != s->end() && window->is_number_unsigned())
        head.window = std::min<std::size_t>(window->get<std::size_t>(), kMaxStreamWindow);
      if (const auto sealed = s->find("sealed"); sealed != s->end() && sealed->is_string())
        head.sealed = sealed->get<std::string>().substr(0, 64);
      r.stream = std::move(head);
    }
  }
  return r;
}

}  // namespace hom
