// hom-loadgen: a closed-loop MQTT load generator for homd and anything that answers like it.
//
// `-c` virtual clients each keep exactly one request in flight: publish, wait for the reply
// (matched by its unique req_id) or the timeout, publish the next. Every reply is checked
// (topic, status, content); the result is one JSON line on stdout.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <netinet/in.h>
#include <sys/socket.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "fixtures.hpp"
#include "paho_client.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;
using namespace hom::bench;

struct Options {
  int concurrency = 1;
  double duration_s = 10;
  double warmup_s = 0.5;
  double timeout_s = 5;
  int qos = 1;
  std::string host = "127.0.0.1";
  int port = 1883;
  std::string start = "v1";
  std::string id = "itsme";
  std::vector<std::string> mix = {"get", "post", "bin"};
  int burst = 0;
  double probe_s = 0;
  bool nodelay = true;
};

// One kind of request: where it goes, what it carries, what must come back.
struct Kind {
  std::string name;
  std::string request_topic;
  std::string response_topic;
  std::string payload_tail;  // after the req_id: `}` or `,"body":...}`
  int status = 200;
  json content;
  bool base64 = false;
};

// Request states, one byte per request ever sent.
enum State : std::uint8_t { kInFlight, kAnswered, kTimedOut, kLate };

struct Slot {
  std::vector<std::uint8_t> states;  // by sequence number
  std::uint32_t seq = 0;             // the current request's sequence number
  bool waiting = false;              // the current request is in flight
  Clock::time_point sent_at{};
  std::size_t kind = 0;
};

struct Counters {
  std::uint64_t sent = 0, ok = 0, errors = 0, timeouts = 0, duplicates = 0, late = 0;
  std::uint64_t unexpected = 0, publish_failures = 0, ok_in_window = 0;
  std::string first_error;
};

std::string trim_slashes(const std::string& s) {
  const auto b = s.find_first_not_of('/');
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of('/') - b + 1);
}

class LoadGen {
 public:
  explicit LoadGen(const Options& o) : o_(o), timeout_(to_duration(o.timeout_s)) {
    const std::string start = trim_slashes(o.start), id = trim_slashes(o.id);
    req_prefix_ = start + "/req/" + id + "/";
    res_prefix_ = start + "/res/" + id + "/";
    res_filter_ = res_prefix_ + "#";
    for (const auto& name : o.mix) kinds_.push_back(make_kind(name));
    std::random_device rd;
    nonce_ = std::to_string(getpid()) + "x" + std::to_string(rd() % 100000);
  }

  int run() {
    PahoClient client(
        o_.host, o_.port, "hom-loadgen-" + nonce_,
        [this](std::string_view t, std::string_view p, int, bool) { on_reply(t, p); });
    client_ = &client;
    client.connect(o_.nodelay, std::chrono::seconds(10));
    // Subscribe before the first request, so no reply can slip past.
    client.subscribe(res_filter_, o_.qos, std::chrono::seconds(10));

    if (o_.probe_s > 0 && !probe()) {
      std::fprintf(stderr, "hom-loadgen: no valid reply within %.1f s of probing %s\n", o_.probe_s,
                   req_prefix_.c_str());
      client.disconnect(std::chrono::milliseconds(500));
      return 1;
    }
    if (o_.duration_s <= 0 && o_.burst == 0) {
      client.disconnect(std::chrono::milliseconds(500));
      return 0;
    }

    const bool burst = o_.burst > 0;
    const std::size_t slots = burst ? static_cast<std::size_t>(o_.burst) : o_.concurrency;
    started_ = Clock::now();
    window_start_ = burst ? started_ : started_ + to_duration(o_.warmup_s);
    window_end_ = window_start_ + to_duration(o_.duration_s);
    {
      std::lock_guard<std::mutex> lock(mu_);
      slots_.resize(slots);
      issuing_ = !burst;
    }
    for (std::size_t s = 0; s < slots; ++s) issue(s);

    // The timer loop: timeouts and the end of the window. Bounded by the window plus one
    // timeout for the drain.
    Clock::time_point drain_end{};
    const auto tick = std::chrono::milliseconds(burst ? 20 : 2);
    bool done = false;
    while (!done) {
      std::this_thread::sleep_for(tick);
      const auto now = Clock::now();
      std::vector<std::size_t> reissue;
      std::unique_lock<std::mutex> lock(mu_);
      if (issuing_ && now >= window_end_) {
        issuing_ = false;
        drain_end = now + timeout_;
      }
      std::size_t waiting = 0;
      for (std::size_t s = 0; s < slots_.size(); ++s) {
        Slot& slot = slots_[s];
        if (!slot.waiting) continue;
        if (now - slot.sent_at >= timeout_) {
          slot.waiting = false;
          slot.states[slot.seq] = kTimedOut;
          ++n_.timeouts;
          if (issuing_) reissue.push_back(s);
        } else {
          ++waiting;
        }
      }
      if (burst) {
        done = now >= window_end_ || waiting == 0;
      } else {
        done = !issuing_ && (waiting == 0 || now >= drain_end);
      }
      lock.unlock();  // issue() takes the lock itself
      for (auto s : reissue) issue(s);
    }
    finished_ = Clock::now();
    client.disconnect(std::chrono::milliseconds(1000));
    client_ = nullptr;
    lost_connection_ = client.lost();
    print_result();
    return 0;
  }

