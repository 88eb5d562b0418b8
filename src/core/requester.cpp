#include "hom/requester.hpp"

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>

#include <mqtt/async_client.h>

#include "hom/response.hpp"
#include "hom/topic.hpp"

namespace hom {

bool tcp_nodelay_linked();  // tcp_nodelay.cpp: TCP_NODELAY on the broker connection

using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string random_id() {
  std::random_device rd;
  std::uniform_int_distribution<unsigned> nibble(0, 15);
  std::string out;
  for (int i = 0; i < 16; ++i) out += "0123456789abcdef"[nibble(rd)];
  return out;
}

struct Requester::Impl : public virtual mqtt::callback {
  Impl(const MqttConfig& mqtt, std::string start_) : config(mqtt), start(std::move(start_)) {
    (void)tcp_nodelay_linked();
  }

  void make_client(int version) {
    mqtt_version = version;
    client = std::make_unique<mqtt::async_client>(config.server_uri, "hom-" + random_id(),
                                                  mqtt::create_options(version), nullptr);
    client->set_callback(*this);
  }

  void message_arrived(mqtt::const_message_ptr msg) override {
    std::lock_guard<std::mutex> lock(mu);
    const std::string& topic = msg->get_topic();
    if (const auto id = Topics(start, "_").status_device(topic)) {
      if (auto presence = parse_presence(msg->get_payload_str())) statuses[*id] = *presence;
    } else if (topic == response_topic || topic == own_topic) {
      json doc = parse_json(msg->get_payload_str()).value_or(json());
      const auto& props = msg->get_properties();
      // Ours by MQTT 5 Correlation Data, or (3.1.1, or a homd without MQTT 5) by req_id.
      const bool by_correlation =
          props.contains(mqtt::property::CORRELATION_DATA) &&
          mqtt::get<mqtt::binary>(props, mqtt::property::CORRELATION_DATA) == correlation;
      const bool by_req_id = doc.is_object() && doc.contains("req_id") && doc["req_id"] == req_id;
      const bool ours = doc.is_object() && (by_correlation || by_req_id);
      trace_locked(std::string(ours ? "reply" : "ignored a reply that is not ours") + " on " +
                   topic);
      if (ours && !reply) reply = std::move(doc);
    }
    cv.notify_all();
  }

  void trace_locked(const std::string& line) {
    if (trace) trace(line);
  }

  const MqttConfig config;
  std::string start;
  std::unique_ptr<mqtt::async_client> client;
  int mqtt_version = MQTTVERSION_5;
  std::function<void(const std::string&)> trace;

  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, Presence> statuses;  // guarded by mu
  std::string response_topic;                // guarded by mu: the mirrored topic
  std::string own_topic;                     // guarded by mu: MQTT 5 Response Topic
  std::string correlation;                   // guarded by mu
  json req_id;                               // guarded by mu
  std::optional<json> reply;                 // guarded by mu
};

Requester::Requester(const MqttConfig& mqtt, std::string start,
                     std::chrono::milliseconds connect_timeout)
    : impl_(std::make_unique<Impl>(mqtt, std::move(start))) {
  const auto options = [&](int version) {
    auto builder = mqtt::connect_options_builder()
                       .mqtt_version(version)
                       .keep_alive_interval(std::chrono::seconds(mqtt.keepalive_s))
                       .connect_timeout(connect_timeout);
    if (version == MQTTVERSION_5) {
      builder.clean_start(true);
    } else {
      builder.clean_session(true);
    }
    if (mqtt.user) builder.user_name(*mqtt.user);
    if (mqtt.password) builder.password(*mqtt.password);
    if (mqtt.tls) {
      auto ssl = mqtt::ssl_options_builder()
                     .enable_server_cert_auth(!mqtt.tls_insecure)
                     .verify(!mqtt.tls_insecure)
                     .finalize();
      if (!mqtt.ca_file.empty()) ssl.set_trust_store(mqtt.ca_file);
      if (!mqtt.cert_file.empty()) ssl.set_key_store(mqtt.cert_file);
      if (!mqtt.key_file.empty()) ssl.set_private_key(mqtt.key_file);
      builder.ssl(std::move(ssl));
    }
    return builder.finalize();
  };
  const int first = mqtt.version == MqttVersion::kV311 ? MQTTVERSION_3_1_1 : MQTTVERSION_5;
  try {
    impl_->make_client(first);
    try {
      impl_->client->connect(options(first))->wait();
    } catch (const mqtt::exception& e) {
      const bool refused = e.get_return_code() == 1 || e.get_reason_code() == 0x84;
      if (mqtt.version != MqttVersion::kAuto || first != MQTTVERSION_5 || !refused) throw;
      impl_->make_client(MQTTVERSION_3_1_1);
      impl_->client->connect(options(MQTTVERSION_3_1_1))->wait();
    }
  } catch (const mqtt::exception& e) {
    throw std::runtime_error("cannot connect to the broker at " + mqtt.server_uri + ": " +
                             e.what());
  }
}

Requester::~Requester() {
  try {
    if (impl_->client->is_connected())
      impl_->client->disconnect()->wait_for(std::chrono::seconds(2));
  } catch (const std::exception&) {
  }
}

void Requester::set_trace(std::function<void(const std::string&)> trace) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->trace = std::move(trace);
}

