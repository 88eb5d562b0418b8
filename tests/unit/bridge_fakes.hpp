// Test helpers for the Bridge: a scripted HTTP executor and a recording publisher.
// Thread-safe: the bridge's workers call them while the test waits on them.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "hom/http_executor.hpp"
#include "hom/message.hpp"

namespace hom::test {

inline std::chrono::steady_clock::time_point deadline_in(
    std::chrono::milliseconds d = std::chrono::seconds(20)) {
  return std::chrono::steady_clock::now() + d;
}

// The executors a Bridge makes through factory(), scripted together: each call is recorded,
// answered by the result function (default: 200 "ok"), and, while holding, blocks until
// release() or its executor's abort().
class FakeHttp {
 public:
  using ResultFn = std::function<HttpResult(const Request&)>;

  HttpExecutorFactory factory() {
    return [this]() -> std::unique_ptr<HttpExecutor> { return std::make_unique<Executor>(*this); };
  }

  void set_result(ResultFn fn) {
    std::lock_guard<std::mutex> lock(mu_);
    result_ = std::move(fn);
  }
  void hold() {
    std::lock_guard<std::mutex> lock(mu_);
    holding_ = true;
  }
  void release() {
    std::lock_guard<std::mutex> lock(mu_);
    holding_ = false;
    cv_.notify_all();
  }

  // Until at least n calls are running (started, not returned).
  bool wait_running(std::size_t n, std::chrono::steady_clock::time_point deadline = deadline_in()) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_until(lock, deadline, [&] { return running_ >= n; });
  }

  std::vector<Request> calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  std::size_t aborted_calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return aborted_calls_;
  }

 private:
  class Executor : public HttpExecutor {
   public:
    explicit Executor(FakeHttp& http) : http_(http) {}
    HttpResult perform(const Request& request) override { return http_.perform(request, *this); }
    void abort() override {
      std::lock_guard<std::mutex> lock(http_.mu_);
      aborted_ = true;
      http_.cv_.notify_all();
    }
    bool aborted_ = false;  // guarded by http_.mu_

   private:
    FakeHttp& http_;
  };

  HttpResult perform(const Request& request, Executor& self) {
    std::unique_lock<std::mutex> lock(mu_);
    calls_.push_back(request);
    ++running_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return !holding_ || self.aborted_; });
    --running_;
    if (self.aborted_) {
      ++aborted_calls_;
      HttpResult r;
      r.outcome = HttpResult::Outcome::kAborted;
      return r;
    }
    if (result_) return result_(request);
    HttpResult r;
    r.status = 200;
    r.body = "ok";
    return r;
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  ResultFn result_;                // guarded by mu_
  bool holding_ = false;           // guarded by mu_
  std::size_t running_ = 0;        // guarded by mu_
  std::size_t aborted_calls_ = 0;  // guarded by mu_
  std::vector<Request> calls_;     // guarded by mu_
};

// Records what the bridge publishes; fits() compares the message's size with a limit.
class FakePublisher : public Publisher {
 public:
  struct Sent {
    OutboundMessage message;
    nlohmann::json doc;
  };

  void set_limit(std::size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    limit_ = bytes;
  }

  bool fits(const OutboundMessage& m) const override {
    std::lock_guard<std::mutex> lock(mu_);
    return m.topic.size() + m.payload.size() + m.correlation_data.value_or("").size() <= limit_;
  }

  std::size_t payload_room(const OutboundMessage& m) const override {
    std::lock_guard<std::mutex> lock(mu_);
    const std::size_t used = m.topic.size() + m.correlation_data.value_or("").size();
    return used >= limit_ ? 0 : limit_ - used;
  }

  // Streamed replies are sealed with what `make` gives (end-to-end mode), else in clear.
  void set_cipher(std::function<std::unique_ptr<BodyCipher>()> make) {
    std::lock_guard<std::mutex> lock(mu_);
    make_cipher_ = std::move(make);
  }
  std::unique_ptr<BodyCipher> body_cipher(const OutboundMessage&) override {
    std::lock_guard<std::mutex> lock(mu_);
    return make_cipher_ ? make_cipher_() : nullptr;
  }

  void publish(OutboundMessage m) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (m.topic.size() + m.payload.size() + m.correlation_data.value_or("").size() > limit_)
      ++oversize_;
    auto doc = nlohmann::json::parse(m.payload, nullptr, false);
    sent_.push_back(Sent{std::move(m), std::move(doc)});
    cv_.notify_all();
  }

  bool wait_count(std::size_t n, std::chrono::steady_clock::time_point deadline = deadline_in()) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_until(lock, deadline, [&] { return sent_.size() >= n; });
  }
  std::vector<Sent> sent() const {
    std::lock_guard<std::mutex> lock(mu_);
    return sent_;
  }
  std::size_t count() const {
    std::lock_guard<std::mutex> lock(mu_);
    return sent_.size();
  }
  // Messages published although fits() would have said no.
  std::size_t oversize() const {
    std::lock_guard<std::mutex> lock(mu_);
    return oversize_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::size_t limit_ = std::numeric_limits<std::size_t>::max();  // guarded by mu_
  std::vector<Sent> sent_;                                       // guarded by mu_
  std::size_t oversize_ = 0;                                     // guarded by mu_
  std::function<std::unique_ptr<BodyCipher>()> make_cipher_;     // guarded by mu_
};

}  // namespace hom::test
