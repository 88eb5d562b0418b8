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
  // A streamed call's state (SPEC §7).
  struct StreamState {
    Call::Stream options;
    std::string id;
    std::chrono::milliseconds stall{30000};
    Reassembler rx;
    bool head = false;
    ReplyEnvelope head_reply;
    std::string head_payload;
    std::vector<std::string> early;  // body bytes that came before the head
    std::uint64_t outstanding = 0;   // pieces handed to on_data and not consumed yet
    std::uint64_t acked = 0;         // the last `next` we acknowledged
    // A sealed call's streamed reply: the chunks carry ciphertext (SPEC §8).
    std::unique_ptr<BodyOpener> opener;
    std::uint64_t opened_bytes = 0;  // plaintext given out
    // Upload.
    bool binary = false;  // chunks in the MQTT 5 form
    std::optional<SendWindow> tx;
    std::size_t chunk_bytes = 0;
    bool asked = false;  // next_upload was called and has not given yet
    bool sent_last = false;
    Sha256 tx_sha;
    std::uint64_t upload_bytes = 0;

    StreamState(Call::Stream o, std::string i, std::chrono::milliseconds s)
        : options(std::move(o)), id(i), stall(s), rx(std::move(i), options.window) {}
  };

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
    std::unique_ptr<StreamState> stream;
    std::shared_ptr<const CallSealer> sealer;  // a sealed call: message.payload is sealed
  };

  using Finished = std::vector<std::pair<Done, Result>>;
  // on_data calls to make outside the lock, in order.
  using Deliveries = std::vector<std::function<void()>>;

  Result result_of(const Flight& f, Outcome outcome, std::string error = {}) {
    Result r;
    r.outcome = outcome;
    r.request_topic = f.request_topic;
    r.response_topic = f.response_topic;
    r.error = std::move(error);
    if (f.stream) {
      r.stream_bytes = f.stream->opener ? f.stream->opened_bytes : f.stream->rx.bytes();
      r.upload_bytes = f.stream->upload_bytes;
    }
    return r;
  }

  // Ends a flight. Called with mu held.
  void end(std::map<std::string, Flight>::iterator it, Result r, Finished& finished) {
    if (it->second.stream) stream_ids.erase(it->second.stream->id);
    finished.emplace_back(std::move(it->second.done), std::move(r));
    flights.erase(it);
  }

  // The acknowledgement of what the consumer has taken, if it moved. Called with mu held;
  // published after mu is released (never publish under mu: Paho's thread may hold Paho's
  // lock while it waits for mu in on_message).
  std::optional<OutboundMessage> acknowledgement(Flight& f) {
    StreamState& s = *f.stream;
    const std::uint64_t next = s.rx.next() - s.outstanding;
    if (next <= s.acked) return std::nullopt;
    s.acked = next;
    OutboundMessage m;
    m.topic = f.request_topic;
    m.qos = 1;
    m.payload = encode_ack(StreamAck{s.id, next, 0, 0});
    return m;
  }

  // The consumer took one piece of a flight's body.
  void consumed(const std::string& key) {
    std::optional<OutboundMessage> ack;
    {
      std::lock_guard<std::mutex> lock(mu);
      const auto it = flights.find(key);
      if (it == flights.end() || !it->second.stream) return;
      StreamState& s = *it->second.stream;
      if (s.outstanding > 0) --s.outstanding;
      it->second.deadline = std::max(it->second.deadline, Clock::now() + s.stall);
      ack = acknowledgement(it->second);
    }
    if (ack) session.publish(std::move(*ack));
  }

  // Hands in-order body pieces to the consumer (outside the lock). Called with mu held.
  void deliver(const std::string& key, Flight& f, std::vector<std::string>& pieces,
               Deliveries& deliveries) {
    StreamState& s = *f.stream;
    for (auto& piece : pieces) {
      ++s.outstanding;
      deliveries.push_back(
          [this, key, on_data = s.options.on_data, data = std::move(piece)]() mutable {
            if (on_data && !data.empty()) {
              on_data(std::move(data), [this, key] { consumed(key); });
            } else {
              consumed(key);
            }
          });
    }
    pieces.clear();
  }

  // A chunk or an acknowledgement for one of our streams. Called with mu held.
  void on_stream_message(StreamMessage& message, const std::optional<std::string>& correlation,
                         Finished& finished, Deliveries& deliveries, bool& upload_more,
                         std::string& upload_key) {
    const std::string& id =
        message.kind == StreamMessage::Kind::kAck ? message.ack.id : message.chunk.id;
    auto it = flights.end();
    if (correlation) it = flights.find(*correlation);
    if (it == flights.end()) {
      const auto by_id = stream_ids.find(id);
      if (by_id != stream_ids.end()) it = flights.find(by_id->second);
    }
    if (it == flights.end() || !it->second.stream || it->second.stream->id != id) {
      ++unmatched;
      return;
    }
    Flight& f = it->second;
    StreamState& s = *f.stream;
    // Chunks before the head are no progress: the head may never come.
    if (message.kind == StreamMessage::Kind::kAck || s.head)
      f.deadline = std::max(f.deadline, Clock::now() + s.stall);
    if (message.kind == StreamMessage::Kind::kAck) {
      const StreamAck& ack = message.ack;
      if (!s.tx) {
        if (!s.options.next_upload || ack.next != 0) return;
        // The device is ready for the body: its window and its largest chunk. The MQTT 5
        // form only when the device's ack came with MQTT 5 properties: a 3.1.1 device would
        // get the raw bytes without their metadata.
        s.binary = session.mqtt5() && correlation.has_value();
        s.tx.emplace(ack.window ? ack.window : s.options.window);
        s.chunk_bytes = upload_chunk_bytes(f, ack.chunk_bytes, s.binary);
        if (s.chunk_bytes == 0) {
          end(it, result_of(f, Outcome::kStreamError, "no upload chunk fits the packet limits"),
              finished);
          return;
        }
      } else {
        s.tx->ack(ack.next);
      }
      upload_more = true;
      upload_key = it->first;
      return;
    }
    std::vector<std::string> pieces;
    const auto status = s.rx.add(std::move(message.chunk), pieces);
    if (status == Reassembler::Status::kDuplicate) ++duplicate_chunks;
    if (status == Reassembler::Status::kFailed) {
      // Sealed, a chunk's metadata (an error it reports included) is not authenticated.
      end(it,
          result_of(f, Outcome::kStreamError,
                    f.sealer ? "the sealed stream broke off (its chunks' metadata is not "
                               "authenticated): " +
                                   s.rx.error()
                             : s.rx.error()),
          finished);
      return;
    }
    if (!s.head) {
      // Nothing is acknowledged before the head: a sender keeps within one window.
      for (auto& p : pieces) s.early.push_back(std::move(p));
      if (s.early.size() > s.options.window)
        end(it, result_of(f, Outcome::kStreamError, "more chunks than the window before the head"),
            finished);
      return;
    }
    std::string error;
    if (!open_pieces(s, pieces, error)) {
      end(it, result_of(f, Outcome::kUnverified, error), finished);
      return;
    }
    deliver(it->first, f, pieces, deliveries);
    if (s.rx.complete()) finish_stream(it, finished);
  }

  // A sealed stream's pieces in order, ciphertext in, authenticated plaintext out (a piece
  // may become empty while a cipher block fills); at the stream's end the file's end is
  // checked too, so a stream cut short with a forged last chunk is caught. Called with mu
  // held; false with the reason.
  bool open_pieces(StreamState& s, std::vector<std::string>& pieces, std::string& error) {
    if (!s.opener) return true;
    for (auto& piece : pieces) {
      std::string plain;
      if (!s.opener->update(piece, plain)) {
        error = "the sealed body is not authentic: " + s.opener->error();
        return false;
      }
      s.opened_bytes += plain.size();
      piece = std::move(plain);
    }
    if (s.rx.complete()) {
      std::string tail;
      if (!s.opener->finish(tail)) {
        error = "the sealed body is not authentic: " + s.opener->error();
        return false;
      }
      s.opened_bytes += tail.size();
      pieces.push_back(std::move(tail));
    }
    return true;
  }

  // A streamed reply's head (`head` is its document, decoded as `reply`): the body follows
  // in chunks, and those that came first are delivered now. Called with mu held.
  void take_head(std::map<std::string, Flight>::iterator it, ReplyEnvelope reply, std::string head,
                 std::unique_ptr<BodyOpener> opener, Finished& finished, Deliveries& deliveries,
                 Deliveries& heads) {
    ++replies;
    Flight& f = it->second;
    StreamState& s = *f.stream;
    s.head = true;
    s.head_reply = std::move(reply);
    s.head_payload = std::move(head);
    s.opener = std::move(opener);
    f.deadline = std::max(f.deadline, Clock::now() + s.stall);
    std::string error;
    if (!open_pieces(s, s.early, error)) {
      end(it, result_of(f, Outcome::kUnverified, error), finished);
      return;
    }
    if (s.options.on_head)
      heads.push_back([on_head = s.options.on_head, head = s.head_reply] { on_head(head); });
    deliver(it->first, f, s.early, deliveries);
    if (s.rx.complete()) finish_stream(it, finished);
  }

  // A stream whose body is complete and checked. Called with mu held.
  void finish_stream(std::map<std::string, Flight>::iterator it, Finished& finished) {
    Flight& f = it->second;
    Result r = result_of(f, Outcome::kReply);
    r.payload = std::move(f.stream->head_payload);
    r.reply = std::move(f.stream->head_reply);
    end(it, std::move(r), finished);
  }

  // The data bytes of an upload chunk: the device's limit, and what our broker takes.
  std::size_t upload_chunk_bytes(const Flight& f, std::size_t device_max, bool binary) {
    OutboundMessage probe;
    probe.topic = f.request_topic;
    probe.qos = 1;
    if (binary) probe.correlation_data = f.correlation;
    std::size_t bytes = chunk_room(session, std::move(probe), f.stream->id, binary);
    if (device_max) bytes = std::min(bytes, device_max);
    // Within MQTT_MAX_MESSAGE_BYTES (256 KiB by default) even when the broker names no limit.
    bytes = std::min(
        bytes,
        chunk_capacity(max_message, f.request_topic.size() + f.correlation.size() + 16, binary));
    return bytes;
  }

  // Asks the upload source for more while the window is open. Called without mu.
  void pump_upload(const std::string& key) {
    Call::Stream::Give give;
    std::function<void(std::size_t, Call::Stream::Give)> next;
    std::size_t max = 0;
    {
      std::lock_guard<std::mutex> lock(mu);
      const auto it = flights.find(key);
      if (it == flights.end() || !it->second.stream) return;
      StreamState& s = *it->second.stream;
      if (!s.tx || s.asked || s.sent_last || !s.tx->open()) return;
      s.asked = true;
      max = s.chunk_bytes;
      next = s.options.next_upload;
      give = [this, key](std::string data, bool last, std::string error) {
        give_upload(key, std::move(data), last, std::move(error));
      };
    }
    next(max, std::move(give));
  }

  void give_upload(const std::string& key, std::string data, bool last, std::string error) {
    OutboundMessage m;
    {
      std::lock_guard<std::mutex> lock(mu);
      const auto it = flights.find(key);
      if (it == flights.end() || !it->second.stream) return;
      Flight& f = it->second;
      StreamState& s = *f.stream;
      s.asked = false;
      Chunk c;
      c.id = s.id;
      c.seq = s.tx->sent_count();
      s.tx_sha.update(data);
      s.upload_bytes += data.size();
      c.data = std::move(data);
      if (!error.empty()) {
        c.data.clear();  // a receiver discards an error chunk's data
        c.last = true;
        c.error = std::move(error);
        s.sent_last = true;
      } else if (last) {
        c.last = true;
        c.total = s.upload_bytes;
        c.sha256 = s.tx_sha.hex();
        s.sent_last = true;
      }
      m.topic = f.request_topic;
      m.qos = 1;
      if (s.binary) m.correlation_data = f.correlation;
      encode_chunk(c, s.binary, m);
      s.tx->sent();
      f.deadline = std::max(f.deadline, Clock::now() + s.stall);
    }
    session.publish(std::move(m));
    pump_upload(key);
  }

  Impl(const MqttConfig& mqtt, std::string s)
      : start(std::move(s)),
        max_message(mqtt.max_message_bytes),
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
    Deliveries deliveries;
    Deliveries heads_to_announce;
    bool upload_more = false;
    std::string upload_key;
    {
      std::lock_guard<std::mutex> lock(mu);
      auto stream = Topics(start, "_").status_device(in.topic)
                        ? StreamMessage{}
                        : decode_stream_message(in.payload, in.properties.user);
      if (stream.kind == StreamMessage::Kind::kInvalid) {
        ++unmatched;
        if (trace) trace("ignored a malformed stream message: " + stream.error);
      } else if (stream.kind != StreamMessage::Kind::kNone) {
        on_stream_message(stream, in.properties.correlation_data, finished, deliveries, upload_more,
                          upload_key);
      } else if (const auto id = Topics(start, "_").status_device(in.topic)) {
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
      } else if (on_sealed_reply(in, finished, deliveries, heads_to_announce)) {
      } else {
        std::optional<ReplyEnvelope> reply = decode_reply(in.payload);
        auto it = flights.end();
        if (in.properties.correlation_data) {
          it = flights.find(*in.properties.correlation_data);
          if (it != flights.end() && it->second.sealer) it = flights.end();
        }
        if (it == flights.end() && reply) {
          // 3.1.1, or a homd without MQTT 5: the mirrored topic and the req_id, compared as
          // text (homd echoes it verbatim).
          it = std::find_if(flights.begin(), flights.end(), [&](const auto& entry) {
            return entry.second.sent && !entry.second.sealer &&
                   entry.second.response_topic == in.topic &&
                   entry.second.req_id == reply->req_id.text();
          });
        }
        if (it != flights.end() && reply && reply->stream && it->second.stream &&
            !it->second.stream->head && reply->stream->id == it->second.stream->id) {
          // A streamed reply's head: the body follows in chunks.
          take_head(it, std::move(*reply), std::move(in.payload), nullptr, finished, deliveries,
                    heads_to_announce);
        } else if (it != flights.end() && reply && !reply->stream) {
          ++replies;
          Result r = result_of(it->second, Outcome::kReply);
          r.payload = std::move(in.payload);
          r.reply = std::move(*reply);
          r.response_topic = in.topic;
          end(it, std::move(r), finished);
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
    for (auto& announce : heads_to_announce) announce();
    for (auto& deliver_one : deliveries) deliver_one();
    if (upload_more) pump_upload(upload_key);
    for (auto& [done, result] : finished) {
      trace_line("reply on " + result.response_topic);
      done(std::move(result));
    }
  }

  // A reply to a sealed call (SPEC §8): matched by Correlation Data (MQTT 5) or, on the
  // shared {start}/res/{id}/@sealed topic, by opening it (only the call it answers can).
  // Only what opens and verifies is a reply; anything else with a sealed call's Correlation
  // Data ends that call as kUnverified with the reason. Called with mu held; false when the
  // message is no sealed call's.
  bool on_sealed_reply(InboundMessage& in, Finished& finished, Deliveries& deliveries,
                       Deliveries& heads) {
    std::string error;
    std::optional<std::string> opened;
    auto it = flights.end();
    if (in.properties.correlation_data) {
      it = flights.find(*in.properties.correlation_data);
      if (it == flights.end() || !it->second.sealer) return false;
      const Flight& f = it->second;
      opened = f.sealer->open(in.payload, f.message.payload, f.device, error);
    } else {
      for (auto candidate = flights.begin(); candidate != flights.end(); ++candidate) {
        const Flight& f = candidate->second;
        if (!f.sealer || !f.sent || f.response_topic != in.topic) continue;
        std::string why;
        opened = f.sealer->open(in.payload, f.message.payload, f.device, why);
        if (opened) {
          it = candidate;
          break;
        }
        error = why;
      }
      if (it == flights.end()) {
        if (error.empty()) return false;
        ++unmatched;  // over 3.1.1 a reply that opens for none of our calls is not ours
        if (trace) trace("ignored a message on " + in.topic + " that answers none of our calls");
        return true;
      }
    }
    Flight& f = it->second;
    if (!opened) {
      const auto clear = decode_reply(in.payload);
      const std::string why =
          clear
              ? "the device answered in clear, unauthenticated: " + std::to_string(clear->status) +
                    (clear->error.empty() ? "" : " " + clear->error)
              : "the reply is not authentic: " + error;
      end(it, result_of(f, Outcome::kUnverified, why), finished);
      return true;
    }
    auto reply = decode_reply(*opened);
    if (!reply) {
      end(it, result_of(f, Outcome::kUnverified, "the sealed reply holds no reply document"),
          finished);
      return true;
    }
    if (reply->stream) {
      if (f.stream && f.stream->head && reply->stream->id == f.stream->id) {
        ++unmatched;  // the same head again (a QoS 1 resend after a reconnect)
        return true;
      }
      // A signed head: the chunks that follow must be the age file it names.
      if (!f.stream || f.stream->head || reply->stream->id != f.stream->id ||
          reply->stream->sealed.size() != 64) {
        end(it, result_of(f, Outcome::kUnverified, "a streamed sealed reply this call cannot take"),
            finished);
        return true;
      }
      const std::string binding = reply->stream->sealed;
      take_head(it, std::move(*reply), std::move(*opened), f.sealer->open_body(binding), finished,
                deliveries, heads);
      return true;
    }
    ++replies;
    Result r = result_of(f, Outcome::kReply);
    r.payload = std::move(*opened);
    r.reply = std::move(*reply);
    r.response_topic = in.topic;
    end(it, std::move(r), finished);
    return true;
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
          const Flight& f = it->second;
          std::string why;
          if (f.stream && (f.stream->head || f.stream->tx))
            why = "the stream stalled: nothing for " + std::to_string(f.stream->stall.count()) +
                  " ms after " + std::to_string(f.stream->rx.bytes()) + " bytes";
          Result r = result_of(f, Outcome::kTimeout, std::move(why));
          if (f.stream) stream_ids.erase(f.stream->id);
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
    const bool streams = status != statuses.end() && !status->second.protocol.empty();
    if (!offline && f.stream && f.stream->options.next_upload && !streams) {
      // A homd before protocol 1.1 ignores `stream` and would call the API without the body.
      end(it,
          result_of(f, Outcome::kStreamError,
                    "device " + f.device +
                        " does not announce protocol 1.1 (streamed uploads): upgrade its homd"),
          finished);
    } else if (!offline && !session.fits(f.message)) {
      // Published, it would only make the broker drop the connection (and Paho resend it).
      end(it,
          result_of(f, Outcome::kTooLarge,
                    "the request (" + std::to_string(f.message.payload.size()) +
                        " bytes) does not fit one message: the broker takes " +
                        std::to_string(session.max_packet_bytes()) + " bytes a packet"),
          finished);
    } else if (!offline) {
      f.sent = true;
      to_send.push_back(f.message);
    } else if (!f.wait_online) {
      end(it, result_of(f, Outcome::kOffline), finished);
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
  const std::size_t max_message;             // MQTT_MAX_MESSAGE_BYTES: caps upload chunks
  const std::string instance = random_id();  // names this requester's reply topics

  std::mutex mu;
  std::condition_variable cv;
  std::map<std::string, Flight> flights;     // guarded by mu: by correlation data
  std::map<std::string, Presence> statuses;  // guarded by mu
  struct Filter {
    bool acked = false;                // SUBACK received (or the attempt failed)
    std::vector<std::string> waiters;  // flights (by correlation) waiting for the SUBACK
  };
  std::map<std::string, Filter> filters;           // guarded by mu: subscribed or pending
  std::atomic<std::uint64_t> replies{0};           // replies matched to a call
  std::atomic<std::uint64_t> unmatched{0};         // other messages on our reply topics
  std::atomic<std::uint64_t> duplicate_chunks{0};  // chunks received twice
  std::map<std::string, std::string> stream_ids;   // guarded by mu: stream id -> flight key
  std::function<void(const std::string&)> trace;   // guarded by mu
  bool closing = false;                            // guarded by mu
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

Requester::Stats Requester::stats() const {
  return {impl_->replies, impl_->unmatched, impl_->duplicate_chunks};
}

void Requester::set_trace(std::function<void(const std::string&)> trace) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->trace = std::move(trace);
}

void Requester::start(Call call, Done done) {
  Impl& s = *impl_;
  const auto deadline = Clock::now() + call.timeout;
  const Topics topics(s.start, call.device);
  const bool v5 = s.session.mqtt5();
  if (call.sealer && call.stream && call.stream->next_upload) {
    Result r;
    r.outcome = Outcome::kUnverified;
    r.error = "a sealed request carries its body: streamed uploads are not sealed end to end";
    done(std::move(r));
    return;
  }
  Impl::Flight f;
  f.device = call.device;
  f.sealer = call.sealer;
  if (f.sealer) {
    // The broker sees the device id only.
    f.request_topic = topics.request_topic("@sealed", {});
    f.response_topic = topics.response_prefix() + "@sealed";
  } else {
    f.request_topic = topics.request_topic(call.verb, call.path);
    f.response_topic = topics.mirror(*topics.parse(f.request_topic));
  }
  f.correlation = random_id() + random_id();
  if (call.request.req_id.is_null()) call.request.req_id = RawJson::of(random_id());
  f.req_id = call.request.req_id.text();
  f.deadline = deadline;
  f.wait_online = call.wait_online;
  f.done = std::move(done);
  if (call.stream) {
    StreamRequest asked;
    asked.id = random_id() + random_id();
    asked.window = std::clamp<std::size_t>(call.stream->window, 1, kMaxStreamWindow);
    asked.upload = static_cast<bool>(call.stream->next_upload);
    asked.upload_length = call.stream->upload_length;
    call.request.stream = asked;
    call.stream->window = asked.window;
    f.stream = std::make_unique<Impl::StreamState>(std::move(*call.stream), asked.id, call.timeout);
  }

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
  if (f.sealer) {
    CallSealer::Input in{call.device,
                         s.start,
                         call.verb,
                         call.path,
                         f.message.response_topic.value_or(""),
                         f.message.correlation_data.value_or(""),
                         std::move(f.message.payload)};
    std::string error;
    auto sealed = f.sealer->seal(in, error);
    if (!sealed) {
      Result r = s.result_of(f, Outcome::kUnverified, "cannot seal the request: " + error);
      f.done(std::move(r));
      return;
    }
    f.message.payload = std::move(*sealed);
    f.message.binary = true;
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
    if (f.stream) s.stream_ids[f.stream->id] = f.correlation;
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
