// hom-gateway against real peers (SPEC §6): curl and raw sockets as HTTP clients, the real
// gateway, a real Mosquitto, the real homd and an HTTP API. Each status of the gateway's own,
// the tokens' scopes, bodies that must come back byte for byte, hostile clients (malformed,
// oversized, slow, idle, too many, pipelined), an I/O thread that never waits for the broker,
// and two instances that never see each other's replies.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "hom/gateway.hpp"
#include "support/harness.hpp"

namespace hom::test {
namespace {

struct CurlResult {
  int exit = -1;
  int status = 0;
  std::string headers;  // lower-cased
  std::string body;
};

// A raw TCP client, for what curl will not send: half a request, garbage, two at once.
class RawClient {
 public:
  explicit RawClient(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~RawClient() { ::close(fd_); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() const { return connected_; }

  bool send(std::string_view bytes) {
    while (!bytes.empty()) {
      const auto n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  // Reads until `done(received)` holds, the peer closes, or the deadline; what arrived so far.
  template <typename Done>
  const std::string& read_until(Done done, Clock::time_point deadline) {
    while (!closed_ && !done(received_)) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) break;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[16384];
      const auto n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        closed_ = true;  // EOF, or reset
      } else {
        received_.append(buf, static_cast<std::size_t>(n));
      }
    }
    return received_;
  }
  const std::string& read_until_closed(Clock::time_point deadline = deadline_in()) {
    return read_until([](const std::string&) { return false; }, deadline);
  }
  // Until `needle` occurs `count` times.
  const std::string& read_until(std::string_view needle, int count = 1,
                                Clock::time_point deadline = deadline_in()) {
    return read_until([&](const std::string& r) { return occurrences(r, needle) >= count; },
                      deadline);
  }
  bool closed() const { return closed_; }

  static int occurrences(std::string_view text, std::string_view needle) {
    int n = 0;
    for (auto at = text.find(needle); at != std::string_view::npos;
         at = text.find(needle, at + needle.size()))
      ++n;
    return n;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
  bool closed_ = false;
  std::string received_;
};

class GatewayTest : public ::testing::Test {
 protected:
  // GATEWAY_* settings of a fixture, on top of the defaults below.
  virtual Env gateway_env() const { return {}; }

  void SetUp() override {
    homd_ = std::make_unique<Homd>(broker_.port(), api_.base_url());
    ASSERT_TRUE(homd_->wait_subscribed()) << homd_->log_tail();
    dir_.write("tokens", gateway::sha256_hex("ops-token") + " " + homd_->topic_id() +
                             " GET,HEAD /gps/**,/binary,/text ops\n" +
                             gateway::sha256_hex("admin-token") + " * * * admin\n");
    port_ = free_port();
    gateway_ = start_gateway(port_, "gateway.log");
    ASSERT_TRUE(gateway_);
  }

  // A gateway on `port`, ready once /_hom/health says the broker is connected.
  std::unique_ptr<Process> start_gateway(int port, const std::string& log) {
    Env env{{"MQTT_HOST", "127.0.0.1"},
            {"MQTT_PORT", std::to_string(broker_.port())},
            {"MQTT_TLS", "off"},
            {"MQTT_TOPIC_START", homd_->topic_start()},
            {"GATEWAY_LISTEN", "127.0.0.1:" + std::to_string(port)},
            {"GATEWAY_TOKENS_FILE", dir_.file("tokens")},
            {"GATEWAY_TIMEOUT_MS", "10000"},
            {"LOG_LEVEL", "info"}};
    for (const auto& [name, value] : gateway_env()) env[name] = value;
    auto gateway =
        std::make_unique<Process>(std::vector<std::string>{HOM_GATEWAY_BIN}, env, dir_.file(log));
    const auto deadline = deadline_in();
    while (Clock::now() < deadline && curl({"/_hom/health"}, port).status != 200) {
      EXPECT_TRUE(gateway->running()) << gateway->log();
      if (!gateway->running()) return nullptr;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling, with a deadline
    }
    EXPECT_EQ(curl({"/_hom/health"}, port).status, 200) << gateway->log();
    return gateway;
  }

  std::string url(const std::string& path, int port = 0) const {
    return "http://127.0.0.1:" + std::to_string(port ? port : port_) + path;
  }

  // A metric's value from /_hom/metrics (-1 when absent).
  long long metric(const std::string& name, int port = 0) {
    const auto text = curl({"/_hom/metrics"}, port).body;
    const auto at = text.find("\n" + name + " ");
    if (at == std::string::npos) return -1;
    return std::atoll(text.c_str() + at + name.size() + 2);
  }

  // curl PATH [ARGS...]: -s, headers and body to files, the status from -w.
  CurlResult curl(std::vector<std::string> args, int port = 0) {
    const std::string path = args.front();
    args.erase(args.begin());
    const std::string head = dir_.file("head"), body = dir_.file("body");
    std::vector<std::string> argv = {"curl", "-s", "-D",           head,         "-o",
                                     body,   "-w", "%{http_code}", "--max-time", "30"};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.push_back(url(path, port));
    Process p(argv_with_path(argv), Env{}, dir_.file("curl.log"));
    CurlResult r;
    r.exit = p.wait_exit(deadline_in(std::chrono::seconds(40))).value_or(-1);
    r.status = std::atoi(slurp(dir_.file("curl.log")).c_str());
    r.headers = slurp(head);
    for (auto& c : r.headers) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    r.body = slurp(body);
    return r;
  }

  static std::vector<std::string> argv_with_path(std::vector<std::string> argv) {
    argv[0] = CURL_BIN;
    return argv;
  }

  static std::string slurp(const std::string& file) {
    std::ifstream f(file, std::ios::binary);
    std::ostringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }

  std::string dev(const std::string& path) const { return "/" + homd_->topic_id() + path; }

  Mosquitto broker_;
  ApiServer api_;
  TempDir dir_;
  std::unique_ptr<Homd> homd_;
  std::unique_ptr<Process> gateway_;
  int port_ = 0;
};

const std::string kOps = "Authorization: Bearer ops-token";
const std::string kAdmin = "Authorization: Bearer admin-token";

TEST_F(GatewayTest, GetThroughTheGateway) {
  auto r = curl({dev("/gps/latitude"), "-H", kOps});
  EXPECT_EQ(r.status, 200) << gateway_->log();
  EXPECT_EQ(Json::parse(r.body), Json({{"latitude", 48.85}}));
  EXPECT_NE(r.headers.find("content-type: application/json"), std::string::npos) << r.headers;
}

TEST_F(GatewayTest, BinaryBodyComesBackByteForByte) {
  auto r = curl({dev("/binary"), "-H", kOps});
  ASSERT_EQ(r.status, 200);
  std::string expected;
  for (int i = 0; i < 256; ++i) expected += static_cast<char>(i);
  EXPECT_EQ(r.body, expected);
}

// SPEC §6 "Mapping": the gateway asks homd for `raw` content, so a body comes back as the
// API sent it, whatever it looks like; statuses without a body keep their headers.
TEST_F(GatewayTest, BodiesComeBackByteForByte) {
  auto odd = curl({dev("/odd-json"), "-H", kAdmin});
  ASSERT_EQ(odd.status, 200) << gateway_->log();
  EXPECT_EQ(odd.body, R"({ "a" :1 })");
  EXPECT_NE(odd.headers.find("content-type: application/json"), std::string::npos) << odd.headers;
  EXPECT_NE(odd.headers.find("content-length: 10\r\n"), std::string::npos) << odd.headers;

  auto latin1 = curl({dev("/latin1"), "-H", kAdmin});
  EXPECT_EQ(latin1.body, std::string("caf\xE9"));
  EXPECT_NE(latin1.headers.find("content-type: text/plain"), std::string::npos);

  auto text = curl({dev("/text"), "-H", kOps});
  EXPECT_EQ(text.body, "hello");
  EXPECT_NE(text.headers.find("content-type: text/plain"), std::string::npos) << text.headers;

  auto empty = curl({dev("/empty"), "-H", kAdmin});
  EXPECT_EQ(empty.status, 200);
  EXPECT_EQ(empty.body, "");
  EXPECT_NE(empty.headers.find("content-length: 0\r\n"), std::string::npos) << empty.headers;
}

TEST_F(GatewayTest, HeadAndStatusesWithoutABody) {
  auto head = curl({dev("/text"), "-H", kOps, "-I"});
  EXPECT_EQ(head.exit, 0);
  EXPECT_EQ(head.status, 200) << gateway_->log();
  EXPECT_NE(head.headers.find("content-length: 5\r\n"), std::string::npos) << head.headers;
  EXPECT_NE(head.headers.find("content-type: text/plain"), std::string::npos) << head.headers;
  EXPECT_EQ(api_.requests().back().method, "HEAD");

  auto none = curl({dev("/no-content"), "-H", kAdmin, "-X", "DELETE"});
  EXPECT_EQ(none.exit, 0);
  EXPECT_EQ(none.status, 204);
  EXPECT_EQ(none.body, "");
  EXPECT_NE(none.headers.find("x-done: yes"), std::string::npos) << none.headers;
  EXPECT_EQ(none.headers.find("content-length"), std::string::npos) << none.headers;

  auto same = curl({dev("/not-modified"), "-H", kAdmin});
  EXPECT_EQ(same.exit, 0);
  EXPECT_EQ(same.status, 304);
  EXPECT_EQ(same.body, "");
  EXPECT_NE(same.headers.find("etag: \"v1\""), std::string::npos) << same.headers;
}

TEST_F(GatewayTest, SetCookieTwiceAndRepeatedHeaders) {
  auto r = curl({dev("/cookies"), "-H", kAdmin});
  ASSERT_EQ(r.status, 200);
  EXPECT_NE(r.headers.find("set-cookie: a=1; path=/\r\n"), std::string::npos) << r.headers;
  EXPECT_NE(r.headers.find("set-cookie: b=2; path=/\r\n"), std::string::npos) << r.headers;
  EXPECT_NE(r.headers.find("x-multi: one, two"), std::string::npos) << r.headers;
  EXPECT_EQ(r.body, "ok");
}

TEST_F(GatewayTest, RequestHeadersAndBodyReachTheApiButNotTheToken) {
  dir_.write("upload", std::string("\x00\x01\xFF binary", 10));
  auto r = curl({dev("/echo/up?x=1"), "-H", kAdmin, "-H", "X-Custom: yes", "--data-binary",
                 "@" + dir_.file("upload"), "-H", "Content-Type: application/octet-stream"});
  ASSERT_EQ(r.status, 200) << r.body;
  const auto seen = api_.requests().back();
  EXPECT_EQ(seen.method, "POST");
  EXPECT_EQ(seen.target, "/echo/up?x=1");
  EXPECT_EQ(seen.body, std::string("\x00\x01\xFF binary", 10));
  EXPECT_EQ(seen.headers.count("x-custom"), 1u);
  EXPECT_EQ(seen.headers.count("authorization"), 0u) << "the gateway's token must not leave it";
}

TEST_F(GatewayTest, TokensAreCheckedAndScoped) {
  EXPECT_EQ(curl({dev("/gps/latitude")}).status, 401);
  auto wrong = curl({dev("/gps/latitude"), "-H", "Authorization: Bearer nope"});
  EXPECT_EQ(wrong.status, 401);
  EXPECT_NE(wrong.headers.find("www-authenticate: bearer"), std::string::npos);
  EXPECT_EQ(curl({dev("/gps/latitude"), "-H", kOps, "-X", "POST"}).status, 403);
  EXPECT_EQ(curl({dev("/echo/x"), "-H", kOps}).status, 403);
  EXPECT_EQ(curl({"/other-device/gps", "-H", kOps}).status, 403);
  EXPECT_EQ(api_.count("/"), 0u) << "nothing refused may reach the device";
}

TEST_F(GatewayTest, StatusesOfItsOwn) {
  // Nobody serves this device and it has no presence: 504 after Hom-Timeout.
  auto timeout = curl({"/nobody-here/x", "-H", kAdmin, "-H", "Hom-Timeout: 500ms"});
  EXPECT_EQ(timeout.status, 504);
  EXPECT_NE(timeout.headers.find("hom-error:"), std::string::npos);
  // A status homd made itself passes through with its reason.
  auto bad = curl({dev("/%2e%2e/etc"), "-H", kAdmin});
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(bad.headers.find("hom-error:"), std::string::npos) << bad.headers;
  // The device goes offline (its presence says so): 503 with Retry-After.
  ASSERT_EQ(homd_->stop(), 0);
  auto offline = curl({dev("/gps/latitude"), "-H", kOps});
  EXPECT_EQ(offline.status, 503);
  EXPECT_NE(offline.headers.find("retry-after:"), std::string::npos) << offline.headers;
  auto metrics = curl({"/_hom/metrics"});
  EXPECT_NE(metrics.body.find("hom_gateway_requests_total{status=\"504\"} 1"), std::string::npos)
      << metrics.body;
  EXPECT_NE(metrics.body.find("hom_gateway_broker_connected 1"), std::string::npos);
}

TEST_F(GatewayTest, SigtermExitsZero) {
  EXPECT_EQ(curl({dev("/text"), "-H", kOps}).status, 200);
  EXPECT_EQ(gateway_->stop(), 0) << gateway_->log();
}

// ---- Hostile clients (SPEC §6) -------------------------------------------------------------

class GatewayLimitsTest : public GatewayTest {
 protected:
  Env gateway_env() const override {
    return {{"GATEWAY_REQUEST_TIMEOUT_MS", "1500"},
            {"GATEWAY_IDLE_TIMEOUT_MS", "700"},
            {"GATEWAY_MAX_BODY_BYTES", "1000"},
            {"GATEWAY_MAX_HEADER_BYTES", "2048"}};
  }

  std::string get(const std::string& path, const std::string& extra = "") const {
    return "GET " + path + " HTTP/1.1\r\nHost: gw\r\n" + kAdmin + "\r\n" + extra + "\r\n";
  }
};

TEST_F(GatewayLimitsTest, MalformedHttpIs400AndClosed) {
  for (const std::string garbage : {"GARBAGE\r\n\r\n", "GET /x HTTP/1.1\r\nNo colon here\r\n\r\n",
                                    "GET /x HTTP/1.1\r\nContent-Length: zz\r\n\r\n"}) {
    SCOPED_TRACE(garbage);
    RawClient c(port_);
    ASSERT_TRUE(c.send(garbage));
    const auto& got = c.read_until_closed();
    EXPECT_EQ(got.rfind("HTTP/1.1 400 ", 0), 0u) << got;
    EXPECT_NE(got.find("Connection: close"), std::string::npos) << got;
    EXPECT_TRUE(c.closed());
  }
}

TEST_F(GatewayLimitsTest, HeadersOverTheLimitAre431) {
  auto r = curl({dev("/text"), "-H", kAdmin, "-H", "X-Big: " + std::string(3000, 'b')});
  EXPECT_EQ(r.status, 431);
  EXPECT_NE(r.headers.find("hom-error:"), std::string::npos);
  EXPECT_EQ(api_.count("/text"), 0u);
  EXPECT_EQ(curl({dev("/text"), "-H", kAdmin, "-H", "X-Big: " + std::string(1000, 'b')}).status,
            200);
}

TEST_F(GatewayLimitsTest, BodyOverTheLimitIs413AndReadable) {
  dir_.write("big", std::string(1001, 'x'));
  auto r = curl({dev("/echo/x"), "-H", kAdmin, "--data-binary", "@" + dir_.file("big")});
  EXPECT_EQ(r.status, 413);
  EXPECT_NE(r.headers.find("hom-error:"), std::string::npos);
  EXPECT_EQ(api_.count("/echo/"), 0u);
  // Chunked: read whole, as it ends within 64 KiB (beyond, it would stream to the device),
  // and over the limit: the client still reads the 413.
  RawClient c(port_);
  ASSERT_TRUE(c.send("POST " + dev("/echo/x") +
                     " HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n" + kAdmin +
                     "\r\n\r\n"));
  for (int i = 0; i < 20 && !c.closed(); ++i) c.send("64\r\n" + std::string(100, 'y') + "\r\n");
  c.send("0\r\n\r\n");
  const auto& got = c.read_until_closed();
  EXPECT_EQ(got.rfind("HTTP/1.1 413 ", 0), 0u) << got;
  dir_.write("fits", std::string(1000, 'x'));
  EXPECT_EQ(curl({dev("/echo/x"), "-H", kAdmin, "--data-binary", "@" + dir_.file("fits")}).status,
            200);
}

// A client that sends half a request holds its connection until GATEWAY_REQUEST_TIMEOUT_MS,
// then gets a 408 and is closed; meanwhile other clients are served.
TEST_F(GatewayLimitsTest, SlowClientsGet408WithoutBlockingOthers) {
  RawClient slow_head(port_);
  ASSERT_TRUE(slow_head.send("GET " + dev("/text") + " HTTP/1.1\r\nHost: gw\r\n"));
  RawClient slow_body(port_);
  ASSERT_TRUE(slow_body.send("POST " + dev("/echo/x") + " HTTP/1.1\r\nHost: gw\r\n" + kAdmin +
                             "\r\nContent-Length: 10\r\n\r\nabc"));
  RawClient slow_chunked(port_);
  ASSERT_TRUE(slow_chunked.send("POST " + dev("/echo/x") + " HTTP/1.1\r\nHost: gw\r\n" + kAdmin +
                                "\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"));
  const auto started = Clock::now();
  // Served while both are stuck (well within the request timeout).
  for (int i = 0; i < 3; ++i) EXPECT_EQ(curl({dev("/text"), "-H", kOps}).status, 200);
  EXPECT_FALSE(slow_head.closed());
  for (auto* c : {&slow_head, &slow_body, &slow_chunked}) {
    const auto& got = c->read_until_closed();
    EXPECT_EQ(got.rfind("HTTP/1.1 408 ", 0), 0u) << got;
    EXPECT_TRUE(c->closed());
  }
  EXPECT_GE(Clock::now() - started, std::chrono::milliseconds(1400));
  EXPECT_EQ(api_.count("/echo/"), 0u);
}

// A kept-alive connection with no next request is closed after GATEWAY_IDLE_TIMEOUT_MS,
// without a response.
TEST_F(GatewayLimitsTest, IdleKeepAliveConnectionsAreClosed) {
  RawClient c(port_);
  ASSERT_TRUE(c.send(get(dev("/text"))));
  c.read_until("hello");
  const auto answered = Clock::now();
  const auto& got = c.read_until_closed();
  EXPECT_TRUE(c.closed());
  EXPECT_EQ(RawClient::occurrences(got, "HTTP/1.1 "), 1) << got;
  EXPECT_GE(Clock::now() - answered, std::chrono::milliseconds(600));
}

// Two requests written at once on one connection are both answered, in order, even when the
// first is the slower one.
TEST_F(GatewayLimitsTest, PipelinedRequestsAreAnsweredInOrder) {
  RawClient c(port_);
  ASSERT_TRUE(c.send(get(dev("/slow?ms=300")) + get(dev("/odd-json")) + get(dev("/text"))));
  const auto& got = c.read_until("HTTP/1.1 200 ", 3);
  ASSERT_EQ(RawClient::occurrences(got, "HTTP/1.1 200 "), 3) << got;
  c.read_until("hello");
  const auto slow = got.find("slow done"), odd = got.find(R"({ "a" :1 })"),
             hello = got.find("hello");
  ASSERT_NE(hello, std::string::npos) << got;
  EXPECT_LT(slow, odd) << got;
  EXPECT_LT(odd, hello) << got;
}

class GatewayConnectionsTest : public GatewayTest {
 protected:
  Env gateway_env() const override { return {{"GATEWAY_MAX_CONNECTIONS", "3"}}; }
};

TEST_F(GatewayConnectionsTest, MaxConnectionsBoundsOpenSockets) {
  std::vector<std::unique_ptr<RawClient>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<RawClient>(port_));
    ASSERT_TRUE(held.back()->send("GET /_hom/health HTTP/1.1\r\nHost: gw\r\n\r\n"));
    held.back()->read_until("ok\n");  // accepted and answered; now idle, kept alive
  }
  RawClient refused(port_);
  ASSERT_TRUE(refused.connected());  // the kernel's backlog accepts; the gateway closes it
  refused.send("GET /_hom/health HTTP/1.1\r\nHost: gw\r\n\r\n");
  EXPECT_EQ(refused.read_until_closed(), "");
  EXPECT_TRUE(refused.closed());
  held.pop_back();  // one slot free again, once the gateway has seen the close
  const auto deadline = deadline_in();
  int status = 0;
  while (Clock::now() < deadline && (status = curl({"/_hom/health"}).status) != 200)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling, with a deadline
  EXPECT_EQ(status, 200);
}

// ---- Never blocking the I/O thread (SPEC §6 "Scale") ------------------------------------------

// The first request to a device waits for its presence and reply subscriptions without holding
// the gateway's I/O thread: while a broker never acknowledges them, other requests are served.
// The broker is a stub that accepts MQTT connections and answers CONNECT and PINGREQ only.
class StubBroker {
 public:
  StubBroker() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    ::listen(listen_fd_, 16);
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~StubBroker() {
    ::shutdown(listen_fd_, SHUT_RDWR);
    ::close(listen_fd_);
    thread_.join();
    for (auto& t : clients_) t.join();
  }
  int port() const { return port_; }
  int subscribes() const { return subscribes_; }

