// The HTTP edge of the bridge: one request in, one HTTP-level result out. The bridge, not
// the executor, turns a result into a protocol reply (statuses 502/503/504, req_id).
#pragma once

#include <functional>
#include <memory>
#include <string>

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
  };
  Outcome outcome = Outcome::kResponse;
  int status = 0;
  std::string body;
  HeaderList headers;  // names lower-case, in arrival order
  std::string reason;  // for anything but kResponse: what went wrong, for humans
};

// Performs requests against the local API. perform() is called from one thread at a time
// (one executor per worker); abort() may be called from any thread.
class HttpExecutor {
 public:
  virtual ~HttpExecutor() = default;
  // Never throws.
  virtual HttpResult perform(const Request& request) = 0;
  // A running perform() and every later one return kAborted soon.
  virtual void abort() = 0;
};

// Makes one executor per worker thread.
using HttpExecutorFactory = std::function<std::unique_ptr<HttpExecutor>()>;

}  // namespace hom
