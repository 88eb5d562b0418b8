#include "support/harness.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>

#include <gtest/gtest.h>
#include <httplib.h>

#include "hom/stream.hpp"

namespace hom::test {
namespace {

// Polling interval of the deadline loops below (log files, child exit, ports).
constexpr std::chrono::milliseconds kPoll{10};

// Writes to a socket whose peer is gone must fail with EPIPE, not kill the test.
const bool kSigpipeIgnored = [] {
  std::signal(SIGPIPE, SIG_IGN);
  return true;
}();

std::runtime_error failure(const std::string& what) { return std::runtime_error(what); }

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

int count_occurrences(std::string_view text, std::string_view needle) {
  if (needle.empty()) return 0;
  int n = 0;
  for (std::size_t at = text.find(needle); at != std::string_view::npos;
       at = text.find(needle, at + needle.size())) {
    ++n;
  }
  return n;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

// Serialises a JSON document whose strings may hold bytes that are not UTF-8.
std::string dump_lenient(const Json& doc) {
  return doc.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace

std::string unique_name(std::string_view prefix) {
  static std::atomic<int> counter{0};
  std::string name(prefix);
  if (const auto* info = ::testing::UnitTest::GetInstance()->current_test_info()) {
    name += std::string(info->test_suite_name()) + "-" + info->name() + "-";
  }
  name += std::to_string(::getpid()) + "-" + std::to_string(++counter);
  for (char& c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') c = '-';
  }
  return name;
}

std::string base64_encode(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const auto n = (static_cast<unsigned char>(bytes[i]) << 16) |
                   (static_cast<unsigned char>(bytes[i + 1]) << 8) |
                   static_cast<unsigned char>(bytes[i + 2]);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += kAlphabet[n & 63];
  }
  if (i + 1 == bytes.size()) {
    const auto n = static_cast<unsigned char>(bytes[i]) << 16;
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += "==";
  } else if (i + 2 == bytes.size()) {
    const auto n = (static_cast<unsigned char>(bytes[i]) << 16) |
                   (static_cast<unsigned char>(bytes[i + 1]) << 8);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += '=';
  }
  return out;
}

std::string tail(const std::string& text, std::size_t lines) {
  std::size_t at = text.size();
  if (at > 0 && text[at - 1] == '\n') --at;
  for (std::size_t n = 0; n < lines && at > 0; ++n) {
    at = text.rfind('\n', at - 1);
    if (at == std::string::npos) return text;
  }
  return at == 0 ? text : text.substr(at + 1);
}

// ---------------------------------------------------------------------------------------
// TempDir

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string templ = std::string(base && *base ? base : "/tmp") + "/hom-it-XXXXXX";
  if (::mkdtemp(templ.data()) == nullptr) {
    throw std::system_error(errno, std::generic_category(), "mkdtemp " + templ);
  }
  path_ = templ;
}

TempDir::~TempDir() {
  if (std::getenv("HOM_TEST_KEEP") != nullptr) return;
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

void TempDir::write(std::string_view name, std::string_view contents) const {
  std::ofstream out(file(name), std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  if (!out) throw failure("cannot write " + file(name));
}

// ---------------------------------------------------------------------------------------
// Ports

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int err = errno;
    ::close(fd);
    throw std::system_error(err, std::generic_category(), "bind 127.0.0.1:0");
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

bool port_accepts(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// ---------------------------------------------------------------------------------------
// Process

std::vector<std::string> child_environment(const Env& env) {
  Env full = env;
  for (const char* name : {"ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS"}) {
    if (const char* value = std::getenv(name); value != nullptr && full.count(name) == 0) {
      full[name] = value;
    }
  }
  std::vector<std::string> out;
  for (const auto& [name, value] : full) out.push_back(name + "=" + value);
  return out;
}

std::vector<char*> exec_vector(std::vector<std::string>& strings) {
  std::vector<char*> out;
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

Process::Process(std::vector<std::string> argv, const Env& env, std::string log_path)
    : log_path_(std::move(log_path)) {
  (void)kSigpipeIgnored;
  if (argv.empty() || argv[0].empty() || argv[0][0] != '/') {
    throw failure("Process: argv[0] must be an absolute path");
  }
  // Everything the child needs is built before fork(): after it, only async-signal-safe
  // calls are allowed, because the test process has threads (Paho, httplib).
  std::vector<std::string> env_strings = child_environment(env);
  std::vector<char*> c_argv = exec_vector(argv);
  std::vector<char*> c_env = exec_vector(env_strings);

  const int log_fd =
      ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) throw std::system_error(errno, std::generic_category(), "open " + log_path_);
  const pid_t parent = ::getpid();
  const long max_fd = ::sysconf(_SC_OPEN_MAX);

  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(log_fd);
    throw std::system_error(err, std::generic_category(), "fork");
  }
  if (pid == 0) {
    // Die with the test process, even when it is SIGKILLed by a ctest timeout.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGPIPE, SIG_DFL);  // an ignored disposition would survive execve
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    // No listening socket of the test (the API server, a reserved port) may leak into a
    // broker or daemon that outlives it.
    if (::close_range(3, ~0U, 0) != 0) {
      for (long fd = 3; fd < max_fd; ++fd) ::close(static_cast<int>(fd));
    }
    ::execve(c_argv[0], c_argv.data(), c_env.data());
    static constexpr char kMsg[] = "harness: execve failed\n";
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, kMsg, sizeof kMsg - 1);
    ::_exit(127);
  }
  ::close(log_fd);
  pid_ = pid;
}

Process::~Process() { stop(); }

bool Process::running() {
  if (status_) return false;
  int status = 0;
  const pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return false;
  }
  if (r < 0 && errno == ECHILD) {
    status_ = -1;  // not ours any more; should not happen
    return false;
  }
  return true;
}

std::optional<int> Process::wait_exit(Clock::time_point deadline) {
  while (running()) {
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(kPoll);
  }
  return status_;
}

std::optional<int> Process::stop(std::chrono::milliseconds grace) {
  if (!running()) return status_;
  ::kill(pid_, SIGTERM);
  if (auto status = wait_exit(Clock::now() + grace)) return status;
  ADD_FAILURE() << log_path_ << ": PID " << pid_ << " ignored SIGTERM for " << grace.count()
                << " ms; sending SIGKILL";
  kill9();
  return status_;
}

void Process::kill9() {
  if (!running()) return;
  ::kill(pid_, SIGKILL);
  wait_exit(Clock::now() + std::chrono::seconds(30));
}

std::string Process::log() const { return read_file(log_path_); }

int Process::count_in_log(std::string_view needle) const {
  return count_occurrences(log(), needle);
}

int Process::count_lines_with(const std::vector<std::string>& parts) const {
  std::istringstream in(log());
  int n = 0;
  for (std::string line; std::getline(in, line);) {
    if (std::all_of(parts.begin(), parts.end(), [&](const std::string& part) {
          return line.find(part) != std::string::npos;
        })) {
      ++n;
    }
  }
  return n;
}

template <typename Pred>
bool Process::wait_log(Pred done, Clock::time_point deadline) {
  for (;;) {
    const bool alive = running();
    if (done()) return true;
    if (!alive || Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(kPoll);
  }
}

bool Process::wait_for_log(std::string_view needle, int count, Clock::time_point deadline) {
  return wait_log([&] { return count_in_log(needle) >= count; }, deadline);
}

bool Process::wait_for_log_line(const std::vector<std::string>& parts, int count,
                                Clock::time_point deadline) {
  return wait_log([&] { return count_lines_with(parts) >= count; }, deadline);
}

// ---------------------------------------------------------------------------------------
// Mosquitto

Mosquitto::Mosquitto(Options options) : options_(std::move(options)) {
  port_ = options_.port != 0 ? options_.port : free_port();
  if (options_.tls) {
    do {
      tls_port_ = free_port();
    } while (tls_port_ == port_);
  }
  if (options_.start) start();
}

Mosquitto::~Mosquitto() {
  if (process_) process_->stop();
}

void Mosquitto::write_config() const {
  std::ostringstream conf;
  conf << "# Written by the integration test harness.\n"
       << "per_listener_settings false\n"
       << "allow_anonymous true\n"
       // Run as root, Mosquitto would switch to its own user, which cannot write the 0700
       // TempDir: keep the user when persistence needs to write there.
       << (options_.persistence
               ? "persistence true\npersistence_location " + dir_.path() + "/\nuser root\n"
               : std::string("persistence false\n"))
       << "max_inflight_messages 0\n"
       << "max_queued_messages 100000\n"
       << "log_dest stderr\n"  // unbuffered: tests read the log while it runs
       << "log_type all\n"
       << "log_timestamp_format %H:%M:%S\n"
       << "connection_messages true\n"
       << "listener " << port_ << " 127.0.0.1\n";
  for (const auto& line : options_.extra_config) conf << line << "\n";
  if (options_.tls) {
    conf << "listener " << tls_port_ << " 127.0.0.1\n"
         << "cafile " << options_.tls->ca_file << "\n"
         << "certfile " << options_.tls->cert_file << "\n"
         << "keyfile " << options_.tls->key_file << "\n";
  }
  dir_.write("mosquitto.conf", conf.str());
}

bool Mosquitto::try_start() {
  write_config();
  ++starts_;
  process_ = std::make_unique<Process>(
      std::vector<std::string>{MOSQUITTO_BIN, "-c", dir_.file("mosquitto.conf")}, Env{},
      dir_.file("mosquitto-" + std::to_string(starts_) + ".log"));
  const auto deadline = deadline_in();
  for (;;) {
    if (!process_->running()) return false;  // e.g. "Address already in use"
    if (port_accepts(port_) && (!options_.tls || port_accepts(tls_port_))) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(kPoll);
  }
}

void Mosquitto::start() {
  if (process_ && process_->running()) return;
  // The ports stay the same when the caller chose them or once the broker has run (a
  // restart must come back where the clients are).
  const bool fixed = options_.port != 0 || starts_ > 0;
  for (int attempt = 1;; ++attempt) {
    if (try_start()) return;
    const std::string log = process_->log();
    process_->kill9();
    process_.reset();
    if (fixed || attempt == 5) {
      throw failure("mosquitto did not start on 127.0.0.1:" + std::to_string(port_) + ":\n" +
                    tail(log));
    }
    port_ = free_port();
    if (options_.tls) {
      do {
        tls_port_ = free_port();
      } while (tls_port_ == port_);
    }
  }
}

void Mosquitto::stop() {
  if (!process_) return;
  process_->stop();
  process_.reset();
}

void Mosquitto::restart() {
  stop();
  start();
}

std::string Mosquitto::log() const {
  std::string all;
  for (int i = 1; i <= starts_; ++i) {
    all += read_file(dir_.file("mosquitto-" + std::to_string(i) + ".log"));
  }
  return all;
}

// ---------------------------------------------------------------------------------------
// ApiServer

namespace {}  // namespace

std::string pattern_bytes(std::uint64_t offset, std::size_t length) {
  std::string out(length, '\0');
  for (std::size_t i = 0; i < length; ++i) out[i] = static_cast<char>((offset + i) % 251);
  return out;
}

std::string pattern_sha256(std::uint64_t size) {
  Sha256 sha;
  constexpr std::size_t kBlock = 251 * 4096;  // a whole number of periods
  const std::string block = pattern_bytes(0, kBlock);
  for (std::uint64_t done = 0; done < size;) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(kBlock, size - done));
    sha.update(std::string_view(block.data(), n));
    done += n;
  }
  return sha.hex();
}

bool ApiServer::follow_done() const {
  std::lock_guard<std::mutex> lock(mu_);
  return follow_done_;
}

namespace {

SeenRequest seen_from(const httplib::Request& req) {
  SeenRequest seen;
  seen.method = req.method;
  seen.path = req.path;
  seen.target = req.target;
  seen.params = req.params;
  for (const auto& [name, value] : req.headers) {
    // httplib adds the peer and local addresses as pseudo headers.
    if (name == "REMOTE_ADDR" || name == "REMOTE_PORT" || name == "LOCAL_ADDR" ||
        name == "LOCAL_PORT") {
      continue;
    }
    seen.headers.emplace(lower(name), value);
  }
  seen.body = req.body;
  return seen;
}

Json echo_document(const SeenRequest& seen) {
  Json params = Json::object();
  for (const auto& [name, value] : seen.params) params[name].push_back(value);
  Json headers = Json::object();
  for (const auto& [name, value] : seen.headers) {
    if (headers.contains(name)) {
      headers[name] = headers[name].get<std::string>() + ", " + value;
    } else {
      headers[name] = value;
    }
  }
  return Json{{"method", seen.method},
              {"path", seen.path},
              {"target", seen.target},
              {"params", params},
              {"headers", headers},
              {"body", seen.body},
              {"body_base64", base64_encode(seen.body)}};
}

}  // namespace

ApiServer::ApiServer(int port) : server_(std::make_unique<httplib::Server>()) {
  // Enough threads for every worker of homd plus the /slow calls a test holds.
  server_->new_task_queue = [] { return new httplib::ThreadPool(32); };
  // An idle keep-alive connection holds a server thread; keep stop() short.
  server_->set_keep_alive_timeout(2);
  routes();
  const auto deadline = deadline_in();
  if (port == 0) {
    port_ = server_->bind_to_any_port("127.0.0.1");
  } else {
    // The same port again (a restarted API): it may take a moment to be free again.
    while (!server_->bind_to_port("127.0.0.1", port)) {
      if (Clock::now() >= deadline) throw failure("cannot bind 127.0.0.1:" + std::to_string(port));
      std::this_thread::sleep_for(kPoll);
    }
    port_ = port;
  }
  if (port_ <= 0) throw failure("ApiServer: cannot bind 127.0.0.1");
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  while (!server_->is_running()) {
    if (Clock::now() >= deadline) {
      stop();
      throw failure("ApiServer: not running after bind");
    }
    std::this_thread::sleep_for(kPoll);
  }
}

ApiServer::~ApiServer() { stop(); }

void ApiServer::stop() {
  release_slow();  // a blocked /slow handler would keep the server thread alive
  if (!thread_.joinable()) return;
  server_->stop();
  thread_.join();
}

void ApiServer::record(const SeenRequest& seen) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    seen_.push_back(seen);
  }
  cv_.notify_all();
}