 private:
  void serve() {
    for (;;) {
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) return;
      clients_.emplace_back([this, fd] { client(fd); });
    }
  }
  static bool read_n(int fd, std::string& out, std::size_t n) {
    out.resize(n);
    std::size_t got = 0;
    while (got < n) {
      const auto r = ::recv(fd, out.data() + got, n - got, 0);
      if (r <= 0) return false;
      got += static_cast<std::size_t>(r);
    }
    return true;
  }
  void client(int fd) {
    // Until the gateway closes the connection.
    std::string head, body;
    while (read_n(fd, head, 1)) {
      std::size_t length = 0, shift = 0;
      std::string byte;
      do {
        if (!read_n(fd, byte, 1)) return (void)::close(fd);
        length |= static_cast<std::size_t>(byte[0] & 0x7F) << shift;
        shift += 7;
      } while (byte[0] & 0x80);
      if (!read_n(fd, body, length)) break;
      const auto type = static_cast<unsigned char>(head[0]) >> 4;
      if (type == 1) {  // CONNECT: "\0\4MQTT", then the protocol level
        const bool v5 = body.size() > 6 && body[6] == 5;
        const std::string connack =
            v5 ? std::string("\x20\x03\x00\x00\x00", 5) : std::string("\x20\x02\x00\x00", 4);
        ::send(fd, connack.data(), connack.size(), MSG_NOSIGNAL);
      } else if (type == 12) {  // PINGREQ
        ::send(fd, "\xD0\x00", 2, MSG_NOSIGNAL);
      } else if (type == 8) {  // SUBSCRIBE: never acknowledged
        ++subscribes_;
      }
    }
    ::close(fd);
  }

