// The bridge: parsed requests onto a bounded worker pool, replies onto the publisher.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "hom/config.hpp"
#include "hom/mqtt_link.hpp"
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

 private:
  void worker_main();
  void reply(const Request& request, Response response);

  const Config config_;
  const RequestPolicy policy_;
  Publisher& publisher_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Request> queue_;        // guarded by mu_
  std::size_t busy_ = 0;             // guarded by mu_: requests taken by workers
  bool stopping_ = false;            // guarded by mu_
  std::condition_variable idle_cv_;  // signalled when the queue and workers become idle
  std::atomic<bool> abort_{false};   // aborts running calls at the end of the grace
  std::vector<std::thread> workers_;

  std::atomic<std::uint64_t> received_{0};
  std::atomic<std::uint64_t> answered_{0};
  std::atomic<std::uint64_t> bridge_errors_{0};
};

}  // namespace hom
