// Protocol v1.1 streams (SPEC §7, stream.hpp): the chunk and ack codec in both forms, the
// Reassembler's ordering and checks, the sender's window, and the envelope's `stream` member.
#include "hom/stream.hpp"

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "hom/envelope.hpp"
#include "hom/response.hpp"

namespace hom {
namespace {

using nlohmann::json;
using Kind = StreamMessage::Kind;
using Status = Reassembler::Status;

std::string sha256_of(std::string_view bytes) {
  Sha256 sha;
  sha.update(bytes);
  return sha.hex();
}

Chunk chunk(std::uint64_t seq, std::string data, std::string id = "s1") {
  Chunk c;
  c.id = std::move(id);
  c.seq = seq;
  c.data = std::move(data);
  return c;
}

Chunk last(std::uint64_t seq, std::string data, std::uint64_t total, std::string sha256,
           std::string id = "s1") {
  Chunk c = chunk(seq, std::move(data), std::move(id));
  c.last = true;
  c.total = total;
  c.sha256 = std::move(sha256);
  return c;
}

StreamMessage round_trip(const Chunk& c, bool binary) {
  OutboundMessage out;
  encode_chunk(c, binary, out);
  EXPECT_EQ(out.binary, binary);
  return decode_stream_message(out.payload, out.user);
}

void expect_same(const Chunk& want, const Chunk& got) {
  EXPECT_EQ(got.id, want.id);
  EXPECT_EQ(got.seq, want.seq);
  EXPECT_EQ(got.data, want.data);
  EXPECT_EQ(got.last, want.last);
  EXPECT_EQ(got.total, want.total);
  EXPECT_EQ(got.sha256, want.sha256);
  EXPECT_EQ(got.error, want.error);
}

// ---- Codec --------------------------------------------------------------------------------

TEST(StreamCodec, ChunksRoundTripInBothForms) {
  std::string binary_bytes;
  for (int i = 0; i < 256; ++i) binary_bytes += static_cast<char>(i);
  Chunk with_error = chunk(7, "partial");
  with_error.last = true;
  with_error.error = "the API closed the connection";
  const std::vector<Chunk> chunks = {
      chunk(0, "hello"),
      chunk(1, binary_bytes, "A-z_09"),
      chunk((1ULL << 53) - 1, "", std::string(64, 'x')),
      last(3, "tail", 42, sha256_of("x")),
      last(0, "", 0, sha256_of("")),
      with_error,
  };
  for (const bool binary : {true, false}) {
    for (const auto& c : chunks) {
      SCOPED_TRACE(std::string(binary ? "binary " : "json ") + c.id + " " + std::to_string(c.seq));
      const auto m = round_trip(c, binary);
      ASSERT_EQ(m.kind, Kind::kChunk) << m.error;
      expect_same(c, m.chunk);
    }
  }
}

TEST(StreamCodec, BinaryFormPutsMetadataInUserProperties) {
  OutboundMessage out;
  encode_chunk(last(5, "raw\xff", 9, sha256_of("abc")), true, out);
  EXPECT_EQ(out.payload, "raw\xff");
  ASSERT_EQ(out.user.size(), 2u);
  EXPECT_EQ(out.user[0], (std::pair<std::string, std::string>("hom-chunk", "s1 5")));
  EXPECT_EQ(out.user[1].first, "hom-end");
  EXPECT_EQ(out.user[1].second, "9 " + sha256_of("abc"));
}

TEST(StreamCodec, JsonFormIsTheDocumentedShape) {
  OutboundMessage out;
  encode_chunk(last(2, "hi", 10, sha256_of("")), false, out);
  EXPECT_TRUE(out.user.empty());
  const auto doc = json::parse(out.payload);
  EXPECT_EQ(doc["chunk"]["id"], "s1");
  EXPECT_EQ(doc["chunk"]["seq"], 2);
  EXPECT_EQ(doc["chunk"]["data_base64"], "aGk=");
  EXPECT_EQ(doc["chunk"]["end"]["length"], 10);
  EXPECT_EQ(doc["chunk"]["end"]["sha256"], sha256_of(""));
}

TEST(StreamCodec, AcksRoundTrip) {
  for (const StreamAck& a :
       {StreamAck{"s1", 0, 8, 4096}, StreamAck{"x", 12345, 0, 0}, StreamAck{"y", 3, 64, 256}}) {
    const auto m = decode_stream_message(encode_ack(a), {});
    ASSERT_EQ(m.kind, Kind::kAck) << m.error;
    EXPECT_EQ(m.ack.id, a.id);
    EXPECT_EQ(m.ack.next, a.next);
    EXPECT_EQ(m.ack.window, a.window);
    EXPECT_EQ(m.ack.chunk_bytes, a.chunk_bytes);
  }
  EXPECT_EQ(json::parse(encode_ack(StreamAck{"s1", 4, 0, 0})),
            json::parse(R"({"stream_ack":{"id":"s1","next":4}})"));
}

TEST(StreamCodec, RequestsAndRepliesAreNotStreamMessages) {
  for (const char* payload :
       {"", "{}", R"({"body":"chunk"})", R"({"status":200,"content":"stream_ack"})", "[1]",
        "plain text", R"(  {"chunked": 1})", R"({"x":{"chunk":{"id":"a","seq":0}}})"}) {
    EXPECT_EQ(decode_stream_message(payload, {}).kind, Kind::kNone) << payload;
  }
  EXPECT_EQ(decode_stream_message("data", {{"other", "1 2"}}).kind, Kind::kNone);
}

TEST(StreamCodec, MalformedBinaryChunksAreRejectedWithAReason) {
  const std::string digest = sha256_of("");
  struct Case {
    UserProperties user;
    std::string reason;  // a part of the error
  };
  const std::vector<Case> cases = {
      {{{"hom-chunk", "bad.id 0"}}, "hom-chunk"},
      {{{"hom-chunk", " 0"}}, "hom-chunk"},
      {{{"hom-chunk", std::string(65, 'a') + " 0"}}, "hom-chunk"},
      {{{"hom-chunk", "s1"}}, "hom-chunk"},
      {{{"hom-chunk", "s1 -1"}}, "hom-chunk"},
      {{{"hom-chunk", "s1 1x"}}, "hom-chunk"},
      {{{"hom-chunk", "s1 9007199254740992"}}, "hom-chunk"},  // 2^53: seq overflow
      {{{"hom-chunk", "s1 18446744073709551616"}}, "hom-chunk"},
      {{{"hom-chunk", "s1 0"}, {"hom-chunk", "s1 1"}}, "repeated"},
      {{{"hom-chunk", "s1 0"}, {"hom-end", "0 " + digest}, {"hom-end", "0 " + digest}}, "repeated"},
      {{{"hom-chunk", "s1 0"}, {"hom-error", "a"}, {"hom-error", "b"}}, "repeated"},
      {{{"hom-end", "0 " + digest}}, "without hom-chunk"},
      {{{"hom-error", "x"}}, "without hom-chunk"},
      {{{"hom-chunk", "s1 0"}, {"hom-end", "0 " + digest}, {"hom-error", "x"}}, "together"},
      {{{"hom-chunk", "s1 0"}, {"hom-end", digest}}, "hom-end"},
      {{{"hom-chunk", "s1 0"}, {"hom-end", "0 " + std::string(64, 'g')}}, "hom-end"},
      {{{"hom-chunk", "s1 0"}, {"hom-end", "0 " + std::string(64, 'A')}}, "hom-end"},
      {{{"hom-chunk", "s1 0"}, {"hom-end", "0 " + digest + "0"}}, "hom-end"},
      {{{"hom-chunk", "s1 0"}, {"hom-end", "9007199254740992 " + digest}}, "hom-end"},
  };
  for (const auto& c : cases) {
    const auto m = decode_stream_message("payload", c.user);
    SCOPED_TRACE(c.user.front().second);
    EXPECT_EQ(m.kind, Kind::kInvalid);
    EXPECT_NE(m.error.find(c.reason), std::string::npos) << m.error;
  }
}

TEST(StreamCodec, MalformedJsonChunksAndAcksAreRejectedWithAReason) {
  const std::string digest = sha256_of("");
  struct Case {
    std::string payload;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {R"({"chunk":1})", "must be an object"},
      {R"({"chunk":{"seq":0}})", "'id'"},
      {R"({"chunk":{"id":"a b","seq":0}})", "'id'"},
      {R"({"chunk":{"id":"","seq":0}})", "'id'"},
      {R"({"chunk":{"id":"s1"}})", "'seq'"},
      {R"({"chunk":{"id":"s1","seq":-1}})", "'seq'"},
      {R"({"chunk":{"id":"s1","seq":1.5}})", "'seq'"},
      {R"({"chunk":{"id":"s1","seq":"1"}})", "'seq'"},
      {R"({"chunk":{"id":"s1","seq":9007199254740992}})", "'seq'"},
      {R"({"chunk":{"id":"s1","seq":0,"data_base64":5}})", "'data_base64'"},
      {R"({"chunk":{"id":"s1","seq":0,"data_base64":"a"}})", "base64"},
      {R"({"chunk":{"id":"s1","seq":0,"end":{"length":0,"sha256":")" + digest +
           R"("},"error":"x"}})",
       "both"},
      {R"({"chunk":{"id":"s1","seq":0,"end":[]}})", "'end'"},
      {R"({"chunk":{"id":"s1","seq":0,"end":{"sha256":")" + digest + R"("}}})", "'end'"},
      {R"({"chunk":{"id":"s1","seq":0,"end":{"length":0,"sha256":")" + std::string(64, 'z') +
           R"("}}})",
       "'end'"},
      {R"({"chunk":{"id":"s1","seq":0,"end":{"length":0,"sha256":"abc"}}})", "'end'"},
      {R"({"chunk":{"id":"s1","seq":0,"error":false}})", "'error'"},
      {R"({"stream_ack":[]})", "must be an object"},
      {R"({"stream_ack":{"next":0}})", "'id'"},
      {R"({"stream_ack":{"id":"s1"}})", "'next'"},
      {R"({"stream_ack":{"id":"s1","next":-3}})", "'next'"},
      {R"({"stream_ack":{"id":"s1","next":0,"window":0}})", "'window'"},
      {R"({"stream_ack":{"id":"s1","next":0,"window":65}})", "'window'"},
      {R"({"stream_ack":{"id":"s1","next":0,"chunk_bytes":255}})", "'chunk_bytes'"},
      {R"({"stream_ack":{"id":"s1","next":0,"chunk_bytes":268435457}})", "'chunk_bytes'"},
  };
  for (const auto& c : cases) {
    const auto m = decode_stream_message(c.payload, {});
    EXPECT_EQ(m.kind, Kind::kInvalid) << c.payload;
    EXPECT_NE(m.error.find(c.reason), std::string::npos) << c.payload << " -> " << m.error;
  }
}

