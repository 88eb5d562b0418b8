#include "hom/cli_request.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>

#include "hom/base64.hpp"
#include "hom/response.hpp"

namespace hom {

using nlohmann::json;

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text) {
  if (text.empty()) return std::nullopt;
  std::size_t unit_at = 0;
  while (unit_at < text.size() &&
         ((text[unit_at] >= '0' && text[unit_at] <= '9') || text[unit_at] == '.'))
    ++unit_at;
  const std::string number(text.substr(0, unit_at));
  const std::string_view unit = text.substr(unit_at);
  if (number.empty() || number.front() == '.' || number.back() == '.') return std::nullopt;
  char* end = nullptr;
  const double value = std::strtod(number.c_str(), &end);
  if (end != number.c_str() + number.size() || !std::isfinite(value)) return std::nullopt;
  double ms = 0;
  if (unit == "ms") {
    ms = value;
  } else if (unit.empty() || unit == "s") {
    ms = value * 1000;
  } else if (unit == "m") {
    ms = value * 60000;
  } else if (unit == "h") {
    ms = value * 3600000;
  } else {
    return std::nullopt;
  }
  if (ms < 1 || ms > 1e12) return std::nullopt;
  return std::chrono::milliseconds(static_cast<long long>(ms));
}

RequestEnvelope build_request(const RequestOptions& o) {
  RequestEnvelope e;
  const int bodies = o.data.has_value() + o.data_raw.has_value() + o.data_binary.has_value();
  if (bodies > 1) throw std::invalid_argument("use only one of -d, --data-raw and --data-binary");
  if (o.data) {
    if (auto parsed = parse_json(*o.data)) {
      e.body_kind = RequestEnvelope::Body::kJson;
      e.body = parsed->dump();
    } else if (is_valid_utf8(*o.data)) {
      e.body_kind = RequestEnvelope::Body::kText;
      e.body = *o.data;
    } else {
      e.body_kind = RequestEnvelope::Body::kBytes;  // bytes that are not text
      e.body = *o.data;
    }
  } else if (o.data_raw) {
    if (!is_valid_utf8(*o.data_raw))
      throw std::invalid_argument("--data-raw is not valid UTF-8 (use --data-binary)");
    e.body_kind = RequestEnvelope::Body::kText;
    e.body = *o.data_raw;
  } else if (o.data_binary) {
    e.body_kind = RequestEnvelope::Body::kBytes;
    e.body = *o.data_binary;
  }
  for (const auto& header : o.headers) {
    if (!is_valid_utf8(header)) throw std::invalid_argument("a header is not valid UTF-8");
    const auto colon = header.find(':');
    if (colon == std::string::npos || colon == 0)
      throw std::invalid_argument("header '" + header + "' is not 'Name: value'");
    std::string name = header.substr(0, colon);
    std::string value = header.substr(colon + 1);
    const auto start = value.find_first_not_of(" \t");
    value = start == std::string::npos ? "" : value.substr(start);
    // A repeated name: the last one wins, as it would in a JSON object.
    const auto same = std::find_if(e.headers.begin(), e.headers.end(),
                                   [&](const auto& h) { return h.first == name; });
    if (same != e.headers.end()) {
      same->second = std::move(value);
    } else {
      e.headers.emplace_back(std::move(name), std::move(value));
    }
  }
  for (const auto& param : o.params) {
    if (!is_valid_utf8(param)) throw std::invalid_argument("a parameter is not valid UTF-8");
    const auto eq = param.find('=');
    if (eq == std::string::npos || eq == 0)
      throw std::invalid_argument("parameter '" + param + "' is not 'name=value'");
    e.params.emplace_back(param.substr(0, eq), param.substr(eq + 1));
  }
  if (o.timeout) e.timeout_ms = static_cast<std::uint64_t>(o.timeout->count());
  e.include_headers = o.include_headers;
  return e;
}

json build_payload(const RequestOptions& o) { return request_document(build_request(o)); }

int exit_code_for_status(int status) {
  return status >= 400 ? exit_code::kHttpError : exit_code::kOk;
}

std::string status_and_headers(const ReplyEnvelope& reply) {
  std::string out = "HTTP/1.1 " + std::to_string(reply.status) + "\r\n";
  for (const auto& [name, value] : reply.headers) out += name + ": " + value + "\r\n";
  out += "\r\n";
  return out;
}

}  // namespace hom
