#include "hom/bridge.hpp"

#include <algorithm>
#include <stdexcept>

#include <spdlog/spdlog.h>

#include "hom/http_client.hpp"

namespace hom {

namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kReplyCacheTtl = std::chrono::minutes(5);
constexpr std::size_t kReplyCacheMax = 10000;

// Network-controlled text made safe for one log line: control bytes escaped, length capped.
std::string printable(std::string_view s) {
  constexpr std::size_t kMax = 200;
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < kMax; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7F) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xF];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > kMax) out += "...";
  return out;
}

std::optional<Clock::time_point> deadline_of(const Request& r) {
  if (!r.expiry_s) return std::nullopt;
  return r.received + std::chrono::seconds(*r.expiry_s);
}

const char* refusal_reason(Admission a) {
  return a == Admission::kClosed
             ? "shutting down"
             : "overloaded: all workers busy and the queue full (WORKERS, QUEUE_MAX)";
}

// A bridge-made 503 means the request was not executed: a retry must run it.
bool executed(const Response& r) { return !(r.status == 503 && !r.error.empty()); }

}  // namespace

Bridge::Bridge(const Config& config, Publisher& publisher)
    : Bridge(config, publisher, [http = config.http]() -> std::unique_ptr<HttpExecutor> {
        return std::make_unique<HttpClient>(http);
      }) {}

Bridge::Bridge(const Config& config, Publisher& publisher, HttpExecutorFactory executors,
               TimeSource now)
    : config_(config),
      policy_(RequestPolicy::from(config)),
      publisher_(publisher),
      now_(std::move(now)),
      queue_(static_cast<std::size_t>(config.workers) + config.queue_max),
      cache_(ReplyCache::Limits{kReplyCacheMax, config.reply_cache_bytes, kReplyCacheTtl}, now_),
      progress_(now_().time_since_epoch().count()) {
  for (int i = 0; i < config_.workers; ++i) {
    executors_.push_back(executors());
    if (!executors_.back()) throw std::invalid_argument("the executor factory returned null");
  }
  workers_.reserve(executors_.size());
  for (auto& executor : executors_)
    workers_.emplace_back([this, e = executor.get()] { worker_main(*e); });
}

Bridge::~Bridge() { stop(std::chrono::milliseconds(0)); }

void Bridge::on_message(InboundMessage&& message) {
  const auto now = now_();
  if (message.retained) {
    spdlog::warn("ignoring a retained request on {}: retained requests are never executed",
                 printable(message.topic));
    return;
  }
  // Acknowledgements and upload chunks of a running stream travel on the request topic too.
  if (message.payload_bytes <= config_.mqtt.max_payload_bytes || !message.payload.empty()) {
    auto stream = decode_stream_message(message.payload, message.properties.user);
    if (stream.kind != StreamMessage::Kind::kNone) {
      on_stream_message(message.topic, std::move(stream));
      return;
    }
  }
  // The session may deliver an oversize message without its payload: not read at all.
  const std::size_t size = std::max(message.payload.size(), message.payload_bytes);
  const bool oversize = size > config_.mqtt.max_payload_bytes;
  auto request = parse_request(policy_, message.topic,
                               oversize ? std::string_view() : std::string_view(message.payload),
                               message.properties);
  if (!request) {
    spdlog::warn("ignoring a message on {}: not a request topic of this device",
                 printable(message.topic));
    return;
  }
  ++received_;
  request->received = now;
  if (message.json_chunks) request->mqtt5 = false;
  if (oversize) {
    request->req_id = nullptr;
    request->rejection = bridge_error(
        413, "payload of " + std::to_string(size) + " bytes exceeds MQTT_MAX_PAYLOAD_BYTES (" +
                 std::to_string(config_.mqtt.max_payload_bytes) + ")");
  }
  if (request->rejection) {
    Response rejection = std::move(*request->rejection);
    answer(*request, std::move(rejection));
    return;
  }
  Job job{std::move(*request), {}, 0};
  if (job.request.correlation_data) {
    job.cache_key = reply_cache_key(job.request.response_topic, *job.request.correlation_data,
                                    message.topic, message.payload);
  }
  admit(std::move(job));
}

