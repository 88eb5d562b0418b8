// Sealed requests and replies, the replay guard and hom-allow (SPEC §8). A request made by a
// shell script with only printf, ssh-keygen -Y sign and age -R is admitted; the device's reply
// opens with age -d -i and verifies with ssh-keygen -Y verify; each attack is refused.
#include <atomic>
#include <ctime>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "e2e_support.hpp"
#include "hom/age.hpp"
#include "hom/seal.hpp"
#include "hom/sshsig.hpp"

namespace {

using e2e_test::q;
using e2e_test::read_file;
using e2e_test::run;
using e2e_test::TempDir;
using e2e_test::write_file;

const std::string kSsh = SSH_KEYGEN_BIN;
const std::string kAge = AGE_BIN;
constexpr std::int64_t kNow = 1700000000;

hom::SshPrivateKey load(const TempDir& dir, const std::string& name) {
  std::string error;
  auto key = hom::parse_private_key(read_file(dir / name), error);
  if (!key) throw std::runtime_error(error);
  return *key;
}

hom::Authorizer authorizer(const std::string& text) {
  std::string error;
  const auto keys = hom::parse_authorized_keys(text, error);
  if (!keys) throw std::runtime_error(error);
  auto out = hom::Authorizer::create(*keys, error);
  if (!out) throw std::runtime_error(error);
  return *out;
}

std::unique_ptr<hom::ReplayGuard> guard(const std::string& dir, std::int64_t now = kNow,
                                        std::size_t max = 1 << 20) {
  std::string error;
  auto out = hom::ReplayGuard::open({dir, 300, max}, now, error);
  if (!out) throw std::runtime_error(error);
  return out;
}

// Splits "N(a)N(b)" with a parser written apart from the one under test.
std::vector<std::string> split_netstrings(const std::string& in) {
  std::vector<std::string> out;
  std::size_t pos = 0;
  while (pos < in.size()) {
    const std::size_t colon = in.find(':', pos);
    const std::size_t n = std::stoul(in.substr(pos, colon - pos));
    out.push_back(in.substr(colon + 1, n));
    pos = colon + 1 + n + 1;
  }
  return out;
}

hom::SignedRequest sample(std::int64_t now = kNow) {
  hom::SignedRequest r;
  r.device_id = "itsme";
  r.topic_start = "v1";
  r.verb = "GET";
  r.path = "gps/latitude";
  r.timestamp = now;
  r.nonce = hom::make_nonce();
  r.payload = R"({"params":{"q":"pizza"},"req_id":"42"})";
  return r;
}

TEST(SealLayout, ByteForByte) {
  hom::SignedRequest r = sample();
  r.response_topic = "v1/res/itsme/x";
  r.correlation_data = std::string("c\0d", 3);
  r.nonce = std::string(32, 'a');
  const std::string bytes = hom::encode_signed_request(r);
  EXPECT_EQ(bytes, "14:hom-request@v1,5:itsme,2:v1,3:GET,12:gps/latitude,14:v1/res/itsme/x,3:c" +
                       std::string(1, '\0') + "d,10:1700000000,32:" + std::string(32, 'a') +
                       ",38:{\"params\":{\"q\":\"pizza\"},\"req_id\":\"42\"},");
  std::string error;
  const auto back = hom::decode_signed_request(bytes, error);
  ASSERT_TRUE(back) << error;
  EXPECT_EQ(hom::encode_signed_request(*back), bytes);
  EXPECT_EQ(back->correlation_data, r.correlation_data);

  for (const std::string& bad :
       {bytes + "0:,", bytes.substr(0, bytes.size() - 1), "0" + bytes,
        std::string("15:hom-request@v1,") + bytes.substr(18), hom::encode_signed_request([&] {
          auto x = r;
          x.nonce = std::string(32, 'A');
          return x;
        }()),
        hom::encode_signed_request([&] {
          auto x = r;
          x.nonce = "abc";
          return x;
        }())})
    EXPECT_FALSE(hom::decode_signed_request(bad, error)) << bad;

  const std::string reply = hom::encode_signed_reply({"itsme", std::string(64, 'f'), "{}"});
  EXPECT_EQ(reply, "12:hom-reply@v1,5:itsme,64:" + std::string(64, 'f') + ",2:{},");
  EXPECT_TRUE(hom::decode_signed_reply(reply, error));
  EXPECT_FALSE(hom::decode_signed_reply(
      hom::encode_signed_reply({"itsme", std::string(63, 'f'), "{}"}), error));
}

class SealTest : public ::testing::Test {
 protected:
  void SetUp() override {
    e2e_test::keygen(dir_, "device");
    e2e_test::keygen(dir_, "requester");
    e2e_test::keygen(dir_, "stranger");
    e2e_test::keygen(dir_, "other-device");
    std::filesystem::create_directory(dir_ / "state");
    device_ = std::make_unique<hom::SshPrivateKey>(load(dir_, "device"));
    requester_ = std::make_unique<hom::SshPrivateKey>(load(dir_, "requester"));
    stranger_ = std::make_unique<hom::SshPrivateKey>(load(dir_, "stranger"));
    other_device_ = std::make_unique<hom::SshPrivateKey>(load(dir_, "other-device"));
    guard_ = guard(dir_ / "state");
  }

