// hom-e2e-load: closed-loop load through hom's Requester (bench/e2e.sh), in clear or sealed
// end to end (--identity, --known-devices), so that both modes are measured by the same
// client. `-c` virtual clients each keep one call in flight (GET gps/latitude); every reply
// must be a 200. One JSON line on stdout: ok, errors, throughput (replies/s) and latency
// percentiles (µs) of the calls that completed after the warm-up.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "fixtures.hpp"
#include "hom/config.hpp"
#include "hom/e2e_requester.hpp"
#include "hom/requester.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Shared {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<double> latencies_us;  // after the warm-up
  std::uint64_t ok = 0, errors = 0;
  std::string first_error;
  int running = 0;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hom-e2e-load: closed-loop calls through the Requester, clear or sealed"};
  int port = 1883, concurrency = 1, qos = 1;
  double duration_s = 10, warmup_s = 1, timeout_s = 10;
  std::string id = "itsme", identity, known_devices;
  app.add_option("--port", port);
  app.add_option("--id", id);
  app.add_option("-c", concurrency)->check(CLI::Range(1, 4096));
  app.add_option("-q", qos)->check(CLI::Range(0, 2));
  app.add_option("-d", duration_s);
  app.add_option("--warmup", warmup_s);
  app.add_option("--timeout", timeout_s, "seconds a call may take");
  app.add_option("--identity", identity);
  app.add_option("--known-devices", known_devices);
  CLI11_PARSE(app, argc, argv);

  std::shared_ptr<hom::E2eRequester> sealer;
  if (!identity.empty()) {
    std::string error;
    sealer = hom::E2eRequester::load(identity, known_devices, error);
    if (!sealer) {
      std::cerr << "hom-e2e-load: " << error << "\n";
      return 2;
    }
  }
  const hom::Env env = [&](const std::string& name) -> std::optional<std::string> {
    if (name == "MQTT_HOST") return std::string("127.0.0.1");
    if (name == "MQTT_PORT") return std::to_string(port);
    if (name == "MQTT_TLS") return std::string("off");
    return std::nullopt;
  };
  const auto topics = hom::load_topic_config(env);
  hom::Requester requester(hom::load_mqtt_config(env, topics), "v1");
  if (const auto error = requester.connect(std::chrono::seconds(10))) {
    std::cerr << "hom-e2e-load: cannot connect: " << error->reason << "\n";
    return 1;
  }

  Shared shared;
  const auto started = Clock::now();
  const auto measure_from = started + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(warmup_s));
  const auto stop_at = measure_from + std::chrono::duration_cast<Clock::duration>(
                                          std::chrono::duration<double>(duration_s));
  std::atomic<std::uint64_t> seq{0};

  std::function<void()> next;
  next = [&] {
    hom::Requester::Call call;
    call.device = id;
    call.verb = "GET";
    call.path = hom::bench::kLatitudePath;
    call.request.req_id = hom::RawJson::of("l" + std::to_string(seq++));
    call.qos = qos;
    call.timeout = std::chrono::milliseconds(static_cast<long long>(timeout_s * 1000));
    call.listen_mirrored = false;
    call.sealer = sealer;
    const auto sent = Clock::now();
    requester.start(std::move(call), [&, sent](hom::Requester::Result r) {
      const auto now = Clock::now();
      bool again = false;
      {
        std::lock_guard<std::mutex> lock(shared.mu);
        const bool good = r.outcome == hom::Requester::Outcome::kReply && r.reply.status == 200;
        if (sent >= measure_from && now <= stop_at) {
          if (good) {
            ++shared.ok;
            shared.latencies_us.push_back(
                std::chrono::duration<double, std::micro>(now - sent).count());
          } else {
            ++shared.errors;
            if (shared.first_error.empty())
              shared.first_error = r.error.empty() ? r.payload.substr(0, 200) : r.error;
          }
        }
        again = now < stop_at;
        if (!again) --shared.running;
      }
      if (again) {
        next();
      } else {
        shared.cv.notify_all();
      }
    });
  };
  shared.running = concurrency;
  for (int i = 0; i < concurrency; ++i) next();
  {
    std::unique_lock<std::mutex> lock(shared.mu);
    shared.cv.wait(lock, [&] { return shared.running == 0; });
  }
  auto& l = shared.latencies_us;
  std::sort(l.begin(), l.end());
  const auto pct = [&](double p) {
    return l.empty() ? 0.0 : l[std::min(l.size() - 1, static_cast<std::size_t>(p * l.size()))];
  };
  nlohmann::json out = {{"mode", sealer ? "sealed" : "clear"},
                        {"concurrency", concurrency},
                        {"ok", shared.ok},
                        {"errors", shared.errors},
                        {"throughput", static_cast<double>(shared.ok) / duration_s},
                        {"p50_us", pct(0.5)},
                        {"p90_us", pct(0.9)},
                        {"p99_us", pct(0.99)}};
  if (!shared.first_error.empty()) out["first_error"] = shared.first_error;
  std::cout << out.dump() << std::endl;
  return shared.ok > 0 ? 0 : 1;
}
