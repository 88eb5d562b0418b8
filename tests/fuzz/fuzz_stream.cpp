// Protocol v1.1 streams (SPEC §7): decode_stream_message, encode_chunk / encode_ack,
// chunk_capacity and the Reassembler.
// Input: byte 0 the window (1 to 16), byte 1 max_total (0: none, else 8 * b), bytes 2-3 a
// packet size for chunk_capacity; then messages separated by 0xFF. A message is
// "<name>:<value>\n..." user properties, a NUL, then the payload; without a NUL it is all
// payload. The decoded chunks go, in order, to one Reassembler.
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "hom/message.hpp"
#include "hom/stream.hpp"

namespace {

using hom::Chunk;
using hom::Reassembler;
using hom::StreamAck;
using hom::StreamMessage;
using hom::UserProperties;
using hom_fuzz::show;
using Kind = StreamMessage::Kind;
using Status = Reassembler::Status;

UserProperties properties_of(std::string_view text) {
  UserProperties out;
  while (!text.empty()) {
    const auto nl = text.find('\n');
    const auto line = text.substr(0, nl);
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) {
      out.emplace_back(std::string(line), "");
    } else {
      out.emplace_back(std::string(line.substr(0, colon)), std::string(line.substr(colon + 1)));
    }
    if (nl == std::string_view::npos) break;
    text.remove_prefix(nl + 1);
  }
  return out;
}

std::string describe(const Chunk& c) {
  return "chunk id=" + show(c.id) + " seq=" + std::to_string(c.seq) + " data=" + show(c.data, 80) +
         " last=" + std::to_string(c.last) + " total=" + std::to_string(c.total) +
         " sha256=" + show(c.sha256) + " error=" + show(c.error);
}

bool same(const Chunk& a, const Chunk& b) {
  return a.id == b.id && a.seq == b.seq && a.data == b.data && a.last == b.last &&
         a.total == b.total && a.sha256 == b.sha256 && a.error == b.error;
}

// What decodes encodes (in both forms) and decodes to the same.
void check_round_trip(const StreamMessage& m) {
  if (m.kind == Kind::kChunk) {
    for (const bool binary : {true, false}) {
      hom::OutboundMessage out;
      hom::encode_chunk(m.chunk, binary, out);
      const auto again = hom::decode_stream_message(out.payload, out.user);
      HOM_FUZZ_CHECK(again.kind == Kind::kChunk && same(again.chunk, m.chunk),
                     describe(m.chunk) + (binary ? " (binary)" : " (json)") + " came back as " +
                         (again.kind == Kind::kChunk ? describe(again.chunk) : show(again.error)));
    }
  }
  if (m.kind == Kind::kAck) {
    const auto text = hom::encode_ack(m.ack);
    const auto again = hom::decode_stream_message(text, {});
    HOM_FUZZ_CHECK(again.kind == Kind::kAck && again.ack.id == m.ack.id &&
                       again.ack.next == m.ack.next && again.ack.window == m.ack.window &&
                       again.ack.chunk_bytes == m.ack.chunk_bytes,
                   show(text) + " came back as " + show(again.error));
  }
  if (m.kind == Kind::kInvalid)
    HOM_FUZZ_CHECK(!m.error.empty(), "an invalid message without a reason");
}

// A chunk of chunk_capacity() bytes, with the largest metadata, fits the packet.
void check_capacity(std::size_t max_packet, std::size_t empty) {
  for (const bool binary : {true, false}) {
    const std::size_t room = hom::chunk_capacity(max_packet, empty, binary);
    if (room == 0) continue;
    HOM_FUZZ_CHECK(room >= hom::kMinChunkBytes, "capacity " + std::to_string(room));
    Chunk c;
    c.id.assign(hom::kMaxStreamIdBytes, 'i');
    c.seq = (1ULL << 53) - 1;
    c.data.assign(room, 'x');
    c.last = true;
    c.total = (1ULL << 53) - 1;
    c.sha256.assign(64, 'f');
    hom::OutboundMessage out;
    hom::encode_chunk(c, binary, out);
    std::size_t size = out.payload.size() + empty;
    for (const auto& [name, value] : out.user) size += 1 + 2 + name.size() + 2 + value.size();
    HOM_FUZZ_CHECK(size <= max_packet, std::string(binary ? "binary" : "json") + " chunk of " +
                                           std::to_string(room) + " bytes takes " +
                                           std::to_string(size) + " of " +
                                           std::to_string(max_packet));
  }
}

