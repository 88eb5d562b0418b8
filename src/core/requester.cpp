#include "hom/requester.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <utility>

#include "hom/response.hpp"
#include "hom/topic.hpp"

namespace hom {

using Clock = std::chrono::steady_clock;

std::string random_id() {
  thread_local std::mt19937_64 rng(std::random_device{}());
  std::uniform_int_distribution<unsigned> nibble(0, 15);
  std::string out;
  for (int i = 0; i < 16; ++i) out += "0123456789abcdef"[nibble(rng)];
  return out;
}

namespace {

SessionOptions requester_options(const MqttConfig& mqtt) {
  SessionOptions o;
  o.mqtt = mqtt;
  o.client_id = "hom-" + random_id();
  o.clean_start = true;
  return o;
}

constexpr auto kMaxSubscribeWait = std::chrono::seconds(10);

}  // namespace

struct Requester::Impl {
  struct Flight {
    std::string device;
    std::string request_topic;
    std::string response_topic;  // the mirrored topic
    std::string correlation;     // MQTT 5 Correlation Data
    std::string req_id;          // the payload's req_id, serialised
    OutboundMessage message;     // published at once, or when the device comes online
    bool sent = false;
    bool wait_online = false;
    std::size_t waiting = 0;  // reply and presence subscriptions not acknowledged yet
    Clock::time_point deadline;
    Done done;
  };

  Impl(const MqttConfig& mqtt, std::string s)
      : start(std::move(s)),
        session(
            requester_options(mqtt), [this](InboundMessage&& m) { on_message(std::move(m)); },
            [this] { on_connected(); }) {
    timer = std::thread([this] { timer_main(); });
  }

  ~Impl() {
    session.disconnect(std::chrono::seconds(2));
    {
      std::lock_guard<std::mutex> lock(mu);
      closing = true;
    }
    cv.notify_all();
    timer.join();
  }

  void trace_line(const std::string& line) {
    std::function<void(const std::string&)> t;
    {
      std::lock_guard<std::mutex> lock(mu);
      t = trace;
    }
    if (t) t(line);
  }

  void on_message(InboundMessage&& in) {
    std::vector<std::pair<Done, Result>> finished;
    std::vector<OutboundMessage> to_send;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (const auto id = Topics(start, "_").status_device(in.topic)) {
        if (const auto presence = parse_presence(in.payload)) {
          statuses[*id] = *presence;
          if (presence->online) {
            for (auto& [key, f] : flights) {
              if (f.device == *id && !f.sent && f.waiting == 0) {
                f.sent = true;
                to_send.push_back(f.message);
              }
            }
          }
        }
        cv.notify_all();
      } else {
        std::optional<ReplyEnvelope> reply = decode_reply(in.payload);
        auto it = flights.end();
        if (in.properties.correlation_data) {
          it = flights.find(*in.properties.correlation_data);
        }
        if (it == flights.end() && reply) {
          // 3.1.1, or a homd without MQTT 5: the mirrored topic and the req_id, compared as
          // text (homd echoes it verbatim).
          it = std::find_if(flights.begin(), flights.end(), [&](const auto& entry) {
            return entry.second.sent && entry.second.response_topic == in.topic &&
                   entry.second.req_id == reply->req_id.text();
          });
        }
        if (it != flights.end() && reply) {
          ++replies;
          Result r;
          r.outcome = Outcome::kReply;
          r.payload = std::move(in.payload);
          r.reply = std::move(*reply);
          r.request_topic = it->second.request_topic;
          r.response_topic = in.topic;
          finished.emplace_back(std::move(it->second.done), std::move(r));
          flights.erase(it);
        } else {
          ++unmatched;
          if (trace) trace("ignored a message that is not a reply to us on " + in.topic);
        }
      }
    }
    for (auto& m : to_send) {
      trace_line("device is online; published on " + m.topic);
      session.publish(std::move(m));
    }
    for (auto& [done, result] : finished) {
      trace_line("reply on " + result.response_topic);
      done(std::move(result));
    }
  }

  // Completes calls whose deadline has passed.
  void timer_main() {
    std::unique_lock<std::mutex> lock(mu);
    while (!closing || !flights.empty()) {
      auto next = Clock::time_point::max();
      for (const auto& [key, f] : flights) next = std::min(next, f.deadline);
      if (closing) next = Clock::now();
      if (next == Clock::time_point::max()) {
        cv.wait(lock);
      } else {
        cv.wait_until(lock, next);
      }
      std::vector<std::pair<Done, Result>> expired;
      const auto now = Clock::now();
      for (auto it = flights.begin(); it != flights.end();) {
        if (closing || it->second.deadline <= now) {
          Result r;
          r.outcome = Outcome::kTimeout;
          r.request_topic = it->second.request_topic;
          r.response_topic = it->second.response_topic;
          expired.emplace_back(std::move(it->second.done), std::move(r));
          it = flights.erase(it);
        } else {
          ++it;
        }
      }
      if (expired.empty()) continue;
      lock.unlock();
      for (auto& [done, result] : expired) done(std::move(result));
      lock.lock();
    }
  }