 private:
  static Clock::duration to_duration(double seconds) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  }

  Kind make_kind(const std::string& name) const {
    Kind k;
    k.name = name;
    if (name == "get") {
      k.request_topic = req_prefix_ + "get/" + kLatitudePath;
      k.response_topic = res_prefix_ + "get/" + kLatitudePath;
      k.payload_tail = "}";
      k.content = json::parse(kLatitudeJson);
    } else if (name == "post") {
      k.request_topic = req_prefix_ + "post/" + kDessertPath;
      k.response_topic = res_prefix_ + "post/" + kDessertPath;
      k.payload_tail = std::string(",\"body\":") + kDessertBody + "}";
      k.status = kDessertStatus;
      k.content = kDessertText;
    } else if (name == "bin") {
      k.request_topic = req_prefix_ + "get/" + kBinPath;
      k.response_topic = res_prefix_ + "get/" + kBinPath;
      k.payload_tail = "}";
      k.content = base64(bin_bytes());
      k.base64 = true;
    } else {
      throw CLI::ValidationError("--mix", "unknown kind '" + name + "' (get, post, bin)");
    }
    return k;
  }

  // Sends the next request of slot `s`. The reply cannot overtake the bookkeeping: the
  // state is written before the publish.
  void issue(std::size_t s) {
    std::size_t kind = 0;
    std::uint32_t seq = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      Slot& slot = slots_[s];
      kind = next_kind_++ % kinds_.size();
      seq = static_cast<std::uint32_t>(slot.states.size());
      slot.states.push_back(kInFlight);
      slot.seq = seq;
      slot.kind = kind;
      slot.waiting = true;
      slot.sent_at = Clock::now();
      ++n_.sent;
    }
    const std::string payload = "{\"req_id\":\"" + nonce_ + "-" + std::to_string(s) + "-" +
                                std::to_string(seq) + "\"" + kinds_[kind].payload_tail;
    if (!client_->publish(kinds_[kind].request_topic, payload, o_.qos)) {
      std::lock_guard<std::mutex> lock(mu_);
      ++n_.publish_failures;  // stays in flight and times out
    }
  }

  // Parses "<nonce>-<slot>-<seq>"; false when the id is not one of this run's.
  bool parse_req_id(const json& id, std::size_t& slot, std::uint32_t& seq) const {
    if (!id.is_string()) return false;
    const std::string& s = id.get_ref<const std::string&>();
    if (s.size() <= nonce_.size() + 1 || s.compare(0, nonce_.size(), nonce_) != 0 ||
        s[nonce_.size()] != '-')
      return false;
    const char* p = s.c_str() + nonce_.size() + 1;
    char* end = nullptr;
    const unsigned long sl = std::strtoul(p, &end, 10);
    if (*end != '-') return false;
    const unsigned long sq = std::strtoul(end + 1, &end, 10);
    if (*end != '\0') return false;
    slot = sl;
    seq = static_cast<std::uint32_t>(sq);
    return true;
  }

  // Why the reply is wrong, or empty when it is right.
  static std::string check(const Kind& k, std::string_view topic, const json& doc) {
    if (topic != k.response_topic) return "reply on " + std::string(topic);
    const auto status = doc.find("status");
    if (status == doc.end() || *status != k.status)
      return k.name + ": status " + (status == doc.end() ? "missing" : status->dump());
    const auto content = doc.find("content");
    if (content == doc.end() || *content != k.content) return k.name + ": wrong content";
    const auto enc = doc.find("content_encoding");
    const bool is_base64 = enc != doc.end() && *enc == "base64";
    if (is_base64 != k.base64) return k.name + ": wrong content_encoding";
    return {};
  }

  void on_reply(std::string_view topic, std::string_view payload) {
    const auto now = Clock::now();
    json doc = json::parse(payload.begin(), payload.end(), nullptr, false);
    std::size_t s = 0;
    std::uint32_t seq = 0;
    const bool parsed = doc.is_object();
    const bool ours = parsed && doc.contains("req_id") && parse_req_id(doc["req_id"], s, seq);
    if (parsed && !ours) {
      // Readiness probes of an earlier run (or this one) may still be answered late.
      const auto id = doc.find("req_id");
      if (id != doc.end() && id->is_string() &&
          id->get_ref<const std::string&>().rfind("probe-", 0) == 0) {
        std::lock_guard<std::mutex> lock(mu_);
        probe_answered_ = probe_answered_ || check(kinds_[0], topic, doc).empty();
        return;
      }
    }
    bool next = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!ours || s >= slots_.size() || seq >= slots_[s].states.size()) {
        ++n_.unexpected;
        if (n_.first_error.empty())
          n_.first_error = "unexpected reply on " + std::string(topic) + ": " +
                           std::string(payload.substr(0, 200));
        return;
      }
      Slot& slot = slots_[s];
      std::uint8_t& state = slot.states[seq];
      if (state == kAnswered || state == kLate) {
        ++n_.duplicates;
        return;
      }
      if (state == kTimedOut) {
        state = kLate;
        ++n_.late;
        return;
      }
      state = kAnswered;
      slot.waiting = false;
      const std::string why = check(kinds_[slot.kind], topic, doc);
      if (why.empty()) {
        ++n_.ok;
        if (now >= window_start_ && now <= window_end_) {
          ++n_.ok_in_window;
          latencies_us_.push_back(static_cast<std::uint32_t>(
              std::chrono::duration_cast<std::chrono::microseconds>(now - slot.sent_at).count()));
        }
      } else {
        ++n_.errors;
        if (n_.first_error.empty())
          n_.first_error = why + ": " + std::string(payload.substr(0, 200));
      }
      next = issuing_;
    }
    if (next) issue(s);
  }

  // Until one valid reply: a GET every 200 ms, so a target still subscribing is waited for.
  bool probe() {
    const auto deadline = Clock::now() + to_duration(o_.probe_s);
    const Kind& k = kinds_[0];
    for (int i = 0; Clock::now() < deadline; ++i) {
      const std::string payload =
          "{\"req_id\":\"probe-" + nonce_ + "-" + std::to_string(i) + "\"" + k.payload_tail;
      client_->publish(k.request_topic, payload, o_.qos);
      for (int t = 0; t < 40; ++t) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        std::lock_guard<std::mutex> lock(mu_);
        if (probe_answered_) return true;
      }
    }
    return false;
  }

  static std::uint32_t percentile(const std::vector<std::uint32_t>& sorted, double p) {
    if (sorted.empty()) return 0;
    // Nearest rank.
    auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
    return sorted[std::min(sorted.size(), std::max<std::size_t>(rank, 1)) - 1];
  }

  void print_result() {
    std::lock_guard<std::mutex> lock(mu_);
    std::uint64_t lost = 0, pending = 0;
    const auto now = Clock::now();
    for (const Slot& slot : slots_) {
      for (std::size_t q = 0; q < slot.states.size(); ++q) {
        if (slot.states[q] == kTimedOut) ++lost;
        // Only a burst stops before every request has had its full timeout.
        if (slot.states[q] == kInFlight) (now - slot.sent_at >= timeout_ ? lost : pending) += 1;
      }
    }
    std::sort(latencies_us_.begin(), latencies_us_.end());
    const double window = std::chrono::duration<double>(o_.burst > 0 ? finished_ - started_
                                                                     : window_end_ - window_start_)
                              .count();
    json out = {
        {"mode", o_.burst > 0 ? "burst" : "closed"},
        {"qos", o_.qos},
        {"concurrency", o_.burst > 0 ? o_.burst : o_.concurrency},
        {"duration_s", std::round(window * 1000) / 1000},
        {"throughput", std::round((o_.burst > 0 ? n_.ok : n_.ok_in_window) / window * 10) / 10},
        {"p50_us", percentile(latencies_us_, 0.50)},
        {"p90_us", percentile(latencies_us_, 0.90)},
        {"p99_us", percentile(latencies_us_, 0.99)},
        {"max_us", latencies_us_.empty() ? 0 : latencies_us_.back()},
        {"sent", n_.sent},
        {"ok", n_.ok},
        {"errors", n_.errors + n_.unexpected},
        {"unexpected", n_.unexpected},
        {"timeouts", n_.timeouts},
        {"duplicates", n_.duplicates},
        {"lost", lost},
        {"late", n_.late},
        {"pending", pending},
        {"publish_failures", n_.publish_failures},
        {"connection_lost", lost_connection_},
    };
    std::cout << out.dump() << std::endl;
    // Not in the JSON line: it stays flat numbers, easy to read from a shell.
    if (!n_.first_error.empty())
      std::fprintf(stderr, "hom-loadgen: first error: %s\n", n_.first_error.c_str());
  }

  const Options o_;
  const Clock::duration timeout_;
  std::string req_prefix_, res_prefix_, res_filter_, nonce_;
  std::vector<Kind> kinds_;
  PahoClient* client_ = nullptr;
  bool lost_connection_ = false;
  Clock::time_point started_{}, window_start_{}, window_end_{}, finished_{};

  std::mutex mu_;
  std::vector<Slot> slots_;                  // guarded by mu_
  std::vector<std::uint32_t> latencies_us_;  // guarded by mu_
  Counters n_;                               // guarded by mu_
  std::size_t next_kind_ = 0;                // guarded by mu_
  bool issuing_ = false;                     // guarded by mu_
  bool probe_answered_ = false;              // guarded by mu_
};

