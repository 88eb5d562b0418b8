#include "hom/mqtt_link.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>

#include <mqtt/async_client.h>

#include "hom/presence.hpp"
#include "hom/topic.hpp"

namespace hom {

bool tcp_nodelay_linked();  // tcp_nodelay.cpp: TCP_NODELAY on the broker connection

namespace {
constexpr auto kMinBackoff = std::chrono::seconds(1);
constexpr auto kMaxBackoff = std::chrono::seconds(60);
constexpr auto kConnectTimeout = std::chrono::seconds(10);
// Longest wait for the broker's answer to CONNECT (Paho's own timeout is kConnectTimeout)
// or SUBSCRIBE.
constexpr auto kTokenTimeout = std::chrono::seconds(15);
constexpr auto kTokenPoll = std::chrono::milliseconds(100);
// Replies produced while the broker is away wait in Paho's buffer up to this many.
constexpr int kMaxBuffered = 100000;
// Paho refuses to publish past its in-flight window; replies must never be refused for that.
constexpr int kMaxInflight = 65535;
// MQTT 5 session expiry with a persistent session: the broker keeps it (and the requests
// sent meanwhile) until its own limit (Mosquitto: persistent_client_expiration).
constexpr std::uint32_t kSessionExpiryNever = 0xFFFFFFFF;
const std::string kContentType = "application/json";

// The broker does not speak MQTT 5: CONNACK "unacceptable protocol version" (3.1.1 code 1)
// or "unsupported protocol version" (MQTT 5 reason 0x84).
bool is_version_refusal(const mqtt::exception& e) {
  return e.get_return_code() == 1 || e.get_reason_code() == 0x84;
}
}  // namespace

struct MqttLink::Impl : public virtual mqtt::callback {
  Impl(const Config& c, MessageHandler handler)
      : config(c),
        filter(Topics(c.topics.start, c.topics.id).request_filter()),
        status_topic(Topics(c.topics.start, c.topics.id).status_topic()),
        on_message(std::move(handler)) {
    (void)tcp_nodelay_linked();
    make_client(config.mqtt.version == MqttVersion::kV311 ? MQTTVERSION_3_1_1 : MQTTVERSION_5);
  }

  // Paho ties the protocol version to the client object: a fallback needs a new one.
  void make_client(int version) {
    mqtt_version = version;
    mqtt::create_options create(version, kMaxBuffered);
    // Replies produced while disconnected are kept and sent after the reconnect.
    create.set_send_while_disconnected(true, true);
    client = std::make_unique<mqtt::async_client>(config.mqtt.server_uri, config.mqtt.client_id,
                                                  create, nullptr);
    client->set_callback(*this);

    auto builder = mqtt::connect_options_builder()
                       .mqtt_version(version)
                       .keep_alive_interval(std::chrono::seconds(config.mqtt.keepalive_s))
                       .connect_timeout(kConnectTimeout)
                       .max_inflight(kMaxInflight)
                       .automatic_reconnect(false)
                       .will(mqtt::message(status_topic, offline_document(), 1, true));
    if (version == MQTTVERSION_5) {
      builder.clean_start(config.mqtt.clean_session);
    } else {
      builder.clean_session(config.mqtt.clean_session);
    }
    if (config.mqtt.user) builder.user_name(*config.mqtt.user);
    if (config.mqtt.password) builder.password(*config.mqtt.password);
    if (config.mqtt.tls) {
      auto ssl =
          mqtt::ssl_options_builder()
              .enable_server_cert_auth(!config.mqtt.tls_insecure)
              .verify(!config.mqtt.tls_insecure)
              .error_handler([](const std::string& msg) { spdlog::warn("MQTT TLS: {}", msg); })
              .finalize();
      if (!config.mqtt.ca_file.empty()) ssl.set_trust_store(config.mqtt.ca_file);
      if (!config.mqtt.cert_file.empty()) ssl.set_key_store(config.mqtt.cert_file);
      if (!config.mqtt.key_file.empty()) ssl.set_private_key(config.mqtt.key_file);
      builder.ssl(std::move(ssl));
    }
    connect_options = builder.finalize();
    if (version == MQTTVERSION_5) {
      // Set on the final object: Paho C++ 1.2 loses the properties' C pointers when
      // connect_options built with properties is moved (MQTTAsync_connect then reads freed
      // memory). Paho takes four-byte properties as int32_t; the bits go on the wire.
      connect_options.set_properties(
          {{mqtt::property::SESSION_EXPIRY_INTERVAL,
            static_cast<std::int32_t>(config.mqtt.clean_session ? 0u : kSessionExpiryNever)}});
    }
  }