std::vector<SeenRequest> ApiServer::requests() const {
  std::lock_guard<std::mutex> lock(mu_);
  return seen_;
}

std::size_t ApiServer::count(std::string_view path_prefix) const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<std::size_t>(std::count_if(seen_.begin(), seen_.end(), [&](const auto& s) {
    return s.path.compare(0, path_prefix.size(), path_prefix) == 0;
  }));
}

bool ApiServer::wait_requests(std::string_view path_prefix, std::size_t n,
                              Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_until(lock, deadline, [&] {
    return static_cast<std::size_t>(std::count_if(seen_.begin(), seen_.end(), [&](const auto& s) {
             return s.path.compare(0, path_prefix.size(), path_prefix) == 0;
           })) >= n;
  });
}

std::size_t ApiServer::slow_arrivals() const {
  std::lock_guard<std::mutex> lock(mu_);
  return slow_arrivals_;
}

bool ApiServer::wait_slow_arrivals(std::size_t n, Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_until(lock, deadline, [&] { return slow_arrivals_ >= n; });
}

void ApiServer::release_slow() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    slow_released_ = true;
  }
  cv_.notify_all();
}

void ApiServer::routes() {
  using httplib::Request;
  using httplib::Response;
  using Handler = httplib::Server::Handler;
  // Every route records the request (body included) before answering.
  auto recorded = [this](Handler handler) -> Handler {
    return [this, handler](const Request& req, Response& res) {
      record(seen_from(req));
      handler(req, res);
    };
  };
  auto any = [&](const std::string& pattern, Handler handler) {
    const Handler h = recorded(std::move(handler));
    server_->Get(pattern, h);  // GET and HEAD
    server_->Post(pattern, h);
    server_->Put(pattern, h);
    server_->Patch(pattern, h);
    server_->Delete(pattern, h);
    server_->Options(pattern, h);
  };
  auto get = [&](const std::string& pattern, Handler handler) {
    server_->Get(pattern, recorded(std::move(handler)));
  };

  get("/gps/latitude", [](const Request&, Response& res) {
    res.set_content(R"({"latitude": 48.85})", "application/json");
  });
  server_->Post("/food/dessert", recorded([](const Request& req, Response& res) {
                  const Json body = Json::parse(req.body, nullptr, false);
                  if (body.is_object() && body.contains("name") && body["name"].is_string()) {
                    res.status = 201;
                    res.set_content("Dessert " + body["name"].get<std::string>() + " created",
                                    "text/plain");
                  } else {
                    res.status = 400;
                    res.set_content("expected a JSON object with a name", "text/plain");
                  }
                }));
  any(R"(/echo/.*)", [](const Request& req, Response& res) {
    res.set_content(dump_lenient(echo_document(seen_from(req))), "application/json");
  });
  any(R"(/status/(\d+))", [](const Request& req, Response& res) {
    res.status = std::stoi(req.matches[1]);
    if (res.status >= 200 && res.status != 204 && res.status != 304) {
      res.set_content("status " + std::to_string(res.status), "text/plain");
    }
  });
  any("/slow", [this](const Request& req, Response& res) {
    const auto ms = req.has_param("ms") ? std::stol(req.get_param_value("ms")) : 60000L;
    const auto until = Clock::now() + std::chrono::milliseconds(ms);
    {
      std::unique_lock<std::mutex> lock(mu_);
      ++slow_arrivals_;
      cv_.notify_all();
      cv_.wait_until(lock, until, [this] { return slow_released_; });
    }
    res.set_content("slow done", "text/plain");
  });
  get("/binary", [](const Request&, Response& res) {
    std::string bytes;
    for (int i = 0; i < 256; ++i) bytes += static_cast<char>(i);
    res.set_content(bytes, "application/octet-stream");
  });
  get("/latin1",
      [](const Request&, Response& res) { res.set_content(std::string("caf\xE9"), "text/plain"); });
  get("/empty", [](const Request&, Response& res) { res.status = 200; });
  get("/text", [](const Request&, Response& res) { res.set_content("hello", "text/plain"); });
  get("/redirect", [](const Request&, Response& res) { res.set_redirect("/text", 302); });
  get("/cookies", [](const Request&, Response& res) {
    res.headers.emplace("Set-Cookie", "a=1; Path=/");
    res.headers.emplace("Set-Cookie", "b=2; Path=/");
    res.headers.emplace("X-Multi", "one");
    res.headers.emplace("X-Multi", "two");
    res.set_content("ok", "text/plain");
  });
  get("/big", [](const Request& req, Response& res) {
    const auto bytes = req.has_param("bytes") ? std::stoul(req.get_param_value("bytes")) : 0UL;
    res.set_content(std::string(bytes, 'x'), "text/plain");
  });
  // Streams (SPEC §7): a body of any size made as it is sent, byte i being i % 251.
  get("/blob", [](const Request& req, Response& res) {
    const auto size = req.has_param("size") ? std::stoull(req.get_param_value("size")) : 0ULL;
    res.set_content_provider(static_cast<std::size_t>(size), "application/octet-stream",
                             [](std::size_t offset, std::size_t length, httplib::DataSink& sink) {
                               const auto piece =
                                   pattern_bytes(offset, std::min<std::size_t>(length, 64 * 1024));
                               return sink.write(piece.data(), piece.size());
                             });
  });
  // A streaming API: `lines` lines, one every `interval_ms` (chunked); follow_done() tells
  // whether the last one was written.
  get("/follow", [this](const Request& req, Response& res) {
    const auto lines = req.has_param("lines") ? std::stoul(req.get_param_value("lines")) : 10UL;
    const auto interval = std::chrono::milliseconds(
        req.has_param("interval_ms") ? std::stol(req.get_param_value("interval_ms")) : 100L);
    {
      std::lock_guard<std::mutex> lock(mu_);
      follow_done_ = false;
    }
    res.set_chunked_content_provider(
        "text/plain",
        [this, lines, interval, n = 0UL](std::size_t, httplib::DataSink& sink) mutable {
          if (n > 0) std::this_thread::sleep_for(interval);  // the API's own pace
          const std::string line = "line " + std::to_string(n) + "\n";
          if (!sink.write(line.data(), line.size())) return false;
          if (++n >= lines) {
            sink.done();
            std::lock_guard<std::mutex> lock(mu_);
            follow_done_ = true;
          }
          return true;
        });
  });
  // Takes a body of any size as it arrives: {"length": n, "sha256": "<hex>"}.
  const auto upload = [this](const Request& req, Response& res,
                             const httplib::ContentReader& reader) {
    record(seen_from(req));
    Sha256 sha;
    std::uint64_t length = 0;
    reader([&](const char* data, std::size_t n) {
      sha.update(std::string_view(data, n));
      length += n;
      return true;
    });
    res.set_content(Json{{"length", length}, {"sha256", sha.hex()}}.dump(), "application/json");
  };
  server_->Put("/upload", upload);
  server_->Post("/upload", upload);
  get("/not-json",
      [](const Request&, Response& res) { res.set_content("{not json", "application/json"); });
  get("/odd-json",
      [](const Request&, Response& res) { res.set_content(R"({ "a" :1 })", "application/json"); });
  any("/no-content", [](const Request&, Response& res) {
    res.status = 204;
    res.set_header("X-Done", "yes");
  });
  get("/not-modified", [](const Request&, Response& res) {
    res.status = 304;
    res.set_header("ETag", "\"v1\"");
  });
}

