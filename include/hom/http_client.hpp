// Performs requests against the local API with libcurl.
#pragma once

#include <atomic>
#include <memory>

#include "hom/config.hpp"
#include "hom/request.hpp"
#include "hom/response.hpp"

namespace hom {

// One libcurl easy handle, reused across calls so connections to the API are kept alive.
// Not thread-safe: give each worker thread its own HttpClient.
class HttpClient {
 public:
  // `abort`, when given, aborts a running call once it becomes true (the call then
  // answers 503 "shutting down").
  explicit HttpClient(const HttpConfig& config, const std::atomic<bool>* abort = nullptr);
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Never throws. The API's response, or a bridge error: 502 (unreachable, TLS, response
  // too large), 504 (timeout) or 503 (aborted). Sets status, body and headers; the caller sets
  // req_id.
  Response perform(const Request& request);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Call once before any thread starts (curl_global_init is not thread-safe).
void http_global_init();

}  // namespace hom
