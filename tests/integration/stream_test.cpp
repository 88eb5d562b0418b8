// Streams (protocol v1.1, SPEC §7) end to end: the real homd, hom and hom-gateway through a
// real Mosquitto capped at AWS IoT's 128 KB packets, bodies far larger than one message both
// ways, a streaming API's first line arriving before it has finished, and a device that
// misbehaves (a chunk lost, duplicated, a bad checksum, a stall) or a broker that restarts
// mid-transfer: a clear error or a complete, correct file, never a cut-off one taken for
// complete. Sizes scale with HOM_STREAM_TEST_MB (default 64; the issue's full run is 1024).
#include <fcntl.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include <gtest/gtest.h>

#include "hom/stream.hpp"
#include "support/harness.hpp"

extern char** environ;

namespace hom::test {
namespace {

constexpr const char* kAwsPacketLimit = "max_packet_size 131072";

std::uint64_t test_bytes() {
  const char* mb = std::getenv("HOM_STREAM_TEST_MB");
  return (mb ? std::stoull(mb) : 64ULL) << 20;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string file_sha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  Sha256 sha;
  std::string block(1 << 20, '\0');
  while (in) {
    in.read(block.data(), static_cast<std::streamsize>(block.size()));
    sha.update(std::string_view(block.data(), static_cast<std::size_t>(in.gcount())));
  }
  return sha.hex();
}

// Resident set of a running process, from /proc (kB).
long status_kb(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

// A child whose stdout is a pipe the test reads as it comes (hom --stream, curl -N).
class Spawned {
 public:
  Spawned(const std::vector<std::string>& argv_s, const Env& env, const std::string& err_path) {
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("pipe");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    posix_spawn_file_actions_addopen(&actions, 2, err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                     0600);
    std::vector<std::string> args = argv_s;
    std::vector<char*> argv = exec_vector(args);
    std::vector<std::string> env_s = child_environment(env);
    std::vector<char*> envp = exec_vector(env_s);
    const int rc = posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    close(fds[1]);
    out_ = fds[0];
    if (rc != 0) throw std::runtime_error("cannot start " + argv_s[0]);
  }
  ~Spawned() {
    if (out_ >= 0) close(out_);
    if (!reaped_) {
      ::kill(pid_, SIGKILL);
      wait();
    }
  }
  // Reads stdout until `needle` has appeared, the pipe closes, or the deadline.
  bool read_until(const std::string& needle, Clock::time_point deadline) {
    while (out_text_.find(needle) == std::string::npos) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return false;
      fd_set set;
      FD_ZERO(&set);
      FD_SET(out_, &set);
      timeval tv{static_cast<time_t>(left / 1000), static_cast<suseconds_t>((left % 1000) * 1000)};
      if (select(out_ + 1, &set, nullptr, nullptr, &tv) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::read(out_, buf, sizeof buf);
      if (n <= 0) return false;
      out_text_.append(buf, static_cast<std::size_t>(n));
    }
    return true;
  }
  // Reads the rest of stdout and reaps: the exit status.
  int finish() {
    char buf[4096];
    ssize_t n;
    while ((n = ::read(out_, buf, sizeof buf)) > 0)
      out_text_.append(buf, static_cast<std::size_t>(n));
    return wait();
  }
  const std::string& out() const { return out_text_; }
  long max_rss_kb() const { return max_rss_kb_; }

 private:
  int wait() {
    int status = 0;
    rusage usage{};
    wait4(pid_, &status, 0, &usage);
    reaped_ = true;
    max_rss_kb_ = usage.ru_maxrss;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  pid_t pid_ = -1;
  int out_ = -1;
  bool reaped_ = false;
  long max_rss_kb_ = 0;
  std::string out_text_;
};

struct Run {
  int exit = -1;
  std::string out;
  std::string err;
  long max_rss_kb = 0;
};

Run run(const std::vector<std::string>& argv, const Env& env) {
  TempDir dir;
  Spawned child(argv, env, dir.file("err"));
  Run r;
  r.exit = child.finish();
  r.out = child.out();
  r.err = slurp(dir.file("err"));
  r.max_rss_kb = child.max_rss_kb();
  return r;
}

Env hom_env(const Homd& homd, int port, const Env& extra = {}) {
  Env env{{"MQTT_HOST", "127.0.0.1"},
          {"MQTT_PORT", std::to_string(port)},
          {"MQTT_TLS", "off"},
          {"MQTT_TOPIC_START", homd.topic_start()}};
  for (const auto& [k, v] : extra) env[k] = v;
  return env;
}

class StreamTest : public ::testing::Test {
 protected:
  Mosquitto broker_{Mosquitto::Options{0, std::nullopt, true, false, {kAwsPacketLimit}}};
  ApiServer api_;
};

// Downloads `bytes` from /blob with hom -o and checks it byte for byte; homd's resident set
// may grow by at most 8 MB over the transfer (outside sanitizer builds).
void download_and_check(const Homd& homd, int port, std::uint64_t bytes, const Env& extra = {}) {
  TempDir dir;
  const std::string out = dir.file("blob");
  Process& daemon = const_cast<Homd&>(homd).process();
  const long rss_before = status_kb(daemon.pid(), "VmRSS");
  const auto r = run({HOM_BIN, "get", homd.topic_id(), "blob", "-G",
                      "size=" + std::to_string(bytes), "-o", out, "-s", "--timeout", "60s"},
                     hom_env(homd, port, extra));
  ASSERT_EQ(r.exit, 0) << r.err << homd.log_tail();
  EXPECT_EQ(std::filesystem::file_size(out), bytes);
  EXPECT_EQ(file_sha256(out), pattern_sha256(bytes));
  EXPECT_FALSE(std::filesystem::exists(out + ".part"));
  const long hwm_after = status_kb(daemon.pid(), "VmHWM");
#ifndef HOM_SANITIZED
  EXPECT_LE(hwm_after - rss_before, 8 * 1024) << "homd grew from " << rss_before << " kB";
  EXPECT_LE(r.max_rss_kb, 32 * 1024) << "hom's peak resident set";
#endif
  std::printf("[ stream   ] %llu MiB down: homd %ld -> peak %ld kB, hom peak %ld kB\n",
              static_cast<unsigned long long>(bytes >> 20), rss_before, hwm_after, r.max_rss_kb);
}

void upload_and_check(const Homd& homd, int port, std::uint64_t bytes, const Env& extra = {}) {
  TempDir dir;
  const std::string in = dir.file("upload");
  {
    std::ofstream f(in, std::ios::binary);
    constexpr std::size_t kBlock = 1 << 20;
    for (std::uint64_t done = 0; done < bytes; done += kBlock) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(kBlock, bytes - done));
      f << pattern_bytes(done * 7, n);  // not the /blob pattern: an upload of its own
    }
  }
  Process& daemon = const_cast<Homd&>(homd).process();
  const long rss_before = status_kb(daemon.pid(), "VmRSS");
  const auto r = run({HOM_BIN, "put", homd.topic_id(), "upload", "--data-binary", "@" + in, "-s",
                      "--timeout", "60s"},
                     hom_env(homd, port, extra));
  ASSERT_EQ(r.exit, 0) << r.err << homd.log_tail();
  const Json doc = Json::parse(r.out, nullptr, false);
  ASSERT_TRUE(doc.is_object()) << r.out;
  EXPECT_EQ(doc.value("length", 0ULL), bytes);
  EXPECT_EQ(doc.value("sha256", ""), file_sha256(in));
  const long hwm_after = status_kb(daemon.pid(), "VmHWM");
#ifndef HOM_SANITIZED
  EXPECT_LE(hwm_after - rss_before, 8 * 1024) << "homd grew from " << rss_before << " kB";
  EXPECT_LE(r.max_rss_kb, 32 * 1024) << "hom's peak resident set";
#endif
  std::printf("[ stream   ] %llu MiB up: homd %ld -> peak %ld kB, hom peak %ld kB\n",
              static_cast<unsigned long long>(bytes >> 20), rss_before, hwm_after, r.max_rss_kb);
}

TEST_F(StreamTest, LargeBodiesBothWaysThroughAwsSizedPacketsOverMqtt5) {
  Homd homd(broker_.port(), api_.base_url(), {{"MQTT_VERSION", "5"}});
  ASSERT_TRUE(homd.wait_subscribed()) << homd.log_tail();
  download_and_check(homd, broker_.port(), test_bytes(), {{"MQTT_VERSION", "5"}});
  upload_and_check(homd, broker_.port(), test_bytes(), {{"MQTT_VERSION", "5"}});
  // Every packet fitted: Mosquitto would have dropped the connection otherwise.
  EXPECT_EQ(homd.process().count_in_log("connection to the broker lost"), 0) << homd.log_tail();
  EXPECT_NE(homd.log().find("chunks"), std::string::npos);
}

TEST_F(StreamTest, LargeBodiesBothWaysOverMqtt311InTheJsonForm) {
  const std::uint64_t bytes = test_bytes() / 4;  // base64 in JSON: the slower form
  // 3.1.1 has no CONNACK Maximum Packet Size: the broker's limit is configured.
  const Env v311{{"MQTT_VERSION", "3.1.1"}, {"MQTT_MAX_MESSAGE_BYTES", "131072"}};
  Homd homd(broker_.port(), api_.base_url(), v311);
  ASSERT_TRUE(homd.wait_subscribed()) << homd.log_tail();
  download_and_check(homd, broker_.port(), bytes, v311);
  upload_and_check(homd, broker_.port(), bytes, v311);
  EXPECT_EQ(homd.process().count_in_log("connection to the broker lost"), 0) << homd.log_tail();
}

TEST_F(StreamTest, SmallBodyToAStreamingRequesterIsOneOrdinaryReply) {
  Homd homd(broker_.port(), api_.base_url());
  ASSERT_TRUE(homd.wait_subscribed()) << homd.log_tail();
  TempDir dir;
  const auto r = run({HOM_BIN, "get", homd.topic_id(), "gps/latitude", "-o", dir.file("lat"), "-s"},
                     hom_env(homd, broker_.port()));
  ASSERT_EQ(r.exit, 0) << r.err;
  EXPECT_EQ(slurp(dir.file("lat")), R"({"latitude": 48.85})");
  EXPECT_EQ(homd.process().count_in_log("streamed"), 0);
}

TEST_F(StreamTest, StreamingApiFirstLineReachesHomBeforeTheApiHasFinished) {
  Homd homd(broker_.port(), api_.base_url());
  ASSERT_TRUE(homd.wait_subscribed()) << homd.log_tail();
  TempDir dir;
  Spawned hom({HOM_BIN, "get", homd.topic_id(), "follow", "-G", "lines=20", "--stream"},
              hom_env(homd, broker_.port()), dir.file("err"));
  ASSERT_TRUE(hom.read_until("line 0\n", deadline_in())) << slurp(dir.file("err"));
  // 20 lines 100 ms apart: the API has 1.9 s to go when the first line is here.
  EXPECT_FALSE(api_.follow_done()) << "the first line came only after the API had finished";
  EXPECT_EQ(hom.finish(), 0) << slurp(dir.file("err"));
  std::string expected;
  for (int i = 0; i < 20; ++i) expected += "line " + std::to_string(i) + "\n";
  EXPECT_EQ(hom.out(), expected);
}

TEST_F(StreamTest, GatewayRelaysALargeBodyAndAStreamingApi) {
  Homd homd(broker_.port(), api_.base_url());
  ASSERT_TRUE(homd.wait_subscribed()) << homd.log_tail();
  TempDir dir;
  const int port = free_port();
  Env env = hom_env(homd, broker_.port(),
                    {{"GATEWAY_LISTEN", "127.0.0.1:" + std::to_string(port)},
                     {"GATEWAY_AUTH", "none"},
                     {"LOG_LEVEL", "info"}});
  Process gateway({HOM_GATEWAY_BIN}, env, dir.file("gateway.log"));
  ASSERT_TRUE(gateway.wait_for_log("connected to")) << gateway.log();
  const std::string base = "http://127.0.0.1:" + std::to_string(port) + "/" + homd.topic_id();

  // The first line of a streaming API reaches curl while the API is still writing.
  Spawned follow({CURL_BIN, "-sS", "-N", base + "/follow?lines=20"}, {}, dir.file("curl.err"));
  ASSERT_TRUE(follow.read_until("line 0\n", deadline_in()))
      << slurp(dir.file("curl.err")) << gateway.log();
  EXPECT_FALSE(api_.follow_done()) << "the first line came only after the API had finished";
  EXPECT_EQ(follow.finish(), 0);
  EXPECT_NE(follow.out().find("line 19\n"), std::string::npos);

  // A body far over one message, byte for byte, with the gateway's memory flat.
  const std::uint64_t bytes = test_bytes();
  const long rss_before = status_kb(gateway.pid(), "VmRSS");
  const auto r = run(
      {CURL_BIN, "-sS", "-f", "-o", dir.file("blob"), base + "/blob?size=" + std::to_string(bytes)},
      {});
  ASSERT_EQ(r.exit, 0) << r.err << gateway.log();
  EXPECT_EQ(file_sha256(dir.file("blob")), pattern_sha256(bytes));
  const long hwm_after = status_kb(gateway.pid(), "VmHWM");
#ifndef HOM_SANITIZED
  EXPECT_LE(hwm_after - rss_before, 8 * 1024) << "the gateway grew from " << rss_before << " kB";
#endif
  std::printf("[ stream   ] %llu MiB through the gateway: %ld -> peak %ld kB\n",
              static_cast<unsigned long long>(bytes >> 20), rss_before, hwm_after);

  // And a body as large the other way: curl's PUT (with Expect: 100-continue) streams
  // through the gateway and homd to the API, which reports what it received.
  const std::string upload = dir.file("upload");
  {
    std::ofstream f(upload, std::ios::binary);
    for (std::uint64_t done = 0; done < bytes; done += 1 << 20)
      f << pattern_bytes(done * 3,
                         static_cast<std::size_t>(std::min<std::uint64_t>(1 << 20, bytes - done)));
  }
  const auto put = run({CURL_BIN, "-sS", "-f", "-T", upload, base + "/upload"}, {});
  ASSERT_EQ(put.exit, 0) << put.err << gateway.log();
  const Json doc = Json::parse(put.out, nullptr, false);
  EXPECT_EQ(doc.value("length", 0ULL), bytes) << put.out;
  EXPECT_EQ(doc.value("sha256", ""), file_sha256(upload));
  const long hwm_up = status_kb(gateway.pid(), "VmHWM");
#ifndef HOM_SANITIZED
  EXPECT_LE(hwm_up - rss_before, 8 * 1024) << "the gateway grew from " << rss_before << " kB";
#endif
  std::printf("[ stream   ] %llu MiB up through the gateway: peak %ld kB\n",
              static_cast<unsigned long long>(bytes >> 20), hwm_up);

  // The same body chunked (no Content-Length, as `curl -T -` or a browser's stream sends
  // it): streamed to the device with no declared length, byte for byte.
  const auto chunked = run(
      {CURL_BIN, "-sS", "-f", "-T", upload, "-H", "Transfer-Encoding: chunked", base + "/upload"},
      {});
  ASSERT_EQ(chunked.exit, 0) << chunked.err << gateway.log();
  const Json chunked_doc = Json::parse(chunked.out, nullptr, false);
  EXPECT_EQ(chunked_doc.value("length", 0ULL), bytes) << chunked.out;
  EXPECT_EQ(chunked_doc.value("sha256", ""), file_sha256(upload));
  // No length was declared, so none reached the API: homd sent it on chunked too.
  const auto header_of = [&](const std::string& name) {
    const auto seen = api_.requests();
    if (seen.empty()) return std::string("(no request)");
    const auto it = seen.back().headers.find(name);
    return it == seen.back().headers.end() ? std::string("(none)") : it->second;
  };
  EXPECT_EQ(header_of("content-length"), "(none)");
  EXPECT_EQ(header_of("transfer-encoding"), "chunked");
#ifndef HOM_SANITIZED
  EXPECT_LE(status_kb(gateway.pid(), "VmHWM") - rss_before, 8 * 1024);
#endif

  // A small chunked body is read whole and sent in the request itself, as before streams.
  const std::string small = dir.file("small");
  {
    std::ofstream f(small, std::ios::binary);
    f << pattern_bytes(7, 1000);
  }
  const auto little = run(
      {CURL_BIN, "-sS", "-f", "-T", small, "-H", "Transfer-Encoding: chunked", base + "/upload"},
      {});
  ASSERT_EQ(little.exit, 0) << little.err << gateway.log();
  const Json little_doc = Json::parse(little.out, nullptr, false);
  EXPECT_EQ(little_doc.value("length", 0ULL), 1000U) << little.out;
  EXPECT_EQ(little_doc.value("sha256", ""), file_sha256(small));
  EXPECT_EQ(header_of("content-length"), "1000");
}

// A body given inline (-d) that does not fit one message under the broker's packet limit is
// refused by hom before publishing (published, it would only make the broker drop the
// connection); a file of the same size streams.
TEST_F(StreamTest, InlineBodyOverThePacketLimitIsRefusedUnpublished) {
  Homd homd(broker_.port(), api_.base_url());
  ASSERT_TRUE(homd.wait_subscribed()) << homd.log_tail();
  // 100 000 quotes: 200 000 bytes once escaped in the request's JSON (one argument of a
  // program may not pass 128 KiB).
  const std::string body(100000, '"');
  const auto r = run({HOM_BIN, "post", homd.topic_id(), "upload", "-d", body, "-s"},
                     hom_env(homd, broker_.port()));
  EXPECT_EQ(r.exit, 2) << r.out << r.err;
  EXPECT_NE(r.err.find("does not fit one message"), std::string::npos) << r.err;
  EXPECT_EQ(api_.count("/upload"), 0U);
}

// GATEWAY_MAX_UPLOAD_BYTES: a declared length over it is refused before the body is read; a
// chunked body is refused (413) as soon as it passes the limit, and the device, told so,
// aborts its call to the API instead of waiting for the rest.
TEST_F(StreamTest, GatewayUploadOverItsLimitIs413) {
  Homd homd(broker_.port(), api_.base_url());
  ASSERT_TRUE(homd.wait_subscribed()) << homd.log_tail();
  TempDir dir;
  const int port = free_port();
  Env env = hom_env(homd, broker_.port(),
                    {{"GATEWAY_LISTEN", "127.0.0.1:" + std::to_string(port)},
                     {"GATEWAY_AUTH", "none"},
                     {"GATEWAY_MAX_UPLOAD_BYTES", "200000"},
                     {"LOG_LEVEL", "info"}});
  Process gateway({HOM_GATEWAY_BIN}, env, dir.file("gateway.log"));
  ASSERT_TRUE(gateway.wait_for_log("connected to")) << gateway.log();
  const std::string url =
      "http://127.0.0.1:" + std::to_string(port) + "/" + homd.topic_id() + "/upload";
  const auto write = [&](const std::string& name, std::size_t n) {
    std::ofstream f(dir.file(name), std::ios::binary);
    f << pattern_bytes(0, n);
    return dir.file(name);
  };
  const std::string big = write("big", 1000000), fits = write("fits", 150000);
  const auto status = [&](const std::vector<std::string>& extra, const std::string& file) {
    std::vector<std::string> argv = {CURL_BIN, "-sS",          "-o", dir.file("out"),
                                     "-w",     "%{http_code}", "-T", file};
    argv.insert(argv.end(), extra.begin(), extra.end());
    argv.push_back(url);
    return run(argv, {}).out;
  };
  EXPECT_EQ(status({}, big), "413") << gateway.log();
  const auto started = Clock::now();
  EXPECT_EQ(status({"-H", "Transfer-Encoding: chunked"}, big), "413") << gateway.log();
  // Told at once, not by the device noticing a stall (after HTTP_TIMEOUT_MS, 30 s).
  EXPECT_LT(Clock::now() - started, std::chrono::seconds(20));
  EXPECT_TRUE(homd.process().wait_for_log("over the gateway's GATEWAY_MAX_UPLOAD_BYTES"))
      << homd.log_tail();
  EXPECT_EQ(status({"-H", "Transfer-Encoding: chunked"}, fits), "200") << gateway.log();
  const Json doc = Json::parse(slurp(dir.file("out")), nullptr, false);
  EXPECT_EQ(doc.value("length", 0ULL), 150000U) << slurp(dir.file("out"));
}

// A device that answers a streamed request with chunks the test makes (the JSON form, over
// MQTT 3.1.1), to show what hom does with each kind of broken stream.
class FakeDevice {
 public:
  using Script =
      std::function<void(FakeDevice&, const std::string& response_topic, const Json& request)>;

