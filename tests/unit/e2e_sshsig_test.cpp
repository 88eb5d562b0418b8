// SSHSIG (SPEC §8) both ways against ssh-keygen -Y: its signatures verify here, ours verify
// there, and any change (message, namespace, a bit of the signature) is refused.
#include <string>

#include <gtest/gtest.h>

#include "e2e_support.hpp"
#include "hom/sshsig.hpp"

namespace {

using e2e_test::q;
using e2e_test::read_file;
using e2e_test::run;
using e2e_test::TempDir;
using e2e_test::write_file;

const std::string kSsh = SSH_KEYGEN_BIN;

hom::SshPrivateKey load(const TempDir& dir, const std::string& name) {
  std::string error;
  auto key = hom::parse_private_key(read_file(dir / name), error);
  if (!key) throw std::runtime_error(error);
  return *key;
}

TEST(Sshsig, SshKeygenSignsWeVerify) {
  TempDir dir;
  e2e_test::keygen(dir, "requester");
  const auto key = load(dir, "requester");
  const std::string message = e2e_test::random_text(3000, 1) + "\nend";
  write_file(dir / "msg", message);
  ASSERT_EQ(run(kSsh + " -q -Y sign -f " + q(dir / "requester") + " -n hom-request@v1 " +
                q(dir / "msg") + " 2>/dev/null"),
            0);
  std::string error;
  const auto blob = hom::sshsig_unarmor(read_file(dir / "msg.sig"), error);
  ASSERT_TRUE(blob) << error;
  const auto signer = hom::sshsig_verify(*blob, hom::kRequestNamespace, message, error);
  ASSERT_TRUE(signer) << error;
  EXPECT_EQ(*signer, key.public_key());

  EXPECT_FALSE(hom::sshsig_verify(*blob, hom::kReplyNamespace, message, error));
  EXPECT_EQ(error, "signature is for namespace 'hom-request@v1', not 'hom-reply@v1'");
  std::string changed = message;
  changed[100] ^= 0x20;
  EXPECT_FALSE(hom::sshsig_verify(*blob, hom::kRequestNamespace, changed, error));
  EXPECT_EQ(error, "bad signature");
  // Every single bit of the signature blob matters.
  for (std::size_t bit = 0; bit < blob->size() * 8; ++bit) {
    std::string bad = *blob;
    bad[bit / 8] = static_cast<char>(bad[bit / 8] ^ (1 << (bit % 8)));
    EXPECT_FALSE(hom::sshsig_verify(bad, hom::kRequestNamespace, message, error)) << bit;
  }
  // Truncated or extended.
  for (std::size_t n = 0; n < blob->size(); ++n)
    EXPECT_FALSE(hom::sshsig_verify(blob->substr(0, n), hom::kRequestNamespace, message, error));
  EXPECT_FALSE(hom::sshsig_verify(*blob + "x", hom::kRequestNamespace, message, error));
}

TEST(Sshsig, WeSignSshKeygenVerifies) {
  TempDir dir;
  e2e_test::keygen(dir, "device");
  const auto key = load(dir, "device");
  for (const std::string& message :
       {std::string(), std::string("x"), e2e_test::random_text(70000, 2)}) {
    write_file(dir / "msg", message);
    write_file(dir / "msg.sig", hom::sshsig_armor(hom::sshsig_sign(key, "hom-reply@v1", message)));
    write_file(dir / "allowed",
               "the-device namespaces=\"hom-reply@v1\" " + read_file(dir / "device.pub"));
    const std::string verify = kSsh + " -Y verify -f " + q(dir / "allowed") + " -I the-device -s " +
                               q(dir / "msg.sig") + " < " + q(dir / "msg") + " >/dev/null 2>&1 -n ";
    EXPECT_EQ(run(verify + "hom-reply@v1"), 0) << message.size();
    EXPECT_NE(run(verify + "hom-request@v1"), 0);
    EXPECT_EQ(run(kSsh + " -Y check-novalidate -n hom-reply@v1 -s " + q(dir / "msg.sig") + " < " +
                  q(dir / "msg") + " >/dev/null 2>&1"),
              0);
    write_file(dir / "msg", message + "!");
    EXPECT_NE(run(verify + "hom-reply@v1"), 0);
  }
}

TEST(Sshsig, ArmorRoundTrip) {
  const auto key = hom::SshPrivateKey::generate();
  const std::string blob = hom::sshsig_sign(key, hom::kRequestNamespace, "m");
  const std::string armored = hom::sshsig_armor(blob);
  EXPECT_EQ(armored.rfind("-----BEGIN SSH SIGNATURE-----\n", 0), 0u);
  std::string error;
  EXPECT_EQ(hom::sshsig_unarmor(armored, error), blob);
  EXPECT_FALSE(hom::sshsig_unarmor("nothing", error));
  const auto signer = hom::sshsig_verify(blob, hom::kRequestNamespace, "m", error);
  ASSERT_TRUE(signer) << error;
  EXPECT_EQ(*signer, key.public_key());
}

}  // namespace
