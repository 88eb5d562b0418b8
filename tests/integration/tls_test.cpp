// homd over TLS to a private Mosquitto with certificates made for the test (SPEC §3:
// MQTT_TLS, MQTT_CA_FILE; broker verification is always on).
#include <sys/stat.h>

#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/harness.hpp"

namespace hom::test {
namespace {

Json field(const Json& doc, const std::string& key) {
  return doc.is_object() && doc.contains(key) ? doc.at(key) : Json();
}

// Runs OPENSSL_BIN with `args`; fails the test with its output unless it exits 0.
void openssl(const TempDir& dir, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {OPENSSL_BIN};
  argv.insert(argv.end(), args.begin(), args.end());
  Process process(argv, Env{}, dir.file("openssl.log"));
  const auto status = process.wait_exit(deadline_in());
  ASSERT_EQ(status, 0) << "openssl " << args.front() << ":\n" << process.log();
}

// A CA (name.pem, name.key) in `dir`, EC P-256, valid for two days.
void make_ca(const TempDir& dir, const std::string& name) {
  openssl(dir, {"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", dir.file(name + ".key"), "-out", dir.file(name + ".pem"),
                "-days", "2", "-subj", "/CN=homd integration test " + name, "-addext",
                "basicConstraints=critical,CA:TRUE", "-addext",
                "keyUsage=critical,keyCertSign,cRLSign"});
}

// server.pem/server.key for 127.0.0.1 and localhost, signed by the CA `ca`.
void make_server_cert(const TempDir& dir, const std::string& ca) {
  dir.write("server.ext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n");
  openssl(dir, {"req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", dir.file("server.key"), "-out", dir.file("server.csr"),
                "-subj", "/CN=127.0.0.1"});
  openssl(dir, {"x509", "-req", "-in", dir.file("server.csr"), "-CA", dir.file(ca + ".pem"),
                "-CAkey", dir.file(ca + ".key"), "-CAcreateserial", "-out", dir.file("server.pem"),
                "-days", "2", "-extfile", dir.file("server.ext")});
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(make_ca(certs_, "ca"));
    ASSERT_NO_FATAL_FAILURE(make_ca(certs_, "other-ca"));
    ASSERT_NO_FATAL_FAILURE(make_server_cert(certs_, "ca"));
    // Mosquitto started as root drops to the mosquitto user before it loads the
    // certificates: they must be readable by others (throw-away test keys).
    ::chmod(certs_.path().c_str(), 0755);
    for (const char* file : {"ca.pem", "server.pem", "server.key", "other-ca.pem"}) {
      ::chmod(certs_.file(file).c_str(), 0644);
    }
    Mosquitto::Options options;
    options.tls =
        TlsFiles{certs_.file("ca.pem"), certs_.file("server.pem"), certs_.file("server.key")};
    broker_ = std::make_unique<Mosquitto>(options);
  }

  std::unique_ptr<Homd> start_homd(const std::string& ca_file) {
    return std::make_unique<Homd>(broker_->tls_port(), api_.base_url(),
                                  Env{{"MQTT_TLS", "on"}, {"MQTT_CA_FILE", ca_file}});
  }

  TempDir certs_;
  ApiServer api_;
  std::unique_ptr<Mosquitto> broker_;
};

TEST_F(TlsTest, ServesOverTls) {
  auto homd = start_homd(certs_.file("ca.pem"));
  ASSERT_TRUE(homd->wait_subscribed()) << homd->log_tail() << "\n--- mosquitto ---\n"
                                       << tail(broker_->log());
  MqttClient client(broker_->tls_uri(), homd->topic_start(), homd->topic_id(),
                    certs_.file("ca.pem"));
  auto reply = client.call("get", "gps/latitude", {{"req_id", "tls"}});
  ASSERT_TRUE(reply) << homd->log_tail();
  EXPECT_EQ(field(reply->doc, "status"), 200) << reply->payload;
  EXPECT_EQ(field(reply->doc, "content"), Json::parse(R"({"latitude": 48.85})"));
  EXPECT_EQ(field(reply->doc, "req_id"), "tls");
  // homd really came in on the TLS listener.
  EXPECT_NE(broker_->log().find("on port " + std::to_string(broker_->tls_port())),
            std::string::npos);
}

TEST_F(TlsTest, UntrustedBrokerIsNeverUsed) {
  auto homd = start_homd(certs_.file("other-ca.pem"));
  ASSERT_TRUE(homd->process().wait_for_log_line({"connect", "failed"})) << homd->log_tail();
  EXPECT_TRUE(homd->process().running());

  MqttClient client(broker_->tls_uri(), homd->topic_start(), homd->topic_id(),
                    certs_.file("ca.pem"));
  client.request("get", "gps/latitude", {{"req_id", "never"}});
  // A second failed attempt, after the request was published: had homd been subscribed in
  // between, it would show in its log.
  ASSERT_TRUE(homd->process().wait_for_log_line({"connect", "failed"}, 2,
                                                deadline_in(std::chrono::seconds(30))))
      << homd->log_tail();
  EXPECT_EQ(homd->process().count_in_log("subscribed to "), 0) << homd->log_tail();
  EXPECT_EQ(client.count(), 0u);
  EXPECT_TRUE(api_.requests().empty());
  // It failed on the certificate check (homd sent the alert), not on something else.
  EXPECT_NE(broker_->log().find("unknown ca"), std::string::npos) << tail(broker_->log());
}

}  // namespace
}  // namespace hom::test