  FakeDevice(const std::string& uri, std::string start, std::string id, Script script)
      : start_(std::move(start)), id_(std::move(id)), script_(std::move(script)) {
    client_ = std::make_unique<mqtt::async_client>(uri, unique_name("fake-device"));
    client_->set_message_callback([this](mqtt::const_message_ptr m) { on_message(m); });
    auto options = mqtt::connect_options_builder().clean_session(true).finalize();
    client_->connect(options)->wait_for(kDefaultWait);
    client_->subscribe(start_ + "/req/" + id_ + "/#", 1)->wait_for(kDefaultWait);
    client_
        ->publish(start_ + "/status/" + id_, R"({"online":true,"version":"fake","protocol":"1.1"})",
                  1, true)
        ->wait_for(kDefaultWait);
  }
  ~FakeDevice() {
    try {
      client_->publish(start_ + "/status/" + id_, "", 1, true)->wait_for(kDefaultWait);
      client_->disconnect()->wait_for(kDefaultWait);
    } catch (const std::exception&) {
    }
  }

  void send(const std::string& topic, const std::string& payload) {
    client_->publish(topic, payload, 1, false)->wait_for(kDefaultWait);
  }
  void head(const std::string& topic, const Json& request) {
    Json head = {
        {"status", 200},
        {"content", nullptr},
        {"req_id", request["req_id"]},
        {"stream", {{"id", request["stream"]["id"]}, {"chunk_bytes", 1000}, {"window", 8}}}};
    send(topic, head.dump());
  }
  void chunk(const std::string& topic, const Json& request, std::uint64_t seq,
             const std::string& data, std::optional<std::pair<std::uint64_t, std::string>> end) {
    Chunk c;
    c.id = request["stream"]["id"].get<std::string>();
    c.seq = seq;
    c.data = data;
    if (end) {
      c.last = true;
      c.total = end->first;
      c.sha256 = end->second;
    }
    OutboundMessage m;
    encode_chunk(c, false, m);
    send(topic, m.payload);
  }
  std::size_t acks() const { return acks_; }

