// Performs requests against the local API with libcurl.
#pragma once

#include <atomic>
#include <memory>

#include "hom/config.hpp"
#include "hom/http_executor.hpp"
#include "hom/request.hpp"

namespace hom {

// One libcurl easy handle, reused across calls so connections to the API are kept alive.
// perform() is not thread-safe: give each worker thread its own HttpClient. abort() is.
class HttpClient : public HttpExecutor {
 public:
  // `abort`, when given, aborts a running call once it becomes true, as abort() does.
  explicit HttpClient(const HttpConfig& config, const std::atomic<bool>* abort = nullptr);
  ~HttpClient() override;
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Never throws. The API's response (status, body, headers), or why there is none.
  HttpResult perform(const Request& request) override;
  // With curl's multi interface on this thread: paused while the channel's window is full
  // (nothing is buffered beyond it), woken by the channel.
  HttpResult perform_stream(const Request& request, StreamChannel& channel) override;
  void abort() override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Call once before any thread starts (curl_global_init is not thread-safe).
void http_global_init();

}  // namespace hom