// ---------------------------------------------------------------------------------------
// MqttClient

MqttClient::MqttClient(const std::string& server_uri, std::string topic_start, std::string topic_id,
                       const std::string& ca_file)
    : start_(std::move(topic_start)), id_(std::move(topic_id)) {
  // Paho refuses a publish (MQTT error -12, "No more messages can be buffered") once 100
  // are queued, even while connected: the fault tests queue hundreds, some of 3 MB.
  // No persistence argument: Paho keeps nothing on disk.
  client_ = std::make_unique<mqtt::async_client>(server_uri, unique_name("test-"),
                                                 mqtt::create_options(MQTTVERSION_3_1_1, 100000));
  client_->set_message_callback([this](mqtt::const_message_ptr msg) { on_message(msg); });

  auto options = mqtt::connect_options_builder()
                     .mqtt_version(MQTTVERSION_3_1_1)
                     .clean_session(true)
                     .keep_alive_interval(std::chrono::seconds(30))
                     .connect_timeout(std::chrono::seconds(10));
  if (!ca_file.empty()) {
    options.ssl(
        mqtt::ssl_options_builder().trust_store(ca_file).enable_server_cert_auth(true).finalize());
  }
  if (!client_->connect(options.finalize())->wait_for(kDefaultWait)) {
    throw failure("test client: no CONNACK from " + server_uri);
  }
  const std::string filter = start_ + "/res/" + id_ + "/#";
  auto sub = client_->subscribe(filter, 2);
  if (!sub->wait_for(kDefaultWait)) throw failure("test client: no SUBACK for " + filter);
  // No check of the granted QoS: with MQTT 3.1.1, Paho C++ 1.2.0 reports a garbage reason
  // code for a single-topic SUBACK (seen: 1441093993, which looks like part of a pointer).
  // A reply that arrives at QoS 2 proves the grant anyway.
}