// The Reassembler against a model: the first chunk seen for each seq, released in order.
struct Model {
  explicit Model(std::size_t w, std::uint64_t max) : window(w), max_total(max) {}

  void add(Chunk c) {
    if (!r) r.emplace(c.id, window, max_total);
    const bool was_complete = r->complete();
    const bool was_failed = r->failed();
    first_seen.emplace(c.seq, c.data);
    const Chunk copy = c;
    std::vector<std::string> ready;
    const Status s = r->add(std::move(c), ready);
    const std::string what = describe(copy) + " status " + std::to_string(static_cast<int>(s));

    HOM_FUZZ_CHECK(!(r->complete() && r->failed()), what + ": complete and failed");
    if (was_failed)
      HOM_FUZZ_CHECK(s == Status::kFailed && r->failed(), what + ": failed, then not");
    if (was_complete) HOM_FUZZ_CHECK(r->complete() && ready.empty(), what + ": complete, then not");
    if (s == Status::kFailed) HOM_FUZZ_CHECK(r->failed(), what);
    if (s == Status::kDuplicate)
      HOM_FUZZ_CHECK(ready.empty(), what + ": a duplicate released data");
    HOM_FUZZ_CHECK(r->held() <= window, what + ": " + std::to_string(r->held()) + " held");
    if (s == Status::kAccepted && copy.last) declared = copy.total, digest = copy.sha256;

    // Released data is exactly the next chunks' first-seen data, in order.
    for (const auto& piece : ready) {
      skip_empty();
      const auto it = first_seen.find(expect);
      HOM_FUZZ_CHECK(
          it != first_seen.end() && it->second == piece,
          what + ": released " + show(piece, 80) + " as chunk " + std::to_string(expect));
      released += piece;
      ++expect;
    }
    if (!r->failed()) {
      skip_empty();
      HOM_FUZZ_CHECK(expect == r->next(), what + ": released up to " + std::to_string(expect) +
                                              ", next " + std::to_string(r->next()));
    }
    if (max_total) HOM_FUZZ_CHECK(released.size() <= max_total, what + ": beyond max_total");
    if (declared)
      HOM_FUZZ_CHECK(released.size() <= *declared, what + ": " + std::to_string(released.size()) +
                                                       " bytes released, " +
                                                       std::to_string(*declared) + " declared");
    if (r->complete()) {
      HOM_FUZZ_CHECK(declared && released.size() == *declared && r->bytes() == *declared,
                     what + ": complete with " + std::to_string(released.size()) + " bytes");
      hom::Sha256 sha;
      sha.update(released);
      HOM_FUZZ_CHECK(sha.hex() == digest, what + ": complete with another digest");
    }
  }

  void skip_empty() {
    for (auto it = first_seen.find(expect);
         it != first_seen.end() && it->second.empty() && expect < r->next();
         it = first_seen.find(expect))
      ++expect;
  }

  const std::size_t window;
  const std::uint64_t max_total;
  std::optional<Reassembler> r;
  std::map<std::uint64_t, std::string> first_seen;
  std::uint64_t expect = 0;  // the next chunk whose data should be released
  std::string released;
  std::optional<std::uint64_t> declared;
  std::string digest;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  const std::size_t window = data[0] % 16 + 1;
  const std::uint64_t max_total = 8ULL * data[1];
  check_capacity((static_cast<std::size_t>(data[2]) << 8 | data[3]) % 8192, data[2] % 64);
  const std::string_view input(reinterpret_cast<const char*>(data) + 4, size - 4);

  Model model(window, max_total);
  std::string_view rest = input;
  while (true) {
    const auto cut = rest.find('\xff');
    const auto record = rest.substr(0, cut);
    const auto nul = record.find('\0');
    const UserProperties user =
        nul == std::string_view::npos ? UserProperties{} : properties_of(record.substr(0, nul));
    const auto payload = nul == std::string_view::npos ? record : record.substr(nul + 1);
    const auto m = hom::decode_stream_message(payload, user);
    check_round_trip(m);
    if (m.kind == Kind::kChunk) model.add(m.chunk);
    if (cut == std::string_view::npos) break;
    rest.remove_prefix(cut + 1);
  }
  return 0;
}
