// Standard base64 (RFC 4648 §4, with padding).
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace hom {

std::string base64_encode(std::string_view bytes);
// Strict: the length a multiple of 4, only the alphabet, '=' only as final padding.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace hom
