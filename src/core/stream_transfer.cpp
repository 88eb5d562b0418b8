#include "hom/stream_transfer.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>

#include <spdlog/spdlog.h>

namespace hom {

StreamTransfer::StreamTransfer(Options options, const Request& request, OutboundMessage reply,
                               Publisher& publisher, TimeSource now)
    : options_(std::move(options)),
      request_(request),
      reply_(std::move(reply)),
      publisher_(publisher),
      now_(std::move(now)),
      window_(options_.window) {
  // The largest data part that fits the broker's limit, with this topic and these properties
  // and the last chunk's metadata.
  OutboundMessage probe = reply_;
  probe.qos = 1;
  chunk_bytes_ = chunk_room(publisher_, std::move(probe), options_.id, options_.binary);
  if (options_.chunk_bytes) chunk_bytes_ = std::min(chunk_bytes_, options_.chunk_bytes);
  cipher_ = publisher_.body_cipher(reply_);
  progress_ = upload_progress_ = now_();
}

bool StreamTransfer::streamed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return head_sent_;
}

StreamTransfer::Stats StreamTransfer::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Stats{window_.sent_count(), bytes_, upload_bytes_};
}

void StreamTransfer::begin_upload() {
  std::unique_lock<std::mutex> lock(mu_);
  const Flush flush{*this, lock};
  upload_.emplace(options_.id, options_.window, options_.max_upload_bytes);
  upload_progress_ = now_();
  send_ack(0, true);
}

void StreamTransfer::on_ack(const StreamAck& ack) {
  std::lock_guard<std::mutex> lock(mu_);
  if (window_.ack(ack.next)) {
    progress_ = now_();
    wake_locked();
    cv_.notify_all();
  }
}

void StreamTransfer::on_chunk(Chunk chunk) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!upload_ || upload_->failed() || upload_->complete()) return;
  const std::uint64_t acked = upload_->next() - ready_.size();
  if (chunk.seq >= acked + options_.window) {
    // The requester ignored the window: its chunks would pile up here.
    std::vector<std::string> none;
    upload_->add(Chunk{options_.id, upload_->next() + options_.window, {}, false, 0, {}, {}}, none);
  } else {
    std::vector<std::string> data;
    upload_->add(std::move(chunk), data);
    for (auto& d : data) ready_.push_back(std::move(d));
  }
  upload_progress_ = now_();
  wake_locked();
}

void StreamTransfer::head(int status, HeaderList headers) {
  std::lock_guard<std::mutex> lock(mu_);
  status_ = status;
  headers_ = std::move(headers);
  head_known_ = true;
  // A body the API declared small enough for one reply is waited for, however slowly it
  // comes: one ordinary reply rather than a head and chunks.
  for (const auto& [name, value] : headers_) {
    if (name != "content-length") continue;
    std::uint64_t length = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), length);
    small_ = ec == std::errc() && end == value.data() + value.size() && length <= chunk_bytes_;
  }
}

bool StreamTransfer::body(std::string_view bytes) {
  std::unique_lock<std::mutex> lock(mu_);
  const Flush flush{*this, lock};
  if (pending_.size() >= chunk_bytes_) {
    pump();
    if (pending_.size() >= chunk_bytes_) return false;  // the window is full: curl pauses
  }
  if (cipher_ && head_sent_) {
    pending_ += cipher_->update(bytes);
  } else {
    pending_.append(bytes.data(), bytes.size());
  }
  pump();
  return true;
}

bool StreamTransfer::ready_for_body() {
  std::unique_lock<std::mutex> lock(mu_);
  const Flush flush{*this, lock};
  pump();
  return pending_.size() < chunk_bytes_;
}

void StreamTransfer::idle() {
  std::unique_lock<std::mutex> lock(mu_);
  const Flush flush{*this, lock};
  if (!head_known_ || !window_.open() || (small_ && !head_sent_)) return;
  if (!head_sent_) send_head();
  pump();  // full chunks first: pending_ may hold more than one while the window was shut
  if (!pending_.empty() && pending_.size() < chunk_bytes_ && window_.open())
    send_chunk(std::exchange(pending_, {}), false);
}

long StreamTransfer::read(char* out, std::size_t max) {
  std::unique_lock<std::mutex> lock(mu_);
  const Flush flush{*this, lock};
  if (!upload_ || upload_->failed()) return kFail;
  if (ready_.empty()) return upload_->complete() ? 0 : kWait;
  const std::string& front = ready_.front();
  const std::size_t n = std::min(max, front.size() - ready_offset_);
  std::memcpy(out, front.data() + ready_offset_, n);
  ready_offset_ += n;
  upload_bytes_ += n;
  if (ready_offset_ == front.size()) {
    ready_.pop_front();
    ready_offset_ = 0;
    send_ack(upload_->next() - ready_.size(), false);
  }
  return static_cast<long>(n);
}

bool StreamTransfer::ready_for_read() {
  std::lock_guard<std::mutex> lock(mu_);
  return !upload_ || upload_->failed() || upload_->complete() || !ready_.empty();
}

