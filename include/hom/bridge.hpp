// The bridge: parsed requests onto a bounded worker pool, replies onto the publisher.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "hom/config.hpp"
#include "hom/message.hpp"
#include "hom/request.hpp"

namespace hom {

struct BridgeStats {
  std::uint64_t received = 0;
  std::uint64_t answered = 0;
  std::uint64_t bridge_errors = 0;
};

// Thread-safe: on_message() may be called from the MQTT callback thread while workers run.
// Every request that on_message() accepts gets exactly one publish.
class Bridge {
 public:
  Bridge(const Config& config, Publisher& publisher);
  ~Bridge();  // stop()s
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;

  // Parses and enqueues, or answers at once (4xx, 503 when full). Never blocks on I/O.
  void on_message(InboundMessage&& message);

  // Graceful stop: from now on new requests get 503; queued and running ones may finish
  // within `grace`; then queued ones get 503 and running calls are aborted (503). Joins
  // the workers. Idempotent.
  void stop(std::chrono::milliseconds grace);

  BridgeStats stats() const;

  // True when work is waiting but no worker has taken or finished a request for longer than
  // the HTTP timeout allows: the watchdog then stops vouching for the daemon.
  bool stalled() const;

 private:
  // MQTT 5 duplicates (same Response Topic and Correlation Data) within kReplyCacheTtl are
  // answered from here instead of being executed again.
  struct CacheEntry {
    std::chrono::steady_clock::time_point created;
    bool done = false;
    std::string reply;                // the reply document, once done
    std::vector<Request> duplicates;  // arrived while running: answered on completion
  };
  static constexpr auto kReplyCacheTtl = std::chrono::minutes(5);
  static constexpr std::size_t kReplyCacheMax = 10000;

  void worker_main();
  void reply(const Request& request, Response response);
  void publish(const Request& request, std::string document);
  // True when `request` was answered (or parked) as a duplicate.
  bool answer_duplicate(Request& request);
  void complete_duplicates(const Request& request, const std::string& document, bool executed);

  const Config config_;
  const RequestPolicy policy_;
  Publisher& publisher_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Request> queue_;  // guarded by mu_
  std::size_t busy_ = 0;       // guarded by mu_: requests taken by workers
  std::chrono::steady_clock::time_point progress_{std::chrono::steady_clock::now()};  // mu_
  bool stopping_ = false;            // guarded by mu_
  std::condition_variable idle_cv_;  // signalled when the queue and workers become idle
  std::atomic<bool> abort_{false};   // aborts running calls at the end of the grace
  std::vector<std::thread> workers_;

  std::mutex cache_mu_;
  std::map<std::string, CacheEntry> cache_;  // guarded by cache_mu_
  std::deque<std::pair<std::chrono::steady_clock::time_point, std::string>>
      cache_order_;  // guarded by cache_mu_: keys by creation, for expiry

  std::atomic<std::uint64_t> received_{0};
  std::atomic<std::uint64_t> answered_{0};
  std::atomic<std::uint64_t> bridge_errors_{0};
};

}  // namespace hom
