// A JSON value kept as the text it arrived in, so that it can be echoed byte for byte
// (SPEC §5.1 "req_id verbatim": 123456789012345678901234567890, 1.50, 1e3 and -0 survive,
// where a parsed value would come back as 1.2345678901234568e+29, 1.5, 1000.0 and 0).
#pragma once

#include <cstddef>
#include <string>

#include <nlohmann/json.hpp>

namespace hom {

// A small value type; null unless set. Equality compares the texts: 1.50 and 1.5 differ.
class RawJson {
 public:
  RawJson() = default;
  RawJson(std::nullptr_t) {}  // NOLINT(google-explicit-constructor): `req_id = nullptr` reads well

  // The value as nlohmann::json spells it.
  static RawJson of(const nlohmann::json& value);
  // `text` taken as it is; the caller guarantees one valid JSON value without surrounding
  // whitespace (e.g. a slice of a document that parsed).
  static RawJson from_text(std::string text);

  const std::string& text() const { return text_; }
  bool is_null() const { return text_ == "null"; }
  // The parsed value (a big integer becomes a floating-point number; compare texts to be exact).
  nlohmann::json value() const;

  friend bool operator==(const RawJson& a, const RawJson& b) { return a.text_ == b.text_; }
  friend bool operator!=(const RawJson& a, const RawJson& b) { return a.text_ != b.text_; }

 private:
  std::string text_ = "null";
};

}  // namespace hom
