#include "hom/e2e_device.hpp"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <utility>

#include <spdlog/spdlog.h>

#include "hom/age.hpp"
#include "hom/bridge.hpp"
#include "hom/envelope.hpp"
#include "hom/response.hpp"
#include "hom/stream.hpp"

namespace hom {

namespace {

constexpr auto kReplyTtl = std::chrono::minutes(5);
constexpr std::size_t kMaxReplies = 10000;
// What sealing adds to a reply document, generously: the age header with one ssh-ed25519
// stanza (~250 bytes), its 16-byte tags (one per 64 KiB), the netstrings of R' with the
// request hash, and the SSHSIG (~150 bytes).
std::size_t seal_overhead(std::size_t payload) { return 1024 + payload / 4096; }

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool read_file(const std::string& path, std::string& out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return false;
  std::ostringstream ss;
  ss << f.rdbuf();
  out = ss.str();
  return static_cast<bool>(f) || f.eof();
}

// Network-controlled text for one log line.
std::string printable(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < 200; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    out += c < 0x20 || c == 0x7F ? '?' : static_cast<char>(c);
  }
  return out;
}

// A sealed request's body travels inside it: a streamed upload would come in clear chunks.
bool asks_upload(const std::string& payload) {
  const auto decoded = decode_request(payload);
  return decoded.error.empty() && decoded.envelope.stream && decoded.envelope.stream->upload;
}

// The head of a streamed sealed reply (StreamTransfer gives it the cipher's binding), not
// an ordinary reply document.
bool is_sealed_head(const std::string& payload) {
  if (payload.find("\"stream\"") == std::string::npos) return false;
  const auto reply = decode_reply(payload);
  return reply && reply->stream && !reply->stream->sealed.empty();
}

// A sealed reply's body in chunks: one age file to the requester, whose header and nonce the
// signed head names (StreamHead::sealed).
class AgeBodyCipher : public BodyCipher {
 public:
  explicit AgeBodyCipher(AgeEncryptor encryptor)
      : encryptor_(std::move(encryptor)),
        start_(encryptor_.update({})),
        binding_(sha256_hex(start_)) {}
  const std::string& binding() const override { return binding_; }
  std::string update(std::string_view plaintext) override {
    std::string out = std::exchange(start_, {});
    return out += encryptor_.update(plaintext);
  }
  std::string finish() override {
    std::string out = std::exchange(start_, {});
    return out += encryptor_.finish();
  }

 private:
  AgeEncryptor encryptor_;
  std::string start_;  // the header and nonce, until the first ciphertext goes out
  const std::string binding_;
};

}  // namespace

std::unique_ptr<E2eDevice> E2eDevice::create(const Config& config, std::string& error) {
  const E2eConfig& e = config.e2e;
  std::string text;
  if (!read_file(e.device_key_file, text)) {
    error = "HOM_DEVICE_KEY_FILE='" + e.device_key_file + "' cannot be read";
    return nullptr;
  }
  std::string why;
  auto key = parse_private_key(text, why);
  std::fill(text.begin(), text.end(), '\0');
  if (!key) {
    error = "HOM_DEVICE_KEY_FILE='" + e.device_key_file + "' is not usable: " + why;
    return nullptr;
  }
  if (!read_file(e.authorized_keys_file, text)) {
    error = "HOM_AUTHORIZED_KEYS_FILE='" + e.authorized_keys_file + "' cannot be read";
    return nullptr;
  }
  const auto keys = parse_authorized_keys(text, why);
  if (!keys) {
    error = "HOM_AUTHORIZED_KEYS_FILE='" + e.authorized_keys_file + "': " + why;
    return nullptr;
  }
  for (const auto& skipped : keys->skipped) spdlog::warn("HOM_AUTHORIZED_KEYS_FILE: {}", skipped);
  auto authorizer = Authorizer::create(*keys, why);
  if (!authorizer) {
    error = "HOM_AUTHORIZED_KEYS_FILE='" + e.authorized_keys_file + "': " + why;
    return nullptr;
  }
  ReplayGuard::Options o;
  o.dir = e.state_dir;
  o.skew_s = e.skew_s;
  auto guard = ReplayGuard::open(o, unix_now(), why);
  if (!guard) {
    error = "HOM_STATE_DIR='" + e.state_dir + "': " + why;
    return nullptr;
  }
  const std::size_t n = authorizer->size();
  return std::unique_ptr<E2eDevice>(
      new E2eDevice(config, std::move(*key), std::move(*authorizer), std::move(guard), n));
}

