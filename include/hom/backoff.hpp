// The reconnect back-off of a session (SPEC §5, §9): exponential windows with full jitter,
// sized so that a fleet that lost its broker at the same instant comes back spread out.
// Pure: no clock, no I/O; the random source is seeded by the caller.
#pragma once

#include <chrono>
#include <cstdint>
#include <random>

namespace hom {

struct BackoffPolicy {
  // The first window when a connect attempt fails at start (MQTT_RECONNECT_MIN_MS); each
  // failure doubles it up to `max` (MQTT_RECONNECT_MAX_MS).
  std::chrono::milliseconds min{1000};
  std::chrono::milliseconds max{60000};
  // A connection that stood this long counts as healthy: losing it starts the windows
  // afresh. A shorter one (a flapping broker) keeps them growing.
  std::chrono::milliseconds reset_after{30000};
};

// Not thread-safe: one per session, used by the thread that connects.
//
// Every wait is drawn uniformly from [0, window) ("full jitter"). The window after a lost
// connection starts at 8 × min (8 s by default), not at min: a broker restart drops the whole
// fleet at once, and with a 1 s window a quick restart would see every device in the same
// second. With 8 s at most about 1/8 of the fleet retries in any one second, whatever the
// outage's length (longer outages have grown the windows further), and with the 60 s cap
// every device tries again within 60 s of the broker's return.
class Backoff {
 public:
  static constexpr int kLossExponent = 3;  // the first window after a loss: min × 2^3

  Backoff(BackoffPolicy policy, std::uint64_t seed);

  // A connect attempt failed: the wait before the next one.
  std::chrono::milliseconds failed();
  // A connection that stood for `connected_for` was lost: the wait before the first retry.
  std::chrono::milliseconds lost(std::chrono::milliseconds connected_for);

  // The window the next wait will be drawn from.
  std::chrono::milliseconds window() const;

 private:
  std::chrono::milliseconds draw();

  BackoffPolicy policy_;
  std::mt19937_64 rng_;
  int exponent_ = 0;
};

}  // namespace hom
