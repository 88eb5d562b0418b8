// The bridge: requests from the MQTT session onto a bounded worker pool, replies onto the
// publisher. It owns the order of things; the pieces with one job each are WorkQueue
// (admission, capacity), ReplyCache (MQTT 5 duplicates) and HttpExecutor (the HTTP call).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "hom/config.hpp"
#include "hom/http_executor.hpp"
#include "hom/message.hpp"
#include "hom/reply_cache.hpp"
#include "hom/request.hpp"
#include "hom/response.hpp"
#include "hom/stream_transfer.hpp"
#include "hom/time_source.hpp"
#include "hom/work_queue.hpp"

namespace hom {

struct BridgeStats {
  std::uint64_t received = 0;
  std::uint64_t answered = 0;
  std::uint64_t bridge_errors = 0;
};

// Thread-safe: on_message() may be called from the MQTT callback thread while workers run.
// Every request that on_message() accepts is handed to the publisher exactly once (unless
// not even a 502 fits the broker's packet limit; then it is logged as an error).
class Bridge {
 public:
  // Executes requests with one HttpClient per worker.
  Bridge(const Config& config, Publisher& publisher);
  // `executors` makes one executor per worker (WORKERS); `now` is the clock of MQTT 5
  // expiry, the reply cache and stall detection.
  Bridge(const Config& config, Publisher& publisher, HttpExecutorFactory executors,
         TimeSource now = std::chrono::steady_clock::now);
  ~Bridge();  // stop(0)
  Bridge(const Bridge&) = delete;
  Bridge& operator=(const Bridge&) = delete;

  // Parses and enqueues, or answers at once (4xx, 413 for an oversize payload, a cached
  // reply, 503 when full or stopping). Retained messages are ignored. Never blocks on I/O.
  void on_message(InboundMessage&& message);

  // Graceful stop: from now on new requests get 503; queued and running ones may finish
  // within `grace`; then queued ones get 503 and running calls are aborted (503). Returns
  // once every accepted request was handed to the publisher. Idempotent.
  void stop(std::chrono::milliseconds grace);

  BridgeStats stats() const;

  // True when work is waiting or running but no worker has taken or finished a request for
  // longer than the HTTP timeout allows: the watchdog then stops vouching for the daemon.
  bool stalled() const;

 private:
  struct Job {
    Request request;
    std::string cache_key;     // empty: not an MQTT 5 request with Correlation Data
    std::uint64_t ticket = 0;  // of the reply cache entry it opened
  };

  void admit(Job&& job);
  void worker_main(HttpExecutor& executor);
  Response execute(HttpExecutor& executor, Request& request);
  // A call whose requester asked for a stream (SPEC §7): nullopt when the reply went out in
  // chunks, else the ordinary reply to send.
  std::optional<Response> execute_stream(HttpExecutor& executor, Request& request);
  // Acknowledgements and upload chunks, to the stream they belong to.
  void on_stream_message(const std::string& topic, StreamMessage&& message);
  // A time check shared by execute() and execute_stream(): 504 when expired, else the
  // timeout cut to what the MQTT 5 expiry leaves.
  std::optional<Response> apply_deadline(Request& request);
  Response to_response(const Request& request, HttpResult result) const;
  // Logs the outcome, publishes the reply and answers the duplicates parked behind it.
  void finish(Job& job, Response response);
  // The same for a request answered in chunks.
  void finish_streamed(Job& job);
  // Answers a request that was never queued (a rejection, or 503).
  void answer(const Request& request, Response response);
  void log_reply(const Request& request, const Response& response);
  OutboundMessage outbound(const Request& request, std::string document) const;
  // Replaces a reply that does not fit the broker's packet limit with a 502.
  void fit(OutboundMessage& out, const Request& request);
  void publish(OutboundMessage out);
  void mark_progress();

  const Config config_;
  const RequestPolicy policy_;
  Publisher& publisher_;
  const TimeSource now_;

  WorkQueue<Job> queue_;
  ReplyCache cache_;
  std::vector<std::unique_ptr<HttpExecutor>> executors_;  // one per worker
  std::vector<std::thread> workers_;                      // emptied by stop(), under stop_mu_
  std::mutex stop_mu_;
  std::atomic<bool> aborting_{false};  // the grace is over: queued requests get 503
  // When a worker last took or finished a request (steady_clock ticks since its epoch).
  std::atomic<std::chrono::steady_clock::rep> progress_;

  std::mutex streams_mu_;
  std::map<std::string, std::shared_ptr<StreamTransfer>> streams_;  // guarded by streams_mu_

  std::atomic<std::uint64_t> received_{0};
  std::atomic<std::uint64_t> answered_{0};
  std::atomic<std::uint64_t> bridge_errors_{0};
};

}  // namespace hom