MqttClient::~MqttClient() {
  try {
    if (client_->is_connected()) client_->disconnect()->wait_for(std::chrono::seconds(5));
  } catch (const mqtt::exception&) {
    // The broker may be gone already (a restart test); nothing to clean up then.
  }
  // Destroy the Paho client (and its callback thread) before the members it calls into.
  client_.reset();
}

std::string MqttClient::request_topic(std::string_view verb, std::string_view path) const {
  std::string topic = start_ + "/req/" + id_ + "/" + std::string(verb);
  if (!path.empty()) topic += "/" + std::string(path);
  return topic;
}

std::string MqttClient::reply_topic(std::string_view verb, std::string_view path) const {
  std::string topic = start_ + "/res/" + id_ + "/" + std::string(verb);
  if (!path.empty()) topic += "/" + std::string(path);
  return topic;
}

mqtt::delivery_token_ptr MqttClient::publish_async(const std::string& topic,
                                                   const std::string& bytes, int qos,
                                                   bool retained) {
  return client_->publish(mqtt::make_message(topic, bytes.data(), bytes.size(), qos, retained));
}

void MqttClient::publish_raw(const std::string& topic, const std::string& bytes, int qos,
                             bool retained) {
  if (!publish_async(topic, bytes, qos, retained)->wait_for(kDefaultWait)) {
    throw failure("test client: publish to " + topic + " not acknowledged");
  }
}

