#include "hom/device.hpp"

#include <spdlog/spdlog.h>

#include "hom/presence.hpp"
#include "hom/topic.hpp"

namespace hom {

namespace {

SessionOptions session_options(const Config& config) {
  SessionOptions o;
  o.mqtt = config.mqtt;
  o.client_id = config.mqtt.client_id;
  o.clean_start = config.mqtt.clean_session;
  o.will = std::make_pair(Topics(config.topics.start, config.topics.id).status_topic(),
                          offline_document());
  o.max_inbound_bytes = config.mqtt.max_payload_bytes;
  return o;
}

}  // namespace

Device::Device(const Config& config, std::unique_ptr<MessageFilter> filter)
    : config_(config),
      filter_(Topics(config.topics.start, config.topics.id).request_filter()),
      status_topic_(Topics(config.topics.start, config.topics.id).status_topic()),
      reply_qos_(config.mqtt.response_qos),
      gate_(std::move(filter)),
      session_(
          session_options(config),
          [this](InboundMessage&& message) {
            // Held while the message is handed on: ~Device waits for it before the bridge
            // goes (one Paho thread delivers, so nothing else ever waits for it).
            std::lock_guard<std::mutex> lock(deliver_mu_);
            Bridge* b = ready_;
            if (!b) return;
            if (gate_) {
              gate_->on_message(std::move(message), *b);
            } else {
              b->on_message(std::move(message));
            }
          },
          [this] { on_connected(); }) {
  if (gate_) gate_->set_downstream(*this);
  bridge_ = std::make_unique<Bridge>(config_, gate_ ? static_cast<Publisher&>(*gate_) : *this);
  {
    std::lock_guard<std::mutex> lock(deliver_mu_);
    ready_ = bridge_.get();
  }
  // Retain Handling 2: a stored retained request is never even delivered (MQTT 5).
  session_.subscribe(Subscription{filter_, 2, true});
}

Device::~Device() {
  {
    // The session (destroyed last) may still deliver a message: from now on it goes nowhere.
    std::lock_guard<std::mutex> lock(deliver_mu_);
    ready_ = nullptr;
  }
  if (gate_) gate_->stop();
  bridge_->stop(std::chrono::milliseconds(0));
}

void Device::on_connected() {
  if (const auto granted = session_.granted_qos(filter_)) {
    const int qos = std::min(config_.mqtt.response_qos, *granted);
    if (qos < config_.mqtt.response_qos && !downgrade_logged_.exchange(true))
      spdlog::warn("replies go out at QoS {}: the broker granted QoS {} for {}", qos, *granted,
                   filter_);
    reply_qos_ = qos;
  }
  spdlog::info("subscribed to {}", filter_);
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  OutboundMessage online;
  online.topic = status_topic_;
  online.payload =
      online_document(HOM_VERSION, std::chrono::duration_cast<std::chrono::seconds>(now).count());
  online.qos = 1;
  online.retained = true;
  session_.publish(std::move(online));
}

void Device::run(const std::atomic<bool>& stop, const std::function<void()>& tick) {
  session_.run(stop, tick);
}

void Device::wake() { session_.wake(); }

void Device::stop() {
  if (gate_) gate_->stop();
  bridge_->stop(config_.shutdown_grace);
  // No UNSUBSCRIBE: the broker keeps the session (and what arrives meanwhile) for the next
  // start. What the bridge answered is delivered before the offline presence.
  session_.disconnect(std::chrono::seconds(5), std::make_pair(status_topic_, offline_document()));
}

void Device::publish(OutboundMessage message) {
  message.qos = std::min(message.qos, reply_qos_.load());
  session_.publish(std::move(message));
}

bool Device::fits(const OutboundMessage& message) const {
  // Sized at the QoS asked for: at most two bytes (the packet id) more than what goes out.
  return session_.fits(message);
}

std::size_t Device::payload_room(const OutboundMessage& message) const {
  return session_.payload_room(message);
}

}  // namespace hom
