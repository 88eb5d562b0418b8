#include "hom/session.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>

#include <mqtt/async_client.h>

#include "hom/backoff.hpp"

namespace hom {

namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kTokenPoll = std::chrono::milliseconds(20);
// Messages produced while the broker is away wait in Paho's buffer, up to this many.
constexpr int kMaxBuffered = 100000;
// Paho refuses to publish past its in-flight window; replies must never be refused for that.
constexpr int kMaxInflight = 65535;
// MQTT 5 session expiry with a persistent session: the broker keeps it (and the requests
// sent meanwhile) until its own limit (Mosquitto: persistent_client_expiration).
constexpr std::uint32_t kSessionExpiryNever = 0xFFFFFFFF;
// Room for the topic and properties around the largest payload we accept.
constexpr std::size_t kInboundHeadroom = 64 * 1024;
// The protocol's own limit: a remaining length of at most 268 435 455 bytes.
constexpr std::size_t kProtocolMaxPacket = 268435455 + 5;
const std::string kContentType = "application/json";

std::size_t varint_size(std::size_t n) {
  std::size_t bytes = 1;
  while (n >= 128) n /= 128, ++bytes;
  return bytes;
}

// The broker does not speak MQTT 5: CONNACK "unacceptable protocol version" (3.1.1 code 1)
// or "unsupported protocol version" (MQTT 5 reason 0x84).
bool is_version_refusal(const mqtt::exception& e) {
  return e.get_return_code() == 1 || e.get_reason_code() == 0x84;
}

// The broker took the TCP (and TLS) connection and the CONNECT, then closed the socket
// without a CONNACK: what RabbitMQ's MQTT plugin before 3.13 does with MQTT 5. Paho C 1.3
// reports exactly this case as "TCP connect completion failure" (CONNECT sent, then a
// socket error); a refused or failed TCP/TLS connection is "TCP/TLS connect failure".
bool is_closed_after_connect(const mqtt::exception& e) {
  return std::string(e.what()).find("TCP connect completion failure") != std::string::npos;
}

// The broker answered the CONNECT and said no (credentials, authorisation, ...): trying
// again with another protocol version would not help.
bool is_refusal(const mqtt::exception& e) {
  const int rc = e.get_return_code();
  return (rc >= 2 && rc <= 5) || (e.get_reason_code() >= 0x80 && !is_version_refusal(e));
}

const char* version_name(int version) { return version == MQTTVERSION_5 ? "5" : "3.1.1"; }

// Paho C 1.3 records every function entry and exit of its threads in a trace ring buffer,
// and frees that buffer when its last client is destroyed (MQTTAsync_terminate) without
// waiting for its two threads, which record one more exit on their way out. That write lands
// in freed memory and can corrupt the heap: seen as "corrupted double-linked list" when homd
// exited, and possible mid-run when a fallback to MQTT 3.1.1 replaces the only client.
// Recording errors only (the least Paho allows; the exits are below that) keeps its threads
// from writing there at all, and spares them that work on every call.
void limit_paho_trace() {
  static std::once_flag once;
  std::call_once(once, [] { MQTTAsync_setTraceLevel(MQTTASYNC_TRACE_ERROR); });
}

}  // namespace

std::size_t publish_packet_size(const OutboundMessage& m, bool v5, std::size_t content_type) {
  std::size_t remaining = 2 + m.topic.size() + (m.qos > 0 ? 2 : 0) + m.payload.size();
  if (v5) {
    std::size_t props = content_type && !m.binary ? 1 + 2 + content_type : 0;
    for (const auto& [name, value] : m.user) props += 1 + 2 + name.size() + 2 + value.size();
    if (m.correlation_data) props += 1 + 2 + m.correlation_data->size();
    if (m.expiry_s) props += 1 + 4;
    if (m.response_topic) props += 1 + 2 + m.response_topic->size();
    remaining += varint_size(props) + props;
  }
  return 1 + varint_size(remaining) + remaining;
}

struct MqttSession::Impl : public virtual mqtt::callback {
  Impl(SessionOptions o, MessageHandler m, ConnectedHandler c)
      : options(std::move(o)), on_message(std::move(m)), on_connected(std::move(c)) {
    use_311 = options.mqtt.version == MqttVersion::kV311;
  }

