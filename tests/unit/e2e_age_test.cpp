// age v1 with ssh-ed25519 recipients (SPEC §8) both ways against the age tool, with the keys
// ssh-keygen makes; chunk boundaries; streaming; every kind of tampering refused.
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "e2e_support.hpp"
#include "hom/age.hpp"
#include "hom/seal.hpp"

namespace {

using e2e_test::q;
using e2e_test::read_file;
using e2e_test::run;
using e2e_test::TempDir;
using e2e_test::write_file;

const std::string kAge = AGE_BIN;
constexpr std::size_t kChunk = hom::kAgeChunkBytes;
const std::vector<std::size_t> kSizes = {0, 1, kChunk - 1, kChunk, kChunk + 1, 2 * kChunk, 1000000};

struct Keys {
  TempDir dir;
  hom::SshPrivateKey key = make("device");
  hom::SshPrivateKey other = make("other");

  hom::SshPrivateKey make(const std::string& name) {
    e2e_test::keygen(dir, name);
    std::string error;
    auto key = hom::parse_private_key(read_file(dir / name), error);
    if (!key) throw std::runtime_error(error);
    return *key;
  }
};

std::string decrypt(const hom::SshPrivateKey& key, const std::string& file) {
  std::string error;
  auto out = hom::age_decrypt(key, file, error);
  EXPECT_TRUE(out) << error;
  return out.value_or("");
}

bool refused(const hom::SshPrivateKey& key, const std::string& file) {
  std::string error;
  const bool ok = hom::age_decrypt(key, file, error).has_value();
  if (!ok) {
    EXPECT_FALSE(error.empty());
  }
  return !ok;
}

TEST(Age, AgeToolEncryptsWeDecrypt) {
  Keys k;
  for (std::size_t size : kSizes) {
    SCOPED_TRACE(size);
    const std::string plain = e2e_test::random_text(size, static_cast<unsigned>(size));
    write_file(k.dir / "plain", plain);
    ASSERT_EQ(run(kAge + " -R " + q(k.dir / "device.pub") + " -o " + q(k.dir / "sealed") + " " +
                  q(k.dir / "plain")),
              0);
    const std::string sealed = read_file(k.dir / "sealed");
    EXPECT_EQ(decrypt(k.key, sealed), plain);
    EXPECT_TRUE(refused(k.other, sealed));

    // Streamed in uneven pieces.
    hom::AgeDecryptor decryptor(k.key);
    std::string out;
    std::size_t step = 1;
    for (std::size_t pos = 0; pos < sealed.size(); pos += step, step = step * 7 % 70001 + 1)
      ASSERT_TRUE(decryptor.update(std::string_view(sealed).substr(pos, step), out))
          << decryptor.error();
    ASSERT_TRUE(decryptor.finish(out)) << decryptor.error();
    EXPECT_EQ(out, plain);
  }
}

TEST(Age, WeEncryptAgeToolDecrypts) {
  Keys k;
  for (std::size_t size : kSizes) {
    SCOPED_TRACE(size);
    const std::string plain = e2e_test::random_text(size, static_cast<unsigned>(size) + 7);
    std::string error;
    const auto sealed = hom::age_encrypt({k.other.public_key(), k.key.public_key()}, plain, error);
    ASSERT_TRUE(sealed) << error;
    write_file(k.dir / "sealed", *sealed);
    // (age -o creates no file for an empty output: redirect instead.)
    ASSERT_EQ(run(kAge + " -d -i " + q(k.dir / "device") + " " + q(k.dir / "sealed") + " > " +
                  q(k.dir / "out")),
              0);
    EXPECT_EQ(read_file(k.dir / "out"), plain);
    EXPECT_EQ(decrypt(k.key, *sealed), plain);
    EXPECT_EQ(decrypt(k.other, *sealed), plain);

    // Streamed in uneven pieces: the same file for age.
    auto encryptor = hom::AgeEncryptor::create({k.key.public_key()}, error);
    ASSERT_TRUE(encryptor) << error;
    std::string file;
    std::size_t step = 3;
    for (std::size_t pos = 0; pos < plain.size(); pos += step, step = step * 5 % 90001 + 1)
      file += encryptor->update(std::string_view(plain).substr(pos, step));
    file += encryptor->finish();
    write_file(k.dir / "sealed", file);
    // (age -o creates no file for an empty output: redirect instead.)
    ASSERT_EQ(run(kAge + " -d -i " + q(k.dir / "device") + " " + q(k.dir / "sealed") + " > " +
                  q(k.dir / "out")),
              0);
    EXPECT_EQ(read_file(k.dir / "out"), plain);
  }
}

TEST(Age, EveryBitOfASmallFileMatters) {
  Keys k;
  write_file(k.dir / "plain", "x");
  ASSERT_EQ(run(kAge + " -R " + q(k.dir / "device.pub") + " -o " + q(k.dir / "sealed") + " " +
                q(k.dir / "plain")),
            0);
  const std::string sealed = read_file(k.dir / "sealed");
  for (std::size_t bit = 0; bit < sealed.size() * 8; ++bit) {
    std::string bad = sealed;
    bad[bit / 8] = static_cast<char>(bad[bit / 8] ^ (1 << (bit % 8)));
    EXPECT_TRUE(refused(k.key, bad)) << "bit " << bit;
  }
  for (std::size_t n = 0; n < sealed.size(); ++n)
    EXPECT_TRUE(refused(k.key, sealed.substr(0, n))) << n;
  EXPECT_TRUE(refused(k.key, sealed + std::string(1, '\0')));
}

TEST(Age, TamperingWithALargeFile) {
  Keys k;
  const std::string plain = e2e_test::random_text(3 * kChunk + 100, 9);
  write_file(k.dir / "plain", plain);
  ASSERT_EQ(run(kAge + " -R " + q(k.dir / "device.pub") + " -o " + q(k.dir / "sealed") + " " +
                q(k.dir / "plain")),
            0);
  const std::string sealed = read_file(k.dir / "sealed");
  const std::size_t sealed_chunk = kChunk + 16;
  const std::size_t payload = sealed.size() - (3 * sealed_chunk + 100 + 16);
  ASSERT_EQ(decrypt(k.key, sealed), plain);
  // A bit flipped in each chunk (start, middle, tag) and in the nonce.
  for (std::size_t pos :
       {payload - 16, payload - 1, payload, payload + sealed_chunk / 2, payload + sealed_chunk - 1,
        payload + sealed_chunk, payload + 3 * sealed_chunk + 5, sealed.size() - 1}) {
    std::string bad = sealed;
    bad[pos] = static_cast<char>(bad[pos] ^ 0x80);
    EXPECT_TRUE(refused(k.key, bad)) << pos;
  }
  // Cut: the final chunk gone (the file ends at a chunk boundary), or shortened.
  EXPECT_TRUE(refused(k.key, sealed.substr(0, payload + 3 * sealed_chunk)));
  EXPECT_TRUE(refused(k.key, sealed.substr(0, payload + 2 * sealed_chunk)));
  EXPECT_TRUE(refused(k.key, sealed.substr(0, sealed.size() - 1)));
  // Chunks swapped.
  std::string swapped = sealed;
  swapped.replace(payload, sealed_chunk, sealed, payload + sealed_chunk, sealed_chunk);
  swapped.replace(payload + sealed_chunk, sealed_chunk, sealed, payload, sealed_chunk);
  EXPECT_TRUE(refused(k.key, swapped));

  // The streaming decryptor reports the cut at finish(), after authentic chunks.
  hom::AgeDecryptor decryptor(k.key);
  std::string out;
  ASSERT_TRUE(decryptor.update(sealed.substr(0, payload + 3 * sealed_chunk), out));
  EXPECT_EQ(out, plain.substr(0, 2 * kChunk));
  EXPECT_FALSE(decryptor.finish(out));
  EXPECT_EQ(decryptor.error(), "truncated: the stream ends before its last chunk");
}

TEST(Age, ExactChunkFileCutAtTheBoundaryIsRefused) {
  Keys k;
  std::string error;
  const std::string plain = e2e_test::random_text(2 * kChunk, 3);
  const auto sealed = hom::age_encrypt({k.key.public_key()}, plain, error);
  ASSERT_TRUE(sealed);
  // Cutting the second (full, last) chunk leaves a first chunk that is full but not last.
  const std::size_t cut = sealed->size() - (kChunk + 16);
  EXPECT_TRUE(refused(k.key, sealed->substr(0, cut)));
  hom::AgeDecryptor decryptor(k.key);
  std::string out;
  ASSERT_TRUE(decryptor.update(sealed->substr(0, cut), out));
  EXPECT_FALSE(decryptor.finish(out));
  EXPECT_EQ(decryptor.error(), "truncated: the stream ends before its last chunk");
}

TEST(Age, ExpectHeaderTakesOnlyTheFileTheSignedHeadNames) {
  // Anyone can encrypt to a public key: a sealed stream's signed head names its file.
  Keys k;
  std::string error;
  const std::string plain = e2e_test::random_text(3 * kChunk, 4);
  const auto a = hom::age_encrypt({k.key.public_key()}, plain, error);
  const auto b = hom::age_encrypt({k.key.public_key()}, plain, error);
  ASSERT_TRUE(a && b) << error;
  const std::size_t header_end = a->find('\n', a->find("\n--- ") + 1) + 1 + 16;
  const std::string binding = hom::sha256_hex(a->substr(0, header_end));
  for (const std::string* file : {&*a, &*b}) {
    hom::AgeDecryptor decryptor(k.key);
    decryptor.expect_header(binding);
    std::string out;
    const bool opened = decryptor.update(*file, out) && decryptor.finish(out);
    if (file == &*a) {
      EXPECT_TRUE(opened) << decryptor.error();
      EXPECT_TRUE(out == plain);
    } else {
      EXPECT_FALSE(opened);
      EXPECT_TRUE(out.empty());
      EXPECT_EQ(decryptor.error(), "the age header is not the one the signed head names");
    }
  }
}

TEST(Age, RefusesNoRecipient) {
  std::string error;
  EXPECT_FALSE(hom::age_encrypt({}, "x", error));
  EXPECT_EQ(error, "no recipient");
}

}  // namespace