void Bridge::admit(Job&& job) {
  Admission admission = Admission::kAccepted;
  if (!job.cache_key.empty()) {
    auto lookup = cache_.begin(job.cache_key, job.request, [&] {
      // A parked duplicate takes a slot like a queued request (SPEC §5.1), and keeps only
      // what its reply needs: the body and headers go.
      admission = queue_.hold();
      if (admission != Admission::kAccepted) return false;
      job.request.body.reset();
      HeaderList().swap(job.request.headers);
      return true;
    });
    switch (lookup.outcome) {
      case ReplyCache::Outcome::kParked:
        spdlog::info("{} {}: duplicate of a running request, answered when it completes",
                     printable(job.request.verb), printable(job.request.path));
        return;
      case ReplyCache::Outcome::kCached: {
        spdlog::info("{} {}: duplicate answered from the reply cache", printable(job.request.verb),
                     printable(job.request.path));
        auto out = outbound(job.request, std::move(lookup.reply));
        fit(out, job.request);
        publish(std::move(out));
        return;
      }
      case ReplyCache::Outcome::kRefused:
        answer(job.request, bridge_error(503, refusal_reason(admission), job.request.req_id));
        return;
      case ReplyCache::Outcome::kExecute:
        job.ticket = lookup.ticket;
        break;
    }
  }
  admission = queue_.push(std::move(job));
  if (admission == Admission::kAccepted) return;
  // Refused, so `job` was not moved from: answer it, and whatever parked behind it meanwhile.
  finish(job, bridge_error(503, refusal_reason(admission), job.request.req_id));
}

void Bridge::on_stream_message(const std::string& topic, StreamMessage&& message) {
  if (message.kind == StreamMessage::Kind::kInvalid) {
    spdlog::warn("ignoring a malformed stream message on {}: {}", printable(topic),
                 printable(message.error));
    return;
  }
  const std::string& id =
      message.kind == StreamMessage::Kind::kAck ? message.ack.id : message.chunk.id;
  std::shared_ptr<StreamTransfer> transfer;
  {
    std::lock_guard<std::mutex> lock(streams_mu_);
    const auto it = streams_.find(id);
    if (it != streams_.end()) transfer = it->second;
  }
  if (!transfer) {
    // Late (the stream ended) or a duplicate after the end: nothing to do.
    spdlog::debug("a stream message for {}, which is not running", printable(id));
    return;
  }
  if (message.kind == StreamMessage::Kind::kAck) {
    transfer->on_ack(message.ack);
  } else {
    transfer->on_chunk(std::move(message.chunk));
  }
}

void Bridge::worker_main(HttpExecutor& executor) {
  while (auto job = queue_.pop()) {
    mark_progress();
    std::optional<Response> response;
    if (aborting_) {
      response = bridge_error(503, "shutting down", job->request.req_id);
    } else if (job->request.stream) {
      response = execute_stream(executor, job->request);
    } else {
      response = execute(executor, job->request);
    }
    if (response) {
      finish(*job, std::move(*response));
    } else {
      // Answered in chunks: a duplicate gets a reply that says so, and is not executed.
      finish_streamed(*job);
    }
    queue_.done();
    mark_progress();
  }
}

std::optional<Response> Bridge::apply_deadline(Request& request) {
  const auto deadline = deadline_of(request);
  const auto now = now_();
  if (deadline && now >= *deadline)
    return bridge_error(504, "expired before execution", request.req_id);
  if (deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - now);
    request.timeout = std::max(std::chrono::milliseconds(1), std::min(request.timeout, left));
  }
  return std::nullopt;
}

Response Bridge::execute(HttpExecutor& executor, Request& request) {
  if (auto expired = apply_deadline(request)) return std::move(*expired);
  return to_response(request, executor.perform(request));
}

