#include "paho_client.hpp"

#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>

namespace hom::bench {

namespace {
// Publishes queued in Paho beyond the in-flight window; a burst of 10 000 must fit.
constexpr int kMaxBuffered = 1 << 20;
}  // namespace

PahoClient::PahoClient(const std::string& host, int port, const std::string& client_id,
                       MessageFn on_message)
    : port_(port), on_message_(std::move(on_message)) {
  MQTTAsync_createOptions create = MQTTAsync_createOptions_initializer;
  create.MQTTVersion = MQTTVERSION_3_1_1;
  create.maxBufferedMessages = kMaxBuffered;
  const std::string uri = "tcp://" + host + ":" + std::to_string(port);
  int rc = MQTTAsync_createWithOptions(&client_, uri.c_str(), client_id.c_str(),
                                       MQTTCLIENT_PERSISTENCE_NONE, nullptr, &create);
  if (rc != MQTTASYNC_SUCCESS) throw std::runtime_error("MQTTAsync_create failed: " + uri);
  rc =
      MQTTAsync_setCallbacks(client_, this, &PahoClient::on_lost, &PahoClient::on_message, nullptr);
  if (rc != MQTTASYNC_SUCCESS) throw std::runtime_error("MQTTAsync_setCallbacks failed");
}

PahoClient::~PahoClient() {
  closing_ = true;
  MQTTAsync_destroy(&client_);
}

namespace {
// The context of one tracked publish: Paho reports its outcome exactly once (or never, when
// the client is destroyed first: then it is freed with nothing left to report to).
struct Delivery {
  PahoClient* client;
  std::uint64_t tag;
};
}  // namespace

void PahoClient::on_success(void* context, MQTTAsync_successData* data) {
  auto* self = static_cast<PahoClient*>(context);
  std::lock_guard<std::mutex> lock(self->waiter_.mu);
  self->waiter_.done = true;
  self->waiter_.rc = 0;
  self->waiter_.granted_qos = data ? data->alt.qos : 0;
  self->waiter_.cv.notify_all();
}

void PahoClient::on_failure(void* context, MQTTAsync_failureData* data) {
  auto* self = static_cast<PahoClient*>(context);
  std::lock_guard<std::mutex> lock(self->waiter_.mu);
  self->waiter_.done = true;
  self->waiter_.rc = data && data->code != 0 ? data->code : -1;
  self->waiter_.cv.notify_all();
}

int PahoClient::on_message(void* context, char* topic, int topic_len, MQTTAsync_message* message) {
  auto* self = static_cast<PahoClient*>(context);
  // topic_len is 0 when the topic holds no NUL and is NUL-terminated.
  const std::string_view t(topic, topic_len > 0 ? static_cast<std::size_t>(topic_len)
                                                : std::char_traits<char>::length(topic));
  const std::string_view p(static_cast<const char*>(message->payload),
                           static_cast<std::size_t>(message->payloadlen));
  self->on_message_(t, p, message->qos, message->retained != 0);
  MQTTAsync_freeMessage(&message);
  MQTTAsync_free(topic);
  return 1;
}

void PahoClient::on_lost(void* context, char* cause) {
  auto* self = static_cast<PahoClient*>(context);
  self->lost_ = true;
  ++self->losses_;
  if (cause) MQTTAsync_free(cause);
}

// `cause` is a string constant of Paho's ("automatic reconnect"): not ours to free.
void PahoClient::on_connect(void* context, char*) {
  auto* self = static_cast<PahoClient*>(context);
  // A new socket after each reconnect: Nagle off again.
  if (self->nodelay_) set_tcp_nodelay_to_port(self->port_);
  ++self->connects_;
  if (self->on_connected_) self->on_connected_();
}

void PahoClient::on_delivered(void* context, MQTTAsync_successData*) {
  auto* d = static_cast<Delivery*>(context);
  if (!d->client->closing_ && d->client->on_delivery_) d->client->on_delivery_(d->tag, true);
  delete d;
}

void PahoClient::on_undelivered(void* context, MQTTAsync_failureData*) {
  auto* d = static_cast<Delivery*>(context);
  if (!d->client->closing_ && d->client->on_delivery_) d->client->on_delivery_(d->tag, false);
  delete d;
}

int PahoClient::wait(std::chrono::milliseconds timeout, const char* what) {
  std::unique_lock<std::mutex> lock(waiter_.mu);
  if (!waiter_.cv.wait_for(lock, timeout, [this] { return waiter_.done; }))
    throw std::runtime_error(std::string(what) + " timed out");
  waiter_.done = false;
  if (waiter_.rc != 0)
    throw std::runtime_error(std::string(what) + " failed (Paho code " +
                             std::to_string(waiter_.rc) + ")");
  return waiter_.granted_qos;
}

void PahoClient::connect(bool nodelay, std::chrono::milliseconds timeout, bool persistent) {
  nodelay_ = nodelay;
  if (MQTTAsync_setConnected(client_, this, &PahoClient::on_connect) != MQTTASYNC_SUCCESS)
    throw std::runtime_error("MQTTAsync_setConnected failed");
  MQTTAsync_connectOptions options = MQTTAsync_connectOptions_initializer;
  options.keepAliveInterval = 30;
  options.cleansession = persistent ? 0 : 1;
  if (persistent) {
    options.automaticReconnect = 1;
    options.minRetryInterval = 1;
    options.maxRetryInterval = 4;
  }
  options.maxInflight = 65535;
  options.connectTimeout = static_cast<int>((timeout.count() + 999) / 1000);
  options.onSuccess = &PahoClient::on_success;
  options.onFailure = &PahoClient::on_failure;
  options.context = this;
  const int rc = MQTTAsync_connect(client_, &options);
  if (rc != MQTTASYNC_SUCCESS)
    throw std::runtime_error("MQTTAsync_connect refused (Paho code " + std::to_string(rc) + ")");
  wait(timeout, "connect");
  if (nodelay && set_tcp_nodelay_to_port(port_) == 0)
    throw std::runtime_error("could not find the broker connection to set TCP_NODELAY");
}

void PahoClient::subscribe(const std::string& filter, int qos, std::chrono::milliseconds timeout) {
  MQTTAsync_responseOptions options = MQTTAsync_responseOptions_initializer;
  options.onSuccess = &PahoClient::on_success;
  options.onFailure = &PahoClient::on_failure;
  options.context = this;
  const int rc = MQTTAsync_subscribe(client_, filter.c_str(), qos, &options);
  if (rc != MQTTASYNC_SUCCESS)
    throw std::runtime_error("MQTTAsync_subscribe refused (Paho code " + std::to_string(rc) + ")");
  if (wait(timeout, "subscribe") == 0x80)
    throw std::runtime_error("the broker refused the subscription to " + filter);
}

bool PahoClient::publish(const std::string& topic, std::string_view payload, int qos) {
  MQTTAsync_message message = MQTTAsync_message_initializer;
  message.payload = const_cast<char*>(payload.data());  // Paho copies it
  message.payloadlen = static_cast<int>(payload.size());
  message.qos = qos;
  return MQTTAsync_sendMessage(client_, topic.c_str(), &message, nullptr) == MQTTASYNC_SUCCESS;
}

int PahoClient::publish_tracked(const std::string& topic, std::string_view payload, int qos,
                                std::uint64_t tag) {
  MQTTAsync_message message = MQTTAsync_message_initializer;
  message.payload = const_cast<char*>(payload.data());  // Paho copies it
  message.payloadlen = static_cast<int>(payload.size());
  message.qos = qos;
  MQTTAsync_responseOptions options = MQTTAsync_responseOptions_initializer;
  options.onSuccess = &PahoClient::on_delivered;
  options.onFailure = &PahoClient::on_undelivered;
  auto* d = new Delivery{this, tag};
  options.context = d;
  const int rc = MQTTAsync_sendMessage(client_, topic.c_str(), &message, &options);
  if (rc != MQTTASYNC_SUCCESS) delete d;  // refused: Paho will not call back
  return rc;
}

bool PahoClient::subscribe_async(const std::string& filter, int qos) {
  return MQTTAsync_subscribe(client_, filter.c_str(), qos, nullptr) == MQTTASYNC_SUCCESS;
}

bool PahoClient::connected() const { return MQTTAsync_isConnected(client_) != 0; }

void PahoClient::reconnect_now() { MQTTAsync_reconnect(client_); }

void PahoClient::disconnect(std::chrono::milliseconds timeout) {
  MQTTAsync_disconnectOptions options = MQTTAsync_disconnectOptions_initializer;
  options.timeout = static_cast<int>(timeout.count());
  MQTTAsync_disconnect(client_, &options);
  // Paho finishes the disconnect on its own thread; destroy() waits for nothing more.
  for (int i = 0; i < 100 && MQTTAsync_isConnected(client_); ++i) usleep(10000);
}

int set_tcp_nodelay_to_port(int peer_port) {
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return 0;
  int changed = 0;
  while (const dirent* entry = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == dirfd(dir)) continue;
    int protocol = 0;
    socklen_t len = sizeof protocol;
    if (getsockopt(static_cast<int>(fd), SOL_SOCKET, SO_PROTOCOL, &protocol, &len) != 0 ||
        protocol != IPPROTO_TCP)
      continue;
    sockaddr_storage peer{};
    len = sizeof peer;
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&peer), &len) != 0) continue;
    int port = -1;
    if (peer.ss_family == AF_INET) port = ntohs(reinterpret_cast<sockaddr_in*>(&peer)->sin_port);
    if (peer.ss_family == AF_INET6) port = ntohs(reinterpret_cast<sockaddr_in6*>(&peer)->sin6_port);
    if (port != peer_port) continue;
    const int one = 1;
    if (setsockopt(static_cast<int>(fd), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0)
      ++changed;
  }
  closedir(dir);
  return changed;
}

}  // namespace hom::bench