void MqttClient::request(std::string_view verb, std::string_view path, const Json& payload) {
  publish_raw(request_topic(verb, path), payload.is_null() ? std::string() : payload.dump());
}

std::optional<Reply> MqttClient::call(std::string_view verb, std::string_view path, Json payload,
                                      Clock::time_point deadline) {
  if (payload.is_null()) payload = Json::object();
  if (!payload.contains("req_id")) payload["req_id"] = unique_name("req-");
  request(verb, path, payload);
  return wait_reply(payload["req_id"], deadline);
}

void MqttClient::on_message(mqtt::const_message_ptr msg) {
  Reply reply;
  reply.topic = msg->get_topic();
  reply.payload = msg->to_string();
  reply.doc = Json::parse(reply.payload, nullptr, false);
  reply.qos = msg->get_qos();
  reply.retained = msg->is_retained();
  {
    std::lock_guard<std::mutex> lock(mu_);
    replies_.push_back(std::move(reply));
  }
  cv_.notify_all();
}

std::optional<Reply> MqttClient::wait_reply(const Json& req_id, Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  std::optional<Reply> found;
  cv_.wait_until(lock, deadline, [&] {
    for (const auto& reply : replies_) {
      if (reply.doc.is_object() && reply.doc.contains("req_id") && reply.doc["req_id"] == req_id) {
        found = reply;
        return true;
      }
    }
    return false;
  });
  return found;
}

