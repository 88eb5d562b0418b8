// hom, the requester, against a real Mosquitto, a real homd and a real HTTP API (SPEC §4).
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "support/harness.hpp"

extern char** environ;

namespace hom::test {
namespace {

struct HomRun {
  int exit = -1;
  std::string out;
  std::string err;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs the real hom binary with `args` and exactly `env`; bounded by --timeout in args and
// by hom's own connect timeout.
HomRun run_hom(const std::vector<std::string>& args, const Env& env) {
  TempDir dir;
  const std::string out = dir.file("out"), err = dir.file("err");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  std::vector<std::string> argv_s{HOM_BIN};
  argv_s.insert(argv_s.end(), args.begin(), args.end());
  std::vector<char*> argv = exec_vector(argv_s);
  std::vector<std::string> env_s = child_environment(env);
  std::vector<char*> envp = exec_vector(env_s);
  pid_t pid = -1;
  HomRun run;
  if (posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), envp.data()) == 0) {
    int status = 0;
    waitpid(pid, &status, 0);
    run.exit = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  posix_spawn_file_actions_destroy(&actions);
  run.out = slurp(out);
  run.err = slurp(err);
  return run;
}

class HomTest : public ::testing::Test {
 protected:
  void SetUp() override {
    homd_ = std::make_unique<Homd>(broker_.port(), api_.base_url());
    ASSERT_TRUE(homd_->wait_subscribed()) << homd_->log_tail();
    env_ = {{"MQTT_HOST", "127.0.0.1"},
            {"MQTT_PORT", std::to_string(broker_.port())},
            {"MQTT_TOPIC_START", homd_->topic_start()}};
  }

  HomRun hom(std::vector<std::string> args) {
    auto run = run_hom(args, env_);
    return run;
  }
  const std::string& device() const { return homd_->topic_id(); }