  // Paho ties the protocol version to the client object: a fallback needs a new one, any
  // other connect reuses the client (and what it buffered while disconnected). The old one
  // is destroyed before the new one exists.
  void make_client(int version) {
    std::shared_ptr<mqtt::async_client> previous;
    {
      std::lock_guard<std::mutex> lock(client_mu);
      if (client && mqtt_version == version) {
        build_options(version);
        return;
      }
      previous = std::move(client);  // publish() parks messages in `unsent` meanwhile
    }
    if (previous) {
      for (const auto& tok : previous->get_pending_delivery_tokens()) {
        if (const auto msg = tok->get_message()) {
          std::lock_guard<std::mutex> lock(client_mu);
          unsent.push_back(mqtt::make_message(msg->get_topic(), msg->get_payload(), msg->get_qos(),
                                              msg->is_retained()));
        }
      }
      previous.reset();
    }
    mqtt::create_options create(version, kMaxBuffered);
    // Messages produced while disconnected are kept and sent after the reconnect.
    create.set_send_while_disconnected(true, true);
    auto next = std::make_shared<mqtt::async_client>(options.mqtt.server_uri, options.client_id,
                                                     create, nullptr);
    next->set_callback(*this);
    // Over MQTT 5 a broker ends a connection with DISCONNECT (packet too large, session
    // taken over, ...): Paho reports that here, not through connection_lost().
    next->set_disconnected_handler([this](const mqtt::properties& props, mqtt::ReasonCode code) {
      std::string reason = mqtt::exception::reason_code_str(code);
      if (props.contains(mqtt::property::REASON_STRING))
        reason += ": " + mqtt::get<std::string>(props, mqtt::property::REASON_STRING);
      mark_lost("the broker disconnected us (" + reason + ")");
    });
    std::vector<mqtt::message_ptr> moved;
    {
      std::lock_guard<std::mutex> lock(client_mu);
      client = next;
      mqtt_version = version;
      moved.swap(unsent);
    }
    for (auto& msg : moved) {
      if (version != MQTTVERSION_5)  // 3.1.1 carries no properties
        msg = mqtt::make_message(msg->get_topic(), msg->get_payload(), msg->get_qos(),
                                 msg->is_retained());
      next->publish(std::move(msg));
    }
    if (!moved.empty())
      spdlog::info("moved {} unsent messages to the new MQTT client", moved.size());
    build_options(version);
  }

  // Builds `connect_options` in place: see the properties below.
  void build_options(int version) {
    auto builder = mqtt::connect_options_builder()
                       .mqtt_version(version)
                       .keep_alive_interval(std::chrono::seconds(options.mqtt.keepalive_s))
                       .max_inflight(kMaxInflight)
                       .automatic_reconnect(false);
    if (options.will)
      builder.will(mqtt::message(options.will->first, options.will->second, 1, true));
    if (version == MQTTVERSION_5) {
      builder.clean_start(options.clean_start);
    } else {
      builder.clean_session(options.clean_start);
    }
    if (options.mqtt.user) builder.user_name(*options.mqtt.user);
    if (options.mqtt.password) builder.password(*options.mqtt.password);
    if (options.mqtt.tls) {
      auto ssl = mqtt::ssl_options_builder()
                     .enable_server_cert_auth(!options.mqtt.tls_insecure)
                     .verify(!options.mqtt.tls_insecure)
                     .error_handler([](const std::string& msg) { spdlog::debug("TLS: {}", msg); })
                     .finalize();
      if (!options.mqtt.ca_file.empty()) ssl.set_trust_store(options.mqtt.ca_file);
      if (!options.mqtt.cert_file.empty()) ssl.set_key_store(options.mqtt.cert_file);
      if (!options.mqtt.key_file.empty()) ssl.set_private_key(options.mqtt.key_file);
      builder.ssl(std::move(ssl));
    }
    connect_options = builder.finalize();
    if (version == MQTTVERSION_5) {
      // Set on the final object: Paho C++ 1.2 loses the properties' C pointers when
      // connect_options built with properties is moved. Paho takes four-byte properties as
      // int32_t; the bits go on the wire.
      mqtt::properties props{
          {mqtt::property::SESSION_EXPIRY_INTERVAL,
           static_cast<std::int32_t>(options.clean_start ? 0u : kSessionExpiryNever)}};
      if (options.max_inbound_bytes > 0) {
        const auto limit = std::min(options.max_inbound_bytes + kInboundHeadroom,
                                    std::size_t{kProtocolMaxPacket - 5});
        props.add({mqtt::property::MAXIMUM_PACKET_SIZE, static_cast<std::int32_t>(limit)});
      }
      connect_options.set_properties(props);
    }
  }

