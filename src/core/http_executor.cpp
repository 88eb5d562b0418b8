#include "hom/http_executor.hpp"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>

namespace hom {

HttpResult HttpExecutor::perform_stream(const Request& request, StreamChannel& channel) {
  HttpResult result = perform(request);
  if (result.outcome != HttpResult::Outcome::kResponse) return result;
  channel.head(result.status, result.headers);
  // The whole body at once, in pieces the size curl would hand over, waiting for the window.
  std::mutex mu;
  std::condition_variable cv;
  bool woken = false;
  channel.set_waker([&] {
    std::lock_guard<std::mutex> lock(mu);
    woken = true;
    cv.notify_all();
  });
  constexpr std::size_t kPiece = 16 * 1024;
  std::string_view rest = result.body;
  while (!rest.empty()) {
    const auto piece = rest.substr(0, kPiece);
    if (channel.body(piece)) {
      rest.remove_prefix(piece.size());
      continue;
    }
    if (const auto why = channel.stop_reason(); !why.empty()) {
      channel.set_waker({});
      result.outcome = HttpResult::Outcome::kUnreachable;
      result.reason = why;
      return result;
    }
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, std::chrono::milliseconds(100), [&] { return woken; });
    woken = false;
  }
  channel.set_waker({});
  result.body.clear();
  return result;
}

}  // namespace hom