std::optional<Reply> MqttClient::wait_topic(const std::string& topic, Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  std::optional<Reply> found;
  cv_.wait_until(lock, deadline, [&] {
    for (const auto& reply : replies_) {
      if (reply.topic == topic) {
        found = reply;
        return true;
      }
    }
    return false;
  });
  return found;
}

bool MqttClient::wait_count(std::size_t n, Clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_until(lock, deadline, [&] { return replies_.size() >= n; });
}

std::vector<Reply> MqttClient::replies() const {
  std::lock_guard<std::mutex> lock(mu_);
  return replies_;
}

std::size_t MqttClient::count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return replies_.size();
}

bool MqttClient::connected() const { return client_->is_connected(); }

// ---------------------------------------------------------------------------------------
// Homd

Homd::Homd(int mqtt_port, const std::string& http_base_url, const Env& overrides)
    : start_("hom-it/" + std::to_string(::getpid())), id_(unique_name("dev-")) {
  env_ = {{"MQTT_HOST", "127.0.0.1"},
          {"MQTT_PORT", std::to_string(mqtt_port)},
          {"MQTT_TLS", "off"},
          {"MQTT_TOPIC_START", start_},
          {"MQTT_TOPIC_ID", id_},
          {"HTTP_BASE_URL", http_base_url},
          {"LOG_LEVEL", "debug"},
          // As systemd/homd.service runs it.
          {"GNUTLS_NO_IMPLICIT_INIT", "1"}};
  for (const auto& [name, value] : overrides) env_[name] = value;
  start_ = env_["MQTT_TOPIC_START"];
  id_ = env_["MQTT_TOPIC_ID"];
  process_ =
      std::make_unique<Process>(std::vector<std::string>{HOMD_BIN}, env_, dir_.file("homd.log"));
}

