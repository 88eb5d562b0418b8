// The HTTP edge of the bridge: one request in, one HTTP-level result out. The bridge, not
// the executor, turns a result into a protocol reply (statuses 502/503/504, req_id).
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "hom/request.hpp"
#include "hom/response.hpp"

namespace hom {

// What one HTTP call came to.
struct HttpResult {
  enum class Outcome {
    kResponse,     // the API answered: status, body and headers are set
    kUnreachable,  // no response: connection refused, DNS, TLS, broken transfer
    kTimeout,      // no complete response within the request's timeout
    kTooLarge,     // the response body exceeds HTTP_MAX_RESPONSE_BYTES
    kAborted,      // abort() was called
    kStopped,      // a streamed call ended by its channel (a failed upload, a stall)
  };
  Outcome outcome = Outcome::kResponse;
  int status = 0;
  std::string body;
  HeaderList headers;  // names lower-case, in arrival order
  std::string reason;  // for anything but kResponse: what went wrong, for humans
};

// Where a streamed call (SPEC §7) puts its response as it arrives and takes its request body
// from. Called on the executor's thread, except wake-ups: the channel calls the waker given
// to set_waker() from any thread when it can take body bytes again or has upload bytes.
class StreamChannel {
 public:
  virtual ~StreamChannel() = default;
  // The final response's status and header block (names lower-case), before its body.
  virtual void head(int status, HeaderList headers) = 0;
  // Takes all of `bytes` (true), or none (false: the window is full; the executor pauses the
  // transfer and offers the same bytes again once ready_for_body()).
  virtual bool body(std::string_view bytes) = 0;
  virtual bool ready_for_body() = 0;
  // Nothing arrived for a few milliseconds: the channel publishes what it buffered.
  virtual void idle() = 0;
  // The request body (a streamed upload): copies up to `max` bytes into `out` and returns how
  // many; 0 at its end; kWait when none is there yet (paused until ready_for_read());
  // kFail to abort the call (the upload failed its checks).
  static constexpr long kWait = -1;
  static constexpr long kFail = -2;
  virtual long read(char* out, std::size_t max) = 0;
  virtual bool ready_for_read() = 0;
  virtual void set_waker(std::function<void()> wake) = 0;
  // Non-empty when the call must end now (the requester went away, the upload stalled or
  // failed its checks): the reason.
  virtual std::string stop_reason() = 0;
};

// Performs requests against the local API. perform() is called from one thread at a time
// (one executor per worker); abort() may be called from any thread.
class HttpExecutor {
 public:
  virtual ~HttpExecutor() = default;
  // Never throws.
  virtual HttpResult perform(const Request& request) = 0;
  // A streamed call: the response goes to `channel` as it arrives (the result's body stays
  // empty), and a streamed upload's body comes from it. This default, for executors that
  // cannot stream, performs the call and hands the whole body over at the end.
  virtual HttpResult perform_stream(const Request& request, StreamChannel& channel);
  // A running perform() and every later one return kAborted soon.
  virtual void abort() = 0;
};

// Makes one executor per worker thread.
using HttpExecutorFactory = std::function<std::unique_ptr<HttpExecutor>()>;

}  // namespace hom
