// hom-http-floor: the benchmark's HTTP calls alone, made the way homd's workers make them
// (one libcurl easy handle per thread, kept-alive connection, TCP_NODELAY), with no MQTT.
// Each thread sends the loadgen's mix in turn (GET gps/latitude, POST food/dessert, GET bin)
// back to back and checks the status. Prints one JSON line: throughput, latency percentiles
// and this process's CPU per request. At one thread, its p50 is what any bridge must add to
// the MQTT round trip (bench/README.md, "What limits homd").
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <curl/curl.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "fixtures.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using namespace hom::bench;

size_t discard(char*, size_t size, size_t count, void*) { return size * count; }

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

struct Call {
  std::string url;
  const char* body;  // POST when set
  long status;
};

struct Result {
  std::vector<double> latencies_us;
  long errors = 0;
};

void run_thread(const std::vector<Call>& mix, Clock::time_point start, Clock::time_point end,
                Result& out) {
  CURL* c = curl_easy_init();
  if (!c) {
    ++out.errors;
    return;
  }
  curl_slist* headers = curl_slist_append(nullptr, "Content-Type: application/json");
  headers = curl_slist_append(headers, "Expect:");
  std::size_t next = 0;
  while (true) {
    const auto t0 = Clock::now();
    if (t0 >= end) break;
    const Call& call = mix[next++ % mix.size()];
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, call.url.c_str());
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &discard);
    if (call.body) {
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, call.body);
      curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
    }
    long status = 0;
    const CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    const auto t1 = Clock::now();
    if (status != call.status) ++out.errors;
    if (t0 >= start) {
      out.latencies_us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
  }
  curl_slist_free_all(headers);
  curl_easy_cleanup(c);
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto i = static_cast<std::size_t>(p * static_cast<double>(sorted.size() - 1));
  return sorted[i];
}

}  // namespace

int main(int argc, char** argv) {
  std::string base;
  int threads = 1;
  double duration_s = 5;
  double warmup_s = 0.5;
  CLI::App app{"hom-http-floor: the benchmark's HTTP calls alone, as homd's workers make them"};
  app.add_option("--base", base, "the API's base URL (loopback only), e.g. http://127.0.0.1:8080/")
      ->required()
      ->check([](const std::string& url) {
        return url.rfind("http://127.0.0.1:", 0) == 0 || url.rfind("http://[::1]:", 0) == 0
                   ? std::string()
                   : std::string("only http://127.0.0.1:PORT/ or http://[::1]:PORT/");
      });
  app.add_option("-c,--threads", threads, "threads, each with one connection")
      ->check(CLI::Range(1, 256));
  app.add_option("-d,--duration", duration_s, "measured seconds")->check(CLI::Range(0.1, 3600.0));
  app.add_option("--warmup", warmup_s, "seconds before the measured window")
      ->check(CLI::Range(0.0, 60.0));
  CLI11_PARSE(app, argc, argv);
  if (base.back() != '/') base += '/';

  curl_global_init(CURL_GLOBAL_DEFAULT);
  const std::vector<Call> mix = {{base + kLatitudePath, nullptr, 200},
                                 {base + kDessertPath, kDessertBody, kDessertStatus},
                                 {base + kBinPath, nullptr, 200}};
  const auto start = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(warmup_s));
  const auto end = start + std::chrono::duration_cast<Clock::duration>(
                               std::chrono::duration<double>(duration_s));
  std::vector<Result> results(static_cast<std::size_t>(threads));
  std::vector<std::thread> pool;
  double cpu0 = 0;
  std::thread meter([&] {
    std::this_thread::sleep_until(start);
    cpu0 = cpu_seconds();
  });
  for (auto& r : results) pool.emplace_back(run_thread, std::cref(mix), start, end, std::ref(r));
  meter.join();
  for (auto& t : pool) t.join();
  const double cpu = cpu_seconds() - cpu0;

  std::vector<double> all;
  long errors = 0;
  for (const auto& r : results) {
    all.insert(all.end(), r.latencies_us.begin(), r.latencies_us.end());
    errors += r.errors;
  }
  std::sort(all.begin(), all.end());
  const double n = static_cast<double>(all.size());
  nlohmann::json line = {
      {"threads", threads},
      {"requests", all.size()},
      {"errors", errors},
      {"throughput", n / duration_s},
      {"p50_us", percentile(all, 0.50)},
      {"p90_us", percentile(all, 0.90)},
      {"p99_us", percentile(all, 0.99)},
      {"cpu_us_per_request", n > 0 ? cpu / n * 1e6 : 0.0},
  };
  std::cout << line.dump() << std::endl;
  curl_global_cleanup();
  return errors == 0 ? 0 : 1;
}
