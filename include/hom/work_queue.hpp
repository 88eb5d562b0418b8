// The bounded work queue between the MQTT callback thread and the worker pool.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace hom {

// What push() and hold() answer.
enum class Admission { kAccepted, kFull, kClosed };

// A FIFO of work items with a fixed number of slots (WORKERS + QUEUE_MAX). A slot is taken by
// an item from push() until done() is called after its pop(), so queued AND running items
// count; hold() takes a slot for work kept elsewhere (a duplicate parked behind its running
// original) until release(). Thread-safe: push()/hold() from the MQTT thread, pop()/done()
// from the workers, the rest from anywhere.
template <typename T>
class WorkQueue {
 public:
  struct Counts {
    std::size_t queued = 0;   // pushed, not yet popped
    std::size_t running = 0;  // popped, not yet done()
    std::size_t held = 0;     // hold() not yet released
  };

  explicit WorkQueue(std::size_t capacity) : capacity_(capacity) {}
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;

  std::size_t capacity() const { return capacity_; }

  // Queues `item` when a slot is free and the queue is open. `item` is moved from only on
  // kAccepted, so a refused item can still be answered.
  Admission push(T&& item) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      const Admission a = admit();
      if (a != Admission::kAccepted) return a;
      queue_.push_back(std::move(item));
    }
    ready_cv_.notify_one();
    return Admission::kAccepted;
  }

  // Takes a slot for work that is not queued here; give it back with release().
  Admission hold() {
    std::lock_guard<std::mutex> lock(mu_);
    const Admission a = admit();
    if (a == Admission::kAccepted) ++held_;
    return a;
  }

  void release(std::size_t n = 1) {
    std::lock_guard<std::mutex> lock(mu_);
    held_ -= std::min(n, held_);
    notify_if_idle();
  }

  // The oldest queued item, waiting for one; nullopt once the queue is closed and empty.
  // The item keeps its slot until done().
  std::optional<T> pop() {
    std::unique_lock<std::mutex> lock(mu_);
    ready_cv_.wait(lock, [this] { return closed_ || !queue_.empty(); });
    if (queue_.empty()) return std::nullopt;
    std::optional<T> item(std::move(queue_.front()));
    queue_.pop_front();
    ++running_;
    return item;
  }

  // A popped item is finished: its slot is free again.
  void done() {
    std::lock_guard<std::mutex> lock(mu_);
    if (running_ > 0) --running_;
    notify_if_idle();
  }

  // From now on push() and hold() answer kClosed; pop() hands out what is queued, then
  // nullopt. Idempotent.
  void close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
    }
    ready_cv_.notify_all();
  }

  // Until no slot is taken (nothing queued, running or held), at most `timeout`. True when
  // idle.
  bool wait_idle_for(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return idle_cv_.wait_for(lock, timeout, [this] { return in_use() == 0; });
  }

  Counts counts() const {
    std::lock_guard<std::mutex> lock(mu_);
    return Counts{queue_.size(), running_, held_};
  }

 private:
  std::size_t in_use() const { return queue_.size() + running_ + held_; }  // mu_ held

  Admission admit() const {  // mu_ held
    if (closed_) return Admission::kClosed;
    return in_use() >= capacity_ ? Admission::kFull : Admission::kAccepted;
  }

  void notify_if_idle() {  // mu_ held
    if (in_use() == 0) idle_cv_.notify_all();
  }

  const std::size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable ready_cv_;  // an item was queued, or the queue closed
  std::condition_variable idle_cv_;   // no slot is taken any more
  std::deque<T> queue_;               // guarded by mu_
  std::size_t running_ = 0;           // guarded by mu_
  std::size_t held_ = 0;              // guarded by mu_
  bool closed_ = false;               // guarded by mu_
};

}  // namespace hom