Requester::Result Requester::call(Call call) {
  Impl& s = *impl_;
  const auto deadline = Clock::now() + call.timeout;
  const Topics topics(s.start, call.device);
  const bool v5 = s.mqtt_version == MQTTVERSION_5;
  Result result;
  result.request_topic = topics.request_topic(call.verb, call.path);
  result.response_topic = topics.mirror(*topics.parse(result.request_topic));
  if (!call.payload.contains("req_id")) call.payload["req_id"] = random_id();
  {
    std::lock_guard<std::mutex> lock(s.mu);
    s.response_topic = result.response_topic;
    // MQTT 5: a reply topic of our own under {start}/res/{id}/ (the only place homd answers).
    s.own_topic = v5 ? topics.response_prefix() + "hom/" + random_id() : std::string();
    s.correlation = random_id();
    s.req_id = call.payload["req_id"];
    s.reply.reset();
  }

  // The broker sends a retained status right after its SUBACK, before the SUBACK of the
  // reply topic, so once the last subscription is acknowledged the presence is known.
  s.client->subscribe(topics.status_topic(), 1);
  // The mirrored topic too: a device whose homd speaks only 3.1.1 answers there.
  mqtt::token_ptr last = s.client->subscribe(result.response_topic, 2);
  if (v5) last = s.client->subscribe(s.own_topic, 2);
  last->wait();
  {
    std::unique_lock<std::mutex> lock(s.mu);
    s.trace_locked("subscribed to " + (v5 ? s.own_topic + " and " : "") + result.response_topic);
    const auto status = s.statuses.find(call.device);
    if (status != s.statuses.end() && !status->second.online) {
      if (!call.wait_online) {
        result.outcome = Outcome::kOffline;
        return result;
      }
      s.trace_locked("device " + call.device + " is offline; waiting for it");
      if (!s.cv.wait_until(lock, deadline, [&] { return s.statuses[call.device].online; })) {
        result.outcome = Outcome::kTimeout;
        return result;
      }
    }
  }

  auto msg = mqtt::make_message(result.request_topic, call.payload.dump(), call.qos, false);
  if (v5) {
    std::lock_guard<std::mutex> lock(s.mu);
    const auto expiry =
        std::chrono::ceil<std::chrono::seconds>(call.timeout).count();  // stale after the wait
    msg->set_properties({{mqtt::property::RESPONSE_TOPIC, s.own_topic},
                         {mqtt::property::CORRELATION_DATA, s.correlation},
                         {mqtt::property::CONTENT_TYPE, std::string("application/json")},
                         {mqtt::property::MESSAGE_EXPIRY_INTERVAL,
                          static_cast<std::int32_t>(std::max<long long>(1, expiry))}});
  }
  s.client->publish(msg);
  std::unique_lock<std::mutex> lock(s.mu);
  s.trace_locked("published on " + result.request_topic);
  if (s.cv.wait_until(lock, deadline, [&] { return s.reply.has_value(); })) {
    result.outcome = Outcome::kReply;
    result.reply = std::move(*s.reply);
  }
  return result;
}

std::vector<DeviceStatus> Requester::devices(std::chrono::milliseconds wait) {
  Impl& s = *impl_;
  s.client->subscribe(Topics(s.start, "_").status_filter(), 1)->wait();
  std::unique_lock<std::mutex> lock(s.mu);
  // Retained messages come right after the SUBACK; the wait bounds a slow broker.
  s.cv.wait_for(lock, wait, [] { return false; });
  std::vector<DeviceStatus> out;
  for (const auto& [id, presence] : s.statuses) out.push_back(DeviceStatus{id, presence});
  return out;
}

}  // namespace hom