std::optional<Response> Bridge::execute_stream(HttpExecutor& executor, Request& request) {
  if (auto expired = apply_deadline(request)) return std::move(*expired);
  const StreamRequest& asked = *request.stream;
  StreamTransfer::Options o;
  o.id = asked.id.empty() ? random_id() + random_id() : asked.id;
  o.window = asked.window;
  // Chunks stay within MQTT_MAX_MESSAGE_BYTES (256 KiB by default) even when the broker
  // names no limit: a window of them is what each side holds.
  const std::size_t cap = chunk_capacity(
      config_.mqtt.max_message_bytes,
      request.response_topic.size() + request.correlation_data.value_or("").size() + 16,
      request.mqtt5);
  o.chunk_bytes = asked.max_chunk_bytes ? std::min(asked.max_chunk_bytes, cap) : cap;
  o.binary = request.mqtt5;
  o.stall = request.timeout;
  o.max_upload_bytes = config_.http.max_upload_bytes;
  // What homd takes in one message: its payload limit, less the JSON form's overhead.
  o.upload_chunk_bytes = chunk_capacity(config_.mqtt.max_payload_bytes, 0, o.binary);
  auto transfer =
      std::make_shared<StreamTransfer>(o, request, outbound(request, {}), publisher_, now_);
  if (!transfer->usable())
    return bridge_error(502, "not even a small chunk fits the broker's packet limit",
                        request.req_id);
  if (asked.upload && o.upload_chunk_bytes == 0)
    return bridge_error(413, "MQTT_MAX_PAYLOAD_BYTES is too small for upload chunks",
                        request.req_id);
  {
    std::lock_guard<std::mutex> lock(streams_mu_);
    if (!streams_.emplace(o.id, transfer).second)
      return bridge_error(409, "stream id " + o.id + " is already in use", request.req_id);
  }
  if (asked.upload) transfer->begin_upload();
  const HttpResult result = executor.perform_stream(request, *transfer);
  std::optional<Response> reply;
  if (!transfer->streamed()) {
    reply = to_response(request, result);
    if (result.outcome == HttpResult::Outcome::kResponse) {
      reply->body = transfer->buffered();
      // A body too large for one message (its JSON form is larger than a chunk) streams.
      if (!publisher_.fits(outbound(request, to_json(*reply)))) reply.reset();
    }
  }
  if (!reply) {
    transfer->finish(result, true);
    const auto stats = transfer->stats();
    const double ms = std::chrono::duration<double, std::milli>(now_() - request.received).count();
    if (result.outcome == HttpResult::Outcome::kResponse) {
      spdlog::info("{} {} -> streamed {} bytes in {} chunks ({:.1f} ms)", printable(request.verb),
                   printable(request.path), stats.bytes, stats.chunks, ms);
    } else {
      ++bridge_errors_;
      spdlog::warn("{} {} -> stream ended after {} bytes ({:.1f} ms): {}", printable(request.verb),
                   printable(request.path), stats.bytes, ms, printable(result.reason));
    }
  }
  std::lock_guard<std::mutex> lock(streams_mu_);
  streams_.erase(o.id);
  return reply;
}

Response Bridge::to_response(const Request& request, HttpResult result) const {
  using Outcome = HttpResult::Outcome;
  switch (result.outcome) {
    case Outcome::kResponse: {
      Response r;
      r.status = result.status;
      r.body = std::move(result.body);
      r.headers = std::move(result.headers);
      r.req_id = request.req_id;
      r.include_headers = request.include_headers;
      r.raw = request.raw;
      return r;
    }
    case Outcome::kTimeout:
      return bridge_error(
          504,
          "the local API did not answer within " + std::to_string(request.timeout.count()) + " ms",
          request.req_id);
    case Outcome::kTooLarge:
      return bridge_error(502,
                          "the local API's response body exceeds HTTP_MAX_RESPONSE_BYTES (" +
                              std::to_string(config_.http.max_response_bytes) + ")",
                          request.req_id);
    case Outcome::kAborted:
      return bridge_error(503, "shutting down: the call was aborted", request.req_id);
    case Outcome::kStopped:
      return bridge_error(400, "the stream stopped: " + result.reason, request.req_id);
    case Outcome::kUnreachable:
      break;
  }
  return bridge_error(502, "the local API could not be reached: " + result.reason, request.req_id);
}

void Bridge::finish(Job& job, Response response) {
  log_reply(job.request, response);
  const bool done = executed(response);
  auto out = outbound(job.request, to_json(response));
  fit(out, job.request);
  if (!job.cache_key.empty()) {
    // Duplicates parked behind this request get the same reply, as published.
    const auto parked = done ? cache_.complete(job.cache_key, job.ticket, out.payload)
                             : cache_.abandon(job.cache_key, job.ticket);
    for (const auto& duplicate : parked) {
      auto copy = outbound(duplicate, out.payload);
      fit(copy, duplicate);
      publish(std::move(copy));
    }
    queue_.release(parked.size());
  }
  publish(std::move(out));
}

