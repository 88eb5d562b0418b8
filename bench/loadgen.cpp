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
  // Soak mode (--soak): see the Soak class.
  bool soak = false;
  double rate = 0;           // requests per second, all clients together; 0: unpaced
  std::vector<int> qos_mix;  // request QoS, in turn; empty: `qos`
  double grace_s = 60;       // after -d: how long replies are still waited for
  double progress_s = 0;     // a progress line on stderr every N s; 0: none
  std::string client_id;     // empty: hom-soak-<nonce>
  int list = 20;             // lost and duplicated requests listed on stderr, at most
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

Clock::duration to_duration(double seconds) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

std::string trim_slashes(const std::string& s) {
  const auto b = s.find_first_not_of('/');
  if (b == std::string::npos) return {};
  return s.substr(b, s.find_last_not_of('/') - b + 1);
}

Kind make_kind(const std::string& name, const std::string& req_prefix,
               const std::string& res_prefix) {
  Kind k;
  k.name = name;
  if (name == "get") {
    k.request_topic = req_prefix + "get/" + kLatitudePath;
    k.response_topic = res_prefix + "get/" + kLatitudePath;
    k.payload_tail = "}";
    k.content = json::parse(kLatitudeJson);
  } else if (name == "post") {
    k.request_topic = req_prefix + "post/" + kDessertPath;
    k.response_topic = res_prefix + "post/" + kDessertPath;
    k.payload_tail = std::string(",\"body\":") + kDessertBody + "}";
    k.status = kDessertStatus;
    k.content = kDessertText;
  } else if (name == "slow") {
    k.request_topic = req_prefix + "get/" + kSlowLatitudePath;
    k.response_topic = res_prefix + "get/" + kSlowLatitudePath;
    k.payload_tail = "}";
    k.content = json::parse(kLatitudeJson);
  } else if (name == "bin") {
    k.request_topic = req_prefix + "get/" + kBinPath;
    k.response_topic = res_prefix + "get/" + kBinPath;
    k.payload_tail = "}";
    k.content = base64(bin_bytes());
    k.base64 = true;
  } else {
    throw CLI::ValidationError("--mix", "unknown kind '" + name + "' (get, post, bin, slow)");
  }
  return k;
}

