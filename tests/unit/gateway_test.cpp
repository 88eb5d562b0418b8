// hom-gateway's pure half: configuration, routing, tokens and their scopes (SPEC §6).
#include "hom/gateway.hpp"

#include <gtest/gtest.h>

#include <map>

namespace hom::gateway {
namespace {

Env env_of(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

GatewayConfig config_of(std::map<std::string, std::string> vars) {
  vars.emplace("GATEWAY_AUTH", "none");
  return load_gateway_config(env_of(std::move(vars)));
}

TEST(GatewayConfigTest, Defaults) {
  const auto c = config_of({});
  EXPECT_EQ(c.listen_host, "127.0.0.1");
  EXPECT_EQ(c.listen_port, 8080);
  EXPECT_EQ(c.route, RouteMode::kPath);
  EXPECT_EQ(c.timeout, std::chrono::milliseconds(30000));
  EXPECT_EQ(c.max_inflight, 10000u);
  EXPECT_EQ(c.max_header_bytes, 16u * 1024);
}

TEST(GatewayConfigTest, RefusesToStartWithoutTokensUnlessAuthNone) {
  EXPECT_THROW(load_gateway_config(env_of({})), ConfigError);
  EXPECT_THROW(load_gateway_config(env_of({{"GATEWAY_AUTH", "maybe"}})), ConfigError);
  EXPECT_THROW(
      load_gateway_config(env_of({{"GATEWAY_AUTH", "none"}, {"GATEWAY_TOKENS_FILE", "/x"}})),
      ConfigError);
  EXPECT_NO_THROW(load_gateway_config(env_of({{"GATEWAY_TOKENS_FILE", "/x"}})));
}

TEST(GatewayConfigTest, BadValuesNameTheVariable) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"GATEWAY_LISTEN", "8080"},         {"GATEWAY_LISTEN", "[::1]8080"},
      {"GATEWAY_LISTEN", "host:99999"},   {"GATEWAY_ROUTE", "subdomain"},
      {"GATEWAY_TIMEOUT_MS", "0"},        {"GATEWAY_MAX_INFLIGHT", "-1"},
      {"GATEWAY_MAX_HEADER_BYTES", "10"}, {"LOG_LEVEL", "loud"},
  };
  for (const auto& [name, value] : cases) {
    try {
      config_of({{name, value}});
      ADD_FAILURE() << name << "=" << value << " was accepted";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
  // Host routing needs a suffix.
  EXPECT_THROW(config_of({{"GATEWAY_ROUTE", "host"}}), ConfigError);
}

TEST(GatewayConfigTest, Listen) {
  auto c = config_of({{"GATEWAY_LISTEN", "[::]:443"}});
  EXPECT_EQ(c.listen_host, "::");
  EXPECT_EQ(c.listen_port, 443);
  c = config_of({{"GATEWAY_LISTEN", "0.0.0.0:0"}});
  EXPECT_EQ(c.listen_port, 0);
}

TEST(GatewayRouteTest, PathRouting) {
  const auto c = config_of({});
  struct Case {
    std::string target;
    std::optional<Route> want;
  };
  const std::vector<Case> cases = {
      {"/fridge/gps/latitude", Route{"fridge", "gps/latitude"}},
      {"/fridge/search?q=a%20b", Route{"fridge", "search?q=a%20b"}},
      {"/fridge", Route{"fridge", ""}},
      {"/fridge/", Route{"fridge", ""}},
      {"/fridge?x=1", Route{"fridge", "?x=1"}},
      {"/site%2Ffridge/status", Route{"site/fridge", "status"}},
      {"/", std::nullopt},
      {"//x", std::nullopt},
      {"x", std::nullopt},
  };
  for (const auto& tc : cases) {
    const auto got = route(c, tc.target, "ignored");
    ASSERT_EQ(got.has_value(), tc.want.has_value()) << tc.target;
    if (got) {
      EXPECT_EQ(got->device, tc.want->device) << tc.target;
      EXPECT_EQ(got->path, tc.want->path) << tc.target;
    }
  }
}

TEST(GatewayRouteTest, HostRouting) {
  const auto c = config_of({{"GATEWAY_ROUTE", "host"}, {"GATEWAY_HOST_SUFFIX", ".localhost"}});
  auto r = route(c, "/index.html?a=1", "ItsMe.localhost:8080");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->device, "itsme");
  EXPECT_EQ(r->path, "index.html?a=1");
  EXPECT_FALSE(route(c, "/", "localhost:8080"));
  EXPECT_FALSE(route(c, "/", ".localhost"));
  EXPECT_FALSE(route(c, "/", "itsme.example.com"));
}

const std::string kTokenA = "secret-a";
const std::string kTokenB = "secret-b";

std::vector<Token> tokens() {
  return parse_tokens(sha256_hex(kTokenA) + " fridge-* GET,HEAD /gps/**,/status ops  # comment\n" +
                          "\n# a whole comment line\n" + sha256_hex(kTokenB) + " * * * admin\n",
                      "tokens");
}

TEST(GatewayTokensTest, ParsesAndRejectsBadLines) {
  const auto t = tokens();
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].name, "ops");
  EXPECT_EQ(t[0].methods, (std::vector<std::string>{"GET", "HEAD"}));
  EXPECT_EQ(t[0].paths, (std::vector<std::string>{"/gps/**", "/status"}));
  EXPECT_TRUE(t[1].methods.empty());
  EXPECT_THROW(parse_tokens("abc * * * name\n", "f"), ConfigError);                // not a hash
  EXPECT_THROW(parse_tokens(sha256_hex("x") + " * * *\n", "f"), ConfigError);      // 4 fields
  EXPECT_THROW(parse_tokens(sha256_hex("x") + " * G@T * n\n", "f"), ConfigError);  // method
  try {
    parse_tokens("\n\nbad line\n", "tokens.txt");
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("tokens.txt:3"), std::string::npos) << e.what();
  }
}

