// homd's side of a stream (stream_transfer.hpp) with a recording publisher: chunk sizes within
// the packet limit, the window, idle flushes, the last chunk, errors, and uploads. Then the
// Bridge streaming a reply through the executor's default perform_stream (SPEC §7).
#include "hom/stream_transfer.hpp"

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "hom/bridge.hpp"
#include "hom/config.hpp"
#include "hom/stream.hpp"
#include "unit/bridge_fakes.hpp"
#include "unit/fake_clock.hpp"

namespace hom::test {
namespace {

using nlohmann::json;
using Kind = StreamMessage::Kind;
using Outcome = HttpResult::Outcome;
using namespace std::chrono_literals;

std::string sha256_of(std::string_view bytes) {
  Sha256 sha;
  sha.update(bytes);
  return sha.hex();
}

// byte i = i % 251, as the demo API's /files/blob serves.
std::string blob(std::size_t n) {
  std::string out(n, '\0');
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<char>(i % 251);
  return out;
}

HttpResult response(int status, std::string body = {}) {
  HttpResult r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

HttpResult failure(Outcome outcome, std::string reason) {
  HttpResult r;
  r.outcome = outcome;
  r.reason = std::move(reason);
  return r;
}

StreamTransfer::Options options(std::size_t window, std::size_t chunk_bytes = 0,
                                bool binary = false) {
  StreamTransfer::Options o;
  o.id = "s1";
  o.window = window;
  o.chunk_bytes = chunk_bytes;
  o.binary = binary;
  return o;
}

Chunk chunk(std::uint64_t seq, std::string data, std::string id = "s1") {
  Chunk c;
  c.id = std::move(id);
  c.seq = seq;
  c.data = std::move(data);
  return c;
}

Chunk last(std::uint64_t seq, std::string data, std::uint64_t total, std::string sha256) {
  Chunk c = chunk(seq, std::move(data));
  c.last = true;
  c.total = total;
  c.sha256 = std::move(sha256);
  return c;
}

// What was published, read the way a requester reads it.
struct Published {
  std::vector<json> heads;  // replies (documents without chunk or ack)
  std::vector<Chunk> chunks;
  std::vector<StreamAck> acks;
  std::size_t invalid = 0;
};

Published read_published(const FakePublisher& publisher) {
  Published p;
  for (const auto& s : publisher.sent()) {
    const auto m = decode_stream_message(s.message.payload, s.message.user);
    switch (m.kind) {
      case Kind::kChunk:
        p.chunks.push_back(m.chunk);
        break;
      case Kind::kAck:
        p.acks.push_back(m.ack);
        break;
      case Kind::kInvalid:
        ++p.invalid;
        break;
      case Kind::kNone:
        p.heads.push_back(json::parse(s.message.payload));
        break;
    }
  }
  return p;
}

class StreamTransferTest : public ::testing::Test {
 protected:
  StreamTransferTest() {
    request_.verb = "GET";
    request_.path = "/files/blob";
    request_.req_id = RawJson::from_text("7");
    reply_.topic = "v1/res/dev/files/blob";
    reply_.qos = 1;
  }

  StreamTransfer& make(const StreamTransfer::Options& o) {
    transfer_.emplace(o, request_, reply_, publisher_, clock_.source());
    return *transfer_;
  }

  // Feeds `body` as an executor would (pieces of `piece` bytes), acknowledging everything
  // published whenever the window shuts; then finishes. Returns the reassembled body.
  std::string feed_and_read(StreamTransfer& t, const std::string& body, std::size_t piece) {
    t.head(200, {{"content-type", "application/octet-stream"}});
    std::string_view rest = body;
    while (!rest.empty()) {
      const auto p = rest.substr(0, piece);
      if (t.body(p)) {
        rest.remove_prefix(p.size());
        continue;
      }
      // The executor pauses until ready_for_body(); each acknowledgement opens the window.
      int rounds = 0;
      do {
        ack_all(t);
        if (++rounds > 1000) {
          ADD_FAILURE() << "the window never opened";
          return {};
        }
      } while (!t.ready_for_body());
    }
    // Everything acknowledged, so finish() publishes the rest without waiting.
    while (!t.ready_for_body()) ack_all(t);
    ack_all(t);
    EXPECT_TRUE(t.finish(response(200), true));
    return reassemble();
  }

  void ack_all(StreamTransfer& t) {
    const auto p = read_published(publisher_);
    t.on_ack(StreamAck{"s1", p.chunks.size(), 0, 0});
  }

  std::string reassemble() {
    const auto p = read_published(publisher_);
    EXPECT_EQ(p.invalid, 0u);
    Reassembler r("s1", kMaxStreamWindow);
    std::vector<std::string> ready;
    for (const auto& c : p.chunks) EXPECT_NE(r.add(c, ready), Reassembler::Status::kFailed);
    EXPECT_TRUE(r.complete()) << r.error();
    std::string out;
    for (const auto& d : ready) out += d;
    return out;
  }

  // Every message fits the limit; the head's chunk size leaves room for the metadata.
  void check_fits(bool binary) {
    publisher_.set_limit(3000);
    auto& t = make(options(4, 0, binary));
    ASSERT_TRUE(t.usable());
    const std::string body = blob(50'000);
    EXPECT_TRUE(feed_and_read(t, body, 16 * 1024) == body);
    EXPECT_EQ(publisher_.oversize(), 0u);
    const auto p = read_published(publisher_);
    ASSERT_EQ(p.heads.size(), 1u);
    const auto chunk_bytes = p.heads[0]["stream"]["chunk_bytes"].get<std::size_t>();
    EXPECT_LT(chunk_bytes, 3000u);
    EXPECT_GT(chunk_bytes, binary ? 2000u : 1500u);
    for (const auto& c : p.chunks) EXPECT_LE(c.data.size(), chunk_bytes);
  }

  Request request_;
  OutboundMessage reply_;
  FakePublisher publisher_;
  FakeClock clock_;
  std::optional<StreamTransfer> transfer_;
};

TEST_F(StreamTransferTest, EveryJsonChunkFitsThePacketLimit) { check_fits(false); }
TEST_F(StreamTransferTest, EveryBinaryChunkFitsThePacketLimit) { check_fits(true); }

TEST_F(StreamTransferTest, TheRequestersChunkSizeIsHonoured) {
  publisher_.set_limit(100'000);
  auto& t = make(options(8, 1000));
  const std::string body = blob(10'500);
  EXPECT_TRUE(feed_and_read(t, body, 4096) == body);
  const auto p = read_published(publisher_);
  EXPECT_EQ(p.heads[0]["stream"]["chunk_bytes"], 1000);
  EXPECT_EQ(p.chunks.size(), 11u);
}

TEST_F(StreamTransferTest, NotEvenASmallChunkFits) {
  publisher_.set_limit(200);
  EXPECT_FALSE(make(options(8)).usable());
}

TEST_F(StreamTransferTest, TheWindowHoldsTheBodyUntilAcknowledged) {
  publisher_.set_limit(100'000);
  auto& t = make(options(2, 1000));
  t.head(200, {});
  EXPECT_TRUE(t.body(blob(5000)));
  auto p = read_published(publisher_);
  EXPECT_EQ(p.heads.size(), 1u);
  EXPECT_EQ(p.chunks.size(), 2u);  // the window
  EXPECT_FALSE(t.body("more"));    // three chunks are waiting: the executor pauses
  EXPECT_FALSE(t.ready_for_body());
  t.on_ack(StreamAck{"s1", 1, 0, 0});
  EXPECT_FALSE(t.ready_for_body());  // one more chunk went out, two are still pending
  EXPECT_EQ(read_published(publisher_).chunks.size(), 3u);
  t.on_ack(StreamAck{"s1", 3, 0, 0});
  EXPECT_TRUE(t.ready_for_body());
  EXPECT_EQ(read_published(publisher_).chunks.size(), 5u);
  EXPECT_TRUE(t.body("more"));
  // An acknowledgement beyond what was sent, or backwards, changes nothing.
  t.on_ack(StreamAck{"s1", 99, 0, 0});
  t.on_ack(StreamAck{"s1", 0, 0, 0});
  EXPECT_TRUE(t.finish(response(200), true));
  p = read_published(publisher_);
  ASSERT_EQ(p.chunks.size(), 6u);
  EXPECT_TRUE(p.chunks.back().last);
  EXPECT_EQ(p.chunks.back().data, "more");
  EXPECT_EQ(p.chunks.back().total, 5004u);
  EXPECT_EQ(p.chunks.back().sha256, sha256_of(blob(5000) + "more"));
}

TEST_F(StreamTransferTest, IdleFlushesAPartialChunk) {
  publisher_.set_limit(100'000);
  auto& t = make(options(2, 1000));
  t.idle();  // no head yet: nothing to say
  EXPECT_EQ(publisher_.count(), 0u);
  t.head(200, {});
  EXPECT_TRUE(t.body("first line\n"));
  EXPECT_EQ(publisher_.count(), 0u);
  t.idle();
  auto p = read_published(publisher_);
  ASSERT_EQ(p.heads.size(), 1u);
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].data, "first line\n");
  EXPECT_FALSE(p.chunks[0].last);
  EXPECT_TRUE(t.streamed());
  t.idle();  // nothing new
  EXPECT_EQ(publisher_.count(), 2u);
  EXPECT_TRUE(t.body("second line\n"));
  t.idle();
  EXPECT_EQ(read_published(publisher_).chunks.size(), 2u);
  EXPECT_TRUE(t.body("third"));
  t.idle();  // the window (2) is full: the bytes wait
  EXPECT_EQ(read_published(publisher_).chunks.size(), 2u);
  t.on_ack(StreamAck{"s1", 2, 0, 0});
  t.idle();
  p = read_published(publisher_);
  ASSERT_EQ(p.chunks.size(), 3u);
  EXPECT_EQ(p.chunks[2].data, "third");
  EXPECT_TRUE(t.finish(response(200)));
  EXPECT_EQ(reassemble(), "first line\nsecond line\nthird");
}

TEST_F(StreamTransferTest, FinishWaitsForTheWindowAndEndsWithLengthAndDigest) {
  publisher_.set_limit(100'000);
  auto& t = make(options(1, 1000));
  const std::string body = blob(3500);
  t.head(200, {});
  ASSERT_TRUE(t.body(body));
  // Acknowledge from another thread as the chunks appear, as the MQTT thread does.
  std::thread acker([&] {
    for (std::size_t n = 1; n <= 4; ++n) {
      if (!publisher_.wait_count(n + 1)) return;  // the head and n chunks
      t.on_ack(StreamAck{"s1", n, 0, 0});
    }
  });
  EXPECT_TRUE(t.finish(response(200)));
  acker.join();
  const auto p = read_published(publisher_);
  ASSERT_EQ(p.chunks.size(), 4u);
  EXPECT_EQ(p.chunks[3].data.size(), 500u);
  EXPECT_EQ(p.chunks[3].total, 3500u);
  EXPECT_EQ(p.chunks[3].sha256, sha256_of(body));
  EXPECT_TRUE(reassemble() == body);
  EXPECT_EQ(t.stats().bytes, 3500u);
  EXPECT_EQ(t.stats().chunks, 4u);
}

TEST_F(StreamTransferTest, FinishGivesUpWhenTheRequesterStopsAcknowledging) {
  publisher_.set_limit(100'000);
  auto o = options(1, 1000);
  o.stall = 0ms;
  auto& t = make(o);
  t.head(200, {});
  ASSERT_TRUE(t.body(blob(2500)));
  EXPECT_TRUE(t.stop_reason().empty());
  clock_.advance(1s);
  EXPECT_NE(t.stop_reason().find("stopped acknowledging"), std::string::npos);
  EXPECT_TRUE(t.finish(response(200)));
  const auto p = read_published(publisher_);
  ASSERT_EQ(p.chunks.size(), 2u);
  EXPECT_TRUE(p.chunks[1].last);
  EXPECT_NE(p.chunks[1].error.find("stopped acknowledging"), std::string::npos);
}

TEST_F(StreamTransferTest, ASmallBodyIsAnOrdinaryReply) {
  publisher_.set_limit(100'000);
  auto& t = make(options(2, 1000));
  t.head(200, {});
  EXPECT_TRUE(t.body("small"));
  EXPECT_FALSE(t.finish(response(200)));
  EXPECT_EQ(t.buffered(), "small");
  EXPECT_FALSE(t.streamed());
  EXPECT_EQ(publisher_.count(), 0u);
  // The bridge calls again with `force` when the ordinary reply does not fit after all.
  EXPECT_TRUE(t.finish(response(200), true));
  EXPECT_EQ(reassemble(), "small");
}

// A stand-in for age (the end-to-end layer's cipher): a header, then the bytes flipped, one
// 64-byte block held back until more comes or the end, and an end mark.
class FakeCipher : public BodyCipher {
 public:
  const std::string& binding() const override { return binding_; }
  std::string update(std::string_view plaintext) override {
    held_ += plaintext;
    const std::size_t n = held_.size() > 64 ? (held_.size() - 1) / 64 * 64 : 0;
    std::string out = std::exchange(start_, {}) + flip(held_.substr(0, n));
    held_.erase(0, n);
    return out;
  }
  std::string finish() override { return std::exchange(start_, {}) + flip(held_) + "<end>"; }
  static std::string flip(std::string s) {
    for (auto& c : s) c = static_cast<char>(c ^ 0x5a);
    return s;
  }

 private:
  const std::string binding_ = std::string(64, 'b');
  std::string start_ = "<header>";
  std::string held_;
};

TEST_F(StreamTransferTest, ASealedStreamCarriesCiphertextFromTheHeadOn) {
  publisher_.set_limit(100'000);
  publisher_.set_cipher([] { return std::make_unique<FakeCipher>(); });
  auto& t = make(options(3, 1000));
  const std::string body = blob(5000);
  // Pieces that are no multiple of a chunk or a block; the window shuts now and then.
  const std::string sent = feed_and_read(t, body, 700);
  EXPECT_TRUE(sent == "<header>" + FakeCipher::flip(body) + "<end>");
  const auto p = read_published(publisher_);
  ASSERT_EQ(p.heads.size(), 1u);
  EXPECT_EQ(p.heads[0]["stream"]["sealed"], std::string(64, 'b'));
  for (const auto& c : p.chunks) EXPECT_LE(c.data.size(), 1000u);
  EXPECT_EQ(p.chunks.back().total, sent.size());
}

TEST_F(StreamTransferTest, ASmallSealedBodyStaysInClearForTheOrdinaryReply) {
  // The end-to-end layer seals an ordinary reply as a whole.
  publisher_.set_limit(100'000);
  publisher_.set_cipher([] { return std::make_unique<FakeCipher>(); });
  auto& t = make(options(2, 1000));
  t.head(200, {});
  EXPECT_TRUE(t.body("small"));
  EXPECT_FALSE(t.finish(response(200)));
  EXPECT_EQ(t.buffered(), "small");
  EXPECT_EQ(publisher_.count(), 0u);
}

TEST_F(StreamTransferTest, AFailureBeforeTheHeadIsAnOrdinaryReply) {
  publisher_.set_limit(100'000);
  auto& t = make(options(8, 1000));
  EXPECT_FALSE(t.finish(failure(Outcome::kUnreachable, "refused"), true));
  EXPECT_EQ(publisher_.count(), 0u);
}

TEST_F(StreamTransferTest, AnErrorAfterTheHeadEndsWithAnErrorChunk) {
  publisher_.set_limit(100'000);
  auto& t = make(options(1, 1000));
  t.head(200, {});
  ASSERT_TRUE(t.body(blob(2500)));  // one chunk out; the window shuts
  EXPECT_TRUE(t.finish(failure(Outcome::kUnreachable, "the connection broke")));
  const auto p = read_published(publisher_);
  ASSERT_EQ(p.chunks.size(), 2u);
  EXPECT_TRUE(p.chunks[1].last);
  EXPECT_EQ(p.chunks[1].error, "the connection broke");
  Reassembler r("s1", 8);
  std::vector<std::string> ready;
  r.add(p.chunks[0], ready);
  EXPECT_EQ(r.add(p.chunks[1], ready), Reassembler::Status::kFailed);
  EXPECT_FALSE(r.complete());
}

TEST_F(StreamTransferTest, AnErrorChunkFitsThePacketWhateverWasPending) {
  publisher_.set_limit(3000);
  auto& t = make(options(1));
  t.head(200, {});
  ASSERT_TRUE(t.body(blob(5000)));  // one chunk out, more than a chunk pending
  EXPECT_TRUE(t.finish(failure(Outcome::kTimeout, "the API took too long")));
  EXPECT_EQ(publisher_.oversize(), 0u);
  const auto p = read_published(publisher_);
  ASSERT_EQ(p.chunks.size(), 2u);
  EXPECT_EQ(p.chunks[1].error, "the API took too long");
}

// ---- Uploads ------------------------------------------------------------------------------

class StreamUploadTest : public StreamTransferTest {
 protected:
  StreamTransfer& start(std::size_t window = 2, std::uint64_t max = 0) {
    publisher_.set_limit(100'000);
    auto o = options(window);
    o.max_upload_bytes = max;
    o.upload_chunk_bytes = 1024;
    auto& t = make(o);
    t.set_waker([this] { ++wakes_; });
    t.begin_upload();
    return t;
  }
  // Reads until kWait, 0 or kFail; appends what came.
  long drain(StreamTransfer& t, std::string& out) {
    char buf[300];
    for (;;) {
      const long n = t.read(buf, sizeof buf);
      if (n <= 0) return n;
      out.append(buf, static_cast<std::size_t>(n));
    }
  }
  int wakes_ = 0;
};

TEST_F(StreamUploadTest, TheFirstAckGivesWindowAndChunkSize) {
  start(3);
  const auto p = read_published(publisher_);
  ASSERT_EQ(p.acks.size(), 1u);
  EXPECT_EQ(p.acks[0].id, "s1");
  EXPECT_EQ(p.acks[0].next, 0u);
  EXPECT_EQ(p.acks[0].window, 3u);
  EXPECT_EQ(p.acks[0].chunk_bytes, 1024u);
}

TEST_F(StreamUploadTest, ReadWaitsThenGivesTheDataThenEnds) {
  auto& t = start();
  std::string got;
  EXPECT_EQ(drain(t, got), StreamChannel::kWait);
  EXPECT_FALSE(t.ready_for_read());
  const std::string body = blob(1500);
  t.on_chunk(chunk(0, body.substr(0, 1000)));
  EXPECT_EQ(wakes_, 1);
  EXPECT_TRUE(t.ready_for_read());
  EXPECT_EQ(drain(t, got), StreamChannel::kWait);
  EXPECT_EQ(got, body.substr(0, 1000));
  // Acknowledged once the API took the chunk.
  auto p = read_published(publisher_);
  ASSERT_EQ(p.acks.size(), 2u);
  EXPECT_EQ(p.acks[1].next, 1u);
  EXPECT_EQ(p.acks[1].window, 0u);
  t.on_chunk(last(1, body.substr(1000), 1500, sha256_of(body)));
  EXPECT_EQ(drain(t, got), 0);
  EXPECT_TRUE(got == body);
  EXPECT_EQ(t.read(nullptr, 0), 0);
  p = read_published(publisher_);
  EXPECT_EQ(p.acks.back().next, 2u);
  EXPECT_EQ(t.stats().upload_bytes, 1500u);
  EXPECT_TRUE(t.stop_reason().empty());
}

TEST_F(StreamUploadTest, AcknowledgementsFollowWhatTheApiConsumed) {
  auto& t = start(2);
  t.on_chunk(chunk(1, "b"));  // early: held
  EXPECT_FALSE(t.ready_for_read());
  t.on_chunk(chunk(0, "a"));
  EXPECT_EQ(read_published(publisher_).acks.size(), 1u);  // nothing consumed yet
  char c = 0;
  EXPECT_EQ(t.read(&c, 1), 1);
  EXPECT_EQ(c, 'a');
  EXPECT_EQ(read_published(publisher_).acks.back().next, 1u);
  EXPECT_EQ(t.read(&c, 1), 1);
  EXPECT_EQ(c, 'b');
  EXPECT_EQ(read_published(publisher_).acks.back().next, 2u);
}

TEST_F(StreamUploadTest, ABadChecksumFailsBeforeTheLastBytesAreHandedOut) {
  auto& t = start();
  std::string got;
  t.on_chunk(chunk(0, "abc"));
  t.on_chunk(last(1, "de", 5, sha256_of("abcdX")));
  EXPECT_EQ(drain(t, got), StreamChannel::kFail);
  EXPECT_EQ(got.find("de"), std::string::npos) << got;
  EXPECT_LE(got.size(), 3u);
  EXPECT_NE(t.stop_reason().find("SHA-256"), std::string::npos) << t.stop_reason();
  EXPECT_TRUE(t.ready_for_read());
}

TEST_F(StreamUploadTest, ARequesterIgnoringTheWindowFailsTheUpload) {
  auto& t = start(2);
  t.on_chunk(chunk(0, "a"));
  t.on_chunk(chunk(1, "b"));
  t.on_chunk(chunk(2, "c"));  // nothing was acknowledged beyond 0
  std::string got;
  EXPECT_EQ(drain(t, got), StreamChannel::kFail);
  EXPECT_NE(t.stop_reason().find("the upload failed"), std::string::npos) << t.stop_reason();
}

TEST_F(StreamUploadTest, MaxUploadBytesBoundsTheBody) {
  auto& t = start(4, 4);
  t.on_chunk(chunk(0, "abc"));
  t.on_chunk(chunk(1, "de"));
  std::string got;
  EXPECT_EQ(drain(t, got), StreamChannel::kFail);
  EXPECT_NE(t.stop_reason().find("limit of 4 bytes"), std::string::npos) << t.stop_reason();
}

TEST_F(StreamUploadTest, AStalledUploadStops) {
  auto& t = start();
  clock_.advance(31s);
  EXPECT_NE(t.stop_reason().find("stalled"), std::string::npos) << t.stop_reason();
}

// ---- The Bridge ---------------------------------------------------------------------------

constexpr const char* kRequestPrefix = "v1/req/dev/";
constexpr const char* kReplyTopic = "v1/res/dev/callers/1";

Config config_with(std::map<std::string, std::string> vars) {
  vars.emplace("MQTT_TOPIC_ID", "dev");
  vars.emplace("HTTP_BASE_URL", "http://127.0.0.1:9/");
  return load_config([vars](const std::string& name) -> std::optional<std::string> {
    const auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  });
}

InboundMessage inbound(const std::string& rest, const std::string& payload) {
  InboundMessage m;
  m.topic = kRequestPrefix + rest;
  m.payload = payload;
  m.payload_bytes = m.payload.size();
  m.qos = 1;
  return m;
}

class BridgeStreamTest : public ::testing::Test {
 protected:
  void start() {
    config_ = config_with({});
    publisher_.set_limit(4096);
    bridge_ = std::make_unique<Bridge>(config_, publisher_, http_.factory(), clock_.source());
  }
  void TearDown() override {
    if (bridge_) bridge_->stop(5s);
  }

  // Acknowledges every chunk as it is published until the last one; returns the body.
  std::optional<std::string> take_stream(std::size_t first_message, const std::string& id) {
    Reassembler r(id, kMaxStreamWindow);
    std::string out;
    std::size_t seen = first_message;
    const auto deadline = deadline_in();
    while (!r.complete() && !r.failed()) {
      if (!publisher_.wait_count(seen + 1, deadline)) return std::nullopt;
      const auto sent = publisher_.sent();
      for (; seen < sent.size(); ++seen) {
        const auto m = decode_stream_message(sent[seen].message.payload, sent[seen].message.user);
        if (m.kind != Kind::kChunk || m.chunk.id != id) continue;
        std::vector<std::string> ready;
        r.add(m.chunk, ready);
        for (const auto& d : ready) out += d;
        bridge_->on_message(inbound("GET/files/blob", encode_ack({id, r.next(), 0, 0})));
      }
    }
    if (r.failed()) return std::nullopt;
    return out;
  }

  // The head published for a stream request (the first reply document with `stream`).
  std::optional<json> wait_head(std::size_t* index = nullptr) {
    const auto deadline = deadline_in();
    for (std::size_t n = 1;; ++n) {
      if (!publisher_.wait_count(n, deadline)) return std::nullopt;
      const auto sent = publisher_.sent();
      const auto& doc = sent[n - 1].doc;
      if (doc.is_object() && doc.contains("stream") && doc.contains("status")) {
        if (index) *index = n;
        return doc;
      }
    }
  }

  Config config_;
  FakeClock clock_;
  FakePublisher publisher_;
  FakeHttp http_;
  std::unique_ptr<Bridge> bridge_;
};

TEST_F(BridgeStreamTest, AStreamRequestGetsAHeadAndChunks) {
  const std::string body = blob(100'000);
  http_.set_result([&](const Request&) { return response(200, body); });
  start();
  bridge_->on_message(
      inbound("GET/files/blob", R"({"stream":{"id":"dl-1","window":4},"req_id":9})"));
  std::size_t after_head = 0;
  const auto head = wait_head(&after_head);
  ASSERT_TRUE(head);
  EXPECT_EQ((*head)["status"], 200);
  EXPECT_EQ((*head)["req_id"], 9);
  EXPECT_EQ((*head)["stream"]["id"], "dl-1");
  EXPECT_EQ((*head)["stream"]["window"], 4);
  EXPECT_TRUE((*head)["content"].is_null());
  EXPECT_EQ(publisher_.sent()[after_head - 1].message.topic, "v1/res/dev/GET/files/blob");
  // An acknowledgement of another stream is ignored.
  bridge_->on_message(inbound("GET/files/blob", encode_ack({"unknown", 100, 0, 0})));
  bridge_->on_message(inbound("GET/files/blob", R"({"stream_ack":{"id":"bad id","next":1}})"));
  const auto got = take_stream(after_head, "dl-1");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->size(), body.size());
  EXPECT_TRUE(*got == body);
  EXPECT_EQ(publisher_.oversize(), 0u);
  EXPECT_EQ(http_.calls().size(), 1u);
}

TEST_F(BridgeStreamTest, ASmallStreamedReplyIsAnOrdinaryReply) {
  http_.set_result([&](const Request&) { return response(200, "tiny"); });
  start();
  bridge_->on_message(inbound("GET/files/blob", R"({"stream":true,"req_id":1})"));
  ASSERT_TRUE(publisher_.wait_count(1));
  const auto doc = publisher_.sent()[0].doc;
  EXPECT_EQ(doc["status"], 200);
  EXPECT_EQ(doc["content"], "tiny");
  EXPECT_FALSE(doc.contains("stream"));
}

TEST_F(BridgeStreamTest, ADuplicateOfAStreamedRequestGets409) {
  const std::string body = blob(20'000);
  http_.set_result([&](const Request&) { return response(200, body); });
  start();
  auto m = inbound("GET/files/blob", R"({"stream":{"id":"dup-1"}})");
  m.properties.response_topic = kReplyTopic;
  m.properties.correlation_data = "corr-1";
  bridge_->on_message(InboundMessage(m));
  std::size_t after_head = 0;
  ASSERT_TRUE(wait_head(&after_head));
  const auto got = take_stream(after_head, "dup-1");  // MQTT 5: binary chunks
  ASSERT_TRUE(got);
  EXPECT_TRUE(*got == body);
  const auto before = publisher_.count();
  bridge_->on_message(InboundMessage(m));
  ASSERT_TRUE(publisher_.wait_count(before + 1));
  const auto reply = publisher_.sent()[before];
  EXPECT_EQ(reply.message.topic, kReplyTopic);
  EXPECT_EQ(reply.doc["status"], 409);
  EXPECT_NE(reply.doc["error"].get<std::string>().find("streamed"), std::string::npos);
  EXPECT_EQ(http_.calls().size(), 1u);
}

TEST_F(BridgeStreamTest, AnApiFailureBeforeAnyByteIsAnOrdinaryError) {
  http_.set_result([](const Request&) { return failure(Outcome::kUnreachable, "refused"); });
  start();
  bridge_->on_message(inbound("GET/files/blob", R"({"stream":true,"req_id":2})"));
  ASSERT_TRUE(publisher_.wait_count(1));
  const auto doc = publisher_.sent()[0].doc;
  EXPECT_EQ(doc["status"], 502);
  EXPECT_FALSE(doc.contains("stream"));
}

}  // namespace
}  // namespace hom::test