E2eDevice::E2eDevice(const Config& config, SshPrivateKey key, Authorizer authorizer,
                     std::unique_ptr<ReplayGuard> guard, std::size_t authorized)
    : config_(config),
      policy_(RequestPolicy::from(config)),
      sealed_topic_(policy_.topics.request_topic(kSealedVerb, {})),
      reply_topic_(policy_.topics.response_prefix() + std::string(kSealedVerb)),
      internal_prefix_(reply_topic_ + "/"),
      authorized_(authorized),
      guard_(std::move(guard)),
      gate_(std::move(key), config.topics.id, config.topics.start, std::move(authorizer), *guard_) {
  for (int i = 0; i < std::max(2, config.workers); ++i)
    admitters_.emplace_back([this] { admitter_main(); });
}

E2eDevice::~E2eDevice() { stop(); }

std::string E2eDevice::describe() const {
  return std::string("end-to-end mode ") + to_string(config_.e2e.mode) + ": device key " +
         gate_.device_key().public_key().fingerprint() + ", " + std::to_string(authorized_) +
         " authorized keys, seen nonces in " + guard_->path() + "; sealed requests on " +
         sealed_topic_;
}

void E2eDevice::on_message(InboundMessage&& message, Bridge& next) {
  const auto parsed = policy_.topics.parse(message.topic);
  if (!parsed || message.retained) {
    next.on_message(std::move(message));  // the bridge ignores it, and logs why
    return;
  }
  if (parsed->verb == kSealedVerb) {
    if (!parsed->has_path && message.payload.size() == message.payload_bytes &&
        decode_stream_message(message.payload, message.properties.user).kind !=
            StreamMessage::Kind::kNone) {
      // A requester's acknowledgement of a sealed reply's chunks: it carries no secret, and
      // a forged one can only make homd publish sooner what the requester alone can open.
      next.on_message(std::move(message));
      return;
    }
    if (parsed->has_path) {
      spdlog::warn("ignoring a message on {}: sealed requests come on {} only",
                   printable(message.topic), sealed_topic_);
      return;
    }
    on_sealed(std::move(message), next);
    return;
  }
  // The internal reply topics of sealed requests are the bridge's, never a requester's.
  const auto& rt = message.properties.response_topic;
  if (rt && rt->compare(0, reply_topic_.size(), reply_topic_) == 0) {
    spdlog::warn("ignoring a request on {}: its Response Topic is reserved for sealed replies",
                 printable(message.topic));
    return;
  }
  if (config_.e2e.mode == E2eMode::kRequire) {
    refuse_plain(message);
    return;
  }
  next.on_message(std::move(message));
}

void E2eDevice::on_sealed(InboundMessage&& message, Bridge& next) {
  if (message.payload.size() < message.payload_bytes) {
    refuse(message, 413,
           "payload of " + std::to_string(message.payload_bytes) +
               " bytes exceeds MQTT_MAX_PAYLOAD_BYTES",
           std::nullopt);
    return;
  }
  const std::string hash = sha256_hex(message.payload);
  std::optional<OutboundMessage> again;
  {
    std::lock_guard<std::mutex> lock(mu_);
    expire();
    const auto it = replies_.find(hash);
    if (it != replies_.end()) {
      if (!it->second.done) {
        spdlog::info("sealed request {}: a copy of a waiting or running request, answered once",
                     hash.substr(0, 16));
        return;
      }
      again = it->second.reply;
    } else if (!stopping_ && jobs_.size() < config_.queue_max + admitters_.size()) {
      // From now on a copy is answered with this request's reply, not refused as a replay.
      auto& entry = replies_[hash];
      entry.at = std::chrono::steady_clock::now();
      order_.push_back(hash);
      jobs_.push_back(Job{std::move(message), hash, &next});
      jobs_cv_.notify_one();
      return;
    }
  }
  if (again) {
    spdlog::info("sealed request {}: a copy answered with the first reply, not executed",
                 hash.substr(0, 16));
    downstream_->publish(std::move(*again));
    return;
  }
  bool stopping = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping = stopping_;
  }
  refuse(message, 503,
         stopping ? "shutting down" : "overloaded: too many sealed requests waiting (QUEUE_MAX)",
         std::nullopt);
}