  void connection_lost(const std::string& cause) override {
    spdlog::warn("connection to the broker lost{}{}", cause.empty() ? "" : ": ", cause);
    std::lock_guard<std::mutex> lock(mu);
    lost = true;
    cv.notify_all();
  }

  void message_arrived(mqtt::const_message_ptr msg) override {
    try {
      InboundMessage in{msg->get_topic(),   msg->get_payload_str(), msg->get_payload_ref().size(),
                        msg->is_retained(), msg->get_qos(),         {}};
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
      on_message(std::move(in));
    } catch (const std::exception& e) {
      // Never let an exception unwind into Paho's thread.
      spdlog::error("dropping a message on {}: {}", msg->get_topic(), e.what());
    }
  }

  void wait(const std::atomic<bool>& stop, std::chrono::milliseconds timeout,
            const std::function<bool()>& pred) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, timeout, [&] { return stop.load() || woken || pred(); });
    woken = false;
  }

  // Waits for a token, but never for ever: an answer that does not come (a broker going
  // away half-way through) must end in a reconnect, and a stop request must not wait for
  // it at all (systemd and the SIGTERM drain have their own deadlines).
  static void await(const mqtt::token_ptr& tok, const char* what, const std::atomic<bool>& stop) {
    const auto end = std::chrono::steady_clock::now() + kTokenTimeout;
    while (!tok->wait_for(kTokenPoll)) {
      if (stop) throw std::runtime_error(std::string("stopping while waiting for the ") + what);
      if (std::chrono::steady_clock::now() >= end)
        throw std::runtime_error(std::string("the broker did not answer the ") + what + " within " +
                                 std::to_string(kTokenTimeout.count()) + " s");
    }
  }

  void connect_and_subscribe(const std::atomic<bool>& stop) {
    try {
      await(client->connect(connect_options), "CONNECT", stop);
    } catch (const mqtt::exception& e) {
      if (config.mqtt.version != MqttVersion::kAuto || mqtt_version != MQTTVERSION_5 ||
          !is_version_refusal(e))
        throw;
      spdlog::warn("the broker refused MQTT 5 ({}); falling back to MQTT 3.1.1", e.what());
      make_client(MQTTVERSION_3_1_1);
      await(client->connect(connect_options), "CONNECT", stop);
    }
    mqtt::token_ptr tok;
    if (mqtt_version == MQTTVERSION_5) {
      // Retain Handling 2: a stored retained request is never even delivered.
      tok = client->subscribe(
          filter, 2,
          mqtt::subscribe_options(false, false, mqtt::subscribe_options::DONT_SEND_RETAINED));
    } else {
      tok = client->subscribe(filter, 2);
    }
    await(tok, "SUBSCRIBE", stop);
    const mqtt::subscribe_response response = tok->get_subscribe_response();
    const std::vector<mqtt::ReasonCode> codes = response.get_reason_codes();
    // Paho C++ 1.2 can hand back an uninitialised code for a 3.1.1 single-topic SUBACK: only
    // a real failure code (0x80..0xA2) counts as a refusal.
    const int code = codes.empty() ? 0 : static_cast<int>(codes.front());
    if (code >= 0x80 && code <= 0xA2) {
      throw std::runtime_error("the broker refused the subscription to " + filter +
                               " (check its ACL)");
    }
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    client->publish(mqtt::make_message(
        status_topic,
        online_document(HOM_VERSION, std::chrono::duration_cast<std::chrono::seconds>(now).count()),
        1, true));
  }

  const Config config;
  const std::string filter;
  const std::string status_topic;
  MessageHandler on_message;
  // Replaced only by make_client() on the run() thread before any publish can race it:
  // messages (and so replies) only flow once connected.
  std::unique_ptr<mqtt::async_client> client;
  std::atomic<int> mqtt_version{MQTTVERSION_5};
  mqtt::connect_options connect_options;

  std::mutex mu;
  std::condition_variable cv;
  bool lost = false;   // guarded by mu
  bool woken = false;  // guarded by mu
};