  Mosquitto broker_;
  ApiServer api_;
  std::unique_ptr<Homd> homd_;
  Env env_;
};

TEST_F(HomTest, GetPrintsJsonContentAndExitsZero) {
  const auto run = hom({"get", device(), "/gps/latitude"});
  EXPECT_EQ(run.exit, 0) << run.err;
  EXPECT_EQ(Json::parse(run.out), Json::parse(R"({"latitude": 48.85})"));
}

TEST_F(HomTest, PostJsonBodyGets201Text) {
  const auto run = hom({"post", device(), "food/dessert", "-d", R"({"name":"tiramisu"})"});
  EXPECT_EQ(run.exit, 0) << run.err;
  EXPECT_EQ(run.out, "Dessert tiramisu created");
}

TEST_F(HomTest, HeadersParamsAndReqIdReachTheApi) {
  const auto run =
      hom({"--json", "get", device(), "echo/x", "-H", "X-Token: abc", "-H", "Accept: text/plain",
           "-G", "q=a b", "-G", "q=2", "-G", "n=5", "--req-id", "my-id-7"});
  ASSERT_EQ(run.exit, 0) << run.err;
  const auto reply = Json::parse(run.out);
  EXPECT_EQ(reply["req_id"], "my-id-7");
  ASSERT_EQ(api_.count("/echo/"), 1u);
  const auto seen = api_.requests().back();
  EXPECT_EQ(seen.method, "GET");
  EXPECT_EQ(seen.headers.find("x-token")->second, "abc");
  EXPECT_EQ(seen.headers.find("accept")->second, "text/plain");
  EXPECT_EQ(seen.params.count("q"), 2u);
  EXPECT_EQ(seen.params.find("n")->second, "5");
  EXPECT_NE(seen.target.find("q=a%20b"), std::string::npos) << seen.target;
}

TEST_F(HomTest, DataTextAndDataRawAreSentAsStrings) {
  auto run = hom({"--json", "put", device(), "echo/t", "-d", "plain words"});
  ASSERT_EQ(run.exit, 0) << run.err;
  EXPECT_EQ(api_.requests().back().body, "plain words");
  EXPECT_EQ(api_.requests().back().headers.count("content-type"), 0u);
  run = hom({"--json", "put", device(), "echo/t", "--data-raw", R"({"a":1})"});
  ASSERT_EQ(run.exit, 0) << run.err;
  EXPECT_EQ(api_.requests().back().body, R"({"a":1})");
  EXPECT_EQ(api_.requests().back().headers.count("content-type"), 0u);
  run = hom({"--json", "put", device(), "echo/t", "-d", R"({"a":1})"});
  ASSERT_EQ(run.exit, 0) << run.err;
  EXPECT_EQ(api_.requests().back().headers.find("content-type")->second, "application/json");
}

TEST_F(HomTest, BinaryRoundTripWithDataBinaryAndOutput) {
  TempDir dir;
  std::string bytes;
  for (int i = 0; i < 256; ++i) bytes += static_cast<char>(i);
  dir.write("in.bin", bytes);
  auto run = hom({"post", device(), "echo/bin", "--data-binary", "@" + dir.file("in.bin")});
  ASSERT_EQ(run.exit, 0) << run.err;
  EXPECT_EQ(api_.requests().back().body, bytes);

  run = hom({"get", device(), "binary", "-o", dir.file("out.bin")});
  ASSERT_EQ(run.exit, 0) << run.err;
  EXPECT_EQ(slurp(dir.file("out.bin")), bytes);
}

TEST_F(HomTest, IncludeHeadersPrintsStatusLineAndHeaders) {
  const auto run = hom({"-i", "get", device(), "text"});
  ASSERT_EQ(run.exit, 0) << run.err;
  EXPECT_EQ(run.out.rfind("HTTP/1.1 200\r\n", 0), 0u) << run.out;
  EXPECT_NE(run.out.find("content-type: text/plain"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("\r\n\r\nhello"), std::string::npos) << run.out;
}

TEST_F(HomTest, HttpErrorExits22AndStillPrintsContent) {
  auto run = hom({"get", device(), "status/404"});
  EXPECT_EQ(run.exit, 22);
  EXPECT_NE(run.err.find("404"), std::string::npos) << run.err;

  run = hom({"--json", "get", device(), "a/../b"});  // a bridge error: 400
  EXPECT_EQ(run.exit, 22);
  EXPECT_EQ(Json::parse(run.out)["status"], 400);
  EXPECT_NE(run.err.find(".."), std::string::npos) << run.err;
}

TEST_F(HomTest, TimeoutExits28) {
  const auto run = hom({"get", "nobody-" + device(), "x", "--timeout", "300ms"});
  EXPECT_EQ(run.exit, 28) << run.err;
  EXPECT_NE(run.err.find("no reply"), std::string::npos) << run.err;
}

TEST_F(HomTest, OfflineDeviceExits69UnlessWaitOnline) {
  const std::string ghost = "ghost-" + device();
  MqttClient client(broker_.uri(), homd_->topic_start(), ghost);
  client.publish_raw(homd_->topic_start() + "/status/" + ghost, R"({"online":false})", 1, true);
  auto run = hom({"get", ghost, "x", "--timeout", "5s"});
  EXPECT_EQ(run.exit, 69) << run.err;
  EXPECT_NE(run.err.find("offline"), std::string::npos) << run.err;

  run = hom({"get", ghost, "x", "--timeout", "300ms", "--wait-online"});
  EXPECT_EQ(run.exit, 28) << run.err;
  client.publish_raw(homd_->topic_start() + "/status/" + ghost, "", 1, true);  // clear
}

TEST_F(HomTest, UsageErrorsExit2) {
  EXPECT_EQ(hom({"get"}).exit, 2);
  // No PATH is not the root: that is asked for as "/".
  const auto no_path = hom({"get", device()});
  EXPECT_EQ(no_path.exit, 2) << no_path.err;
  EXPECT_NE(no_path.err.find("the root is /"), std::string::npos) << no_path.err;
  EXPECT_EQ(api_.requests().size(), 0u);
  // "/" reaches the API's root, which the test API does not serve.
  const auto root = hom({"get", device(), "/"});
  EXPECT_EQ(root.exit, 22) << root.err;
  EXPECT_NE(root.err.find("404: returned by the device's API"), std::string::npos) << root.err;
  EXPECT_EQ(hom({"get", device(), "x", "--timeout", "soon"}).exit, 2);
  EXPECT_EQ(hom({"get", device(), "x", "-H", "no colon"}).exit, 2);
  EXPECT_EQ(hom({"get", device(), "x", "--data-binary", "nofile"}).exit, 2);
  EXPECT_EQ(hom({"--tls", "maybe", "get", device(), "x"}).exit, 2);
  EXPECT_EQ(hom({"--help"}).exit, 0);
  EXPECT_NE(hom({"--help"}).out.find("Examples"), std::string::npos);
}

// A fake device answers with an unrelated reply first: hom must wait for its own.
TEST_F(HomTest, UnrelatedReplyOnTheSameTopicIsIgnored) {
  const std::string fake = "fake-" + device();
  const std::string start = homd_->topic_start();
  auto device_client = std::make_unique<mqtt::async_client>(broker_.uri(), unique_name("fake"),
                                                            mqtt::create_options(4), nullptr);
  device_client->set_message_callback([&](mqtt::const_message_ptr msg) {
    const auto request = Json::parse(msg->get_payload_str());
    const std::string res = start + "/res/" + fake + "/get/thing";
    device_client->publish(res, R"({"content":"not yours","status":200,"req_id":"other"})", 2,
                           false);
    device_client->publish(
        res, Json{{"content", "yours"}, {"status", 200}, {"req_id", request["req_id"]}}.dump(), 2,
        false);
  });
  device_client->connect()->wait();
  device_client->subscribe(start + "/req/" + fake + "/#", 2)->wait();
  const auto run = hom({"get", fake, "thing", "--timeout", "10s"});
  EXPECT_EQ(run.exit, 0) << run.err;
  EXPECT_EQ(run.out, "yours");
  device_client->disconnect()->wait();
}

TEST_F(HomTest, DevicesListsRunningHomdAndDropsItAfterStop) {
  auto run = hom({"devices", "--json"});
  ASSERT_EQ(run.exit, 0) << run.err;
  const auto list = Json::parse(run.out);
  ASSERT_EQ(list.size(), 1u) << run.out;
  EXPECT_EQ(list[0]["id"], device());
  EXPECT_EQ(list[0]["online"], true);
  EXPECT_FALSE(list[0]["version"].get<std::string>().empty());
  EXPECT_EQ(list[0]["since"].get<std::string>().size(), 20u) << list[0];  // ISO 8601, Z

  run = hom({"devices"});
  EXPECT_EQ(run.out.rfind(device() + "\t", 0), 0u) << run.out;

  ASSERT_EQ(homd_->stop(), 0);
  run = hom({"devices", "--json"});
  ASSERT_EQ(run.exit, 0) << run.err;
  EXPECT_EQ(Json::parse(run.out), Json::array()) << run.out;
}

}  // namespace
}  // namespace hom::test