void E2eDevice::admitter_main() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    jobs_cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
    if (jobs_.empty()) return;  // stopping, and every job is handed on
    Job job = std::move(jobs_.front());
    jobs_.pop_front();
    lock.unlock();
    admit(job);
    lock.lock();
  }
}

void E2eDevice::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  jobs_cv_.notify_all();
  for (auto& t : admitters_) t.join();
  admitters_.clear();
}

void E2eDevice::admit(Job& job) {
  InboundMessage& message = job.message;
  Bridge& next = *job.next;
  const auto forget = [&] {
    // Refused: a later copy goes through the gate again (and is refused as a replay).
    std::lock_guard<std::mutex> lock(mu_);
    replies_.erase(job.hash);
  };
  auto verdict = gate_.admit(message.payload, message.properties, unix_now());
  if (verdict.status != 0) {
    forget();
    refuse(message, verdict.status, verdict.reason, verdict.request);
    return;
  }
  OpenedRequest& opened = *verdict.request;
  const SignedRequest& r = opened.request;
  if (!is_token(r.verb)) {
    forget();
    refuse(message, 405, "verb '" + printable(r.verb) + "' is not an HTTP method", opened);
    return;
  }
  if (asks_upload(r.payload)) {
    forget();
    refuse(message, 400,
           "a sealed request carries its body: streamed uploads are not sealed end to end", opened);
    return;
  }
  Pending pending{opened, r.response_topic.empty() ? reply_topic_ : r.response_topic, std::nullopt};
  if (!r.correlation_data.empty()) pending.correlation_data = r.correlation_data;
  if (!valid_reply_topic(pending.reply_topic)) {
    forget();
    refuse(message, 400,
           "Response Topic '" + printable(r.response_topic) + "' is not under " +
               policy_.topics.response_prefix(),
           opened);
    return;
  }
  const std::string token = make_nonce();
  InboundMessage inner;
  inner.topic = policy_.topics.request_topic(r.verb, r.path);
  inner.payload = r.payload;
  inner.payload_bytes = inner.payload.size();
  inner.qos = message.qos;
  inner.properties.response_topic = internal_prefix_ + token;
  inner.properties.expiry_s = message.properties.expiry_s;
  // Without MQTT 5 properties the requester can read chunks only in their JSON form.
  inner.json_chunks = !message.properties.response_topic && !message.properties.correlation_data;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    pending.at = now;
    pending_.emplace(token, std::move(pending));
    // The bridge answers every request within HTTP_TIMEOUT_MS; one that it took for a
    // stream message instead (a signed payload shaped like one) is never answered: forgotten
    // here once far past any timeout, so the map stays bounded.
    if (pending_.size() > 4 * (config_.queue_max + admitters_.size())) {
      const auto limit = now - 2 * (config_.http.timeout + config_.http.connect_timeout);
      for (auto it = pending_.begin(); it != pending_.end();)
        it = it->second.at < limit && !it->second.streaming ? pending_.erase(it) : std::next(it);
    }
  }
  next.on_message(std::move(inner));
}

bool E2eDevice::valid_reply_topic(const std::string& topic) const {
  const std::string prefix = policy_.topics.response_prefix();
  return topic.size() > prefix.size() && topic.compare(0, prefix.size(), prefix) == 0 &&
         topic.find_first_of(std::string("+#\0", 3)) == std::string::npos &&
         (topic == reply_topic_ ||
          topic.compare(0, internal_prefix_.size(), internal_prefix_) != 0);
}

