#include "hom/cli_request.hpp"

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

json build_payload(const RequestOptions& o) {
  json payload = json::object();
  const int bodies = o.data.has_value() + o.data_raw.has_value() + o.data_binary.has_value();
  if (bodies > 1) throw std::invalid_argument("use only one of -d, --data-raw and --data-binary");
  if (o.data) {
    auto parsed = parse_json(*o.data);
    if (parsed) {
      payload["body"] = std::move(*parsed);
    } else if (is_valid_utf8(*o.data)) {
      payload["body"] = *o.data;
    } else {
      payload["body_base64"] = base64_encode(*o.data);  // bytes that are not text
    }
  } else if (o.data_raw) {
    if (!is_valid_utf8(*o.data_raw))
      throw std::invalid_argument("--data-raw is not valid UTF-8 (use --data-binary)");
    payload["body"] = *o.data_raw;
  } else if (o.data_binary) {
    payload["body_base64"] = base64_encode(*o.data_binary);
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
    payload["headers"][name] = value;
  }
  for (const auto& param : o.params) {
    if (!is_valid_utf8(param)) throw std::invalid_argument("a parameter is not valid UTF-8");
    const auto eq = param.find('=');
    if (eq == std::string::npos || eq == 0)
      throw std::invalid_argument("parameter '" + param + "' is not 'name=value'");
    json& slot = payload["params"][param.substr(0, eq)];
    const std::string value = param.substr(eq + 1);
    if (slot.is_null()) {
      slot = value;
    } else {
      if (!slot.is_array()) slot = json::array({slot});
      slot.push_back(value);  // a repeated name repeats the key
    }
  }
  if (o.timeout) payload["timeout_ms"] = o.timeout->count();
  if (o.include_headers) payload["include_headers"] = true;
  return payload;
}

int reply_status(const json& reply) {
  const auto it = reply.find("status");
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

int exit_code_for_status(int status) {
  return status >= 400 ? exit_code::kHttpError : exit_code::kOk;
}

std::string content_bytes(const json& reply) {
  const auto content = reply.find("content");
  if (content == reply.end() || content->is_null()) return {};
  if (content->is_string()) {
    const auto& text = content->get_ref<const std::string&>();
    const auto encoding = reply.find("content_encoding");
    if (encoding != reply.end() && *encoding == "base64") return base64_decode(text).value_or("");
    return text;
  }
  return content->dump();
}

std::string status_and_headers(const json& reply) {
  std::string out = "HTTP/1.1 " + std::to_string(reply_status(reply)) + "\r\n";
  if (const auto headers = reply.find("headers"); headers != reply.end() && headers->is_object()) {
    for (const auto& [name, value] : headers->items()) {
      if (value.is_array()) {
        for (const auto& v : value)
          if (v.is_string()) out += name + ": " + v.get<std::string>() + "\r\n";
      } else if (value.is_string()) {
        out += name + ": " + value.get<std::string>() + "\r\n";
      }
    }
  }
  out += "\r\n";
  return out;
}

}  // namespace hom