  // Records a standing subscription (made again on every connect), replacing one with the
  // same filter.
  void keep(const Subscription& subscription) {
    std::lock_guard<std::mutex> lock(mu);
    const auto same = [&](const Subscription& x) { return x.filter == subscription.filter; };
    subscriptions.erase(std::remove_if(subscriptions.begin(), subscriptions.end(), same),
                        subscriptions.end());
    subscriptions.push_back(subscription);
  }

  std::shared_ptr<mqtt::async_client> current() const {
    std::lock_guard<std::mutex> lock(client_mu);
    return client;
  }

  void mark_lost(const std::string& why) {
    spdlog::warn("connection to the broker lost: {}", why);
    std::lock_guard<std::mutex> lock(mu);
    lost = true;
    cv.notify_all();
  }

  void connection_lost(const std::string& cause) override {
    mark_lost(cause.empty() ? "the connection closed" : cause);
  }

  void message_arrived(mqtt::const_message_ptr msg) override {
    try {
      InboundMessage in;
      in.topic = msg->get_topic();
      const auto& payload = msg->get_payload_ref();
      in.payload_bytes = payload.size();
      if (options.max_inbound_bytes == 0 || payload.size() <= options.max_inbound_bytes)
        in.payload.assign(payload.data(), payload.size());
      in.retained = msg->is_retained();
      in.qos = msg->get_qos();
      const mqtt::properties& props = msg->get_properties();
      if (props.contains(mqtt::property::RESPONSE_TOPIC))
        in.properties.response_topic =
            mqtt::get<std::string>(props, mqtt::property::RESPONSE_TOPIC);
      if (props.contains(mqtt::property::CORRELATION_DATA))
        in.properties.correlation_data =
            mqtt::get<mqtt::binary>(props, mqtt::property::CORRELATION_DATA);
      if (props.contains(mqtt::property::MESSAGE_EXPIRY_INTERVAL))
        in.properties.expiry_s =
            mqtt::get<std::uint32_t>(props, mqtt::property::MESSAGE_EXPIRY_INTERVAL);
      const std::size_t users = props.count(mqtt::property::USER_PROPERTY);
      for (std::size_t i = 0; i < users; ++i) {
        auto pair = mqtt::get<mqtt::string_pair>(props, mqtt::property::USER_PROPERTY, i);
        in.properties.user.emplace_back(std::move(std::get<0>(pair)), std::move(std::get<1>(pair)));
      }
      on_message(std::move(in));
    } catch (const std::exception& e) {
      // Never let an exception unwind into Paho's thread.
      spdlog::error("dropping a message on {}: {}", msg->get_topic(), e.what());
    }
  }

  // Waits for a token, but never for ever: an answer that does not come (a broker going
  // away half-way through) must end in a reconnect, and a stop request must not wait for
  // it at all (systemd and the SIGTERM drain have their own deadlines).
  static void await(const mqtt::token_ptr& tok, const char* what, const std::atomic<bool>& stop,
                    Clock::time_point deadline) {
    while (!tok->wait_for(kTokenPoll)) {
      if (stop) throw std::runtime_error(std::string("stopping while waiting for the ") + what);
      if (Clock::now() >= deadline)
        throw std::runtime_error(std::string("the broker did not answer the ") + what + " in time");
    }
  }