void E2eDevice::refuse(const InboundMessage& message, int status, const std::string& reason,
                       const std::optional<OpenedRequest>& opened) {
  spdlog::warn("sealed request refused: {} {}", status, printable(reason));
  OutboundMessage out;
  out.qos = config_.mqtt.response_qos;
  out.binary = true;
  if (opened) {
    const RawJson req_id = decode_request(opened->request.payload).envelope.req_id;
    const std::string doc = to_json(bridge_error(status, reason, req_id));
    std::string error;
    auto sealed = seal_reply(*opened, gate_.device_key(), doc, error);
    if (!sealed) {
      spdlog::error("sealing a refusal failed: {}", error);
      return;
    }
    out.payload = std::move(*sealed);
    out.topic = valid_reply_topic(opened->request.response_topic) ? opened->request.response_topic
                                                                  : reply_topic_;
    if (!opened->request.correlation_data.empty())
      out.correlation_data = opened->request.correlation_data;
  } else {
    // Who asks is not known: the status and the reason only, in clear.
    out.binary = false;
    out.payload = to_json(bridge_error(status, reason, nullptr));
    const auto& rt = message.properties.response_topic;
    out.topic = rt && valid_reply_topic(*rt) ? *rt : reply_topic_;
    out.correlation_data = message.properties.correlation_data;
  }
  if (!downstream_->fits(out)) {
    spdlog::error("a refusal does not fit the broker's packet limit on {}: not answered",
                  printable(out.topic));
    return;
  }
  downstream_->publish(std::move(out));
}

void E2eDevice::refuse_plain(const InboundMessage& message) {
  auto request = parse_request(policy_, message.topic, message.payload, message.properties);
  if (!request) return;
  const std::string reason =
      "HOM_E2E=require: only sealed requests (" + sealed_topic_ + ") are executed";
  spdlog::warn("{} {}: 401 {}", printable(request->verb), printable(request->path), reason);
  OutboundMessage out;
  out.topic = request->response_topic;
  out.payload = to_json(bridge_error(401, reason, request->req_id));
  out.qos = config_.mqtt.response_qos;
  out.correlation_data = request->correlation_data;
  if (!downstream_->fits(out)) out.payload = to_json(bridge_error(401, reason, nullptr));
  if (downstream_->fits(out)) downstream_->publish(std::move(out));
}

const E2eDevice::Pending* E2eDevice::pending_of(const std::string& topic) const {
  if (topic.size() <= internal_prefix_.size() ||
      topic.compare(0, internal_prefix_.size(), internal_prefix_) != 0)
    return nullptr;
  const auto it = pending_.find(topic.substr(internal_prefix_.size()));
  return it == pending_.end() ? nullptr : &it->second;
}

OutboundMessage E2eDevice::sealed_shape(const OutboundMessage& message,
                                        const Pending& pending) const {
  OutboundMessage out;
  out.topic = pending.reply_topic;
  out.qos = message.qos;
  out.correlation_data = pending.correlation_data;
  out.expiry_s = message.expiry_s;
  out.binary = true;
  return out;
}

bool E2eDevice::fits(const OutboundMessage& message) const {
  std::optional<OutboundMessage> shape;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (const Pending* p = pending_of(message.topic)) shape = sealed_shape(message, *p);
  }
  if (!shape) return downstream_->fits(message);
  shape->payload.assign(message.payload.size() + seal_overhead(message.payload.size()), 'x');
  return downstream_->fits(*shape);
}

std::size_t E2eDevice::payload_room(const OutboundMessage& message) const {
  std::optional<OutboundMessage> shape;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (const Pending* p = pending_of(message.topic)) shape = sealed_shape(message, *p);
  }
  if (!shape) return downstream_->payload_room(message);
  const std::size_t room = downstream_->payload_room(*shape);
  const std::size_t overhead = seal_overhead(room);
  return room > overhead ? room - overhead : 0;
}

std::unique_ptr<BodyCipher> E2eDevice::body_cipher(const OutboundMessage& reply) {
  std::vector<SshPublicKey> signer;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const Pending* p = pending_of(reply.topic);
    if (!p) return nullptr;
    signer.push_back(p->opened.signer);
  }
  std::string error;
  auto encryptor = AgeEncryptor::create(signer, error);
  if (!encryptor) {
    // The signer's key was checked when the request was opened: this does not happen.
    spdlog::error("cannot seal a streamed reply: {}", error);
    return nullptr;
  }
  return std::make_unique<AgeBodyCipher>(std::move(*encryptor));
}