void Bridge::finish_streamed(Job& job) {
  ++answered_;
  if (job.cache_key.empty()) return;
  const auto duplicate = to_json(bridge_error(
      409, "duplicate of a streamed request: its reply went out in chunks", job.request.req_id));
  const auto parked = cache_.complete(job.cache_key, job.ticket, duplicate);
  for (const auto& d : parked) {
    auto copy = outbound(d, duplicate);
    fit(copy, d);
    publish(std::move(copy));
  }
  queue_.release(parked.size());
}

void Bridge::answer(const Request& request, Response response) {
  log_reply(request, response);
  auto out = outbound(request, to_json(response));
  fit(out, request);
  publish(std::move(out));
}

void Bridge::log_reply(const Request& request, const Response& response) {
  const double ms = std::chrono::duration<double, std::milli>(now_() - request.received).count();
  if (response.error.empty()) {
    // Guarded: the arguments cost two allocations, and this runs for every request.
    if (spdlog::should_log(spdlog::level::info))
      spdlog::info("{} {} -> {} ({:.1f} ms)", printable(request.verb), printable(request.path),
                   response.status, ms);
  } else {
    ++bridge_errors_;
    spdlog::warn("{} {} -> {} ({:.1f} ms): {}", printable(request.verb), printable(request.path),
                 response.status, ms, printable(response.error));
  }
}

OutboundMessage Bridge::outbound(const Request& request, std::string document) const {
  OutboundMessage out;
  out.topic = request.response_topic;
  out.payload = std::move(document);
  out.qos = config_.mqtt.response_qos;
  out.correlation_data = request.correlation_data;
  if (const auto deadline = deadline_of(request)) {
    // The reply lives as long as the request had left, at least one second.
    const auto left = std::chrono::ceil<std::chrono::seconds>(*deadline - now_()).count();
    out.expiry_s = static_cast<std::uint32_t>(std::max<long long>(1, left));
  }
  return out;
}

void Bridge::fit(OutboundMessage& out, const Request& request) {
  if (publisher_.fits(out)) return;
  ++bridge_errors_;
  spdlog::warn("{} {}: the reply of {} bytes does not fit the broker's packet limit: 502",
               printable(request.verb), printable(request.path), out.payload.size());
  out.payload = to_json(bridge_error(502, "reply too large for the broker", request.req_id));
  if (publisher_.fits(out)) return;
  out.payload = to_json(
      bridge_error(502, "reply too large for the broker; req_id too large to echo", nullptr));
}

void Bridge::publish(OutboundMessage out) {
  if (!publisher_.fits(out)) {
    // Only a Response Topic or Correlation Data near the broker's limit gets here.
    ++bridge_errors_;
    spdlog::error("not even a 502 reply fits the broker's packet limit on {}: not answered",
                  printable(out.topic));
    return;
  }
  ++answered_;
  publisher_.publish(std::move(out));
}

void Bridge::mark_progress() { progress_ = now_().time_since_epoch().count(); }

void Bridge::stop(std::chrono::milliseconds grace) {
  std::lock_guard<std::mutex> lock(stop_mu_);
  if (workers_.empty()) return;
  queue_.close();  // from now on: 503 "shutting down"
  if (!queue_.wait_idle_for(grace)) {
    const auto c = queue_.counts();
    spdlog::warn("shutdown grace of {} ms over: {} queued and {} running requests get 503",
                 grace.count(), c.queued, c.running);
  }
  aborting_ = true;
  for (auto& executor : executors_) executor->abort();
  for (auto& worker : workers_) worker.join();
  workers_.clear();
  // Every entry's request has completed, so nothing should be parked; answer any that is.
  const auto orphans = cache_.clear();
  for (const auto& o : orphans) answer(o, bridge_error(503, "shutting down", o.req_id));
  queue_.release(orphans.size());
}

bool Bridge::stalled() const {
  const auto c = queue_.counts();
  if (c.queued == 0 && c.running == 0) return false;
  const auto limit = config_.http.timeout + config_.http.connect_timeout + std::chrono::seconds(30);
  const Clock::time_point progress{Clock::duration(progress_.load())};
  return now_() - progress > limit;
}

BridgeStats Bridge::stats() const {
  return BridgeStats{received_.load(), answered_.load(), bridge_errors_.load()};
}

}  // namespace hom