  // One CONNECT with one protocol version; the CONNACK's limits are read on success.
  std::optional<ConnectError> attempt(int version, const std::atomic<bool>& stop,
                                      Clock::time_point deadline, bool& maybe_no_mqtt5) {
    maybe_no_mqtt5 = false;
    make_client(version);
    const auto c = current();
    try {
      const auto left = std::chrono::ceil<std::chrono::seconds>(deadline - Clock::now());
      connect_options.set_connect_timeout(std::max<long>(1, static_cast<long>(left.count())));
      auto tok = c->connect(connect_options);
      await(tok, "CONNECT", stop, deadline);
      std::size_t limit = options.mqtt.max_message_bytes;
      int max_qos = 2;
      if (version == MQTTVERSION_5) {
        // A copy: get_connect_response() returns a temporary.
        const mqtt::connect_response response = tok->get_connect_response();
        const mqtt::properties props = response.get_properties();
        if (props.contains(mqtt::property::MAXIMUM_PACKET_SIZE)) {
          const auto broker = mqtt::get<std::uint32_t>(props, mqtt::property::MAXIMUM_PACKET_SIZE);
          limit =
              options.mqtt.max_message_bytes_set ? std::min<std::size_t>(limit, broker) : broker;
        } else if (!options.mqtt.max_message_bytes_set) {
          limit = kProtocolMaxPacket;
        }
        if (props.contains(mqtt::property::MAXIMUM_QOS))
          max_qos = mqtt::get<std::uint8_t>(props, mqtt::property::MAXIMUM_QOS);
      }
      max_packet = limit;
      broker_max_qos = max_qos;
      return std::nullopt;
    } catch (const mqtt::exception& e) {
      maybe_no_mqtt5 = is_version_refusal(e) || is_closed_after_connect(e);
      return ConnectError{e.what(), is_refusal(e)};
    } catch (const std::exception& e) {
      return ConnectError{e.what(), false};
    }
  }

  std::optional<ConnectError> connect(const std::atomic<bool>& stop, Clock::time_point deadline) {
    bool maybe_no_mqtt5 = false;
    if (use_311) return attempt(MQTTVERSION_3_1_1, stop, deadline, maybe_no_mqtt5);
    auto error = attempt(MQTTVERSION_5, stop, deadline, maybe_no_mqtt5);
    // Only a failure that says the broker may not speak MQTT 5 leads to 3.1.1: a broker that
    // is down, restarting or failing TLS must not be taken for one without MQTT 5 (and the
    // client is not replaced for nothing).
    if (!error || options.mqtt.version != MqttVersion::kAuto || !maybe_no_mqtt5) return error;
    // Some brokers refuse MQTT 5 in CONNACK; others (RabbitMQ's MQTT plugin before 3.13)
    // just close the socket. Either way 3.1.1 is tried at once, and kept if it works.
    bool ignored = false;
    if (auto second = attempt(MQTTVERSION_3_1_1, stop, deadline, ignored)) return second;
    spdlog::warn("the broker did not accept MQTT 5 ({}); using MQTT 3.1.1 from now on",
                 error->reason);
    use_311 = true;
    return std::nullopt;
  }

  std::optional<int> subscribe_now(const std::shared_ptr<mqtt::async_client>& c,
                                   const Subscription& s, const std::atomic<bool>& stop,
                                   Clock::time_point deadline) {
    mqtt::token_ptr tok;
    if (mqtt_version == MQTTVERSION_5 && s.no_retained) {
      tok = c->subscribe(
          s.filter, s.qos,
          mqtt::subscribe_options(false, false, mqtt::subscribe_options::DONT_SEND_RETAINED));
    } else {
      tok = c->subscribe(s.filter, s.qos);
    }
    await(tok, "SUBSCRIBE", stop, deadline);
    return granted(*tok, s);
  }

  // The QoS the SUBACK in `tok` granted for `s`; throws when the broker refused it.
  int granted(const mqtt::token& tok, const Subscription& s) {
    const std::vector<mqtt::ReasonCode> codes = tok.get_subscribe_response().get_reason_codes();
    const int code = codes.empty() ? s.qos : static_cast<int>(codes.front());
    if (code >= 0x80) {
      throw std::runtime_error("the broker refused the subscription to " + s.filter +
                               " (check its ACL)");
    }
    // Paho C++ 1.2 can hand back an uninitialised code for a 3.1.1 single-topic SUBACK:
    // anything that is not a QoS counts as the QoS asked for.
    const int granted = code >= 0 && code <= 2 ? code : s.qos;
    {
      std::lock_guard<std::mutex> lock(mu);
      granted_by_filter[s.filter] = granted;
    }
    if (granted < s.qos)
      spdlog::warn("the broker granted QoS {} for {} (asked {})", granted, s.filter, s.qos);
    return granted;
  }

  const SessionOptions options;
  MessageHandler on_message;
  ConnectedHandler on_connected;

