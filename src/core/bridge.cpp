#include "hom/bridge.hpp"

#include <spdlog/spdlog.h>

#include "hom/http_client.hpp"

namespace hom {

namespace {

using Clock = std::chrono::steady_clock;

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

std::optional<Clock::time_point> deadline_of(const Request& r) {
  if (!r.expiry_s) return std::nullopt;
  return r.received + std::chrono::seconds(*r.expiry_s);
}

std::optional<std::string> cache_key(const Request& r) {
  if (!r.correlation_data) return std::nullopt;
  return r.response_topic + '\0' + *r.correlation_data;
}

}  // namespace

Bridge::Bridge(const Config& config, Publisher& publisher)
    : config_(config), policy_(RequestPolicy::from(config)), publisher_(publisher) {
  workers_.reserve(static_cast<std::size_t>(config_.workers));
  for (int i = 0; i < config_.workers; ++i) workers_.emplace_back([this] { worker_main(); });
}

Bridge::~Bridge() { stop(std::chrono::milliseconds(0)); }

void Bridge::on_message(InboundMessage&& message) {
  const auto now = Clock::now();
  if (message.retained) {
    spdlog::warn("ignoring a retained request on {}: retained requests are never executed",
                 printable(message.topic));
    return;
  }
  auto request = parse_request(policy_, message.topic, message.payload, message.properties);
  if (!request) {
    spdlog::warn("ignoring a message on {}: not a request topic of this device",
                 printable(message.topic));
    return;
  }
  ++received_;
  request->received = now;
  if (message.payload.size() < message.payload_bytes) {
    // Not kept by the session: over MQTT_MAX_PAYLOAD_BYTES, so not read (req_id null).
    request->rejection =
        bridge_error(413, "payload of " + std::to_string(message.payload_bytes) +
                              " bytes exceeds MQTT_MAX_PAYLOAD_BYTES (" +
                              std::to_string(config_.mqtt.max_payload_bytes) + ")");
  }
  if (request->rejection) {
    Response rejection = std::move(*request->rejection);
    reply(*request, std::move(rejection));
    return;
  }
  if (answer_duplicate(*request)) return;
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

bool Bridge::answer_duplicate(Request& request) {
  const auto key = cache_key(request);
  if (!key) return false;
  std::string cached;
  {
    std::lock_guard<std::mutex> lock(cache_mu_);
    const auto now = Clock::now();
    while (!cache_order_.empty() && (now - cache_order_.front().first > kReplyCacheTtl ||
                                     cache_order_.size() > kReplyCacheMax)) {
      const auto it = cache_.find(cache_order_.front().second);
      // Keep an entry whose first request is still running: its duplicates wait on it.
      if (it != cache_.end() && it->second.created == cache_order_.front().first && it->second.done)
        cache_.erase(it);
      cache_order_.pop_front();
    }
    auto [it, inserted] = cache_.try_emplace(*key);
    if (inserted || (it->second.done && now - it->second.created > kReplyCacheTtl)) {
      it->second = CacheEntry{request.received, false, {}, {}};
      cache_order_.emplace_back(request.received, *key);
      return false;  // the first: execute it
    }
    if (!it->second.done) {
      spdlog::info("{} {}: duplicate of a running request, answered when it completes",
                   printable(request.verb), printable(request.path));
      it->second.duplicates.push_back(std::move(request));
      return true;
    }
    cached = it->second.reply;
  }
  spdlog::info("{} {}: duplicate answered from the reply cache", printable(request.verb),
               printable(request.path));
  ++answered_;
  publish(request, std::move(cached));
  return true;
}

void Bridge::complete_duplicates(const Request& request, const std::string& document,
                                 bool executed) {
  const auto key = cache_key(request);
  if (!key) return;
  std::vector<Request> waiting;
  {
    std::lock_guard<std::mutex> lock(cache_mu_);
    const auto it = cache_.find(*key);
    // Only the request that opened the entry completes it.
    if (it == cache_.end() || it->second.done || it->second.created != request.received) return;
    waiting.swap(it->second.duplicates);
    if (executed) {
      it->second.done = true;
      it->second.reply = document;
    } else {
      cache_.erase(it);  // not executed (503): a retry must run it
    }
  }
  for (const auto& duplicate : waiting) {
    ++answered_;
    publish(duplicate, document);
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
    progress_ = Clock::now();
    if (abort_) {
      lock.unlock();
      reply(request, bridge_error(503, "shutting down", request.req_id));
      lock.lock();
      continue;
    }
    ++busy_;
    lock.unlock();
    const auto deadline = deadline_of(request);
    const auto now = Clock::now();
    if (deadline && now >= *deadline) {
      reply(request, bridge_error(504, "expired before execution", request.req_id));
    } else {
      if (deadline) {
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - now);
        request.timeout = std::max(std::chrono::milliseconds(1), std::min(request.timeout, left));
      }
      reply(request, http.perform(request));
    }
    lock.lock();
    --busy_;
    progress_ = Clock::now();
    if (queue_.empty() && busy_ == 0) idle_cv_.notify_all();
  }
}

void Bridge::reply(const Request& request, Response response) {
  const double ms =
      std::chrono::duration<double, std::milli>(Clock::now() - request.received).count();
  if (response.error.empty()) {
    // Guarded: the arguments cost two allocations, and this runs for every request.
    if (spdlog::should_log(spdlog::level::info))
      spdlog::info("{} {} -> {} ({:.1f} ms)", printable(request.verb), printable(request.path),
                   response.status, ms);
  } else {
    ++bridge_errors_;
    spdlog::warn("{} {} -> {} ({:.1f} ms): {}", printable(request.verb), printable(request.path),
                 response.status, ms, printable(response.error));
  }
  const bool executed = !(response.status == 503 && !response.error.empty());
  std::string document = to_json(response);
  complete_duplicates(request, document, executed);
  ++answered_;
  publish(request, std::move(document));
}

void Bridge::publish(const Request& request, std::string document) {
  OutboundMessage out;
  out.topic = request.response_topic;
  out.payload = std::move(document);
  out.qos = config_.mqtt.response_qos;
  out.correlation_data = request.correlation_data;
  if (const auto deadline = deadline_of(request)) {
    // The reply lives as long as the request had left, at least one second.
    const auto left = std::chrono::ceil<std::chrono::seconds>(*deadline - Clock::now()).count();
    out.expiry_s = static_cast<std::uint32_t>(std::max<long long>(1, left));
  }
  publisher_.publish(std::move(out));
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
  // Duplicates still parked behind a request that never completed get their 503 too.
  std::vector<Request> orphans;
  {
    std::lock_guard<std::mutex> cache_lock(cache_mu_);
    for (auto& [key, entry] : cache_)
      for (auto& d : entry.duplicates) orphans.push_back(std::move(d));
    cache_.clear();
  }
  for (const auto& o : orphans) reply(o, bridge_error(503, "shutting down", o.req_id));
}

bool Bridge::stalled() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (queue_.empty() && busy_ == 0) return false;
  const auto limit = config_.http.timeout + config_.http.connect_timeout + std::chrono::seconds(30);
  return Clock::now() - progress_ > limit;
}

BridgeStats Bridge::stats() const {
  return BridgeStats{received_.load(), answered_.load(), bridge_errors_.load()};
}

}  // namespace hom