 private:
  void on_message(const mqtt::const_message_ptr& m) {
    const std::string payload = m->get_payload_str();
    if (payload.find("stream_ack") != std::string::npos) {
      ++acks_;
      return;
    }
    const Json request = Json::parse(payload, nullptr, false);
    if (!request.is_object() || !request.contains("stream") || done_) return;
    done_ = true;
    // The mirrored topic: {start}/res/{id}/...
    std::string topic = m->get_topic();
    topic.replace(start_.size() + 1, 3, "res");
    const Script script = script_;
    worker_ = std::thread([this, script, topic, request] { script(*this, topic, request); });
  }

 public:
  void join() {
    if (worker_.joinable()) worker_.join();
  }

 private:
  std::string start_, id_;
  Script script_;
  std::unique_ptr<mqtt::async_client> client_;
  std::atomic<bool> done_{false};
  std::atomic<std::size_t> acks_{0};
  std::thread worker_;
};

std::string sha_of(const std::string& s) {
  Sha256 sha;
  sha.update(s);
  return sha.hex();
}

struct BrokenStreamCase {
  const char* name;
  FakeDevice::Script script;
  int exit;             // hom's exit status
  const char* message;  // in hom's stderr
  bool file;            // the output file exists afterwards (complete and correct)
};

class BrokenStreamTest : public ::testing::TestWithParam<BrokenStreamCase> {};

TEST_P(BrokenStreamTest, HomReportsItAndNeverKeepsACutOffFile) {
  const auto& c = GetParam();
  Mosquitto broker;
  const std::string start = unique_name("st");
  const std::string id = "fake";
  FakeDevice device(broker.uri(), start, id, c.script);
  TempDir dir;
  const std::string out = dir.file("body");
  const auto r = run({HOM_BIN, "get", id, "file", "-o", out, "-s", "--timeout", "3s"},
                     {{"MQTT_HOST", "127.0.0.1"},
                      {"MQTT_PORT", std::to_string(broker.port())},
                      {"MQTT_TLS", "off"},
                      {"MQTT_VERSION", "3.1.1"},
                      {"MQTT_TOPIC_START", start}});
  device.join();
  EXPECT_EQ(r.exit, c.exit) << r.err;
  EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
  EXPECT_EQ(std::filesystem::exists(out), c.file);
  EXPECT_FALSE(std::filesystem::exists(out + ".part"));
  if (c.file) {
    EXPECT_EQ(slurp(out), "aaaabbbb");
  }
}

const std::string kA = "aaaa", kB = "bbbb";
const std::string kWhole = kA + kB;

INSTANTIATE_TEST_SUITE_P(
    Faults, BrokenStreamTest,
    ::testing::Values(
        BrokenStreamCase{"complete",
                         [](FakeDevice& d, const std::string& t, const Json& rq) {
                           d.head(t, rq);
                           d.chunk(t, rq, 0, kA, std::nullopt);
                           d.chunk(t, rq, 1, kB, std::make_pair(8ULL, sha_of(kWhole)));
                         },
                         0, "", true},
        BrokenStreamCase{"duplicated_chunk",
                         [](FakeDevice& d, const std::string& t, const Json& rq) {
                           d.head(t, rq);
                           d.chunk(t, rq, 0, kA, std::nullopt);
                           d.chunk(t, rq, 0, kA, std::nullopt);
                           d.chunk(t, rq, 1, kB, std::make_pair(8ULL, sha_of(kWhole)));
                         },
                         0, "", true},
        BrokenStreamCase{"reordered_chunks",
                         [](FakeDevice& d, const std::string& t, const Json& rq) {
                           d.head(t, rq);
                           d.chunk(t, rq, 1, kB, std::make_pair(8ULL, sha_of(kWhole)));
                           d.chunk(t, rq, 0, kA, std::nullopt);
                         },
                         0, "", true},
        BrokenStreamCase{"lost_chunk",
                         [](FakeDevice& d, const std::string& t, const Json& rq) {
                           d.head(t, rq);
                           d.chunk(t, rq, 1, kB, std::make_pair(8ULL, sha_of(kWhole)));
                         },
                         18, "stalled", false},
        BrokenStreamCase{"bad_checksum",
                         [](FakeDevice& d, const std::string& t, const Json& rq) {
                           d.head(t, rq);
                           d.chunk(t, rq, 0, kA, std::nullopt);
                           d.chunk(t, rq, 1, "bbbX", std::make_pair(8ULL, sha_of(kWhole)));
                         },
                         18, "SHA-256 mismatch", false},
        BrokenStreamCase{"wrong_length",
                         [](FakeDevice& d, const std::string& t, const Json& rq) {
                           d.head(t, rq);
                           d.chunk(t, rq, 0, kA, std::nullopt);
                           d.chunk(t, rq, 1, kB, std::make_pair(9ULL, sha_of(kWhole)));
                         },
                         18, "length mismatch", false},
        BrokenStreamCase{"stalled",
                         [](FakeDevice& d, const std::string& t, const Json& rq) {
                           d.head(t, rq);
                           d.chunk(t, rq, 0, kA, std::nullopt);
                         },
                         18, "stalled", false},
        BrokenStreamCase{"device_error",
                         [](FakeDevice& d, const std::string& t, const Json& rq) {
                           d.head(t, rq);
                           d.chunk(t, rq, 0, kA, std::nullopt);
                           d.send(t, Json{{"chunk",
                                           {{"id", rq["stream"]["id"]},
                                            {"seq", 1},
                                            {"error", "the local API closed the connection"}}}}
                                         .dump());
                         },
                         18, "the local API closed the connection", false}),
    [](const ::testing::TestParamInfo<BrokenStreamCase>& info) { return info.param.name; });

TEST_F(StreamTest, BrokerRestartMidTransferEndsInAnErrorOrACorrectFile) {
  Mosquitto broker{Mosquitto::Options{0, std::nullopt, true, false, {kAwsPacketLimit}}};
  Homd homd(broker.port(), api_.base_url(), {{"MQTT_RECONNECT_MIN_MS", "100"}});
  ASSERT_TRUE(homd.wait_subscribed()) << homd.log_tail();
  TempDir dir;
  const std::string out = dir.file("blob");
  const std::uint64_t bytes = test_bytes();
  Spawned hom({HOM_BIN, "get", homd.topic_id(), "blob", "-G", "size=" + std::to_string(bytes), "-o",
               out, "-s", "--timeout", "5s"},
              hom_env(homd, broker.port()), dir.file("err"));
  // Restart once the transfer is under way: a megabyte written, the rest still to come.
  const auto part = out + ".part";
  const auto until = deadline_in();
  std::error_code ec;
  // Polled: the file's size is the only sign of progress.
  while (Clock::now() < until && std::filesystem::file_size(part, ec) < (1u << 20) &&
         !std::filesystem::exists(out))
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_FALSE(std::filesystem::exists(out)) << "the transfer ended before the restart";
  ASSERT_GE(std::filesystem::file_size(part, ec), 1u << 20) << slurp(dir.file("err"));
  broker.restart();
  const int exit = hom.finish();
  const std::string err = slurp(dir.file("err"));
  if (exit == 0) {
    EXPECT_EQ(file_sha256(out), pattern_sha256(bytes));
  } else {
    EXPECT_FALSE(std::filesystem::exists(out)) << err;
    EXPECT_FALSE(std::filesystem::exists(part)) << err;
    EXPECT_FALSE(err.empty());
  }
  std::printf("[ stream   ] broker restarted mid-transfer: hom exit %d: %s\n", exit, err.c_str());
}

}  // namespace
}  // namespace hom::test