// Parses "<nonce>-<slot>-<seq>"; false when the id is not one of this run's.
bool parse_req_id(const std::string& nonce, const json& id, std::size_t& slot, std::uint32_t& seq) {
  if (!id.is_string()) return false;
  const std::string& s = id.get_ref<const std::string&>();
  if (s.size() <= nonce.size() + 1 || s.compare(0, nonce.size(), nonce) != 0 ||
      s[nonce.size()] != '-')
    return false;
  const char* p = s.c_str() + nonce.size() + 1;
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
std::string check(const Kind& k, std::string_view topic, const json& doc) {
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

std::uint32_t percentile(const std::vector<std::uint32_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  // Nearest rank.
  auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::min(sorted.size(), std::max<std::size_t>(rank, 1)) - 1];
}

class LoadGen {
 public:
  explicit LoadGen(const Options& o) : o_(o), timeout_(to_duration(o.timeout_s)) {
    const std::string start = trim_slashes(o.start), id = trim_slashes(o.id);
    req_prefix_ = start + "/req/" + id + "/";
    res_prefix_ = start + "/res/" + id + "/";
    res_filter_ = res_prefix_ + "#";
    for (const auto& name : o.mix) kinds_.push_back(make_kind(name, req_prefix_, res_prefix_));
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

  void on_reply(std::string_view topic, std::string_view payload) {
    const auto now = Clock::now();
    json doc = json::parse(payload.begin(), payload.end(), nullptr, false);
    std::size_t s = 0;
    std::uint32_t seq = 0;
    const bool parsed = doc.is_object();
    const bool ours =
        parsed && doc.contains("req_id") && parse_req_id(nonce_, doc["req_id"], s, seq);
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

// Soak mode: a steady, paced load that outlives broker restarts, every request accounted for
// by its req_id.
//
// One MQTT connection with a persistent session (clean session off, a fixed client id) and
// Paho's automatic reconnect: the broker keeps the reply subscription and the replies queued
// while this client is away, Paho resends its unacknowledged publishes after a reconnect.
// `-c` clients each keep at most one request in flight; together they publish at most
// `--rate` requests per second. A client waits for its reply up to `-t`, then moves on; the
// request stays tracked and a later reply still counts ("late"). After `-d` no new request
// is published and the replies still missing are waited for up to `--grace`.
//
// Per request: answered once, answered more than once (duplicate), wrong (status, content,
// topic or encoding: an error), or never answered (lost). A publish Paho refused (the
// connection was down) or reported undeliverable never reached the broker: "not sent",
// neither sent nor lost.
class Soak {
 public:
  explicit Soak(const Options& o) : o_(o), timeout_(to_duration(o.timeout_s)) {
    const std::string start = trim_slashes(o.start), id = trim_slashes(o.id);
    req_prefix_ = start + "/req/" + id + "/";
    res_prefix_ = start + "/res/" + id + "/";
    for (const auto& name : o.mix) kinds_.push_back(make_kind(name, req_prefix_, res_prefix_));
    qos_ = o.qos_mix.empty() ? std::vector<int>{o.qos} : o.qos_mix;
    std::random_device rd;
    nonce_ = std::to_string(getpid()) + "x" + std::to_string(rd() % 100000);
  }

  int run() {
    const std::string client_id = o_.client_id.empty() ? "hom-soak-" + nonce_ : o_.client_id;
    const std::string filter = res_prefix_ + "#";
    PahoClient client(
        o_.host, o_.port, client_id,
        [this](std::string_view t, std::string_view p, int, bool) { on_reply(t, p); });
    client_ = &client;
    client.on_delivery([this](std::uint64_t tag, bool ok) { on_delivery(tag, ok); });
    // The session keeps the subscription; subscribing again on each connect is harmless and
    // keeps the replies coming should a broker have lost the session.
    client.on_connected([&client, &filter] { client.subscribe_async(filter, 2); });
    client.connect(o_.nodelay, std::chrono::seconds(10), /*persistent=*/true);
    // QoS 2: each reply arrives at the QoS homd sends it with (MQTT_RESPONSE_QOS, 2).
    client.subscribe(filter, 2, std::chrono::seconds(10));

    started_ = Clock::now();
    const auto end = started_ + to_duration(o_.duration_s);
    const auto grace = to_duration(o_.grace_s);
    auto next_progress = started_ + to_duration(o_.progress_s);
    Clock::time_point drain_end{};
    auto next_reconnect = started_;
    bool issuing = true;
    {
      std::lock_guard<std::mutex> lock(mu_);
      slots_.resize(static_cast<std::size_t>(o_.concurrency));
    }
    // Bounded: `-d` plus `--grace`.
    for (;;) {
      const auto now = Clock::now();
      if (issuing && now >= end) {
        issuing = false;
        drain_end = now + grace;
      }
      std::vector<std::size_t> to_issue;
      {
        std::lock_guard<std::mutex> lock(mu_);
        for (auto& slot : slots_) {
          if (slot.waiting && now - slot.sent_at >= timeout_) {
            slot.waiting = false;  // the request stays tracked; a late reply still counts
            ++n_.slot_timeouts;
          }
        }
        if (issuing) {
          // Pacing credits; at most one per client is saved up while all wait, so a stall
          // is not followed by a burst.
          const auto due =
              o_.rate > 0 ? static_cast<std::uint64_t>(
                                std::chrono::duration<double>(now - started_).count() * o_.rate)
                          : paced_ + slots_.size();
          if (due > paced_ + slots_.size()) paced_ = due - slots_.size();
          for (std::size_t i = 0; i < slots_.size() && paced_ < due; ++i) {
            const std::size_t s = (next_slot_ + i) % slots_.size();
            if (slots_[s].waiting) continue;
            slots_[s].waiting = true;  // reserved; issue() fills it in
            to_issue.push_back(s);
            ++paced_;
          }
          if (!to_issue.empty()) next_slot_ = (to_issue.back() + 1) % slots_.size();
        } else if (n_.outstanding == 0 || now >= drain_end) {
          break;
        }
      }
      for (const auto s : to_issue) issue(s);
      // Paho's retry interval doubles while the broker is away; a restarted broker is back
      // within a second, and every request not sent meanwhile is one less tested.
      if (now >= next_reconnect) {
        if (!client.connected()) client.reconnect_now();
        next_reconnect = now + std::chrono::milliseconds(250);
      }
      if (o_.progress_s > 0 && now >= next_progress) {
        print_progress(now, client);
        next_progress += to_duration(o_.progress_s);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    finished_ = Clock::now();
    if (o_.progress_s > 0) print_progress(finished_, client);
    connects_ = client.connects();
    losses_ = client.losses();
    client.disconnect(std::chrono::milliseconds(1000));
    {
      // No callback may run into a half-destroyed Soak; replies after this are not counted.
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    client_ = nullptr;
    print_result();
    return 0;
  }

 private:
  enum Flag : std::uint8_t {
    kPublished = 1,  // Paho accepted the publish
    kDelivered = 2,  // the broker acknowledged it (QoS 1 PUBACK, QoS 2 PUBCOMP)
    kNotSent = 4,    // Paho refused it, or gave up on it
    kWrong = 8,      // a reply was wrong
    kLate = 16,      // first answered after its client had moved on
  };
  struct Req {                  // 8 bytes: a day at 200 req/s is 140 MB
    std::uint32_t sent_ms = 0;  // since started_
    std::uint8_t flags = 0;
    std::uint8_t kind_qos = 0;  // kind << 2 | QoS
    std::uint8_t epoch = 0;     // connections lost before the publish, modulo 256
    std::uint8_t replies = 0;   // saturates at 255
    std::size_t kind() const { return kind_qos >> 2; }
    int qos() const { return kind_qos & 3; }
  };
  struct Slot {
    std::vector<Req> reqs;  // by sequence number
    std::uint32_t seq = 0;  // the request in flight, while `waiting`
    bool waiting = false;
    Clock::time_point sent_at{};
  };
  struct Counts {
    std::uint64_t attempted = 0, refused = 0, undelivered = 0, answered = 0, outstanding = 0;
    std::uint64_t duplicate_replies = 0, duplicated = 0, wrong_replies = 0, unexpected = 0;
    std::uint64_t late = 0, slot_timeouts = 0, across_loss = 0;
    std::string first_error;
  };

  static std::uint64_t tag_of(std::size_t slot, std::uint32_t seq) {
    return (static_cast<std::uint64_t>(slot) << 32) | seq;
  }

  // Publishes the next request of slot `s` (reserved by the caller: waiting is set).
  void issue(std::size_t s) {
    std::uint32_t seq = 0;
    std::size_t kind = 0;
    int qos = 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      Slot& slot = slots_[s];
      const std::uint64_t n = n_.attempted++;
      kind = n % kinds_.size();
      qos = qos_[(n / kinds_.size()) % qos_.size()];
      slot.sent_at = Clock::now();
      Req r;
      r.sent_ms = static_cast<std::uint32_t>(
          std::chrono::duration_cast<std::chrono::milliseconds>(slot.sent_at - started_).count());
      // Before the publish: its delivery report and its reply may come before it returns.
      r.flags = kPublished;
      r.kind_qos = static_cast<std::uint8_t>(kind << 2 | static_cast<std::size_t>(qos));
      r.epoch = static_cast<std::uint8_t>(client_->losses());
      seq = static_cast<std::uint32_t>(slot.reqs.size());
      slot.reqs.push_back(r);
      slot.seq = seq;
      ++n_.outstanding;
    }
    const std::string payload = "{\"req_id\":\"" + nonce_ + "-" + std::to_string(s) + "-" +
                                std::to_string(seq) + "\"" + kinds_[kind].payload_tail;
    const int rc =
        client_->publish_tracked(kinds_[kind].request_topic, payload, qos, tag_of(s, seq));
    if (rc != 0) {
      // Refused (the connection is down): it never left this process, so no reply can come.
      std::lock_guard<std::mutex> lock(mu_);
      Slot& slot = slots_[s];
      slot.reqs[seq].flags = kNotSent;
      --n_.outstanding;
      ++n_.refused;
      if (slot.seq == seq) slot.waiting = false;
    }
  }

  void on_delivery(std::uint64_t tag, bool delivered) {
    const std::size_t s = static_cast<std::size_t>(tag >> 32);
    const auto seq = static_cast<std::uint32_t>(tag & 0xFFFFFFFFu);
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_ || s >= slots_.size() || seq >= slots_[s].reqs.size()) return;
    Req& r = slots_[s].reqs[seq];
    if (delivered) {
      r.flags |= kDelivered;
    } else if (!(r.flags & kNotSent)) {
      r.flags |= kNotSent;
      ++n_.undelivered;
      if (r.replies == 0) --n_.outstanding;
    }
  }

  void on_reply(std::string_view topic, std::string_view payload) {
    const auto now = Clock::now();
    json doc = json::parse(payload.begin(), payload.end(), nullptr, false);
    std::size_t s = 0;
    std::uint32_t seq = 0;
    const bool ours =
        doc.is_object() && doc.contains("req_id") && parse_req_id(nonce_, doc["req_id"], s, seq);
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    if (!ours || s >= slots_.size() || seq >= slots_[s].reqs.size()) {
      ++n_.unexpected;
      if (n_.first_error.empty())
        n_.first_error = "unexpected reply on " + std::string(topic) + ": " +
                         std::string(payload.substr(0, 200));
      return;
    }
    Slot& slot = slots_[s];
    Req& r = slot.reqs[seq];
    const std::string why = check(kinds_[r.kind()], topic, doc);
    if (!why.empty()) {
      ++n_.wrong_replies;
      r.flags |= kWrong;
      if (n_.first_error.empty()) n_.first_error = why + ": " + std::string(payload.substr(0, 200));
    }
    if (r.replies < 255) ++r.replies;
    if (r.replies > 1) {
      ++n_.duplicate_replies;
      if (r.replies == 2) ++n_.duplicated;
      if (extra_replies_.size() < static_cast<std::size_t>(o_.list))
        extra_replies_.push_back(
            {s, seq,
             static_cast<std::uint32_t>(
                 std::chrono::duration_cast<std::chrono::milliseconds>(now - started_).count())});
      return;
    }
    ++n_.answered;
    if (!(r.flags & kNotSent)) --n_.outstanding;
    // Published before a connection loss, answered after it: carried across a restart.
    if (static_cast<std::uint8_t>(client_->losses()) != r.epoch) ++n_.across_loss;
    const bool current = slot.waiting && slot.seq == seq;
    // The request in flight has its exact time; an earlier one is known to the millisecond.
    const auto sent = current ? slot.sent_at : started_ + std::chrono::milliseconds(r.sent_ms);
    if (why.empty())
      latencies_us_.push_back(static_cast<std::uint32_t>(std::min<std::int64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(now - sent).count(), UINT32_MAX)));
    if (current) {
      slot.waiting = false;
    } else {
      r.flags |= kLate;
      ++n_.late;
    }
  }

  void print_progress(Clock::time_point now, const PahoClient& client) {
    // Paho's calls take Paho's lock, and Paho calls on_reply() holding it: never under mu_.
    const bool connected = client.connected();
    const std::uint64_t losses = client.losses();
    std::lock_guard<std::mutex> lock(mu_);
    const json line = {
        {"t", std::round(std::chrono::duration<double>(now - started_).count() * 10) / 10},
        {"sent", n_.attempted - n_.refused},
        {"not_sent", n_.refused + n_.undelivered},
        {"answered", n_.answered},
        {"outstanding", n_.outstanding},
        {"duplicates", n_.duplicated},
        {"errors", n_.wrong_replies + n_.unexpected},
        {"connected", connected},
        {"connection_losses", losses},
    };
    std::fprintf(stderr, "progress %s\n", line.dump().c_str());
  }

  std::string req_id(std::size_t s, std::size_t seq) const {
    return nonce_ + "-" + std::to_string(s) + "-" + std::to_string(seq);
  }

  void print_result() {
    std::lock_guard<std::mutex> lock(mu_);
    std::uint64_t sent = 0, not_sent = 0, once = 0, lost = 0, lost_unacked = 0, wrong = 0;
    std::uint64_t unconfirmed = 0, dup_qos[3] = {0, 0, 0}, sent_qos[3] = {0, 0, 0};
    std::uint64_t lost_qos[3] = {0, 0, 0};
    std::vector<std::uint64_t> answered_kind(kinds_.size()), extra_kind(kinds_.size());
    int listed = 0;
    for (std::size_t s = 0; s < slots_.size(); ++s) {
      for (std::size_t q = 0; q < slots_[s].reqs.size(); ++q) {
        const Req& r = slots_[s].reqs[q];
        if (r.flags & kWrong) ++wrong;
        if (r.replies > 0) {
          ++sent;  // answered: it reached homd, whatever Paho reported
          ++sent_qos[r.qos()];
          if (r.replies == 1) ++once;
          if (r.replies > 1) ++dup_qos[r.qos()];
          ++answered_kind[r.kind()];
          extra_kind[r.kind()] += r.replies - 1u;
          if (!(r.flags & (kDelivered | kNotSent))) ++unconfirmed;
          continue;
        }
        if (!(r.flags & kPublished) || (r.flags & kNotSent)) {
          ++not_sent;
          continue;
        }
        ++sent;
        ++sent_qos[r.qos()];
        ++lost;
        ++lost_qos[r.qos()];
        if (!(r.flags & kDelivered)) ++lost_unacked;
        if (listed < o_.list) {
          ++listed;
          std::fprintf(stderr,
                       "hom-loadgen: lost %s (%s, QoS %d) published at %.3f s, %s by the broker\n",
                       req_id(s, q).c_str(), kinds_[r.kind()].name.c_str(), r.qos(),
                       static_cast<double>(r.sent_ms) / 1e3,
                       (r.flags & kDelivered) ? "acknowledged" : "NOT acknowledged");
        }
      }
    }
    for (const auto& e : extra_replies_) {
      const Req& r = slots_[e.slot].reqs[e.seq];
      std::fprintf(stderr,
                   "hom-loadgen: duplicate %s (%s, QoS %d) published at %.3f s, answered again "
                   "at %.3f s\n",
                   req_id(e.slot, e.seq).c_str(), kinds_[r.kind()].name.c_str(), r.qos(),
                   static_cast<double>(r.sent_ms) / 1e3, static_cast<double>(e.at_ms) / 1e3);
    }
    std::sort(latencies_us_.begin(), latencies_us_.end());
    const double window = std::chrono::duration<double>(to_duration(o_.duration_s)).count();
    json qos_list = json::array();
    for (const int q : qos_) qos_list.push_back(q);
    const json out = {
        {"mode", "soak"},
        {"qos", qos_list},
        {"concurrency", o_.concurrency},
        {"rate", o_.rate},
        {"duration_s", o_.duration_s},
        {"drain_s",
         std::round(std::chrono::duration<double>(finished_ - started_).count() * 10) / 10 -
             o_.duration_s},
        {"throughput", std::round(static_cast<double>(n_.answered) / window * 10) / 10},
        {"sent", sent},
        {"not_sent", not_sent},
        {"answered", n_.answered},
        {"answered_once", once},
        {"duplicates", dup_qos[0] + dup_qos[1] + dup_qos[2]},
        {"duplicate_replies", n_.duplicate_replies},
        {"lost", lost},
        {"lost_unacknowledged", lost_unacked},
        {"errors", wrong + n_.unexpected},
        {"unexpected", n_.unexpected},
        {"late", n_.late},
        {"across_connection_loss", n_.across_loss},
        {"unconfirmed", unconfirmed},
        {"refused", n_.refused},
        {"undelivered", n_.undelivered},
        {"p50_us", percentile(latencies_us_, 0.50)},
        {"p99_us", percentile(latencies_us_, 0.99)},
        {"max_us", latencies_us_.empty() ? 0 : latencies_us_.back()},
        {"connects", connects_},
        {"connection_losses", losses_},
    };
    // Flat, every key once, so a shell reads it with sed: per QoS and per kind as
    // "duplicates_qos2", "answered_get", "extra_replies_get" (replies beyond the first).
    json flat = out;
    for (int q = 0; q <= 2; ++q) {
      if (std::find(qos_.begin(), qos_.end(), q) == qos_.end()) continue;
      const std::string suffix = "_qos" + std::to_string(q);
      flat["sent" + suffix] = sent_qos[q];
      flat["duplicates" + suffix] = dup_qos[q];
      flat["lost" + suffix] = lost_qos[q];
    }
    for (std::size_t k = 0; k < kinds_.size(); ++k) {
      flat["answered_" + kinds_[k].name] = answered_kind[k];
      flat["extra_replies_" + kinds_[k].name] = extra_kind[k];
    }
    std::cout << flat.dump() << std::endl;
    if (lost > static_cast<std::uint64_t>(listed))
      std::fprintf(stderr, "hom-loadgen: ... and %llu more lost\n",
                   static_cast<unsigned long long>(lost - listed));
    if (!n_.first_error.empty())
      std::fprintf(stderr, "hom-loadgen: first error: %s\n", n_.first_error.c_str());
  }

  const Options o_;
  const Clock::duration timeout_;
  std::string req_prefix_, res_prefix_, nonce_;
  std::vector<Kind> kinds_;
  std::vector<int> qos_;
  PahoClient* client_ = nullptr;
  Clock::time_point started_{}, finished_{};
  std::uint64_t connects_ = 0, losses_ = 0;
  std::uint64_t paced_ = 0;    // only the timer loop's thread
  std::size_t next_slot_ = 0;  // guarded by mu_

  std::mutex mu_;
  std::vector<Slot> slots_;                  // guarded by mu_
  std::vector<std::uint32_t> latencies_us_;  // guarded by mu_; first correct replies
  struct ExtraReply {
    std::size_t slot;
    std::uint32_t seq;
    std::uint32_t at_ms;  // since started_
  };
  std::vector<ExtraReply> extra_replies_;  // guarded by mu_; the first --list of them
  Counts n_;                               // guarded by mu_
  bool closed_ = false;                    // guarded by mu_
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
      ->check(CLI::Range(0.0, 86400.0));
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
  app.add_option("--mix", o.mix, "request kinds, round robin: get, post, bin, slow")
      ->delimiter(',');
  app.add_option("--burst", o.burst, "publish N requests at once, then wait -d seconds")
      ->check(CLI::Range(0, 1000000));
  app.add_option("--probe", o.probe_s, "first wait up to N s for one valid reply");
  app.add_flag("!--no-nodelay", o.nodelay, "leave Nagle's algorithm on for the broker link");
  app.add_flag("--soak", o.soak,
               "soak mode: paced load on a persistent session that survives broker restarts");
  app.add_option("--rate", o.rate, "soak: requests per second, all clients together (0: unpaced)")
      ->check(CLI::Range(0.0, 1e6));
  app.add_option("--qos-mix", o.qos_mix, "soak: request QoS in turn, e.g. 1,2 (default: -q)")
      ->delimiter(',')
      ->check(CLI::Range(0, 2));
  app.add_option("--grace", o.grace_s, "soak: seconds to wait for missing replies after -d")
      ->check(CLI::Range(0.0, 3600.0));
  app.add_option("--progress", o.progress_s, "soak: a progress line on stderr every N s")
      ->check(CLI::Range(0.0, 3600.0));
  app.add_option("--client-id", o.client_id, "soak: MQTT client id (default hom-soak-<pid>...)");
  app.add_option("--list", o.list, "soak: list at most N lost and N duplicated requests on stderr")
      ->check(CLI::Range(0, 1000000));
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
    if (o.soak) {
      Soak soak(o);
      return soak.run();
    }
    LoadGen gen(o);
    return gen.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hom-loadgen: %s\n", e.what());
    return 1;
  }
}
