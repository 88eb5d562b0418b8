// Device presence, SPEC §2 "Presence": retained {start}/status/{id}.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace hom {

struct Presence {
  bool online = false;
  std::string version;                // empty when absent
  std::string protocol;               // "1.1" when homd takes streams (SPEC §7); else empty
  std::optional<std::int64_t> since;  // unix seconds
};

// The protocol version homd announces: 1.1 adds streams (SPEC §7).
inline constexpr const char* kProtocol = "1.1";

// {"online": true, "version": ..., "since": ..., "protocol": "1.1"}
std::string online_document(std::string_view version, std::int64_t since);
// {"online": false} (the Last Will and the clean-shutdown message)
std::string offline_document();
// nullopt when the payload is not a presence document.
std::optional<Presence> parse_presence(std::string_view payload);

}  // namespace hom
