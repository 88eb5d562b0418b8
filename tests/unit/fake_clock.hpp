// Test helper: a steady clock that moves only when the test says so. Thread-safe.
#pragma once

#include <atomic>
#include <chrono>

#include "hom/time_source.hpp"

namespace hom::test {

class FakeClock {
 public:
  using time_point = std::chrono::steady_clock::time_point;

  time_point now() const { return time_point(std::chrono::steady_clock::duration(ticks_.load())); }
  void advance(std::chrono::steady_clock::duration d) { ticks_ += d.count(); }
  // For the code under test; the FakeClock must outlive it.
  TimeSource source() const {
    return [this] { return now(); };
  }

 private:
  // Not zero: code may subtract durations from the start.
  std::atomic<std::chrono::steady_clock::rep> ticks_{
      std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::hours(1000))
          .count()};
};

}  // namespace hom::test
