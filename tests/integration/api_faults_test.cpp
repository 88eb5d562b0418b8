// The local API failing in the ways a real one does (SPEC §5): it never answers, sends half
// a body and closes, announces a 2 GB body, trickles one byte a second. A scripted raw
// socket server plays the API; homd must answer 502/504 within its limits with bounded
// memory. Also: the API on a Unix socket (HTTP_UNIX_SOCKET).
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <sstream>

#include <gtest/gtest.h>

#include "support/harness.hpp"

namespace hom::test {
namespace {

// A one-thread HTTP server speaking raw bytes: each connection's request head is read,
// then `script` writes whatever it likes to the socket. Listens on 127.0.0.1 or a Unix
// socket. Stopping closes everything.
class ScriptedServer {
 public:
  using Script = std::function<void(int fd, const std::atomic<bool>& stop)>;

  ScriptedServer(Script script, const std::string& unix_path = "") : script_(std::move(script)) {
    if (unix_path.empty()) {
      listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      socklen_t len = sizeof a;
      if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
        throw std::runtime_error("bind");
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
      port_ = ntohs(a.sin_port);
    } else {
      listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_un a{};
      a.sun_family = AF_UNIX;
      std::snprintf(a.sun_path, sizeof a.sun_path, "%s", unix_path.c_str());
      if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
        throw std::runtime_error("bind " + unix_path);
    }
    ::listen(listen_fd_, 64);
    thread_ = std::thread([this] { serve(); });
  }
  ~ScriptedServer() {
    stop_ = true;
    thread_.join();
    ::close(listen_fd_);
  }

  int port() const { return port_; }
  int accepted() const { return accepted_; }

 private:
  void serve() {
    while (!stop_) {
      pollfd p{listen_fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      ++accepted_;
      // Read the request head (the tests send no bodies).
      std::string head;
      char buf[4096];
      while (head.find("\r\n\r\n") == std::string::npos && !stop_) {
        pollfd q{fd, POLLIN, 0};
        if (::poll(&q, 1, 50) <= 0) continue;
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        head.append(buf, static_cast<std::size_t>(n));
      }
      script_(fd, stop_);
      ::close(fd);
    }
  }

  Script script_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::thread thread_;
};

void send_all(int fd, const std::string& data) {
  std::size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return;
    off += static_cast<std::size_t>(n);
  }
}

// Holds the connection open until the peer closes it or the server stops.
void hold_open(int fd, const std::atomic<bool>& stop) {
  char buf[256];
  while (!stop) {
    pollfd q{fd, POLLIN, 0};
    if (::poll(&q, 1, 50) <= 0) continue;
    if (::recv(fd, buf, sizeof buf, 0) <= 0) return;
  }
}

// Sanitizer builds keep freed memory in quarantine, so memory bounds are only checked in
// normal builds.
#ifdef HOM_SANITIZED
constexpr bool kCheckMemory = false;
#else
constexpr bool kCheckMemory = true;
#endif

long rss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  return -1;
}

class ApiFaultsTest : public ::testing::Test {
 protected:
  Reply call_through(const std::string& base_url, const Env& env, const std::string& path) {
    homd_ = std::make_unique<Homd>(broker_.port(), base_url, env);
    EXPECT_TRUE(homd_->wait_subscribed()) << homd_->log_tail();
    client_ = std::make_unique<MqttClient>(broker_.uri(), homd_->topic_start(), homd_->topic_id());
    auto reply = client_->call("get", path);
    EXPECT_TRUE(reply) << homd_->log_tail();
    return reply.value_or(Reply{});
  }

  Mosquitto broker_;
  std::unique_ptr<Homd> homd_;
  std::unique_ptr<MqttClient> client_;
};

TEST_F(ApiFaultsTest, AcceptsButNeverAnswersIs504) {
  ScriptedServer api(hold_open);
  const auto started = Clock::now();
  const auto reply = call_through("http://127.0.0.1:" + std::to_string(api.port()) + "/",
                                  {{"HTTP_TIMEOUT_MS", "800"}}, "x");
  EXPECT_EQ(reply.doc["status"], 504) << reply.payload;
  EXPECT_TRUE(reply.doc["content"].is_null());
  EXPECT_LT(Clock::now() - started, std::chrono::seconds(15));
}

TEST_F(ApiFaultsTest, HalfABodyThenCloseIs502) {
  ScriptedServer api([](int fd, const std::atomic<bool>&) {
    send_all(fd,
             "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
             "only ten b");
  });
  const auto reply =
      call_through("http://127.0.0.1:" + std::to_string(api.port()) + "/", {}, "half");
  EXPECT_EQ(reply.doc["status"], 502) << reply.payload;
  EXPECT_TRUE(reply.doc["error"].is_string());
}

TEST_F(ApiFaultsTest, TwoGigabyteContentLengthIs502WithBoundedMemory) {
  ScriptedServer api([](int fd, const std::atomic<bool>& stop) {
    send_all(fd,
             "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
             "Content-Length: 2147483648\r\n\r\n");
    const std::string chunk(64 * 1024, 'x');
    // Keep sending until homd hangs up (it must, at HTTP_MAX_RESPONSE_BYTES at the latest).
    for (int i = 0; i < 32768 && !stop; ++i) {
      if (::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL) <= 0) return;
    }
  });
  homd_ = std::make_unique<Homd>(broker_.port(),
                                 "http://127.0.0.1:" + std::to_string(api.port()) + "/");
  ASSERT_TRUE(homd_->wait_subscribed()) << homd_->log_tail();
  MqttClient client(broker_.uri(), homd_->topic_start(), homd_->topic_id());
  ASSERT_TRUE(client.call("get", "warm-up"));  // the first call sets up curl and TLS tables
  const long rss_before = rss_kb(homd_->process().pid());
  const auto reply = client.call("get", "huge");
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->doc["status"], 502) << reply->payload;
  EXPECT_NE(reply->doc["error"].get<std::string>().find("HTTP_MAX_RESPONSE_BYTES"),
            std::string::npos);
  const long rss = rss_kb(homd_->process().pid());
  // Bounded by HTTP_MAX_RESPONSE_BYTES (1 MiB) and curl's buffers, not by the 2 GB.
  if (kCheckMemory) {
    EXPECT_LT(rss - rss_before, 16 * 1024)
        << "homd RSS grew from " << rss_before << " to " << rss << " kB";
  }
}

