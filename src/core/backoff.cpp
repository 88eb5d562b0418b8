#include "hom/backoff.hpp"

#include <algorithm>

namespace hom {

namespace {
// Past this the window is the cap anyway (2^20 × 1 ms is over 17 minutes); it also keeps
// the shift below from overflowing.
constexpr int kMaxExponent = 20;
}  // namespace

Backoff::Backoff(BackoffPolicy policy, std::uint64_t seed) : policy_(policy), rng_(seed) {
  policy_.min = std::max(policy_.min, std::chrono::milliseconds(1));
  policy_.max = std::max(policy_.max, policy_.min);
}

std::chrono::milliseconds Backoff::window() const {
  const auto grown = policy_.min * (std::int64_t{1} << exponent_);
  return std::min(grown, policy_.max);
}

std::chrono::milliseconds Backoff::draw() {
  const auto w = window();
  exponent_ = std::min(exponent_ + 1, kMaxExponent);
  std::uniform_int_distribution<std::int64_t> dist(0, w.count() - 1);
  return std::chrono::milliseconds(dist(rng_));
}

std::chrono::milliseconds Backoff::failed() { return draw(); }

std::chrono::milliseconds Backoff::lost(std::chrono::milliseconds connected_for) {
  exponent_ =
      connected_for >= policy_.reset_after ? kLossExponent : std::max(exponent_, kLossExponent);
  return draw();
}

}  // namespace hom