  hom::RequestGate gate(const std::string& authorized_keys) {
    return hom::RequestGate(*device_, "itsme", "v1", authorizer(authorized_keys), *guard_);
  }
  std::string seal(const hom::SignedRequest& r, const hom::SshPrivateKey& signer,
                   const hom::SshPrivateKey& to) {
    std::string error;
    auto out = hom::seal_request(r, signer, {to.public_key()}, error);
    if (!out) throw std::runtime_error(error);
    return *out;
  }

  TempDir dir_;
  std::unique_ptr<hom::SshPrivateKey> device_, requester_, stranger_, other_device_;
  std::unique_ptr<hom::ReplayGuard> guard_;
};

TEST_F(SealTest, ShellScriptRequestAndReferenceToolsOnTheReply) {
  const std::string script = R"sh(set -eu
d="$1"
nsf() { printf '%s:' "$(wc -c < "$1" | tr -d ' ')"; cat "$1"; printf ','; }
ns() { printf '%s' "$1" > "$d/field"; nsf "$d/field"; }
{
  ns hom-request@v1; ns itsme; ns v1; ns GET; ns 'gps/latitude?unit=deg'; ns ''; ns ''
  ns "$(date +%s)"; ns "$(openssl rand -hex 16)"
  ns '{"params":{"q":"pizza"},"req_id":"sh-1"}'
} > "$d/req"
"$SSH_KEYGEN" -q -Y sign -f "$d/requester" -n hom-request@v1 "$d/req"
sed '1d;$d' "$d/req.sig" | tr -d '\n' | base64 -d > "$d/req.sigbin"
{ nsf "$d/req"; nsf "$d/req.sigbin"; } | "$AGE" -R "$d/device.pub" -o "$d/sealed"
sha256sum "$d/sealed" | cut -d' ' -f1 > "$d/sealed.sha256"
)sh";
  write_file(dir_ / "make-request.sh", script);
  ASSERT_EQ(run("SSH_KEYGEN=" + q(kSsh) + " AGE=" + q(kAge) + " sh " + q(dir_ / "make-request.sh") +
                " " + q(dir_.path().string())),
            0);
  const std::string sealed = read_file(dir_ / "sealed");

  const auto g = gate("hom-allow=\"GET /gps/**\" " + requester_->public_key().line() + "\n");
  const auto verdict = g.admit(sealed, {}, std::time(nullptr));
  ASSERT_EQ(verdict.status, 0) << verdict.reason;
  const hom::SignedRequest& r = verdict.request->request;
  EXPECT_EQ(r.verb, "GET");
  EXPECT_EQ(r.path, "gps/latitude?unit=deg");
  EXPECT_EQ(r.payload, R"({"params":{"q":"pizza"},"req_id":"sh-1"})");
  EXPECT_EQ(verdict.request->signer, requester_->public_key());
  EXPECT_EQ(verdict.request->request_sha256 + "\n", read_file(dir_ / "sealed.sha256"));

  // Replayed, also after a restart.
  EXPECT_EQ(g.admit(sealed, {}, std::time(nullptr)).reason,
            "replayed request (its nonce was already used)");
  guard_.reset();
  guard_ = guard(dir_ / "state", std::time(nullptr));
  EXPECT_EQ(gate("hom-allow=\"GET /gps/**\" " + requester_->public_key().line() + "\n")
                .admit(sealed, {}, std::time(nullptr))
                .status,
            401);