MqttLink::MqttLink(const Config& config, MessageHandler on_message)
    : impl_(std::make_unique<Impl>(config, std::move(on_message))) {}

MqttLink::~MqttLink() {
  try {
    if (impl_->client->is_connected())
      impl_->client->disconnect()->wait_for(std::chrono::seconds(1));
  } catch (const std::exception&) {
  }
}

void MqttLink::run(const std::atomic<bool>& stop, const std::function<void()>& tick) {
  Impl& s = *impl_;
  std::mt19937 rng(std::random_device{}());
  std::chrono::milliseconds backoff = kMinBackoff;
  const auto wait_ticking = [&](std::chrono::milliseconds total,
                                const std::function<bool()>& pred) {
    const auto end = std::chrono::steady_clock::now() + total;
    while (!stop && !pred()) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          end - std::chrono::steady_clock::now());
      if (left.count() <= 0) return;
      s.wait(stop, std::min<std::chrono::milliseconds>(left, kTick), pred);
      if (tick) tick();
    }
  };
  while (!stop) {
    try {
      {
        std::lock_guard<std::mutex> lock(s.mu);
        s.lost = false;
      }
      s.connect_and_subscribe(stop);
      spdlog::info("connected to {} as {} (MQTT {}); subscribed to {}", s.config.mqtt.server_uri,
                   s.config.mqtt.client_id, s.mqtt_version == MQTTVERSION_5 ? "5" : "3.1.1",
                   s.filter);
      if (tick) tick();
      backoff = kMinBackoff;
      wait_ticking(std::chrono::hours(24 * 365 * 100), [&] { return s.lost; });
      continue;  // lost: reconnect at once, back off only if that fails
    } catch (const std::exception& e) {
      if (stop) break;
      // Equal jitter: between half and all of the back-off, so a fleet does not reconnect
      // in lockstep after a broker restart.
      std::uniform_int_distribution<long> dist(backoff.count() / 2, backoff.count());
      const std::chrono::milliseconds delay(dist(rng));
      spdlog::warn("connect to {} failed: {}; retrying in {:.1f} s", s.config.mqtt.server_uri,
                   e.what(), delay.count() / 1000.0);
      try {
        if (s.client->is_connected()) s.client->disconnect()->wait_for(std::chrono::seconds(1));
      } catch (const std::exception&) {
      }
      if (tick) tick();
      wait_ticking(delay, [] { return false; });
      backoff = std::min<std::chrono::milliseconds>(backoff * 2, kMaxBackoff);
    }
  }
}

void MqttLink::wake() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->woken = true;
  impl_->cv.notify_all();
}

void MqttLink::disconnect(std::chrono::milliseconds timeout) {
  try {
    if (!impl_->client->is_connected()) return;
    // A clean shutdown does not send the Last Will: say offline ourselves.
    impl_->client->publish(mqtt::make_message(impl_->status_topic, offline_document(), 1, true))
        ->wait_for(timeout);
    impl_->client->disconnect(timeout)->wait_for(timeout);
  } catch (const std::exception& e) {
    spdlog::warn("disconnect: {}", e.what());
  }
}

void MqttLink::publish(OutboundMessage message) {
  try {
    auto msg = mqtt::make_message(message.topic, std::move(message.payload), message.qos, false);
    if (impl_->mqtt_version == MQTTVERSION_5) {
      mqtt::properties props{{mqtt::property::CONTENT_TYPE, kContentType}};
      if (message.correlation_data)
        props.add({mqtt::property::CORRELATION_DATA, *message.correlation_data});
      if (message.expiry_s)
        props.add({mqtt::property::MESSAGE_EXPIRY_INTERVAL,
                   static_cast<std::int32_t>(*message.expiry_s)});
      msg->set_properties(std::move(props));
    }
    impl_->client->publish(std::move(msg));
  } catch (const std::exception& e) {
    spdlog::error("could not publish the reply on {}: {}", message.topic, e.what());
  }
}

bool MqttLink::fits(const OutboundMessage&) const { return true; }

bool MqttLink::connected() const { return impl_->client->is_connected(); }

bool MqttLink::mqtt5() const { return impl_->mqtt_version == MQTTVERSION_5; }

}  // namespace hom