std::optional<OutboundMessage> E2eDevice::sealed_chunk(OutboundMessage message,
                                                       const Pending& pending, bool& last) const {
  // Ciphertext already (body_cipher): only reshaped. Its metadata travels in clear, so an
  // error says no more than that the stream failed.
  auto chunk = decode_stream_message(message.payload, message.user);
  if (chunk.kind != StreamMessage::Kind::kChunk) {
    spdlog::error("dropping a message of a sealed stream that is no chunk");
    return std::nullopt;
  }
  last = chunk.chunk.last;
  OutboundMessage out = sealed_shape(message, pending);
  if (!chunk.chunk.error.empty()) {
    spdlog::warn("sealed stream {}: {}", printable(chunk.chunk.id), printable(chunk.chunk.error));
    chunk.chunk.error = "the device's stream failed";
    encode_chunk(chunk.chunk, message.binary, out);
  } else {
    out.payload = std::move(message.payload);
    out.user = std::move(message.user);
  }
  out.binary = message.binary;
  return out;
}

void E2eDevice::publish(OutboundMessage message) {
  std::optional<Pending> pending;
  std::optional<OutboundMessage> chunk_out;
  bool head = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (message.topic.compare(0, internal_prefix_.size(), internal_prefix_) == 0) {
      const auto it = pending_.find(message.topic.substr(internal_prefix_.size()));
      if (it != pending_.end() && it->second.streaming) {
        bool last = false;
        chunk_out = sealed_chunk(std::move(message), it->second, last);
        if (!chunk_out) return;
        it->second.at = std::chrono::steady_clock::now();
        if (last) {
          // Not kept for copies: a later copy of the request is refused as a replay.
          replies_.erase(it->second.opened.request_sha256);
          pending_.erase(it);
        }
      } else if (it != pending_.end()) {
        // The first reply: a streamed reply's head keeps the request pending for its chunks.
        head = is_sealed_head(message.payload);
        if (head) {
          it->second.streaming = true;
          pending = it->second;
        } else {
          pending = std::move(it->second);
          pending_.erase(it);
        }
      }
    }
  }
  if (chunk_out) {
    downstream_->publish(std::move(*chunk_out));
    return;
  }
  if (!pending) {
    if (message.topic.compare(0, reply_topic_.size(), reply_topic_) == 0) {
      // A second reply to a sealed request, not a stream's: it must not leak.
      spdlog::error("dropping an unexpected reply on {}", printable(message.topic));
      return;
    }
    downstream_->publish(std::move(message));
    return;
  }
  OutboundMessage out = sealed_shape(message, *pending);
  std::string error;
  auto sealed = seal_reply(pending->opened, gate_.device_key(), message.payload, error);
  if (!sealed) {
    spdlog::error("sealing a reply failed: {}", error);
    if (head) {
      // No head: its chunks must not follow.
      std::lock_guard<std::mutex> lock(mu_);
      pending_.erase(message.topic.substr(internal_prefix_.size()));
    }
    return;
  }
  out.payload = std::move(*sealed);
  if (!head) {
    std::lock_guard<std::mutex> lock(mu_);
    remember(pending->opened.request_sha256, out);
  }
  downstream_->publish(std::move(out));
}

void E2eDevice::remember(const std::string& hash, OutboundMessage reply) {
  const auto it = replies_.find(hash);
  if (it == replies_.end()) return;
  const std::size_t bytes = reply.payload.size() + reply.topic.size();
  if (bytes > config_.reply_cache_bytes / 4) {
    // Too large to keep: a later copy gets a 401 from the replay guard instead.
    replies_.erase(it);
    return;
  }
  it->second.done = true;
  it->second.reply = std::move(reply);
  cached_bytes_ += bytes;
  expire();
}

void E2eDevice::expire() {
  const auto now = std::chrono::steady_clock::now();
  while (!order_.empty()) {
    const auto it = replies_.find(order_.front());
    if (it == replies_.end()) {
      order_.pop_front();
      continue;
    }
    const bool old = now - it->second.at > kReplyTtl;
    const bool full = replies_.size() > kMaxReplies || cached_bytes_ > config_.reply_cache_bytes;
    if (!old && !full) break;
    if (!it->second.done && !old) break;  // running: its reply is still to come
    if (it->second.done)
      cached_bytes_ -= it->second.reply.payload.size() + it->second.reply.topic.size();
    replies_.erase(it);
    order_.pop_front();
  }
}

}  // namespace hom