  int listen_fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::vector<std::thread> clients_;  // accept thread only, joined after it
  std::atomic<int> subscribes_{0};
};

TEST_F(GatewayTest, WaitingForASubackDoesNotBlockOtherRequests) {
  StubBroker stub;
  const int port = free_port();
  Process gateway({HOM_GATEWAY_BIN},
                  Env{{"MQTT_HOST", "127.0.0.1"},
                      {"MQTT_PORT", std::to_string(stub.port())},
                      {"MQTT_TLS", "off"},
                      {"GATEWAY_LISTEN", "127.0.0.1:" + std::to_string(port)},
                      {"GATEWAY_AUTH", "none"},
                      {"SHUTDOWN_GRACE_MS", "0"}},
                  dir_.file("stub-gateway.log"));
  const auto deadline = deadline_in();
  while (Clock::now() < deadline && curl({"/_hom/health"}, port).status != 200)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling, with a deadline
  ASSERT_EQ(curl({"/_hom/health"}, port).status, 200) << gateway.log();
  // Two first requests (their subscriptions are never acknowledged) in the background...
  std::vector<std::unique_ptr<Process>> waiting;
  for (const char* device : {"/dev-a/x", "/dev-b/x"}) {
    waiting.push_back(std::make_unique<Process>(
        std::vector<std::string>{CURL_BIN, "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H",
                                 "Hom-Timeout: 4s", url(device, port)},
        Env{}, dir_.file(std::string("waiting") + device[5] + ".log")));
  }
  const auto wait_start = Clock::now();
  while (stub.subscribes() < 2 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling, with a deadline
  ASSERT_GE(stub.subscribes(), 2);
  // ...while the gateway answers others at once.
  for (int i = 0; i < 5; ++i) EXPECT_EQ(curl({"/_hom/health"}, port).status, 200);
  EXPECT_LT(Clock::now() - wait_start, std::chrono::milliseconds(3500));
  for (auto& p : waiting) {
    EXPECT_EQ(p->wait_exit(deadline_in()), 0);
    EXPECT_EQ(slurp(p->log_path()), "504");
  }
  EXPECT_EQ(gateway.stop(), 0) << gateway.log();
}

// A device whose retained presence says offline gets a 503 on the very first request of a
// gateway that has never seen it (the presence arrives before the reply topic's SUBACK).
TEST_F(GatewayTest, FirstRequestToAnOfflineDeviceIs503) {
  ASSERT_EQ(homd_->stop(), 0);
  const int port2 = free_port();
  auto fresh = start_gateway(port2, "fresh.log");
  ASSERT_TRUE(fresh);
  auto r = curl({dev("/text"), "-H", kOps}, port2);
  EXPECT_EQ(r.status, 503) << fresh->log();
  EXPECT_NE(r.headers.find("retry-after:"), std::string::npos) << r.headers;
}

// ---- Two instances (SPEC §6 "Correlation") ---------------------------------------------------

// Two gateways on the same broker and device: each receives the replies to its own requests
// and nothing else (its own MQTT 5 reply topic per device; no shared subscription).
TEST_F(GatewayTest, TwoInstancesEachReceiveOnlyTheirOwnReplies) {
  const int port2 = free_port();
  auto second = start_gateway(port2, "gateway2.log");
  ASSERT_TRUE(second);
  constexpr int kN = 10;
  for (int i = 0; i < kN; ++i) {
    ASSERT_EQ(curl({dev("/text"), "-H", kOps}).status, 200);
    ASSERT_EQ(curl({dev("/text"), "-H", kOps}, port2).status, 200);
  }
  // And a few more through the second only: the first must not see those replies either.
  for (int i = 0; i < 3; ++i) ASSERT_EQ(curl({dev("/text"), "-H", kOps}, port2).status, 200);
  EXPECT_EQ(metric("hom_gateway_mqtt_replies_total"), kN);
  EXPECT_EQ(metric("hom_gateway_mqtt_unmatched_total"), 0);
  EXPECT_EQ(metric("hom_gateway_mqtt_replies_total", port2), kN + 3);
  EXPECT_EQ(metric("hom_gateway_mqtt_unmatched_total", port2), 0);
  EXPECT_EQ(api_.count("/text"), 2u * kN + 3);
}

}  // namespace
}  // namespace hom::test
