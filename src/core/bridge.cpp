#include "hom/bridge.hpp"

#include <spdlog/spdlog.h>

#include "hom/http_client.hpp"

namespace hom {

namespace {

// Network-controlled text made safe for one log line: control bytes escaped, length capped.
std::string printable(std::string_view s) {
  constexpr std::size_t kMax = 200;
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7F) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > kMax) out += "...";
  return out;
}

}  // namespace

Bridge::Bridge(const Config& config, Publisher& publisher)
    : config_(config), policy_(RequestPolicy::from(config)), publisher_(publisher) {
  workers_.reserve(static_cast<std::size_t>(config_.workers));
  for (int i = 0; i < config_.workers; ++i) workers_.emplace_back([this] { worker_main(); });
}

Bridge::~Bridge() { stop(std::chrono::milliseconds(0)); }

void Bridge::on_message(InboundMessage&& message) {
  const auto now = std::chrono::steady_clock::now();
  if (message.retained) {
    spdlog::warn("ignoring a retained request on {}: retained requests are never executed",
                 printable(message.topic));
    return;
  }
  auto request = parse_request(policy_, message.topic, message.payload);
  if (!request) {
    spdlog::warn("ignoring a message on {}: not a request topic of this device",
                 printable(message.topic));
    return;
  }
  ++received_;
  request->received = now;
  if (request->rejection) {
    Response rejection = std::move(*request->rejection);
    reply(*request, std::move(rejection));
    return;
  }
  const char* refusal = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      refusal = "shutting down";
    } else if (queue_.size() + busy_ >=
               static_cast<std::size_t>(config_.workers) + config_.queue_max) {
      refusal = "overloaded: all workers busy and the queue full (WORKERS, QUEUE_MAX)";
    } else {
      queue_.push_back(std::move(*request));
    }
  }
  if (refusal) {
    reply(*request, bridge_error(503, refusal, request->req_id));
  } else {
    cv_.notify_one();
  }
}

void Bridge::worker_main() {
  HttpClient http(config_.http, &abort_);
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping and nothing left
    Request request = std::move(queue_.front());
    queue_.pop_front();
    if (abort_) {
      lock.unlock();
      reply(request, bridge_error(503, "shutting down", request.req_id));
      lock.lock();
      continue;
    }
    ++busy_;
    lock.unlock();
    Response response = http.perform(request);
    reply(request, std::move(response));
    lock.lock();
    --busy_;
    if (queue_.empty() && busy_ == 0) idle_cv_.notify_all();
  }
}

void Bridge::reply(const Request& request, Response response) {
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - request.received)
          .count();
  if (response.error.empty()) {
    spdlog::info("{} {} -> {} ({:.1f} ms)", printable(request.verb), printable(request.path),
                 response.status, ms);
  } else {
    ++bridge_errors_;
    spdlog::warn("{} {} -> {} ({:.1f} ms): {}", printable(request.verb), printable(request.path),
                 response.status, ms, printable(response.error));
  }
  publisher_.publish(request.response_topic, to_json(response), config_.mqtt.response_qos);
  ++answered_;
}

void Bridge::stop(std::chrono::milliseconds grace) {
  std::unique_lock<std::mutex> lock(mu_);
  if (workers_.empty()) return;
  stopping_ = true;
  cv_.notify_all();
  if (!idle_cv_.wait_for(lock, grace, [this] { return queue_.empty() && busy_ == 0; })) {
    spdlog::warn("shutdown grace of {} ms over: {} queued and {} running requests get 503",
                 grace.count(), queue_.size(), busy_);
  }
  abort_ = true;
  lock.unlock();
  for (auto& worker : workers_) worker.join();
  workers_.clear();
}

BridgeStats Bridge::stats() const {
  return BridgeStats{received_.load(), answered_.load(), bridge_errors_.load()};
}

}  // namespace hom