  // Subscribes (once per session) and waits for the SUBACK, within `deadline`. For hom's
  // device listing; calls never wait (start() subscribes asynchronously).
  void ensure_subscribed(const std::string& filter, int qos, Clock::time_point deadline) {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!filters.try_emplace(filter).second) return;
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    session.subscribe(Subscription{filter, qos, false},
                      std::clamp<std::chrono::milliseconds>(left, std::chrono::milliseconds(1),
                                                            kMaxSubscribeWait));
    on_suback(filter);
  }

  // A flight whose subscriptions are all acknowledged: published, or answered "offline" when
  // the device's retained presence says so (it arrived right after its SUBACK, which came
  // before the last one). Called with mu held.
  void release(std::map<std::string, Flight>::iterator it,
               std::vector<std::pair<Done, Result>>& finished,
               std::vector<OutboundMessage>& to_send) {
    Flight& f = it->second;
    const auto status = statuses.find(f.device);
    const bool offline = status != statuses.end() && !status->second.online;
    if (!offline) {
      f.sent = true;
      to_send.push_back(f.message);
    } else if (!f.wait_online) {
      Result r;
      r.outcome = Outcome::kOffline;
      r.request_topic = f.request_topic;
      r.response_topic = f.response_topic;
      finished.emplace_back(std::move(f.done), std::move(r));
      flights.erase(it);
    }
  }

  // After each (re)connect the session has made every standing subscription: none is
  // pending any more, whatever became of the SUBACKs asked for on an earlier connection.
  void on_connected() {
    std::vector<std::string> pending;
    {
      std::lock_guard<std::mutex> lock(mu);
      for (const auto& [filter, state] : filters)
        if (!state.acked) pending.push_back(filter);
    }
    for (const auto& filter : pending) on_suback(filter);
  }

  // The SUBACK for `filter` (or its failure: the session keeps the subscription and makes it
  // at the next connect, so the flights go ahead either way and a reply may still come).
  void on_suback(const std::string& filter) {
    std::vector<std::pair<Done, Result>> finished;
    std::vector<OutboundMessage> to_send;
    {
      std::lock_guard<std::mutex> lock(mu);
      auto& state = filters[filter];
      state.acked = true;
      for (const auto& key : std::exchange(state.waiters, {})) {
        const auto it = flights.find(key);
        if (it == flights.end()) continue;  // its deadline passed meanwhile
        if (--it->second.waiting == 0) release(it, finished, to_send);
      }
    }
    for (auto& m : to_send) {
      trace_line("published on " + m.topic);
      session.publish(std::move(m));
    }
    for (auto& [done, result] : finished) done(std::move(result));
  }

  const std::string start;
  const std::string instance = random_id();  // names this requester's reply topics

  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, Flight> flights;     // guarded by mu: by correlation data
  std::map<std::string, Presence> statuses;  // guarded by mu
  struct Filter {
    bool acked = false;                // SUBACK received (or the attempt failed)
    std::vector<std::string> waiters;  // flights (by correlation) waiting for the SUBACK
  };
  std::map<std::string, Filter> filters;          // guarded by mu: subscribed or pending
  std::atomic<std::uint64_t> replies{0};          // replies matched to a call
  std::atomic<std::uint64_t> unmatched{0};        // other messages on our reply topics
  std::function<void(const std::string&)> trace;  // guarded by mu
  bool closing = false;                           // guarded by mu
  std::thread timer;
  // Last: destroyed first, so no Paho callback runs into the members above.
  MqttSession session;
};

Requester::Requester(const MqttConfig& mqtt, std::string start)
    : impl_(std::make_unique<Impl>(mqtt, std::move(start))) {}

Requester::~Requester() = default;

std::optional<ConnectError> Requester::connect(std::chrono::milliseconds timeout) {
  const std::atomic<bool> never{false};
  return impl_->session.connect_once(never, timeout);
}

MqttSession& Requester::session() { return impl_->session; }

Requester::Stats Requester::stats() const { return {impl_->replies, impl_->unmatched}; }

void Requester::set_trace(std::function<void(const std::string&)> trace) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->trace = std::move(trace);
}