Homd::~Homd() {
  // SPEC §5: SIGTERM drains and exits 0. Checked for every homd a test leaves running, so a
  // crash at shutdown or a sanitizer report (HOM_SANITIZE) fails the test that caused it.
  if (process_->running()) {  // else the test stopped or killed it itself
    const auto status = process_->stop();
    EXPECT_EQ(status, 0) << "homd did not exit 0 on SIGTERM\n" << log_tail();
  }
  // Sanitizer builds: a report in homd's output fails the test, however homd ended.
  const std::string text = log();
  for (const char* marker : {"ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                             "WARNING: ThreadSanitizer", "runtime error:"}) {
    const auto at = text.find(marker);
    EXPECT_EQ(at, std::string::npos) << "sanitizer report in homd's output:\n"
                                     << text.substr(at == std::string::npos ? 0 : at, 6000);
  }
}

bool Homd::wait_subscribed(int count, Clock::time_point deadline) {
  return process_->wait_for_log("subscribed to ", count, deadline);
}

std::string Homd::log_tail(std::size_t lines) const {
  std::string text = tail(log(), lines);
  if (!process_->running()) {
    const auto status = process_->wait_exit(Clock::now());
    text += "[homd has exited: status " + (status ? std::to_string(*status) : "?") + "]\n";
  }
  return text;
}

std::optional<int> Homd::stop() { return process_->stop(); }

}  // namespace hom::test