  mutable std::mutex client_mu;
  std::shared_ptr<mqtt::async_client> client;  // guarded by client_mu
  std::vector<mqtt::message_ptr> unsent;       // guarded by client_mu: while replacing it
  std::atomic<int> mqtt_version{MQTTVERSION_5};
  bool use_311 = false;                   // the run() thread only: the fallback, remembered
  mqtt::connect_options connect_options;  // the run() thread only
  std::atomic<std::size_t> max_packet{256 * 1024};
  std::atomic<int> broker_max_qos{2};
  std::atomic<bool> downgrade_logged{false};

  mutable std::mutex mu;
  std::condition_variable cv;
  bool lost = false;                             // guarded by mu
  bool woken = false;                            // guarded by mu
  std::vector<Subscription> subscriptions;       // guarded by mu
  std::map<std::string, int> granted_by_filter;  // guarded by mu
};

MqttSession::MqttSession(SessionOptions options, MessageHandler on_message,
                         ConnectedHandler on_connected)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(on_message),
                                   std::move(on_connected))) {
  limit_paho_trace();
  impl_->make_client(impl_->use_311 ? MQTTVERSION_3_1_1 : MQTTVERSION_5);
}

MqttSession::~MqttSession() {
  std::shared_ptr<mqtt::async_client> c;
  {
    std::lock_guard<std::mutex> lock(impl_->client_mu);
    c = std::move(impl_->client);
  }
  try {
    if (c && c->is_connected()) c->disconnect()->wait_for(std::chrono::seconds(1));
  } catch (const std::exception&) {
  }
  // Destroyed first, while the rest of Impl (which its callbacks use) is still whole.
  c.reset();
}

std::optional<ConnectError> MqttSession::connect_once(const std::atomic<bool>& stop,
                                                      std::chrono::milliseconds timeout) {
  Impl& s = *impl_;
  const auto deadline = Clock::now() + timeout;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.lost = false;
    s.granted_by_filter.clear();
  }
  if (auto error = s.connect(stop, deadline)) {
    if (s.options.mqtt.tls && !error->refused) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      const std::string why =
          diagnose_tls(s.options.mqtt, std::max(left, std::chrono::milliseconds(2000)));
      if (!why.empty()) error->reason += " (TLS: " + why + ")";
    }
    return error;
  }
  const auto c = s.current();
  try {
    std::vector<Subscription> subs;
    {
      std::lock_guard<std::mutex> lock(s.mu);
      subs = s.subscriptions;
    }
    for (const auto& sub : subs) s.subscribe_now(c, sub, stop, deadline + std::chrono::seconds(5));
  } catch (const std::exception& e) {
    try {
      c->disconnect()->wait_for(std::chrono::seconds(1));
    } catch (const std::exception&) {
    }
    return ConnectError{e.what(), true};
  }
  set_tcp_nodelay_to_port(s.options.mqtt.port);
  spdlog::info("connected to {} as {} (MQTT {})", s.options.mqtt.server_uri, s.options.client_id,
               version_name(s.mqtt_version));
  if (s.on_connected) s.on_connected();
  return std::nullopt;
}

void MqttSession::run(const std::atomic<bool>& stop, const std::function<void()>& tick) {
  Impl& s = *impl_;
  std::random_device entropy;
  const std::uint64_t seed = (std::uint64_t{entropy()} << 32) ^ entropy();
  Backoff backoff({s.options.mqtt.reconnect_min, s.options.mqtt.reconnect_max}, seed);
  const auto wait_ticking = [&](std::chrono::milliseconds total,
                                const std::function<bool()>& pred) {
    const auto end = Clock::now() + total;
    while (!stop && !pred()) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
      if (left.count() <= 0) return;
      {
        std::unique_lock<std::mutex> lock(s.mu);
        s.cv.wait_for(lock, std::min<std::chrono::milliseconds>(left, kTick),
                      [&] { return stop.load() || s.woken || s.lost; });
        s.woken = false;
      }
      if (tick) tick();
    }
  };
  const auto never = [] { return false; };
  while (!stop) {
    const auto error = connect_once(stop, std::chrono::seconds(15));
    if (!error) {
      if (tick) tick();
      const auto since = Clock::now();
      // Lost by Paho's callbacks, or found closed at a tick: a connection that went away
      // without either callback (it happens) is noticed within kTick.
      wait_ticking(std::chrono::hours(24 * 365 * 100), [&] {
        {
          std::lock_guard<std::mutex> lock(s.mu);
          if (s.lost) return true;
        }
        return !connected();
      });
      if (stop) break;
      bool noticed = false;
      {
        std::lock_guard<std::mutex> lock(s.mu);
        noticed = s.lost;
      }
      if (!noticed) s.mark_lost("found closed");
      {
        std::lock_guard<std::mutex> lock(s.mu);
        s.lost = false;  // else the wait below would wake at once, again and again
      }
      // A fleet loses its broker at the same instant: even the first retry is jittered.
      const auto delay =
          backoff.lost(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since));
      spdlog::info("reconnecting in {:.1f} s", delay.count() / 1000.0);
      wait_ticking(delay, never);
      continue;
    }
    if (stop) break;
    const auto delay = backoff.failed();
    spdlog::warn("connect to {} failed: {}; retrying in {:.1f} s", s.options.mqtt.server_uri,
                 error->reason, delay.count() / 1000.0);
    if (tick) tick();
    wait_ticking(delay, never);
  }
}

