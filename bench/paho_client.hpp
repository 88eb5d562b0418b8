// A thin synchronous-setup, asynchronous-traffic wrapper over the Paho C async client, shared
// by hom-loadgen and hom-echo. Paho C rather than the C++ layer: one copy less per message
// and no per-message shared_ptr, which matters when the tool itself must not be the limit.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
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
  //
  // With `persistent`: a persistent session instead (clean session off, so the broker keeps
  // the subscriptions and the QoS 1/2 messages of this client id while it is away, and Paho
  // resends its unacknowledged publishes after a reconnect) and Paho's automatic reconnect
  // (1 s, doubling to 4 s). Publishes are refused while disconnected, never buffered.
  void connect(bool nodelay, std::chrono::milliseconds timeout, bool persistent = false);
  // Subscribes and waits for the SUBACK; throws when refused or after `timeout`.
  void subscribe(const std::string& filter, int qos, std::chrono::milliseconds timeout);
  // Queues one publish; false when Paho refused it (disconnected, buffer full).
  bool publish(const std::string& topic, std::string_view payload, int qos);

  // Called once per tracked publish, on a Paho thread: delivered (QoS 0: written, QoS 1:
  // PUBACK, QoS 2: PUBCOMP) or failed (Paho gave up on it). Set before connect().
  using DeliveryFn = std::function<void(std::uint64_t tag, bool delivered)>;
  void on_delivery(DeliveryFn fn) { on_delivery_ = std::move(fn); }
  // Called on a Paho thread after every successful (re)connect. Set before connect().
  void on_connected(std::function<void()> fn) { on_connected_ = std::move(fn); }
  // publish() whose outcome is reported to the DeliveryFn with `tag`; Paho's return code
  // (MQTTASYNC_SUCCESS, or the reason it refused: then no report follows).
  int publish_tracked(const std::string& topic, std::string_view payload, int qos,
                      std::uint64_t tag);
  // Subscribes without waiting (from the connected callback); false when refused at once.
  bool subscribe_async(const std::string& filter, int qos);
  bool connected() const;
  // Persistent mode, while disconnected: try again now rather than at Paho's next retry.
  void reconnect_now();
  void disconnect(std::chrono::milliseconds timeout);

  bool lost() const { return lost_.load(); }
  // Connections lost, and connects (the first one included) that succeeded.
  std::uint64_t losses() const { return losses_.load(); }
  std::uint64_t connects() const { return connects_.load(); }

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
  static void on_connect(void* context, char* cause);
  static void on_delivered(void* context, MQTTAsync_successData* data);
  static void on_undelivered(void* context, MQTTAsync_failureData* data);
  int wait(std::chrono::milliseconds timeout, const char* what);

  const int port_;
  MessageFn on_message_;
  MQTTAsync client_ = nullptr;
  Waiter waiter_;
  std::atomic<bool> lost_{false};
  std::atomic<std::uint64_t> losses_{0}, connects_{0};
  bool nodelay_ = false;
  DeliveryFn on_delivery_;
  std::function<void()> on_connected_;
  std::atomic<bool> closing_{false};  // destroying: delivery reports are dropped
};

// Sets TCP_NODELAY on every TCP socket of this process connected to `peer_port`; returns
// how many. Paho C opens its socket itself and offers no hook, so it is found in
// /proc/self/fd once the connection is up.
int set_tcp_nodelay_to_port(int peer_port);

}  // namespace hom::bench
