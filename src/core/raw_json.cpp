#include "hom/raw_json.hpp"

#include <utility>

namespace hom {

using nlohmann::json;

RawJson RawJson::of(const json& value) {
  return from_text(value.dump(-1, ' ', false, json::error_handler_t::replace));
}

RawJson RawJson::from_text(std::string text) {
  RawJson out;
  out.text_ = std::move(text);
  return out;
}

json RawJson::value() const { return json::parse(text_, nullptr, /*allow_exceptions=*/false); }

}  // namespace hom