// Writes the files nginx serves (see fixtures.hpp) into `dir`.
void write_fixtures(const std::string& dir) {
  std::ofstream(dir + "/latitude.json", std::ios::binary) << kLatitudeJson;
  std::ofstream(dir + "/bin", std::ios::binary) << bin_bytes();
  std::ofstream(dir + "/dessert.txt", std::ios::binary) << kDessertText;
}

// A TCP port on 127.0.0.1 that was free a moment ago.
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  close(fd);
  return port;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::string fixtures_dir;
  bool print_free_port = false;
  CLI::App app{"hom-loadgen: closed-loop MQTT load generator for http-over-mqtt (loopback)"};
  app.add_option("-c,--concurrency", o.concurrency, "requests in flight")
      ->check(CLI::Range(1, 10000));
  app.add_option("-d,--duration", o.duration_s, "measured seconds (burst: how long to wait)")
      ->check(CLI::Range(0.0, 3600.0));
  app.add_option("-q,--qos", o.qos, "request QoS (and of the reply subscription)")
      ->check(CLI::Range(0, 2));
  app.add_option("-t,--timeout", o.timeout_s, "per-request timeout, seconds")
      ->check(CLI::Range(0.001, 3600.0));
  app.add_option("--warmup", o.warmup_s, "seconds run before the measured window")
      ->check(CLI::Range(0.0, 60.0));
  app.add_option("--host", o.host, "broker host");
  app.add_option("--port", o.port, "broker port")->check(CLI::Range(1, 65535));
  app.add_option("--start", o.start, "MQTT_TOPIC_START of the target");
  app.add_option("--id", o.id, "MQTT_TOPIC_ID of the target");
  app.add_option("--mix", o.mix, "request kinds, round robin: get, post, bin")->delimiter(',');
  app.add_option("--burst", o.burst, "publish N requests at once, then wait -d seconds")
      ->check(CLI::Range(0, 1000000));
  app.add_option("--probe", o.probe_s, "first wait up to N s for one valid reply");
  app.add_flag("!--no-nodelay", o.nodelay, "leave Nagle's algorithm on for the broker link");
  app.add_option("--write-fixtures", fixtures_dir, "write the API's files into DIR and exit");
  app.add_flag("--free-port", print_free_port, "print a free 127.0.0.1 TCP port and exit");
  CLI11_PARSE(app, argc, argv);

  if (print_free_port) {
    const int port = free_port();
    if (port == 0) return 1;
    std::cout << port << "\n";
    return 0;
  }
  if (!fixtures_dir.empty()) {
    write_fixtures(fixtures_dir);
    return 0;
  }
  try {
    LoadGen gen(o);
    return gen.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hom-loadgen: %s\n", e.what());
    return 1;
  }
}
