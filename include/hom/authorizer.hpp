// Who may call what (SPEC §8): the keys of an authorized_keys file and their `hom-allow`
// options. Pure: no I/O. Immutable once made, so safe to share between threads.
//
//   hom-allow="VERBS PATTERN [PATTERN...]"
//     VERBS    `*` or HTTP methods separated by commas (case does not matter): GET,POST
//     PATTERN  a path glob as in HTTP_ALLOWED_PATHS: `*` within a segment, `**` across
//              segments, "/gps/**" also allows "/gps"; matched against the decoded path
//              without its query
//
// A key with several hom-allow options may call what any of them allows. A key with none may
// call everything, unless it carries `restrict` or `command=` (meant for sshd to narrow the
// key): then nothing, since those have no meaning here. `cert-authority` lines are not keys
// of callers and are ignored. Other options are kept and ignored.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hom/ssh_keys.hpp"

namespace hom {

class Authorizer {
 public:
  // nullopt with a reason ("line 4: hom-allow ...") when a hom-allow option is malformed.
  static std::optional<Authorizer> create(const AuthorizedKeys& keys, std::string& error);

  // 0 when `key` may call `verb` (any case) on `path` (as in a request topic, after the
  // verb level, no leading '/'); else 401 (unknown key) or 403 (not allowed), with a reason.
  struct Decision {
    int status = 0;
    std::string reason;
  };
  Decision check(const SshPublicKey& key, std::string_view verb, std::string_view path) const;

  // True when `key` is listed (usable as a caller).
  bool knows(const SshPublicKey& key) const;
  std::size_t size() const { return entries_.size(); }

 private:
  struct Rule {
    std::vector<std::string> verbs;  // upper-case; empty means any
    std::vector<std::string> globs;
  };
  struct Entry {
    SshPublicKey key;
    bool allow_all = false;
    std::vector<Rule> rules;
  };
  const Entry* find(const SshPublicKey& key) const;
  std::vector<Entry> entries_;
};

}  // namespace hom
