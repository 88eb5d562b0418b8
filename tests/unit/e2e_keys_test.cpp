// OpenSSH keys, authorized_keys and known_devices (SPEC §8), against files ssh-keygen makes.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "e2e_support.hpp"
#include "hom/base64.hpp"
#include "hom/ssh_keys.hpp"

namespace {

using e2e_test::q;
using e2e_test::read_file;
using e2e_test::run;
using e2e_test::TempDir;

const std::string kSsh = SSH_KEYGEN_BIN;

TEST(PrivateKey, ReadsWhatSshKeygenWrites) {
  TempDir dir;
  e2e_test::keygen(dir, "device");
  std::string error;
  const auto key = hom::parse_private_key(read_file(dir / "device"), error);
  ASSERT_TRUE(key) << error;
  EXPECT_EQ(key->comment(), "device@test");
  const auto pub = hom::parse_public_key_line(read_file(dir / "device.pub"), error);
  ASSERT_TRUE(pub) << error;
  EXPECT_EQ(pub->key, key->public_key());
  EXPECT_EQ(pub->comment, "device@test");
  EXPECT_EQ(key->public_key().line("device@test") + "\n", read_file(dir / "device.pub"));

  // The fingerprint as ssh-keygen -l prints it.
  ASSERT_EQ(run(kSsh + " -l -f " + q(dir / "device.pub") + " > " + q(dir / "fp")), 0);
  EXPECT_NE(read_file(dir / "fp").find(" " + key->public_key().fingerprint() + " "),
            std::string::npos)
      << read_file(dir / "fp");
}

TEST(PrivateKey, SshKeygenReadsOurs) {
  TempDir dir;
  const auto key = hom::SshPrivateKey::generate("ours");
  e2e_test::write_file(dir / "ours", key.to_openssh());
  ASSERT_EQ(run("chmod 600 " + q(dir / "ours")), 0);
  ASSERT_EQ(run(kSsh + " -y -f " + q(dir / "ours") + " > " + q(dir / "ours.pub")), 0);
  std::string error;
  const auto pub = hom::parse_public_key_line(read_file(dir / "ours.pub"), error);
  ASSERT_TRUE(pub) << error;
  EXPECT_EQ(pub->key, key.public_key());
  const auto again = hom::parse_private_key(key.to_openssh(), error);
  ASSERT_TRUE(again) << error;
  EXPECT_EQ(again->public_key(), key.public_key());
  EXPECT_EQ(again->seed(), key.seed());
}

TEST(PrivateKey, RefusesEncryptedAndOtherTypes) {
  TempDir dir;
  e2e_test::keygen(dir, "locked", "-N secret-passphrase");
  std::string error;
  EXPECT_FALSE(hom::parse_private_key(read_file(dir / "locked"), error));
  EXPECT_NE(error.find("encrypted"), std::string::npos) << error;

  ASSERT_EQ(run(kSsh + " -q -t ecdsa -N '' -f " + q(dir / "ecdsa") + " </dev/null >/dev/null"), 0);
  EXPECT_FALSE(hom::parse_private_key(read_file(dir / "ecdsa"), error));
  EXPECT_NE(error.find("ecdsa-sha2-nistp256, not ssh-ed25519"), std::string::npos) << error;

  ASSERT_EQ(run(kSsh + " -q -t ecdsa -m PEM -N '' -f " + q(dir / "pem") + " </dev/null >/dev/null"),
            0);
  EXPECT_FALSE(hom::parse_private_key(read_file(dir / "pem"), error));
  EXPECT_NE(error.find("PEM"), std::string::npos) << error;

  for (const char* text :
       {"", "hello", "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n",
        "-----BEGIN OPENSSH PRIVATE KEY-----\n!!!!\n-----END OPENSSH PRIVATE KEY-----\n"}) {
    EXPECT_FALSE(hom::parse_private_key(text, error)) << text;
    EXPECT_FALSE(error.empty());
  }
}

TEST(PrivateKey, RefusesEveryCorruption) {
  const auto key = hom::SshPrivateKey::generate("c");
  const std::string text = key.to_openssh();
  const std::string begin = "-----BEGIN OPENSSH PRIVATE KEY-----\n";
  const std::string end = "-----END OPENSSH PRIVATE KEY-----\n";
  std::string b64;
  for (char c : text.substr(begin.size(), text.size() - begin.size() - end.size()))
    if (c != '\n') b64 += c;
  const std::string blob = *hom::base64_decode(b64);
  std::string error;
  // Any one byte changed is refused or gives back the very same key (the checkints and
  // padding are checked; the comment may change).
  for (std::size_t i = 0; i < blob.size(); ++i) {
    std::string bad = blob;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    const auto parsed = hom::parse_private_key(begin + hom::base64_encode(bad) + "\n" + end, error);
    if (parsed) {
      EXPECT_EQ(parsed->seed(), key.seed()) << i;
      EXPECT_NE(parsed->comment(), key.comment()) << i;
    }
  }
  // Truncated anywhere: refused.
  for (std::size_t n = 0; n < blob.size(); ++n)
    EXPECT_FALSE(
        hom::parse_private_key(begin + hom::base64_encode(blob.substr(0, n)) + "\n" + end, error))
        << n;
}

TEST(AuthorizedKeys, OptionsCommentsAndOtherTypes) {
  const auto a = hom::SshPrivateKey::generate().public_key();
  const auto b = hom::SshPrivateKey::generate().public_key();
  const auto c = hom::SshPrivateKey::generate().public_key();
  const std::string rsa_blob = [] {
    std::string s;
    s += std::string("\0\0\0\x07", 4) + "ssh-rsa" + std::string("\0\0\0\x01\x03", 5);
    return s;
  }();
  const std::string text =
      "# the fleet's operators\n"
      "\n"
      "   \t\n" +
      a.line("alice@ops") + "\n" +
      "hom-allow=\"GET,POST /gps/**\",no-pty,hom-allow=\"GET /status\" " + b.line("gps") + "\r\n" +
      "command=\"echo \\\"a, b\\\" x\",restrict,x-unknown=\"1 2\"\t" + c.line() + "\n" +
      "ssh-rsa " + hom::base64_encode(rsa_blob) + " old key\n" + "  # indented comment\n";
  std::string error;
  const auto keys = hom::parse_authorized_keys(text, error);
  ASSERT_TRUE(keys) << error;
  ASSERT_EQ(keys->keys.size(), 3u);
  EXPECT_EQ(keys->keys[0].key, a);
  EXPECT_TRUE(keys->keys[0].options.empty());
  EXPECT_EQ(keys->keys[0].comment, "alice@ops");
  EXPECT_EQ(keys->keys[0].line, 4u);

  EXPECT_EQ(keys->keys[1].key, b);
  EXPECT_EQ(keys->keys[1].comment, "gps");
  EXPECT_EQ(hom::option_values(keys->keys[1], "HOM-ALLOW"),
            (std::vector<std::string>{"GET,POST /gps/**", "GET /status"}));
  ASSERT_EQ(keys->keys[1].options.size(), 3u);
  EXPECT_EQ(keys->keys[1].options[1].name, "no-pty");
  EXPECT_FALSE(keys->keys[1].options[1].value);

  EXPECT_EQ(keys->keys[2].key, c);
  EXPECT_EQ(hom::option_values(keys->keys[2], "command"),
            (std::vector<std::string>{"echo \"a, b\" x"}));
  EXPECT_EQ(hom::option_values(keys->keys[2], "x-unknown"), (std::vector<std::string>{"1 2"}));
  EXPECT_EQ(hom::option_values(keys->keys[2], "restrict"), (std::vector<std::string>{""}));
  ASSERT_EQ(keys->skipped.size(), 1u);
  EXPECT_EQ(keys->skipped[0], "line 7: ssh-rsa keys are not used end to end");
}

TEST(AuthorizedKeys, MalformedLinesFailTheFileNamingTheLine) {
  const std::string key = hom::SshPrivateKey::generate().public_key().line();
  const std::string rsa_as_ed =
      "ssh-ed25519 " + hom::base64_encode(std::string("\0\0\0\x07", 4) + "ssh-rsa");
  struct Case {
    std::string line, error;
  };
  const std::vector<Case> cases = {
      {"hom-allow=\"GET /x " + key, "line 2: option hom-allow: value must be in double quotes"},
      {"hom-allow=GET " + key, "line 2: option hom-allow: value must be in double quotes"},
      {"a,,b " + key, "line 2: bad option syntax"},
      {"a;b " + key, "line 2: bad option syntax after a"},
      {"ssh-ed25519 !!!!", "line 2: key data is not base64"},
      {"ssh-ed25519", "line 2: no key data after ssh-ed25519"},
      {"no-pty", "line 2: no key"},
      {"no-pty foo AAAA", "line 2: unknown key type 'foo'"},
      {rsa_as_ed, "line 2: key data is not a ssh-ed25519 key"},
      {"ssh-ed25519 " + hom::base64_encode(std::string("\0\0\0\x0bssh-ed25519\0\0\0\x01x", 20)),
       "line 2: ssh-ed25519 key of 1 bytes, not 32"},
  };
  for (const auto& c : cases) {
    std::string error;
    EXPECT_FALSE(hom::parse_authorized_keys("# ok\n" + c.line + "\n" + key + "\n", error))
        << c.line;
    EXPECT_EQ(error.substr(0, c.error.size()), c.error) << c.line;
  }
}

TEST(KnownDevices, Lookup) {
  const auto a = hom::SshPrivateKey::generate().public_key();
  const auto b = hom::SshPrivateKey::generate().public_key();
  const auto c = hom::SshPrivateKey::generate().public_key();
  std::string error;
  const auto devices =
      hom::parse_known_devices("# devices\n\nfridge-0042 " + a.line("host") + "\nfleet/dev42\t" +
                                   b.line() + "\nfridge-0042 " + c.line("next") + "\n",
                               error);
  ASSERT_TRUE(devices) << error;
  EXPECT_EQ(devices->keys_for("fridge-0042"), (std::vector<hom::SshPublicKey>{a, c}));
  EXPECT_EQ(devices->keys_for("fleet/dev42"), (std::vector<hom::SshPublicKey>{b}));
  EXPECT_TRUE(devices->keys_for("other").empty());
  EXPECT_EQ(devices->devices[0].comment, "host");

  EXPECT_FALSE(hom::parse_known_devices("dev+1 " + a.line() + "\n", error));
  EXPECT_EQ(error, "line 1: a device id holds no '+', '#' or control character");
  EXPECT_FALSE(hom::parse_known_devices("dev\r1 " + a.line() + "\n", error));
  EXPECT_FALSE(hom::parse_known_devices("dev1\n", error));
  EXPECT_EQ(error, "line 1: no key");
}

}  // namespace
