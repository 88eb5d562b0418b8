// Test helper: bytes made readable in failure messages.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace hom::test {

// Shows control and non-ASCII bytes as \xNN; long inputs are cut after 300 characters.
inline std::string show(std::string_view s) {
  std::string out;
  for (unsigned char ch : s) {
    if (ch < 0x20 || ch >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", ch);
      out += buf;
    } else {
      out += static_cast<char>(ch);
    }
  }
  if (out.size() <= 300) return out;
  return out.substr(0, 300) + "...(" + std::to_string(s.size()) + " bytes)";
}

}  // namespace hom::test
