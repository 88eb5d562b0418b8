// A thin synchronous-setup, asynchronous-traffic wrapper over the Paho C async client, shared
// by hom-loadgen and hom-echo. Paho C rather than the C++ layer: one copy less per message
// and no per-message shared_ptr, which matters when the tool itself must not be the limit.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include <MQTTAsync.h>

namespace hom::bench {

// Thread safety: connect(), subscribe() and disconnect() are for one setup thread;
// publish() may be called from any thread, the message callback included. The message
// callback runs on Paho's single receive thread.
class PahoClient {
 public:
  using MessageFn =
      std::function<void(std::string_view topic, std::string_view payload, int qos, bool retained)>;

  PahoClient(const std::string& host, int port, const std::string& client_id, MessageFn on_message);
  ~PahoClient();
  PahoClient(const PahoClient&) = delete;
  PahoClient& operator=(const PahoClient&) = delete;

  // Connects with a clean session; with `nodelay`, disables Nagle on the connection's
  // socket (Paho C never does). Throws std::runtime_error on failure or after `timeout`.
  void connect(bool nodelay, std::chrono::milliseconds timeout);
  // Subscribes and waits for the SUBACK; throws when refused or after `timeout`.
  void subscribe(const std::string& filter, int qos, std::chrono::milliseconds timeout);
  // Queues one publish; false when Paho refused it (disconnected, buffer full).
  bool publish(const std::string& topic, std::string_view payload, int qos);
  void disconnect(std::chrono::milliseconds timeout);

  bool lost() const { return lost_.load(); }

 private:
  struct Waiter {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;  // guarded by mu
    int rc = 0;         // guarded by mu; 0 success, else Paho's code
    int granted_qos = 0;
  };

  static void on_success(void* context, MQTTAsync_successData* data);
  static void on_failure(void* context, MQTTAsync_failureData* data);
  static int on_message(void* context, char* topic, int topic_len, MQTTAsync_message* message);
  static void on_lost(void* context, char* cause);
  int wait(std::chrono::milliseconds timeout, const char* what);

  const int port_;
  MessageFn on_message_;
  MQTTAsync client_ = nullptr;
  Waiter waiter_;
  std::atomic<bool> lost_{false};
};

// Sets TCP_NODELAY on every TCP socket of this process connected to `peer_port`; returns
// how many. Paho C opens its socket itself and offers no hook, so it is found in
// /proc/self/fd once the connection is up.
int set_tcp_nodelay_to_port(int peer_port);

}  // namespace hom::bench
