// hom-gateway's HTTP server (SPEC §6): Boost.Beast on one Asio thread. A request waiting
// for its device costs one small connection object, never a thread: the requester's
// completion is posted back to the I/O thread, which writes the response.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "hom/gateway.hpp"
#include "hom/requester.hpp"

namespace hom::gateway {

// start(), drain() and the destructor are called from one thread; the rest is thread-safe.
class Server {
 public:
  Server(const GatewayConfig& config, std::vector<Token> tokens, Requester& requester);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and listens (throws std::runtime_error naming the address on failure), then serves
  // on its own thread.
  void start();
  // The port actually bound (GATEWAY_LISTEN may say 0).
  int port() const;
  // Stops accepting, lets requests in flight finish for up to `grace`, then closes every
  // connection and stops the thread. Idempotent.
  void drain(std::chrono::milliseconds grace);

  std::size_t in_flight() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace hom::gateway