  // The reply: age -d -i with the requester's key, ssh-keygen -Y verify with the device's.
  const std::string document = R"({"content":{"latitude":48.8584},"req_id":"sh-1","status":200})";
  std::string error;
  const auto reply = hom::seal_reply(*verdict.request, *device_, document, error);
  ASSERT_TRUE(reply) << error;
  write_file(dir_ / "reply", *reply);
  ASSERT_EQ(run(kAge + " -d -i " + q(dir_ / "requester") + " " + q(dir_ / "reply") + " > " +
                q(dir_ / "reply.plain")),
            0);
  const auto parts = split_netstrings(read_file(dir_ / "reply.plain"));
  ASSERT_EQ(parts.size(), 2u);
  write_file(dir_ / "reply.signed", parts[0]);
  write_file(dir_ / "reply.sig", hom::sshsig_armor(parts[1]));
  write_file(dir_ / "allowed",
             "itsme namespaces=\"hom-reply@v1\" " + read_file(dir_ / "device.pub"));
  EXPECT_EQ(run(kSsh + " -Y verify -f " + q(dir_ / "allowed") + " -I itsme -n hom-reply@v1 -s " +
                q(dir_ / "reply.sig") + " < " + q(dir_ / "reply.signed") + " >/dev/null 2>&1"),
            0);
  const auto fields = split_netstrings(parts[0]);
  ASSERT_EQ(fields.size(), 4u);
  EXPECT_EQ(fields[0], "hom-reply@v1");
  EXPECT_EQ(fields[1], "itsme");
  EXPECT_EQ(fields[2] + "\n", read_file(dir_ / "sealed.sha256"));
  EXPECT_EQ(fields[3], document);
  // The stranger (or the device) cannot read it.
  EXPECT_NE(
      run(kAge + " -d -i " + q(dir_ / "stranger") + " " + q(dir_ / "reply") + " >/dev/null 2>&1"),
      0);
}

TEST_F(SealTest, RequesterAndDeviceRoundTrip) {
  const auto g = gate(requester_->public_key().line() + "\n");
  const std::string sealed = seal(sample(), *requester_, *device_);
  const auto verdict = g.admit(sealed, {}, kNow);
  ASSERT_EQ(verdict.status, 0) << verdict.reason;
  std::string error;
  const auto reply = hom::seal_reply(*verdict.request, *device_, "{\"status\":200}", error);
  ASSERT_TRUE(reply) << error;
  const auto payload =
      hom::open_reply(*reply, *requester_, {device_->public_key()}, "itsme", sealed, error);
  ASSERT_TRUE(payload) << error;
  EXPECT_EQ(*payload, "{\"status\":200}");

  // (f) delivered to another requester: it cannot open it.
  EXPECT_FALSE(
      hom::open_reply(*reply, *stranger_, {device_->public_key()}, "itsme", sealed, error));
  EXPECT_EQ(error.rfind("cannot decrypt", 0), 0u) << error;
  // Matched against another request of the same requester.
  const std::string second = seal(sample(), *requester_, *device_);
  EXPECT_FALSE(
      hom::open_reply(*reply, *requester_, {device_->public_key()}, "itsme", second, error));
  EXPECT_EQ(error, "the reply answers another request");
  // (e) forged: sealed to the requester, signed by another key.
  hom::OpenedRequest forged_for = *verdict.request;
  const auto forged = hom::seal_reply(forged_for, *stranger_, "{\"status\":200}", error);
  EXPECT_FALSE(
      hom::open_reply(*forged, *requester_, {device_->public_key()}, "itsme", sealed, error));
  EXPECT_NE(error.find("not by a key of device itsme"), std::string::npos) << error;
  // A reply of the right device about another device id.
  hom::OpenedRequest elsewhere = *verdict.request;
  elsewhere.request.device_id = "fridge";
  const auto moved = hom::seal_reply(elsewhere, *device_, "{}", error);
  EXPECT_FALSE(
      hom::open_reply(*moved, *requester_, {device_->public_key()}, "itsme", sealed, error));
  // One bit flipped anywhere in the reply.
  for (std::size_t i = 0; i < reply->size(); i += 7) {
    std::string bad = *reply;
    bad[i] = static_cast<char>(bad[i] ^ 0x04);
    EXPECT_FALSE(hom::open_reply(bad, *requester_, {device_->public_key()}, "itsme", sealed, error))
        << i;
  }
}