void Requester::start(Call call, Done done) {
  Impl& s = *impl_;
  const auto deadline = Clock::now() + call.timeout;
  const Topics topics(s.start, call.device);
  const bool v5 = s.session.mqtt5();
  Impl::Flight f;
  f.device = call.device;
  f.request_topic = topics.request_topic(call.verb, call.path);
  f.response_topic = topics.mirror(*topics.parse(f.request_topic));
  f.correlation = random_id() + random_id();
  if (call.request.req_id.is_null()) call.request.req_id = RawJson::of(random_id());
  f.req_id = call.request.req_id.text();
  f.deadline = deadline;
  f.wait_online = call.wait_online;
  f.done = std::move(done);

  // MQTT 5: a reply topic of our own under {start}/res/{id}/ (the only place homd answers,
  // and a place no other requester listens to).
  const std::string own_topic = topics.response_prefix() + "hom/" + s.instance;
  // In this order: the broker sends the retained presence right after the first SUBACK, so
  // by the last SUBACK the device's state is known.
  std::vector<Subscription> needed = {{topics.status_topic(), 1, false}};
  // The mirrored topic too: a device whose homd speaks only 3.1.1 answers there.
  if (call.listen_mirrored || !v5) needed.push_back({f.response_topic, 2, false});
  if (v5) needed.push_back({own_topic, 2, false});

  f.message.topic = f.request_topic;
  f.message.payload = encode_request(call.request);
  f.message.qos = call.qos;
  if (v5) {
    f.message.response_topic = own_topic;
    f.message.correlation_data = f.correlation;
    // Stale after the wait: a device that comes back later does not execute it.
    f.message.expiry_s = static_cast<std::uint32_t>(
        std::max<long long>(1, std::chrono::ceil<std::chrono::seconds>(call.timeout).count()));
  }

  // Never waits for the broker: subscriptions not yet acknowledged hold the flight, and
  // their SUBACK releases it (Impl::on_suback).
  std::vector<Subscription> to_subscribe;
  std::vector<std::pair<Done, Result>> finished;
  std::vector<OutboundMessage> to_send;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    for (const auto& sub : needed) {
      auto [it, inserted] = s.filters.try_emplace(sub.filter);
      if (inserted) to_subscribe.push_back(sub);
      if (!it->second.acked) {
        it->second.waiters.push_back(f.correlation);
        ++f.waiting;
      }
    }
    const auto it = s.flights.emplace(f.correlation, std::move(f)).first;
    s.cv.notify_all();  // a new deadline for the timer
    if (it->second.waiting == 0) s.release(it, finished, to_send);
  }
  for (auto& m : to_send) {
    s.trace_line("published on " + m.topic);
    s.session.publish(std::move(m));
  }
  for (auto& [cb, result] : finished) cb(std::move(result));
  for (const auto& sub : to_subscribe) {
    s.session.subscribe_async(
        sub, [&s, filter = sub.filter](std::optional<int>) { s.on_suback(filter); });
  }
}

Requester::Result Requester::call(Call call) {
  auto promise = std::make_shared<std::promise<Result>>();
  auto future = promise->get_future();
  start(std::move(call), [promise](Result r) { promise->set_value(std::move(r)); });
  return future.get();
}

std::vector<DeviceStatus> Requester::devices(std::chrono::milliseconds wait) {
  Impl& s = *impl_;
  const auto deadline = Clock::now() + wait;
  s.ensure_subscribed(Topics(s.start, "_").status_filter(), 1, deadline + kMaxSubscribeWait);
  std::unique_lock<std::mutex> lock(s.mu);
  // Retained messages come right after the SUBACK; the wait bounds a slow broker.
  s.cv.wait_until(lock, deadline, [] { return false; });
  std::vector<DeviceStatus> out;
  for (const auto& [id, presence] : s.statuses) out.push_back(DeviceStatus{id, presence});
  return out;
}

std::vector<DeviceStatus> Requester::devices(const std::vector<std::string>& ids,
                                             std::chrono::milliseconds wait) {
  Impl& s = *impl_;
  const auto deadline = Clock::now() + wait;
  for (const auto& id : ids)
    s.ensure_subscribed(Topics(s.start, id).status_topic(), 1, deadline + kMaxSubscribeWait);
  std::unique_lock<std::mutex> lock(s.mu);
  s.cv.wait_until(lock, deadline, [&] {
    return std::all_of(ids.begin(), ids.end(),
                       [&](const auto& id) { return s.statuses.count(id); });
  });
  std::vector<DeviceStatus> out;
  for (const auto& id : ids) {
    if (const auto it = s.statuses.find(id); it != s.statuses.end())
      out.push_back(DeviceStatus{id, it->second});
  }
  return out;
}

}  // namespace hom