void MqttSession::wake() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->woken = true;
  impl_->cv.notify_all();
}

std::optional<int> MqttSession::subscribe(const Subscription& subscription,
                                          std::chrono::milliseconds timeout) {
  Impl& s = *impl_;
  s.keep(subscription);
  const auto c = s.current();
  if (!c || !c->is_connected()) return std::nullopt;
  const std::atomic<bool> never{false};
  try {
    return s.subscribe_now(c, subscription, never, Clock::now() + timeout);
  } catch (const std::exception& e) {
    spdlog::warn("subscribe to {}: {}", subscription.filter, e.what());
    return std::nullopt;
  }
}

namespace {

// Lives until Paho reports the SUBACK (or the failure), then deletes itself.
class SubscribeListener : public mqtt::iaction_listener {
 public:
  using Granted = std::function<int(const mqtt::token&)>;
  SubscribeListener(std::string filter, Granted granted,
                    std::function<void(std::optional<int>)> done)
      : filter_(std::move(filter)), granted_(std::move(granted)), done_(std::move(done)) {}

  void on_success(const mqtt::token& tok) override {
    std::optional<int> qos;
    try {
      qos = granted_(tok);
    } catch (const std::exception& e) {
      spdlog::warn("subscribe to {}: {}", filter_, e.what());
    }
    finish(qos);
  }
  void on_failure(const mqtt::token&) override {
    spdlog::warn("subscribe to {}: no SUBACK", filter_);
    finish(std::nullopt);
  }
  // Paho did not take the subscription: nothing else will call the listener.
  void abandon() { finish(std::nullopt); }

 private:
  void finish(std::optional<int> qos) {
    auto done = std::move(done_);
    delete this;
    done(qos);
  }

  std::string filter_;
  Granted granted_;
  std::function<void(std::optional<int>)> done_;
};

}  // namespace

void MqttSession::subscribe_async(const Subscription& subscription,
                                  std::function<void(std::optional<int>)> done) {
  Impl& s = *impl_;
  s.keep(subscription);
  const auto c = s.current();
  if (!c || !c->is_connected()) return done(std::nullopt);
  auto* listener = new SubscribeListener(
      subscription.filter,
      [&s, subscription](const mqtt::token& tok) { return s.granted(tok, subscription); },
      std::move(done));
  try {
    if (s.mqtt_version == MQTTVERSION_5 && subscription.no_retained) {
      c->subscribe(
          subscription.filter, subscription.qos, nullptr, *listener,
          mqtt::subscribe_options(false, false, mqtt::subscribe_options::DONT_SEND_RETAINED));
    } else {
      c->subscribe(subscription.filter, subscription.qos, nullptr, *listener);
    }
  } catch (const std::exception& e) {
    // Paho refused to queue it (disconnected meanwhile): the listener will not be called.
    spdlog::warn("subscribe to {}: {}", subscription.filter, e.what());
    listener->abandon();
  }
}

std::optional<int> MqttSession::granted_qos(const std::string& filter) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  const auto it = impl_->granted_by_filter.find(filter);
  if (it == impl_->granted_by_filter.end()) return std::nullopt;
  return it->second;
}

