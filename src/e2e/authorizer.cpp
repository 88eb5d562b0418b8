#include "hom/authorizer.hpp"

#include <algorithm>

#include "hom/path.hpp"
#include "hom/request.hpp"

namespace hom {
namespace {

std::string upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
  return out;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  while (true) {
    const std::size_t at = s.find(sep);
    out.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s.remove_prefix(at + 1);
  }
}

bool has_option(const AuthorizedKey& key, std::string_view name) {
  return !option_values(key, name).empty();
}

}  // namespace

std::optional<Authorizer> Authorizer::create(const AuthorizedKeys& keys, std::string& error) {
  Authorizer out;
  for (const auto& key : keys.keys) {
    if (has_option(key, "cert-authority")) continue;
    Entry entry;
    entry.key = key.key;
    const auto allows = option_values(key, "hom-allow");
    entry.allow_all = allows.empty() && !has_option(key, "restrict") && !has_option(key, "command");
    for (const auto& allow : allows) {
      const auto bad = [&](const std::string& why) {
        error = "line " + std::to_string(key.line) + ": hom-allow=\"" + allow + "\": " + why;
        return std::nullopt;
      };
      std::vector<std::string_view> words;
      for (auto word : split(allow, ' '))
        if (!word.empty()) words.push_back(word);
      if (words.size() < 2) return bad("expected VERBS PATTERN..., e.g. \"GET,POST /gps/**\"");
      Rule rule;
      if (words[0] != "*") {
        for (auto verb : split(words[0], ',')) {
          if (!is_token(verb)) return bad("'" + std::string(verb) + "' is not an HTTP method");
          rule.verbs.push_back(upper(verb));
        }
      }
      for (std::size_t i = 1; i < words.size(); ++i) {
        if (words[i].front() != '/') return bad("a pattern starts with '/'");
        rule.globs.emplace_back(words[i]);
      }
      entry.rules.push_back(std::move(rule));
    }
    out.entries_.push_back(std::move(entry));
  }
  return out;
}

const Authorizer::Entry* Authorizer::find(const SshPublicKey& key) const {
  // The first line with the key wins, as in sshd.
  for (const auto& entry : entries_)
    if (entry.key == key) return &entry;
  return nullptr;
}

bool Authorizer::knows(const SshPublicKey& key) const { return find(key) != nullptr; }

Authorizer::Decision Authorizer::check(const SshPublicKey& key, std::string_view verb,
                                       std::string_view path) const {
  const Entry* entry = find(key);
  if (!entry) return {401, "key " + key.fingerprint() + " is not in HOM_AUTHORIZED_KEYS_FILE"};
  if (entry->allow_all) return {};
  // The same path the HTTP call and HTTP_ALLOWED_PATHS see: normalised, decoded, no query.
  std::string error;
  const auto normal = normalise_path(path, error);
  if (!normal) return {403, "path refused: " + error};
  const std::string plain = "/" + percent_decode(normal->substr(0, normal->find('?')));
  const std::string method = upper(verb);
  for (const auto& rule : entry->rules) {
    if (!rule.verbs.empty() &&
        std::find(rule.verbs.begin(), rule.verbs.end(), method) == rule.verbs.end())
      continue;
    if (path_allowed(rule.globs, plain)) return {};
  }
  return {403, "key " + key.fingerprint() + " may not " + method + " " + plain + " (hom-allow)"};
}

}  // namespace hom
