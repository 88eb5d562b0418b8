// Paths, globs and URLs, SPEC §2 "Paths", "HTTP_ALLOWED_PATHS" and the base-URL guarantee.
#include "hom/path.hpp"

#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include "unit/show.hpp"

namespace {

using hom::build_url;
using hom::glob_match;
using hom::normalise_path;
using hom::path_allowed;
using hom::percent_decode;
using hom::percent_encode;

using hom::test::show;

TEST(NormalisePath, DotSegmentsInAnySpellingAreRefused) {
  const std::vector<std::string> cases = {
      "..",       ".",       "../a",     "a/..",     "a/../b",    "a/./b",      "./a",
      "a/.",      "a/b/..",  "a/b/../",  "%2e%2e",   "%2E%2E",    "%2e%2E",     "%2E.",
      ".%2e",     "%2e.",    ".%2E",     "%2e",      "%2E",       "a/%2e%2e/b", "a/%2e/b",
      "a/%2E%2e", "..%2f",   "..%2fetc", "..%2Fetc", "a/..%2f..", "%2e%2e%2f",  "%2e%2e/x",
      "..\\",     "..\\etc", "a\\..\\b", "..%5c",    "..%5Cetc",  "..?x=1",     "a/..?x=1",
      "/..",      "/../etc", "a//../b",
  };
  for (const auto& raw : cases) {
    SCOPED_TRACE("raw=" + show(raw));
    std::string error;
    const auto out = normalise_path(raw, error);
    EXPECT_FALSE(out.has_value()) << "got " << show(out.value_or(""));
    EXPECT_FALSE(error.empty());
  }
}

TEST(NormalisePath, NulIsRefused) {
  const std::vector<std::string> cases = {
      std::string("\0", 1),
      std::string("a\0b", 3),
      std::string("a/b\0", 4),
      "%00",
      "a%00b",
      "a/%00",
      "a?x=%00",
  };
  for (const auto& raw : cases) {
    SCOPED_TRACE("raw=" + show(raw));
    std::string error;
    const auto out = normalise_path(raw, error);
    EXPECT_FALSE(out.has_value()) << "got " << show(out.value_or(""));
    EXPECT_FALSE(error.empty());
  }
}

TEST(NormalisePath, EncodesWhatAUrlPathMayNotHold) {
  struct Case {
    std::string raw, out;
  };
  const std::vector<Case> cases = {
      {"", ""},
      {"status", "status"},
      {"food/dessert", "food/dessert"},
      {"a b", "a%20b"},
      {"a\"b", "a%22b"},
      {"<x>", "%3Cx%3E"},
      {"a\\b", "a%5Cb"},
      {"a^b", "a%5Eb"},
      {"a`b", "a%60b"},
      {"{x}", "%7Bx%7D"},
      {"a|b", "a%7Cb"},
      {"[x]", "%5Bx%5D"},
      {"caf\xC3\xA9", "caf%C3%A9"},
      {"\xE2\x82\xAC/\xF0\x9F\x98\x80", "%E2%82%AC/%F0%9F%98%80"},
      {"a\x7F", "a%7F"},
      {"a\tb", "a%09b"},
      // Escapes are kept as they are.
      {"%41", "%41"},
      {"a%2Fb", "a%2Fb"},
      {"a%20b", "a%20b"},
      {"%e2%82%ac", "%e2%82%ac"},
      // A '%' without two hex digits becomes %25.
      {"%", "%25"},
      {"%zz", "%25zz"},
      {"a%", "a%25"},
      {"%4", "%254"},
      {"%4g", "%254g"},
      {"100%", "100%25"},
      {"%%41", "%25%41"},
      // Segments that only look like dot segments are names.
      {"...", "..."},
      {".well-known/x", ".well-known/x"},
      {"a..b", "a..b"},
      {"a/.hidden", "a/.hidden"},
      {"%2e%2e%2e", "%2e%2e%2e"},
      // Characters a path may hold are kept.
      {"a-b_c.d~e", "a-b_c.d~e"},
      {"a:b@c!$&'()*+,;=", "a:b@c!$&'()*+,;="},
      // A ?query is kept.
      {"items?q=1&r=2", "items?q=1&r=2"},
      {"?q=1", "?q=1"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("raw=" + show(c.raw));
    std::string error;
    const auto out = normalise_path(c.raw, error);
    if (!out) {
      ADD_FAILURE() << "refused: " << error;
      continue;
    }
    EXPECT_EQ(*out, c.out);
  }
}

TEST(NormalisePath, DotsInTheQueryAreNotSegments) {
  std::string error;
  const auto out = normalise_path("a?x=..", error);
  ASSERT_TRUE(out.has_value()) << error;
  EXPECT_EQ(*out, "a?x=..");
}

TEST(PercentEncode, OnlyUnreservedIsKept) {
  struct Case {
    std::string in, out;
  };
  const std::vector<Case> cases = {
      {"", ""},
      {"a b", "a%20b"},
      {"AZaz09-._~", "AZaz09-._~"},
      {"/", "%2F"},
      {"+", "%2B"},
      {"a&b=c", "a%26b%3Dc"},
      {"%", "%25"},
      {"?#", "%3F%23"},
      {"caf\xC3\xA9", "caf%C3%A9"},
      {std::string("\0", 1), "%00"},
      {"\xFF", "%FF"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("in=" + show(c.in));
    EXPECT_EQ(percent_encode(c.in), c.out);
  }
}

TEST(PercentDecode, DecodesEscapesAndCopiesTheRest) {
  struct Case {
    std::string in, out;
  };
  const std::vector<Case> cases = {
      {"", ""},
      {"%41%42", "AB"},
      {"%2e%2E", ".."},
      {"a+b", "a+b"},
      {"%zz", "%zz"},
      {"%", "%"},
      {"%4", "%4"},
      {"caf%C3%A9", "caf\xC3\xA9"},
      {"%00", std::string("\0", 1)},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("in=" + c.in);
    EXPECT_EQ(percent_decode(c.in), c.out);
  }
}

TEST(GlobMatch, Table) {
  struct Case {
    std::string pattern, path;
    bool match;
  };
  const std::vector<Case> cases = {
      {"/status", "/status", true},
      {"/status", "/status/x", false},
      {"/status", "/statusx", false},
      {"/status", "/Status", false},
      {"/status", "/", false},
      {"/", "/", true},
      {"/", "/a", false},
      {"/gps/**", "/gps", true},
      {"/gps/**", "/gps/a", true},
      {"/gps/**", "/gps/a/b", true},
      {"/gps/**", "/gps/a/b/c/d", true},
      {"/gps/**", "/gpsx", false},
      {"/gps/**", "/gp", false},
      {"/gps/**", "/other/gps", false},
      {"/gps/**", "/", false},
      {"/gps/*", "/gps/a", true},
      {"/gps/*", "/gps/a/b", false},
      {"/gps/*", "/gpsx/a", false},
      {"/a/*/c", "/a/b/c", true},
      {"/a/*/c", "/a/b/x/c", false},
      {"/a/**/c", "/a/b/x/c", true},
      {"/a/**/c", "/a/b/x/d", false},
      {"/*.json", "/x.json", true},
      {"/*.json", "/a/x.json", false},
      {"/*.json", "/x.jsonp", false},
      {"/api/v*", "/api/v1", true},
      {"/api/v*", "/api/v1/x", false},
      {"/api/v*", "/api/w1", false},
      {"/**", "/", true},
      {"/**", "/anything/deep/below", true},
      {"/*", "/a", true},
      {"/*", "/a/b", false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("pattern=" + c.pattern + " path=" + c.path);
    EXPECT_EQ(glob_match(c.pattern, c.path), c.match);
  }
}

TEST(PathAllowed, EmptyListAllowsAll) {
  for (const std::string path : {"/", "/a", "/a/b/c", "/admin"}) {
    SCOPED_TRACE(path);
    EXPECT_TRUE(path_allowed({}, path));
  }
}

TEST(PathAllowed, AnyPatternOfTheList) {
  const std::vector<std::string> globs = {"/gps/**", "/status"};
  struct Case {
    std::string path;
    bool allowed;
  };
  const std::vector<Case> cases = {
      {"/gps", true},    {"/gps/fix", true},   {"/gps/a/b", true},
      {"/status", true}, {"/gpsx", false},     {"/admin", false},
      {"/", false},      {"/status/x", false}, {"/x/gps", false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.path);
    EXPECT_EQ(path_allowed(globs, c.path), c.allowed);
  }
}

// What a URL parser reads as the authority and the path: the authority ends at the first
// '/', '?' or '#' after "scheme://".
struct UrlParts {
  std::string scheme, authority, path;
};
UrlParts split_url(const std::string& url) {
  UrlParts parts;
  const auto colon = url.find("://");
  if (colon == std::string::npos) return parts;
  parts.scheme = url.substr(0, colon);
  const auto start = colon + 3;
  const auto end = url.find_first_of("/?#", start);
  parts.authority = url.substr(start, end == std::string::npos ? std::string::npos : end - start);
  if (end != std::string::npos && url[end] == '/') {
    const auto path_end = url.find_first_of("?#", end);
    parts.path =
        url.substr(end, path_end == std::string::npos ? std::string::npos : path_end - end);
  }
  return parts;
}

TEST(BuildUrl, PlainJoins) {
  struct Case {
    std::string base, path, query, url;
  };
  const std::vector<Case> cases = {
      {"http://127.0.0.1:8080/api/", "x", "", "http://127.0.0.1:8080/api/x"},
      {"http://127.0.0.1:8080/api/", "", "", "http://127.0.0.1:8080/api/"},
      {"http://127.0.0.1:8080/api/", "a/b/", "", "http://127.0.0.1:8080/api/a/b/"},
      {"http://localhost/", "status", "", "http://localhost/status"},
      {"https://dev.local:8443/", "gps/fix", "", "https://dev.local:8443/gps/fix"},
      {"http://127.0.0.1:8080/api/", "items", "a=1&b=2", "http://127.0.0.1:8080/api/items?a=1&b=2"},
      {"http://127.0.0.1:8080/api/", "items?q=1", "", "http://127.0.0.1:8080/api/items?q=1"},
      {"http://127.0.0.1:8080/api/", "items?q=1", "a=1", "http://127.0.0.1:8080/api/items?q=1&a=1"},
      {"http://127.0.0.1:8080/api/", "", "a=%20", "http://127.0.0.1:8080/api/?a=%20"},
      {"http://127.0.0.1:8080/api/", "a%20b", "", "http://127.0.0.1:8080/api/a%20b"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("base=" + c.base + " path=" + c.path + " query=" + c.query);
    std::string error;
    const auto url = build_url(c.base, c.path, c.query, error);
    if (!url) {
      ADD_FAILURE() << "refused: " << error;
      continue;
    }
    EXPECT_EQ(*url, c.url);
  }
}

TEST(BuildUrl, HostilePathsStayUnderTheBase) {
  const std::string base = "http://127.0.0.1:8080/api/";
  const std::vector<std::string> cases = {
      "@evil.com",
      "@evil.com/x",
      "//evil.com/x",
      "evil.com:80",
      "http://evil.com",
      "http:evil.com",
      ":8081/x",
      "user:pw@evil.com",
      "%2f%2fevil.com",
      "/x",
      "//",
  };
  for (const auto& path : cases) {
    SCOPED_TRACE("path=" + path);
    std::string error;
    const auto url = build_url(base, path, "", error);
    if (!url) {
      ADD_FAILURE() << "refused: " << error;
      continue;
    }
    const UrlParts parts = split_url(*url);
    EXPECT_EQ(parts.scheme, "http") << *url;
    EXPECT_EQ(parts.authority, "127.0.0.1:8080") << *url;
    EXPECT_EQ(parts.path.rfind("/api/", 0), 0u) << *url;
  }
}

TEST(BuildUrl, DotDotNeverLeavesTheBasePath) {
  const std::string base = "http://127.0.0.1:8080/api/";
  for (const std::string path : {"../x", "a/../../x", "%2e%2e/x", ".."}) {
    SCOPED_TRACE("path=" + path);
    std::string error;
    const auto url = build_url(base, path, "", error);
    if (!url) {
      EXPECT_FALSE(error.empty());
      continue;
    }
    const UrlParts parts = split_url(*url);
    EXPECT_EQ(parts.authority, "127.0.0.1:8080") << *url;
    EXPECT_EQ(parts.path.rfind("/api/", 0), 0u) << *url;
    EXPECT_EQ(parts.path.find(".."), std::string::npos) << *url;
  }
}

}  // namespace

namespace {
// "..;" is ".." to servers that strip path parameters.
TEST(NormalisePathHardening, DotDotWithPathParameterIsRefused) {
  std::string error;
  EXPECT_FALSE(hom::normalise_path("a/..;/b", error));
  EXPECT_FALSE(hom::normalise_path("a/%2e%2e;x/b", error));
  EXPECT_TRUE(hom::normalise_path("a/b;v=1/c", error));
}

// Several "**" in one pattern: matched in O(patterns x segments), not by backtracking.
TEST(GlobMatchMany, SeveralDoubleStars) {
  std::string long_path;
  for (int i = 0; i < 20000; ++i) long_path += "/a";
  EXPECT_FALSE(hom::glob_match("/**/a/**/a/**/b", long_path));
  EXPECT_TRUE(hom::glob_match("/**/a/**/a/**/b", long_path + "/b"));
  EXPECT_TRUE(hom::glob_match("/x/**/y/**", "/x/1/2/y"));
  EXPECT_FALSE(hom::glob_match("/x/**/y/**", "/x/1/2/z"));
}
}  // namespace