TEST_F(SealTest, AttacksOnRequests) {
  const std::string keys = "hom-allow=\"GET,POST /gps/**\" " + requester_->public_key().line() +
                           "\n" + "hom-allow=\"* /**\" " + other_device_->public_key().line() +
                           "\n";
  const auto g = gate(keys);
  const auto status = [&](const std::string& sealed, const hom::MessageProperties& p = {},
                          std::int64_t now = kNow) {
    const auto v = g.admit(sealed, p, now);
    return std::to_string(v.status) + " " + v.reason;
  };
  // Fine, once.
  const std::string good = seal(sample(), *requester_, *device_);
  EXPECT_EQ(status(good), "0 ");
  // (a) replayed.
  EXPECT_EQ(status(good), "401 replayed request (its nonce was already used)");
  // (b) republished on another device's topic: that device cannot decrypt it; and a request
  // signed for another device but sealed to this one is refused.
  EXPECT_EQ(hom::RequestGate(*other_device_, "itsme", "v1", authorizer(keys), *guard_)
                .admit(seal(sample(), *requester_, *device_), {}, kNow)
                .reason.rfind("cannot decrypt", 0),
            0u);
  auto elsewhere = sample();
  elsewhere.device_id = "fridge";
  EXPECT_EQ(status(seal(elsewhere, *requester_, *device_)),
            "401 the request is signed for device v1/fridge, not this one");
  auto other_start = sample();
  other_start.topic_start = "v2";
  EXPECT_EQ(status(seal(other_start, *requester_, *device_)).substr(0, 4), "401 ");
  // (c) one bit flipped anywhere.
  const std::string fresh = seal(sample(), *requester_, *device_);
  for (std::size_t i = 0; i < fresh.size(); i += 3) {
    std::string bad = fresh;
    bad[i] = static_cast<char>(bad[i] ^ 0x10);
    EXPECT_EQ(status(bad).substr(0, 4), "401 ") << i;
  }
  // (d) the signature stripped or replaced.
  std::string error;
  const std::string data = hom::encode_signed_request(sample());
  const auto stripped = hom::age_encrypt({device_->public_key()},
                                         std::to_string(data.size()) + ":" + data + ",", error);
  EXPECT_EQ(status(*stripped), "401 not a signed message (expected N(data) N(signature))");
  const std::string wrong_ns = hom::sshsig_sign(*requester_, hom::kReplyNamespace, data);
  const auto renamed = hom::age_encrypt({device_->public_key()},
                                        std::to_string(data.size()) + ":" + data + "," +
                                            std::to_string(wrong_ns.size()) + ":" + wrong_ns + ",",
                                        error);
  EXPECT_EQ(status(*renamed),
            "401 signature refused: signature is for namespace 'hom-reply@v1', not "
            "'hom-request@v1'");
  // Signed by a key outside authorized_keys.
  EXPECT_EQ(
      status(seal(sample(), *stranger_, *device_)),
      "401 key " + stranger_->public_key().fingerprint() + " is not in HOM_AUTHORIZED_KEYS_FILE");
  // Stale and future timestamps.
  EXPECT_EQ(status(seal(sample(kNow - 301), *requester_, *device_)),
            "401 the request's timestamp is -301 s off the device's clock (HOM_E2E_SKEW_S is "
            "300)");
  EXPECT_EQ(status(seal(sample(kNow + 301), *requester_, *device_)).substr(0, 40),
            "401 the request's timestamp is 301 s off");
  EXPECT_EQ(status(seal(sample(kNow + 300), *requester_, *device_)), "0 ");
  // MQTT 5 properties other than the signed ones (a broker redirecting the reply).
  auto with_props = sample();
  with_props.response_topic = "v1/res/itsme/r1";
  with_props.correlation_data = "c1";
  hom::MessageProperties props;
  props.response_topic = "v1/res/itsme/r1";
  props.correlation_data = "c1";
  EXPECT_EQ(status(seal(with_props, *requester_, *device_), props), "0 ");
  props.response_topic = "v1/res/itsme/evil";
  EXPECT_EQ(status(seal(with_props, *requester_, *device_), props),
            "401 the MQTT 5 Response Topic or Correlation Data differ from the signed ones");
  EXPECT_EQ(status(seal(with_props, *requester_, *device_), {}).substr(0, 4), "401 ");
  // hom-allow: 403, with the reply still sealed to the caller.
  auto del = sample();
  del.verb = "delete";
  const auto v = g.admit(seal(del, *requester_, *device_), {}, kNow);
  EXPECT_EQ(v.status, 403);
  EXPECT_EQ(v.reason, "key " + requester_->public_key().fingerprint() +
                          " may not DELETE /gps/latitude (hom-allow)");
  EXPECT_TRUE(v.request);
  auto escape = sample();
  escape.path = "gps/%2e%2e/admin";
  EXPECT_EQ(status(seal(escape, *requester_, *device_)).substr(0, 4), "403 ");
  auto admin = sample();
  admin.path = "admin";
  EXPECT_EQ(status(seal(admin, *other_device_, *device_)), "0 ");
}