void StreamTransfer::set_waker(std::function<void()> wake) {
  std::lock_guard<std::mutex> lock(mu_);
  waker_ = std::move(wake);
}

std::string StreamTransfer::stop_reason() {
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = now_();
  if (upload_ && upload_->failed()) return "the upload failed: " + upload_->error();
  if (upload_ && !upload_->complete() && ready_.empty() && now - upload_progress_ > options_.stall)
    return "the upload stalled: no chunk for " + std::to_string(options_.stall.count()) + " ms";
  if (stalled_locked(now))
    return "the requester stopped acknowledging chunks for " +
           std::to_string(options_.stall.count()) + " ms";
  return {};
}

bool StreamTransfer::stalled_locked(std::chrono::steady_clock::time_point now) const {
  return !window_.open() && now - progress_ > options_.stall;
}

bool StreamTransfer::finish(const HttpResult& result, bool force) {
  std::unique_lock<std::mutex> lock(mu_);
  const Flush flush{*this, lock};
  if (!head_sent_) {
    // Nothing went out: an ordinary reply, unless the body does not fit one message.
    if (result.outcome != HttpResult::Outcome::kResponse) return false;
    if (!force && pending_.size() <= chunk_bytes_) return false;
    head_known_ = true;
    send_head();
  }
  if (result.outcome != HttpResult::Outcome::kResponse) {
    // The window no longer matters: the requester must learn the stream ended. The bytes
    // not sent are dropped (a receiver discards an error chunk's data): they may be more
    // than a chunk, and would not fit the packet.
    pending_.clear();
    send_chunk({}, true, result.reason.empty() ? "the call failed" : result.reason);
    return true;
  }
  // The rest of the body, as the window allows; the last chunk carries length and digest.
  if (cipher_) pending_ += cipher_->finish();
  for (;;) {
    pump();
    if (pending_.size() <= chunk_bytes_ && window_.open()) break;
    publish_outbox(lock);
    // An acknowledgement that came while publishing (unlocked) notified nobody: pump again.
    if (window_.open()) continue;
    const auto deadline = progress_ + options_.stall;
    if (now_() >= deadline) {
      send_chunk({}, true, "the requester stopped acknowledging chunks");
      return true;
    }
    cv_.wait_until(lock, deadline);
  }
  send_chunk(std::exchange(pending_, {}), true);
  return true;
}

void StreamTransfer::pump() {
  if (chunk_bytes_ == 0) return;
  while (pending_.size() >= chunk_bytes_ && window_.open() && head_known_) {
    if (!head_sent_) {
      send_head();  // sealed, pending_ is ciphertext from now on: look at its size again
      continue;
    }
    std::string data = pending_.substr(0, chunk_bytes_);
    pending_.erase(0, chunk_bytes_);
    send_chunk(std::move(data), false);
  }
}

void StreamTransfer::send_head() {
  Response head;
  head.status = status_;
  head.headers = headers_;
  head.req_id = request_.req_id;
  head.include_headers = request_.include_headers;
  head.stream = StreamHead{options_.id, chunk_bytes_, options_.window, {}};
  if (cipher_) {
    // Sealed end to end: the head names the ciphertext's header, the chunks carry it.
    head.stream->sealed = cipher_->binding();
    pending_ = cipher_->update(pending_);
  }
  OutboundMessage out = reply_;
  out.payload = to_json(head);
  // The QoS of the chunks: brokers keep the order of one client's messages per QoS.
  out.qos = std::min(out.qos, 1);
  head_sent_ = true;
  outbox_.push_back(std::move(out));
}

void StreamTransfer::send_chunk(std::string data, bool last, std::string error) {
  Chunk c;
  c.id = options_.id;
  c.seq = window_.sent_count();
  sha_.update(data);
  bytes_ += data.size();
  c.data = std::move(data);
  c.last = last;
  if (last && error.empty()) {
    c.total = bytes_;
    c.sha256 = sha_.hex();
  }
  c.error = std::move(error);
  OutboundMessage out = reply_;
  out.qos = std::min(out.qos, 1);  // duplicates are dropped by seq; no need for QoS 2
  encode_chunk(c, options_.binary, out);
  window_.sent();
  outbox_.push_back(std::move(out));
}

void StreamTransfer::send_ack(std::uint64_t next, bool first) {
  StreamAck ack;
  ack.id = options_.id;
  ack.next = next;
  if (first) {
    ack.window = options_.window;
    ack.chunk_bytes = options_.upload_chunk_bytes;
  }
  OutboundMessage out = reply_;
  out.qos = std::min(out.qos, 1);
  out.payload = encode_ack(ack);
  outbox_.push_back(std::move(out));
}

void StreamTransfer::publish_outbox(std::unique_lock<std::mutex>& lock) {
  if (outbox_.empty()) return;
  auto out = std::exchange(outbox_, {});
  lock.unlock();
  for (auto& m : out) publisher_.publish(std::move(m));
  lock.lock();
}

void StreamTransfer::wake_locked() {
  if (waker_) waker_();
}

}  // namespace hom
