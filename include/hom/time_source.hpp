// Where time comes from, so that code with timeouts can be tested with a fake clock.
#pragma once

#include <chrono>
#include <functional>

namespace hom {

// Returns the current time of the monotonic clock (std::chrono::steady_clock::now in
// production). Called from any thread: implementations must be thread-safe.
using TimeSource = std::function<std::chrono::steady_clock::time_point()>;

}  // namespace hom