TEST(Authorizer, HomAllowPatterns) {
  const auto a = hom::SshPrivateKey::generate().public_key();
  const auto b = hom::SshPrivateKey::generate().public_key();
  const auto c = hom::SshPrivateKey::generate().public_key();
  const auto d = hom::SshPrivateKey::generate().public_key();
  const auto e = hom::SshPrivateKey::generate().public_key();
  const auto unknown = hom::SshPrivateKey::generate().public_key();
  const auto auth =
      authorizer("hom-allow=\"GET,post /gps/**  /status\",hom-allow=\"DELETE /gps/*/cache\" " +
                 a.line() + "\n" + b.line("no options: everything") + "\n" + "restrict " +
                 c.line() + "\n" + "command=\"/bin/true\",hom-allow=\"* /a/*.json\" " + d.line() +
                 "\n" + "cert-authority " + e.line() + "\n");
  struct Case {
    const hom::SshPublicKey* key;
    std::string verb, path;
    int status;
  };
  const std::vector<Case> cases = {
      {&a, "GET", "gps", 0},
      {&a, "get", "gps/latitude", 0},
      {&a, "POST", "gps/a/b/c?x=1", 0},
      {&a, "PUT", "gps/latitude", 403},
      {&a, "GET", "status", 0},
      {&a, "GET", "status/x", 403},
      {&a, "GET", "gpsx", 403},
      {&a, "DELETE", "gps/x/cache", 0},
      {&a, "DELETE", "gps/x/y/cache", 403},
      {&a, "GET", "gps/../admin", 403},
      {&a, "GET", "gps/%2E%2E/admin", 403},
      {&a, "GET", "gps%2Flatitude", 0},
      {&b, "PATCH", "anything/at/all", 0},
      {&c, "GET", "gps", 403},
      {&d, "GET", "a/x.json", 0},
      {&d, "PUT", "a/b/x.json", 403},
      {&e, "GET", "gps", 401},
      {&unknown, "GET", "gps", 401},
  };
  for (const auto& c : cases) {
    const auto decision = auth.check(*c.key, c.verb, c.path);
    EXPECT_EQ(decision.status, c.status) << c.verb << " " << c.path << ": " << decision.reason;
    EXPECT_EQ(decision.reason.empty(), c.status == 0);
  }
  std::string error;
  for (const std::string& bad :
       {std::string("hom-allow=\"GET\" "), std::string("hom-allow=\"\" "),
        std::string("hom-allow=\"GET gps\" "), std::string("hom-allow=\"G(T /x\" ")}) {
    const auto keys = hom::parse_authorized_keys("\n" + bad + a.line() + "\n", error);
    ASSERT_TRUE(keys) << error;
    EXPECT_FALSE(hom::Authorizer::create(*keys, error)) << bad;
    EXPECT_EQ(error.rfind("line 2: hom-allow=", 0), 0u) << error;
  }
}