void MqttSession::publish(OutboundMessage message) {
  Impl& s = *impl_;
  const int max_qos = s.broker_max_qos;
  if (message.qos > max_qos) {
    if (!s.downgrade_logged.exchange(true))
      spdlog::warn("the broker's Maximum QoS is {}: publishing at QoS {}", max_qos, max_qos);
    message.qos = max_qos;
  }
  try {
    auto msg = mqtt::make_message(message.topic, std::move(message.payload), message.qos,
                                  message.retained);
    if (s.mqtt_version == MQTTVERSION_5) {
      mqtt::properties props;
      if (!message.binary) props.add({mqtt::property::CONTENT_TYPE, kContentType});
      for (const auto& [name, value] : message.user)
        props.add({mqtt::property::USER_PROPERTY, name, value});
      if (message.correlation_data)
        props.add({mqtt::property::CORRELATION_DATA, *message.correlation_data});
      if (message.expiry_s)
        props.add({mqtt::property::MESSAGE_EXPIRY_INTERVAL,
                   static_cast<std::int32_t>(*message.expiry_s)});
      if (message.response_topic)
        props.add({mqtt::property::RESPONSE_TOPIC, *message.response_topic});
      msg->set_properties(std::move(props));
    }
    std::shared_ptr<mqtt::async_client> c;
    {
      std::lock_guard<std::mutex> lock(s.client_mu);
      if (!s.client) {
        s.unsent.push_back(std::move(msg));  // the client is being replaced
        return;
      }
      c = s.client;
    }
    c->publish(std::move(msg));
  } catch (const std::exception& e) {
    spdlog::error("could not publish on {}: {}", message.topic, e.what());
  }
}

bool MqttSession::fits(const OutboundMessage& message) const {
  return message.payload.size() <= payload_room(message);
}

std::size_t MqttSession::payload_room(const OutboundMessage& message) const {
  OutboundMessage m;  // the size without copying the payload
  m.topic = message.topic;
  m.qos = std::min(message.qos, impl_->broker_max_qos.load());
  m.correlation_data = message.correlation_data;
  m.expiry_s = message.expiry_s;
  m.response_topic = message.response_topic;
  m.user = message.user;
  m.binary = message.binary;
  const bool v5 = impl_->mqtt_version == MQTTVERSION_5;
  // The remaining length's own size grows with the payload: counted at its largest.
  const std::size_t size = publish_packet_size(m, v5, kContentType.size()) + 3;
  const std::size_t max = impl_->max_packet;
  return size >= max ? 0 : max - size;
}

std::size_t MqttSession::max_packet_bytes() const { return impl_->max_packet; }

bool MqttSession::flush(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  const auto c = impl_->current();
  if (!c) return true;
  while (!c->get_pending_delivery_tokens().empty()) {
    if (Clock::now() >= deadline || !c->is_connected()) return false;
    // Paho offers no "all delivered" wait: poll the pending set until the deadline.
    std::unique_lock<std::mutex> lock(impl_->mu);
    impl_->cv.wait_for(lock, std::chrono::milliseconds(5));
  }
  return true;
}

void MqttSession::disconnect(std::chrono::milliseconds timeout,
                             std::optional<std::pair<std::string, std::string>> last) {
  const auto deadline = Clock::now() + timeout;
  const auto c = impl_->current();
  if (!c) return;
  try {
    if (!c->is_connected()) {
      const auto pending = c->get_pending_delivery_tokens().size();
      if (pending) spdlog::warn("disconnected with {} messages not delivered", pending);
      return;
    }
    if (last) {
      OutboundMessage m;
      m.topic = last->first;
      m.payload = last->second;
      m.qos = 1;
      m.retained = true;
      publish(std::move(m));
    }
    if (!flush(timeout))
      spdlog::warn("{} messages still unacknowledged at disconnect",
                   c->get_pending_delivery_tokens().size());
    const auto left =
        std::max(std::chrono::milliseconds(100),
                 std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
    c->disconnect(static_cast<int>(left.count()))->wait_for(left);
  } catch (const std::exception& e) {
    spdlog::warn("disconnect: {}", e.what());
  }
}

bool MqttSession::connected() const {
  const auto c = impl_->current();
  return c && c->is_connected();
}

bool MqttSession::mqtt5() const { return impl_->mqtt_version == MQTTVERSION_5; }

}  // namespace hom
