// hom-gateway's handling of what an HTTP client sends (SPEC §6): routing a request target and
// Host header to a device, and the bearer token check.
// Input: target 0xFF host 0xFF authorization 0xFF method. Beast parses the HTTP itself; these
// are the gateway's own functions over the fields it hands on.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "hom/gateway.hpp"

namespace {

using hom_fuzz::show;

hom::gateway::GatewayConfig config(hom::gateway::RouteMode mode) {
  hom::gateway::GatewayConfig c;
  c.route = mode;
  c.host_suffix = ".devices.test";
  return c;
}

const std::string kToken = "t0k3n";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const auto path_mode = config(hom::gateway::RouteMode::kPath);
  static const auto host_mode = config(hom::gateway::RouteMode::kHost);
  static const auto tokens = hom::gateway::parse_tokens(
      hom::gateway::sha256_hex(kToken) + " dev* GET /x/** fuzz\n", "tokens");
  const auto fields =
      hom_fuzz::split_fields(std::string_view(reinterpret_cast<const char*>(data), size), 4);
  const std::string_view target = fields[0], host = fields[1], auth = fields[2], method = fields[3];

  for (const auto* c : {&path_mode, &host_mode}) {
    const auto r = hom::gateway::route(*c, target, host);
    if (!r) continue;
    HOM_FUZZ_CHECK(!r->device.empty(), show(target) + " " + show(host));
    HOM_FUZZ_CHECK(!target.empty() && target.front() == '/', show(target));
    // The path is taken from the target, never invented: it is a suffix of it.
    HOM_FUZZ_CHECK(
        target.size() >= r->path.size() && target.substr(target.size() - r->path.size()) == r->path,
        show(target) + " -> " + show(r->path));
    const auto a = hom::gateway::authorize(tokens, auth, r->device, method, "/" + r->path);
    if (a.result != hom::gateway::AuthResult::kUnauthenticated) {
      // Only the one token authenticates, whatever the rest of the header says.
      HOM_FUZZ_CHECK(auth.size() == 7 + kToken.size() && auth.substr(7) == kToken, show(auth));
      HOM_FUZZ_CHECK(a.token_name == "fuzz", show(a.token_name));
    }
  }
  return 0;
}