TEST_F(ApiFaultsTest, TrickleOfOneByteASecondIs504) {
  ScriptedServer api([](int fd, const std::atomic<bool>& stop) {
    send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    // The API's behaviour under test: one byte a second.
    for (int i = 0; i < 30 && !stop; ++i) {
      if (::send(fd, "x", 1, MSG_NOSIGNAL) <= 0) return;
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  });
  const auto started = Clock::now();
  const auto reply = call_through("http://127.0.0.1:" + std::to_string(api.port()) + "/",
                                  {{"HTTP_TIMEOUT_MS", "1500"}}, "trickle");
  EXPECT_EQ(reply.doc["status"], 504) << reply.payload;
  EXPECT_LT(Clock::now() - started, std::chrono::seconds(15));
}

TEST_F(ApiFaultsTest, ApiOnAUnixSocket) {
  TempDir dir;
  const std::string path = dir.file("api.sock");
  ScriptedServer api(
      [](int fd, const std::atomic<bool>&) {
        send_all(fd,
                 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10\r\n"
                 "Connection: close\r\n\r\n{\"unix\":1}");
      },
      path);
  const auto reply =
      call_through("http://localhost/", {{"HTTP_UNIX_SOCKET", path}}, "gps/latitude");
  EXPECT_EQ(reply.doc["status"], 200) << reply.payload;
  EXPECT_EQ(reply.doc["content"], Json({{"unix", 1}}));
  EXPECT_EQ(api.accepted(), 1);
}

// A burst of malformed payloads: one error reply each, homd still serving, memory flat.
TEST_F(ApiFaultsTest, TenThousandMalformedPayloadsKeepMemoryFlat) {
  ScriptedServer api([](int fd, const std::atomic<bool>&) {
    send_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
  });
  homd_ = std::make_unique<Homd>(broker_.port(),
                                 "http://127.0.0.1:" + std::to_string(api.port()) + "/");
  ASSERT_TRUE(homd_->wait_subscribed()) << homd_->log_tail();
  MqttClient client(broker_.uri(), homd_->topic_start(), homd_->topic_id());
  const std::string topic = client.request_topic("post", "m");
  const auto burst = [&](int n, std::size_t first) {
    for (int i = 0; i < n; ++i) {
      std::string bad;
      switch (i % 5) {
        case 0:
          bad = "{\"req_id\":" + std::to_string(first + i) + ",\"body\":1,\"body_base64\":\"\"}";
          break;
        case 1:
          bad = std::string(1 + i % 64, '\xff');
          break;
        case 2:
          bad = std::string(150, '[') + "1";
          break;
        case 3:
          bad = "{\"headers\":{\"a b\":\"c\"},\"req_id\":" + std::to_string(first + i) + "}";
          break;
        default:
          bad = "not json " + std::to_string(i);
          break;
      }
      client.publish_async(topic, bad, 1);
    }
  };
  // Five bursts of 2000: the first sets the working set (Paho's queues at the peak of a
  // burst); the next four must not grow it. A leak of even 500 bytes a payload would.
  long rss_after_first = 0;
  for (int round = 0; round < 5; ++round) {
    burst(2000, static_cast<std::size_t>(round) * 2000);
    ASSERT_TRUE(client.wait_count(2000u * (round + 1), deadline_in(std::chrono::seconds(90))))
        << client.count();
    if (round == 0) rss_after_first = rss_kb(homd_->process().pid());
  }
  const long rss_after = rss_kb(homd_->process().pid());
  if (kCheckMemory) {
    EXPECT_LT(rss_after - rss_after_first, 4 * 1024)
        << "RSS grew from " << rss_after_first << " to " << rss_after << " kB";
  }
  for (const auto& r : client.replies()) ASSERT_EQ(r.doc["status"], 400) << r.payload;
  EXPECT_EQ(client.count(), 10000u);  // exactly one reply each
  const auto ok = client.call("post", "m", Json{{"req_id", "still-serving"}});
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->doc["status"], 200);
}

}  // namespace
}  // namespace hom::test