TEST(ReplayGuard, SurvivesRestartsAndCompacts) {
  TempDir dir;
  const std::string n1 = hom::make_nonce(), n2 = hom::make_nonce();
  {
    auto g = guard(dir.path().string());
    EXPECT_FALSE(g->admit(n1, kNow, kNow));
    EXPECT_FALSE(g->admit(n2, kNow - 200, kNow));
    EXPECT_EQ(g->admit(n1, kNow, kNow + 10), "replayed request (its nonce was already used)");
    // A second process on the same directory is refused while this one runs.
    std::string error;
    EXPECT_FALSE(hom::ReplayGuard::open({dir.path().string(), 300, 100}, kNow, error));
    EXPECT_NE(error.find("in use by another process"), std::string::npos) << error;
  }
  {
    // A restart 150 s later: n1 still remembered; n2 expired (and its timestamp is stale).
    auto g = guard(dir.path().string(), kNow + 150);
    EXPECT_EQ(g->live(), 1u);
    EXPECT_EQ(g->admit(n1, kNow, kNow + 150), "replayed request (its nonce was already used)");
    EXPECT_NE(g->admit(n2, kNow - 200, kNow + 150), std::nullopt);
  }
  // A torn last line (a crash mid-write) is dropped; the rest is kept.
  write_file(dir / "e2e-nonces", read_file(dir / "e2e-nonces") + "1700000300 abcdef");
  {
    auto g = guard(dir.path().string(), kNow);
    EXPECT_EQ(g->live(), 1u);
    EXPECT_EQ(read_file(dir / "e2e-nonces"), std::to_string(kNow + 300) + " " + n1 + "\n");
  }
  // Many requests over a long time: the file stays bounded by the live window.
  {
    auto g = guard(dir.path().string(), kNow);
    // (Each admit waits for fdatasync: a few milliseconds on a slow disk.)
    for (std::int64_t i = 0; i < 2500; ++i)
      ASSERT_FALSE(g->admit(hom::make_nonce(), kNow + i, kNow + i));
    EXPECT_LE(g->live(), 2 * 1024u);
    std::size_t lines = 0;
    for (char c : read_file(dir / "e2e-nonces")) lines += c == '\n';
    EXPECT_LE(lines, 2 * 1024u);
  }
}

// Group commit: requests admitted from many threads at once share writes and fdatasyncs;
// each is accepted once its own line is durable, none twice, and all survive a restart.
TEST(ReplayGuard, ConcurrentAdmissionsAreEachDurableOnce) {
  TempDir dir;
  constexpr int kThreads = 8, kEach = 50;
  std::vector<std::string> nonces;
  for (int i = 0; i < kThreads * kEach; ++i) nonces.push_back(hom::make_nonce());
  {
    auto g = guard(dir.path().string());
    std::atomic<int> accepted{0}, refused{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        // Every nonce twice, from two threads: exactly one of the two is accepted.
        for (int i = 0; i < kEach * 2; ++i) {
          const auto& n = nonces[(t * kEach + i) % nonces.size()];
          (g->admit(n, kNow, kNow) ? refused : accepted)++;
        }
      });
    }
    for (auto& th : threads) th.join();
    EXPECT_EQ(accepted.load(), kThreads * kEach);
    EXPECT_EQ(refused.load(), kThreads * kEach);
  }
  auto g = guard(dir.path().string());
  EXPECT_EQ(g->live(), nonces.size());
  for (const auto& n : nonces)
    EXPECT_EQ(g->admit(n, kNow, kNow), "replayed request (its nonce was already used)");
}

TEST(ReplayGuard, BoundedAndStrict) {
  TempDir dir;
  auto g = guard(dir.path().string(), kNow, 3);
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(g->admit(hom::make_nonce(), kNow, kNow));
  EXPECT_EQ(g->admit(hom::make_nonce(), kNow, kNow),
            "the replay cache is full (3 requests within the time window)");
  // Once those expire there is room again.
  EXPECT_FALSE(g->admit(hom::make_nonce(), kNow + 301, kNow + 301));
  EXPECT_EQ(g->admit("XYZ", kNow, kNow), "the nonce is not 32 to 64 lowercase hex digits");
  std::string error;
  EXPECT_FALSE(hom::ReplayGuard::open({(dir / "missing"), 300, 3}, kNow, error));
  EXPECT_FALSE(error.empty());
}

}  // namespace
