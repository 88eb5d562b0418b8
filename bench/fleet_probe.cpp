// hom-fleet-probe: the requester side of bench/fleet.sh. Two modes, both over the project's
// own multi-flight Requester (include/hom/requester.hpp) or its presence parser:
//
//   online: subscribes to {start}/status/+ and waits until every device PREFIX0..PREFIX{N-1}
//           has a retained or live "online" presence; prints the seconds it took.
//   call:   calls GET gps/latitude on every device, at most --concurrency at once, and
//           retries the devices that did not answer (a device not yet back after a broker
//           restart) until all have answered or --deadline passes. Prints one line per
//           device answered (its first answer: seconds since --since, latency) and a summary.
//
// Loopback only; every wait is bounded by --deadline.
#include <mqtt/async_client.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "hom/config.hpp"
#include "hom/presence.hpp"
#include "hom/requester.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

int online(int port, const std::string& prefix, int count, double deadline_s) {
  const auto started = Clock::now();
  mqtt::async_client client("tcp://127.0.0.1:" + std::to_string(port),
                            "fleet-online-" + hom::random_id());
  std::mutex mu;
  std::condition_variable cv;
  std::set<std::string> up;  // guarded by mu
  client.set_message_callback([&](mqtt::const_message_ptr msg) {
    const std::string id = msg->get_topic().substr(msg->get_topic().rfind('/') + 1);
    const auto p = hom::parse_presence(msg->to_string());
    std::lock_guard<std::mutex> lock(mu);
    if (p && p->online && id.rfind(prefix, 0) == 0) {
      up.insert(id);
    } else {
      up.erase(id);
    }
    cv.notify_all();
  });
  const auto end = started + std::chrono::duration<double>(deadline_s);
  for (;;) {
    try {
      client.connect(mqtt::connect_options_builder().clean_session(true).finalize())->wait();
      client.subscribe("v1/status/+", 1)->wait();
      break;
    } catch (const mqtt::exception&) {
      if (Clock::now() >= end) return 1;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
  std::unique_lock<std::mutex> lock(mu);
  const bool all = cv.wait_until(lock, end, [&] { return static_cast<int>(up.size()) >= count; });
  const double took = std::chrono::duration<double>(Clock::now() - started).count();
  std::printf("online %zu of %d after %.2f s\n", up.size(), count, took);
  lock.unlock();
  client.disconnect()->wait();
  return all ? 0 : 1;
}

struct Answer {
  double at = 0;          // unix seconds of the first answer
  double latency_ms = 0;  // of the call that got it
};

int call(int port, const std::string& prefix, int count, int concurrency, double deadline_s,
         double since, double call_timeout_s) {
  hom::MqttConfig mqtt;
  mqtt.host = "127.0.0.1";
  mqtt.port = port;
  mqtt.server_uri = "tcp://127.0.0.1:" + std::to_string(port);
  mqtt.version = hom::MqttVersion::kV5;
  const auto started = Clock::now();
  const auto end = started + std::chrono::duration<double>(deadline_s);
  std::unique_ptr<hom::Requester> requester;
  for (;;) {
    requester = std::make_unique<hom::Requester>(mqtt, "v1");
    if (!requester->connect(std::chrono::seconds(5))) break;
    if (Clock::now() >= end) {
      std::fprintf(stderr, "hom-fleet-probe: could not connect\n");
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  std::vector<Answer> answers(static_cast<std::size_t>(count));
  std::vector<bool> answered(static_cast<std::size_t>(count), false);
  std::vector<double> latencies;  // every answered call, ms
  std::mutex mu;
  std::condition_variable cv;
  int in_flight = 0;  // guarded by mu
  int rounds = 0;
  long calls = 0, timeouts = 0, errors = 0;
  for (;;) {
    std::vector<int> todo;
    {
      std::lock_guard<std::mutex> lock(mu);
      for (int i = 0; i < count; ++i)
        if (!answered[static_cast<std::size_t>(i)]) todo.push_back(i);
    }
    if (todo.empty() || Clock::now() >= end) break;
    ++rounds;
    for (const int i : todo) {
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return in_flight < concurrency; });
        ++in_flight;
      }
      ++calls;
      hom::Requester::Call c;
      c.device = prefix + std::to_string(i);
      c.verb = "get";
      c.path = "gps/latitude";
      c.qos = 1;
      c.timeout = std::chrono::milliseconds(static_cast<long>(call_timeout_s * 1000));
      c.wait_online = true;
      c.listen_mirrored = false;
      const auto t0 = Clock::now();
      requester->start(std::move(c), [&, i, t0](hom::Requester::Result r) {
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        std::lock_guard<std::mutex> lock(mu);
        --in_flight;
        if (r.outcome == hom::Requester::Outcome::kReply && r.reply.status == 200) {
          latencies.push_back(ms);
          if (!answered[static_cast<std::size_t>(i)]) {
            answered[static_cast<std::size_t>(i)] = true;
            answers[static_cast<std::size_t>(i)] = {unix_now(), ms};
          }
        } else if (r.outcome == hom::Requester::Outcome::kReply) {
          ++errors;
        } else {
          ++timeouts;
        }
        cv.notify_all();
      });
    }
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return in_flight == 0; });
  }
  int n = 0;
  double last = 0;
  for (int i = 0; i < count; ++i) {
    if (!answered[static_cast<std::size_t>(i)]) continue;
    ++n;
    last = std::max(last, answers[static_cast<std::size_t>(i)].at);
  }
  std::sort(latencies.begin(), latencies.end());
  const auto pct = [&](double p) {
    if (latencies.empty()) return 0.0;
    const auto k = static_cast<std::size_t>(p * static_cast<double>(latencies.size() - 1));
    return latencies[k];
  };
  std::printf(
      "answered %d of %d; calls %ld in %d rounds, %ld timed out, %ld errors; latency p50 %.1f "
      "ms p99 %.1f ms max %.1f ms; last first-answer %.2f s after --since; took %.2f s\n",
      n, count, calls, rounds, timeouts, errors, pct(0.5), pct(0.99),
      latencies.empty() ? 0.0 : latencies.back(), since > 0 ? last - since : 0.0,
      std::chrono::duration<double>(Clock::now() - started).count());
  return n == count ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("hom-fleet-probe: presence and calls across a fleet (bench/fleet.sh)");
  std::string mode;
  int port = 0, count = 0, concurrency = 100;
  std::string prefix = "fleet-";
  double deadline = 120, since = 0, call_timeout = 5;
  app.add_option("mode", mode, "online | call")->required();
  app.add_option("--port", port, "the broker's port on 127.0.0.1")->required();
  app.add_option("--count", count, "devices PREFIX0 .. PREFIX{count-1}")->required();
  app.add_option("--prefix", prefix, "device id prefix");
  app.add_option("--concurrency", concurrency, "calls in flight at once (call)");
  app.add_option("--deadline", deadline, "seconds for the whole mode");
  app.add_option("--since", since, "unix seconds that answer times are measured from (call)");
  app.add_option("--call-timeout", call_timeout, "seconds per call (call)");
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);
  if (mode == "online") return online(port, prefix, count, deadline);
  if (mode == "call") return call(port, prefix, count, concurrency, deadline, since, call_timeout);
  std::fprintf(stderr, "hom-fleet-probe: unknown mode %s\n", mode.c_str());
  return 2;
}
