// parse_private_key / parse_public_key_line / parse_authorized_keys / parse_known_devices /
// Authorizer (SPEC §8): the key files a daemon reads at start-up, and the options that decide
// who may call what.
// Input: the whole input is given to each parser as the text of its file.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "hom/authorizer.hpp"
#include "hom/ssh_keys.hpp"

namespace {

using hom_fuzz::show;

std::string render_option(const hom::KeyOption& option) {
  std::string out = option.name;
  if (option.value) {
    out += "=\"";
    for (char c : *option.value) {
      if (c == '"') out += '\\';
      out += c;
    }
    out += '"';
  }
  return out;
}

bool has_space(std::string_view s) {
  return s.find_first_of(std::string_view(" \t\r\n", 4)) != std::string_view::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  std::string error;

  // A private key that parses is an Ed25519 key whose public half belongs to its seed, and
  // writing it out gives a file that reads back the same.
  if (const auto key = hom::parse_private_key(input, error)) {
    HOM_FUZZ_CHECK(key->seed().size() == 32 && key->public_key().key.size() == 32, show(input));
    HOM_FUZZ_CHECK(hom::SshPrivateKey::from_seed(key->seed()).public_key() == key->public_key(),
                   show(input));
    const auto again = hom::parse_private_key(key->to_openssh(), error);
    HOM_FUZZ_CHECK(again && again->seed() == key->seed() && again->comment() == key->comment(),
                   show(input) + ": " + error);
  } else {
    HOM_FUZZ_CHECK(!error.empty(), show(input));
  }

  // A public key line round-trips through SshPublicKey::line().
  error.clear();
  if (const auto line = hom::parse_public_key_line(input, error)) {
    HOM_FUZZ_CHECK(line->key.key.size() == 32, show(input));
    const auto again = hom::parse_public_key_line(line->key.line(line->comment), error);
    HOM_FUZZ_CHECK(again && again->key == line->key && again->comment == line->comment,
                   show(input) + ": " + error);
  } else {
    HOM_FUZZ_CHECK(!error.empty(), show(input));
  }

  // authorized_keys: every entry re-rendered (options, key, comment) reads back the same; the
  // authorizer built from it answers 0, 401 or 403, with a reason exactly when refusing.
  error.clear();
  if (const auto keys = hom::parse_authorized_keys(input, error)) {
    for (const auto& entry : keys->keys) {
      HOM_FUZZ_CHECK(entry.key.key.size() == 32 && entry.line >= 1 && entry.line <= size,
                     show(input));
      std::string line;
      bool plain = true;  // no backslash: OpenSSH's quoting cannot express every value
      for (const auto& option : entry.options) {
        if (option.value && option.value->find('\\') != std::string::npos) plain = false;
        line += (line.empty() ? "" : ",") + render_option(option);
      }
      if (!plain) continue;
      line += (line.empty() ? "" : " ") + entry.key.line(entry.comment);
      const auto again = hom::parse_authorized_keys(line, error);
      HOM_FUZZ_CHECK(again && again->keys.size() == 1, show(input) + " as " + show(line));
      const auto& back = again->keys[0];
      HOM_FUZZ_CHECK(back.key == entry.key && back.comment == entry.comment &&
                         back.options.size() == entry.options.size(),
                     show(input) + " as " + show(line));
      for (std::size_t i = 0; i < back.options.size(); ++i)
        HOM_FUZZ_CHECK(back.options[i].name == entry.options[i].name &&
                           back.options[i].value == entry.options[i].value,
                       show(input) + " as " + show(line));
    }
    if (const auto authorizer = hom::Authorizer::create(*keys, error)) {
      for (const auto& entry : keys->keys) {
        // The first line with a key decides for it, as in sshd.
        bool first = true;
        for (const auto& other : keys->keys) {
          if (&other == &entry) break;
          first = first && other.key != entry.key;
        }
        for (const char* path : {"", "gps", "gps/latitude?x=1", "a/../b", "%2e%2e/x", "a/b.json"}) {
          for (const char* verb : {"GET", "post", "DELETE"}) {
            const auto d = authorizer->check(entry.key, verb, path);
            HOM_FUZZ_CHECK(d.status == 0 || d.status == 401 || d.status == 403, show(input));
            HOM_FUZZ_CHECK(d.reason.empty() == (d.status == 0), show(input));
            // A path with a dot segment is never allowed unless the key may call everything.
            if (first &&
                (std::string_view(path) == "a/../b" || std::string_view(path) == "%2e%2e/x"))
              HOM_FUZZ_CHECK(d.status != 0 || (option_values(entry, "hom-allow").empty()),
                             show(input) + " allowed " + path);
          }
        }
      }
    }
  } else {
    HOM_FUZZ_CHECK(!error.empty(), show(input));
  }

  // known_devices: ids are one word without '+', '#' or NUL; keys_for finds every entry.
  error.clear();
  if (const auto devices = hom::parse_known_devices(input, error)) {
    for (const auto& device : devices->devices) {
      HOM_FUZZ_CHECK(
          !device.id.empty() && !has_space(device.id) &&
              std::none_of(device.id.begin(), device.id.end(),
                           [](char c) { return static_cast<unsigned char>(c) < 0x20; }) &&
              device.id.find_first_of(std::string_view("+#\0", 3)) == std::string::npos,
          show(input));
      HOM_FUZZ_CHECK(device.key.key.size() == 32, show(input));
      bool found = false;
      for (const auto& key : devices->keys_for(device.id)) found = found || key == device.key;
      HOM_FUZZ_CHECK(found, show(input));
    }
  } else {
    HOM_FUZZ_CHECK(!error.empty(), show(input));
  }
  return 0;
}