TEST(GatewayTokensTest, AuthorizeChecksTokenThenScopes) {
  const auto t = tokens();
  struct Case {
    std::string header, device, method, path;
    AuthResult want;
  };
  const std::vector<Case> cases = {
      {"", "fridge-1", "GET", "/gps", AuthResult::kUnauthenticated},
      {"Bearer wrong", "fridge-1", "GET", "/gps", AuthResult::kUnauthenticated},
      {"Basic " + kTokenA, "fridge-1", "GET", "/gps", AuthResult::kUnauthenticated},
      {"Bearer " + kTokenA, "fridge-1", "GET", "/gps/latitude", AuthResult::kAllowed},
      {"bearer " + kTokenA, "fridge-1", "get", "/status", AuthResult::kAllowed},
      {"Bearer " + kTokenA, "oven-1", "GET", "/gps", AuthResult::kForbidden},
      {"Bearer " + kTokenA, "fridge-1", "POST", "/gps", AuthResult::kForbidden},
      {"Bearer " + kTokenA, "fridge-1", "GET", "/admin", AuthResult::kForbidden},
      {"Bearer " + kTokenB, "any/thing", "DELETE", "/x/y", AuthResult::kAllowed},
  };
  for (const auto& c : cases) {
    const auto got = authorize(t, c.header, c.device, c.method, c.path);
    EXPECT_EQ(got.result, c.want) << c.header << " " << c.device << " " << c.method << " "
                                  << c.path;
  }
  EXPECT_EQ(authorize(t, "Bearer " + kTokenA, "oven", "GET", "/").token_name, "ops");
}

TEST(GatewayHeadersTest, DroppedHeaders) {
  for (const char* name : {"Authorization", "host", "Connection", "Transfer-Encoding",
                           "Content-Length", "Hom-Timeout", "Proxy-Authorization", "Upgrade"})
    EXPECT_TRUE(is_gateway_dropped_header(name)) << name;
  for (const char* name : {"Accept", "Content-Type", "Cookie", "X-Custom"})
    EXPECT_FALSE(is_gateway_dropped_header(name)) << name;
  EXPECT_TRUE(is_hop_by_hop_response_header("transfer-encoding"));
  EXPECT_FALSE(is_hop_by_hop_response_header("set-cookie"));
}

}  // namespace
}  // namespace hom::gateway