TEST(StreamCodec, AnEmptyErrorStillEndsTheStreamWithAReason) {
  const auto binary = decode_stream_message("", {{"hom-chunk", "s1 2"}, {"hom-error", ""}});
  ASSERT_EQ(binary.kind, Kind::kChunk);
  EXPECT_TRUE(binary.chunk.last);
  EXPECT_FALSE(binary.chunk.error.empty());
  const auto text = decode_stream_message(R"({"chunk":{"id":"s1","seq":2,"error":""}})", {});
  ASSERT_EQ(text.kind, Kind::kChunk);
  EXPECT_TRUE(text.chunk.last);
  EXPECT_FALSE(text.chunk.error.empty());
}

TEST(StreamCodec, ChunkCapacityLeavesRoomForTheMetadata) {
  EXPECT_EQ(chunk_capacity(100, 10, true), 0u);
  EXPECT_EQ(chunk_capacity(1000, 900, false), 0u);
  const std::size_t binary = chunk_capacity(131072, 100, true);
  const std::size_t text = chunk_capacity(131072, 100, false);
  EXPECT_GT(binary, 130000u);
  EXPECT_LT(binary, 131072u - 100);
  EXPECT_LT(text, binary * 3 / 4 + 1);
  // The JSON form of a full last chunk fits what was asked for.
  Chunk c = last((1ULL << 53) - 1, std::string(text, 'x'), (1ULL << 53) - 1, sha256_of(""),
                 std::string(kMaxStreamIdBytes, 'i'));
  OutboundMessage out;
  encode_chunk(c, false, out);
  EXPECT_LE(out.payload.size() + 100, 131072u);
}

TEST(StreamCodec, Sha256MatchesKnownDigests) {
  EXPECT_EQ(sha256_of(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  Sha256 pieces;
  pieces.update("a");
  pieces.update("bc");
  EXPECT_EQ(pieces.hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(StreamCodec, StreamIds) {
  EXPECT_TRUE(is_stream_id("a"));
  EXPECT_TRUE(is_stream_id(std::string(64, 'Z')));
  EXPECT_FALSE(is_stream_id(""));
  EXPECT_FALSE(is_stream_id(std::string(65, 'a')));
  EXPECT_FALSE(is_stream_id("a/b"));
  EXPECT_FALSE(is_stream_id("a b"));
  const auto id = random_id();
  EXPECT_EQ(id.size(), 16u);
  EXPECT_TRUE(is_stream_id(id));
  EXPECT_NE(random_id(), random_id());
}

// ---- Reassembler --------------------------------------------------------------------------

std::string joined(const std::vector<std::string>& pieces) {
  std::string out;
  for (const auto& p : pieces) out += p;
  return out;
}

TEST(Reassembler, InOrder) {
  Reassembler r("s1", 4);
  std::vector<std::string> ready;
  EXPECT_EQ(r.add(chunk(0, "ab"), ready), Status::kAccepted);
  EXPECT_EQ(r.add(chunk(1, "cd"), ready), Status::kAccepted);
  EXPECT_EQ(joined(ready), "abcd");
  EXPECT_EQ(r.add(last(2, "e", 5, sha256_of("abcde")), ready), Status::kAccepted);
  EXPECT_EQ(joined(ready), "abcde");
  EXPECT_TRUE(r.complete());
  EXPECT_FALSE(r.failed());
  EXPECT_EQ(r.next(), 3u);
  EXPECT_EQ(r.bytes(), 5u);
}

TEST(Reassembler, OutOfOrderWithinTheWindowIsReleasedInOrder) {
  Reassembler r("s1", 4);
  std::vector<std::string> ready;
  EXPECT_EQ(r.add(last(3, "d", 4, sha256_of("abcd")), ready), Status::kAccepted);
  EXPECT_EQ(r.add(chunk(2, "c"), ready), Status::kAccepted);
  EXPECT_EQ(r.add(chunk(1, "b"), ready), Status::kAccepted);
  EXPECT_TRUE(ready.empty());
  EXPECT_EQ(r.held(), 3u);
  EXPECT_EQ(r.add(chunk(0, "a"), ready), Status::kAccepted);
  EXPECT_EQ(joined(ready), "abcd");
  EXPECT_EQ(r.held(), 0u);
  EXPECT_TRUE(r.complete());
}

TEST(Reassembler, DuplicatesAreDroppedAndCounted) {
  Reassembler r("s1", 4);
  std::vector<std::string> ready;
  EXPECT_EQ(r.add(chunk(0, "a"), ready), Status::kAccepted);
  EXPECT_EQ(r.add(chunk(0, "X"), ready), Status::kDuplicate);  // already released
  EXPECT_EQ(r.add(chunk(2, "c"), ready), Status::kAccepted);
  EXPECT_EQ(r.add(chunk(2, "Y"), ready), Status::kDuplicate);  // held
  EXPECT_EQ(r.add(chunk(1, "b"), ready), Status::kAccepted);
  EXPECT_EQ(r.add(last(3, "", 3, sha256_of("abc")), ready), Status::kAccepted);
  EXPECT_EQ(r.add(last(3, "", 3, sha256_of("abc")), ready), Status::kDuplicate);  // after end
  EXPECT_EQ(joined(ready), "abc");
  EXPECT_EQ(r.duplicates(), 3u);
  EXPECT_TRUE(r.complete());
}

TEST(Reassembler, BeyondTheWindowFails) {
  Reassembler r("s1", 2);
  std::vector<std::string> ready;
  EXPECT_EQ(r.add(chunk(1, "b"), ready), Status::kAccepted);
  EXPECT_EQ(r.add(chunk(2, "c"), ready), Status::kFailed);
  EXPECT_TRUE(r.failed());
  EXPECT_NE(r.error().find("beyond the window"), std::string::npos) << r.error();
  EXPECT_EQ(r.held(), 0u);
  // Failed for good: even the chunk that was missing is refused.
  EXPECT_EQ(r.add(chunk(0, "a"), ready), Status::kFailed);
  EXPECT_TRUE(ready.empty());
}

TEST(Reassembler, ABadDigestFailsAndTheLastChunkIsNotReleased) {
  Reassembler r("s1", 4);
  std::vector<std::string> ready;
  EXPECT_EQ(r.add(chunk(0, "ab"), ready), Status::kAccepted);
  EXPECT_EQ(r.add(last(1, "cd", 4, sha256_of("abcX")), ready), Status::kFailed);
  EXPECT_EQ(joined(ready), "ab");
  EXPECT_TRUE(r.failed());
  EXPECT_FALSE(r.complete());
  EXPECT_NE(r.error().find("SHA-256"), std::string::npos) << r.error();
}

TEST(Reassembler, AWrongTotalFailsAndTheLastChunkIsNotReleased) {
  for (const std::uint64_t total : {3u, 5u}) {
    Reassembler r("s1", 4);
    std::vector<std::string> ready;
    EXPECT_EQ(r.add(chunk(0, "ab"), ready), Status::kAccepted);
    EXPECT_EQ(r.add(last(1, "cd", total, sha256_of("abcd")), ready), Status::kFailed);
    EXPECT_EQ(joined(ready), "ab");
    EXPECT_FALSE(r.complete());
    EXPECT_NE(r.error().find("length"), std::string::npos) << r.error();
  }
}

TEST(Reassembler, TheSendersErrorFails) {
  Reassembler r("s1", 4);
  std::vector<std::string> ready;
  EXPECT_EQ(r.add(chunk(0, "ab"), ready), Status::kAccepted);
  Chunk error = chunk(1, "cd");
  error.last = true;
  error.error = "the API went away";
  EXPECT_EQ(r.add(error, ready), Status::kFailed);
  EXPECT_EQ(joined(ready), "ab");
  EXPECT_NE(r.error().find("the API went away"), std::string::npos) << r.error();
  // Also when it arrives early.
  Reassembler early("s1", 4);
  error.seq = 2;
  EXPECT_EQ(early.add(error, ready), Status::kFailed);
}

TEST(Reassembler, ChunksAfterTheLastFail) {
  {
    Reassembler r("s1", 4);
    std::vector<std::string> ready;
    EXPECT_EQ(r.add(last(1, "b", 2, sha256_of("ab")), ready), Status::kAccepted);
    EXPECT_EQ(r.add(chunk(2, "c"), ready), Status::kFailed);
    EXPECT_TRUE(ready.empty());
  }
  {
    Reassembler r("s1", 4);
    std::vector<std::string> ready;
    EXPECT_EQ(r.add(chunk(2, "c"), ready), Status::kAccepted);
    EXPECT_EQ(r.add(last(1, "b", 2, sha256_of("ab")), ready), Status::kFailed);
  }
  {
    // The last chunk arrives in order while a later one is held: never complete.
    Reassembler r("s1", 4);
    std::vector<std::string> ready;
    EXPECT_EQ(r.add(chunk(0, "a"), ready), Status::kAccepted);
    EXPECT_EQ(r.add(chunk(2, "c"), ready), Status::kAccepted);
    EXPECT_EQ(r.add(last(1, "b", 2, sha256_of("ab")), ready), Status::kFailed);
    EXPECT_TRUE(r.failed());
    EXPECT_FALSE(r.complete());
    EXPECT_EQ(joined(ready), "a");
  }
}

TEST(Reassembler, AChunkOfAnotherStreamFails) {
  Reassembler r("s1", 4);
  std::vector<std::string> ready;
  EXPECT_EQ(r.add(chunk(0, "a", "s2"), ready), Status::kFailed);
}

TEST(Reassembler, MaxTotalBoundsTheBody) {
  Reassembler r("s1", 4, 5);
  std::vector<std::string> ready;
  EXPECT_EQ(r.add(chunk(0, "abc"), ready), Status::kAccepted);
  EXPECT_EQ(r.add(chunk(1, "def"), ready), Status::kFailed);
  EXPECT_EQ(joined(ready), "abc");
  EXPECT_NE(r.error().find("limit of 5 bytes"), std::string::npos) << r.error();

  Reassembler exact("s1", 4, 5);
  ready.clear();
  EXPECT_EQ(exact.add(chunk(0, "abc"), ready), Status::kAccepted);
  EXPECT_EQ(exact.add(last(1, "de", 5, sha256_of("abcde")), ready), Status::kAccepted);
  EXPECT_TRUE(exact.complete());
}

TEST(Reassembler, NothingBeyondAnEarlyDeclaredTotalIsReleased) {
  // The last chunk arrives first and says 3 bytes; the chunks before it hold more.
  Reassembler r("s1", 4);
  std::vector<std::string> ready;
  const auto first = r.add(last(2, "", 3, sha256_of("abc")), ready);
  if (first == Status::kAccepted) {
    r.add(chunk(1, "def"), ready);
    r.add(chunk(0, "abc"), ready);
  }
  EXPECT_LE(joined(ready).size(), 3u);
  EXPECT_TRUE(r.failed());
  EXPECT_FALSE(r.complete());

  // Or after bytes were released.
  Reassembler late("s1", 4);
  ready.clear();
  EXPECT_EQ(late.add(chunk(0, "abcdef"), ready), Status::kAccepted);
  EXPECT_EQ(late.add(last(2, "", 3, sha256_of("abc")), ready), Status::kFailed);
  EXPECT_EQ(late.add(chunk(1, "x"), ready), Status::kFailed);
  EXPECT_EQ(joined(ready), "abcdef");
}

TEST(Reassembler, AnEmptyBodyCompletes) {
  Reassembler r("s1", 1);
  std::vector<std::string> ready;
  EXPECT_EQ(r.add(last(0, "", 0, sha256_of("")), ready), Status::kAccepted);
  EXPECT_TRUE(r.complete());
  EXPECT_TRUE(ready.empty());
}

// ---- SendWindow ---------------------------------------------------------------------------

TEST(SendWindow, OpensWithAcknowledgements) {
  SendWindow w(2);
  EXPECT_TRUE(w.open());
  w.sent();
  w.sent();
  EXPECT_FALSE(w.open());
  EXPECT_FALSE(w.ack(0));
  EXPECT_TRUE(w.ack(1));
  EXPECT_TRUE(w.open());
  EXPECT_FALSE(w.ack(1));  // not moved
  EXPECT_FALSE(w.ack(0));  // backwards
  EXPECT_TRUE(w.ack(99));  // capped at what was sent
  EXPECT_EQ(w.acked(), 2u);
  EXPECT_EQ(w.sent_count(), 2u);
  w.resize(1);
  w.sent();
  EXPECT_FALSE(w.open());
}

// ---- The envelope's `stream` --------------------------------------------------------------

DecodedRequest decoded(const std::string& payload) { return decode_request(payload); }

TEST(StreamEnvelope, TrueFalseAndObject) {
  const auto on = decoded(R"({"stream":true})");
  ASSERT_TRUE(on.error.empty()) << on.error;
  ASSERT_TRUE(on.envelope.stream);
  EXPECT_TRUE(on.envelope.stream->id.empty());
  EXPECT_EQ(on.envelope.stream->window, kDefaultStreamWindow);
  EXPECT_FALSE(on.envelope.stream->upload);

  const auto off = decoded(R"({"stream":false})");
  ASSERT_TRUE(off.error.empty()) << off.error;
  EXPECT_FALSE(off.envelope.stream);

  const auto full =
      decoded(R"({"stream":{"id":"up-1","window":3,"chunk_bytes":4096,"upload":1000}})");
  ASSERT_TRUE(full.error.empty()) << full.error;
  ASSERT_TRUE(full.envelope.stream);
  EXPECT_EQ(full.envelope.stream->id, "up-1");
  EXPECT_EQ(full.envelope.stream->window, 3u);
  EXPECT_EQ(full.envelope.stream->max_chunk_bytes, 4096u);
  EXPECT_TRUE(full.envelope.stream->upload);
  EXPECT_EQ(full.envelope.stream->upload_length, 1000u);

  const auto upload = decoded(R"({"stream":{"id":"u","upload":true}})");
  ASSERT_TRUE(upload.error.empty()) << upload.error;
  EXPECT_TRUE(upload.envelope.stream->upload);
  EXPECT_FALSE(upload.envelope.stream->upload_length);
}

TEST(StreamEnvelope, InvalidMembersAreRefusedWithAReason) {
  struct Case {
    std::string payload, reason;
  };
  const std::vector<Case> cases = {
      {R"({"stream":1})", "'stream'"},
      {R"({"stream":"yes"})", "'stream'"},
      {R"({"stream":{"id":"a/b"}})", "'stream.id'"},
      {R"({"stream":{"id":5}})", "'stream.id'"},
      {R"({"stream":{"window":0}})", "'stream.window'"},
      {R"({"stream":{"window":65}})", "'stream.window'"},
      {R"({"stream":{"window":-1}})", "'stream.window'"},
      {R"({"stream":{"window":2.5}})", "'stream.window'"},
      {R"({"stream":{"chunk_bytes":255}})", "'stream.chunk_bytes'"},
      {R"({"stream":{"chunk_bytes":268435457}})", "'stream.chunk_bytes'"},
      {R"({"stream":{"chunk_bytes":"1k"}})", "'stream.chunk_bytes'"},
      {R"({"stream":{"id":"u","upload":"yes"}})", "'stream.upload'"},
      {R"({"stream":{"id":"u","upload":-5}})", "'stream.upload'"},
      {R"({"stream":{"upload":true}})", "needs 'stream.id'"},
      {R"({"body":"x","stream":{"id":"u","upload":true}})", "both set"},
      {R"({"body_base64":"eA==","stream":{"id":"u","upload":3}})", "both set"},
  };
  for (const auto& c : cases) {
    const auto d = decoded(c.payload);
    EXPECT_NE(d.error.find(c.reason), std::string::npos) << c.payload << " -> " << d.error;
  }
}

TEST(StreamEnvelope, RequestRoundTrip) {
  for (const char* payload :
       {R"({"stream":true})", R"({"stream":{"id":"u","window":2,"chunk_bytes":300,"upload":7}})",
        R"({"stream":{"id":"u","upload":true}})"}) {
    const auto first = decoded(payload);
    ASSERT_TRUE(first.error.empty()) << first.error;
    const auto again = decoded(encode_request(first.envelope));
    ASSERT_TRUE(again.error.empty()) << again.error;
    ASSERT_TRUE(again.envelope.stream);
    const auto& a = *first.envelope.stream;
    const auto& b = *again.envelope.stream;
    EXPECT_EQ(a.id, b.id);
    EXPECT_EQ(a.window, b.window);
    EXPECT_EQ(a.max_chunk_bytes, b.max_chunk_bytes);
    EXPECT_EQ(a.upload, b.upload);
    EXPECT_EQ(a.upload_length, b.upload_length);
  }
}

TEST(StreamEnvelope, ReplyHeadRoundTrip) {
  Response head;
  head.status = 206;
  head.req_id = RawJson::from_text("\"r-1\"");
  head.include_headers = true;
  head.headers = {{"content-type", "application/octet-stream"}};
  head.stream = StreamHead{"abc", 131000, 8, {}};
  const auto text = to_json(head);
  const auto doc = json::parse(text);
  EXPECT_TRUE(doc["content"].is_null());
  EXPECT_EQ(doc["stream"], json::parse(R"({"id":"abc","chunk_bytes":131000,"window":8})"));

  const auto r = decode_reply(text);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->req_id.text(), "\"r-1\"");
  ASSERT_TRUE(r->stream);
  EXPECT_EQ(r->stream->id, "abc");
  EXPECT_EQ(r->stream->chunk_bytes, 131000u);
  EXPECT_EQ(r->stream->window, 8u);
  ASSERT_EQ(r->headers.size(), 1u);
  EXPECT_EQ(r->headers[0].second, "application/octet-stream");

  // A head with a bad id is no stream; an ordinary reply has none.
  EXPECT_FALSE(decode_reply(R"({"status":200,"stream":{"id":"a b"}})")->stream);
  EXPECT_FALSE(decode_reply(R"({"status":200,"content":null})")->stream);
  EXPECT_EQ(decode_reply(R"({"status":200,"stream":{"id":"a","window":1000}})")->stream->window,
            kMaxStreamWindow);
}

}  // namespace
}  // namespace hom
