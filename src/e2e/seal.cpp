#include "hom/seal.hpp"

#include <utility>

#include "crypto.hpp"
#include "hom/age.hpp"
#include "hom/sshsig.hpp"

namespace hom {
namespace {

void put_netstring(std::string& out, std::string_view bytes) {
  out += std::to_string(bytes.size());
  out += ':';
  out.append(bytes);
  out += ',';
}

// Reads one netstring from the front of `in`: digits without a leading zero, ':', bytes, ','.
bool read_netstring(std::string_view& in, std::string_view& out) {
  std::size_t digits = 0;
  std::size_t length = 0;
  while (digits < in.size() && in[digits] >= '0' && in[digits] <= '9') {
    if (digits == 10) return false;  // over 9 999 999 999 bytes: not here
    length = length * 10 + static_cast<std::size_t>(in[digits] - '0');
    ++digits;
  }
  if (digits == 0 || (digits > 1 && in[0] == '0') || digits >= in.size() || in[digits] != ':')
    return false;
  in.remove_prefix(digits + 1);
  if (length >= in.size() || in[length] != ',') return false;
  out = in.substr(0, length);
  in.remove_prefix(length + 1);
  return true;
}

bool read_fields(std::string_view in, std::string_view* fields, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (!read_netstring(in, fields[i])) return false;
  return in.empty();
}

bool is_hex(std::string_view s) {
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

// N(signed) N(signature): the plaintext inside the age file.
std::string signed_message(std::string_view data, std::string_view signature) {
  std::string out;
  put_netstring(out, data);
  put_netstring(out, signature);
  return out;
}

// Decrypts `sealed` and checks the SSHSIG inside for `name_space`; the signed bytes and the
// signer's key.
bool open_signed(std::string_view sealed, const SshPrivateKey& key, std::string_view name_space,
                 std::string& data, SshPublicKey& signer, std::string& error) {
  std::string why;
  const auto plain = age_decrypt(key, sealed, why);
  if (!plain) {
    error = "cannot decrypt: " + why;
    return false;
  }
  std::string_view fields[2];
  if (!read_fields(*plain, fields, 2)) {
    error = "not a signed message (expected N(data) N(signature))";
    return false;
  }
  const auto who = sshsig_verify(fields[1], name_space, fields[0], why);
  if (!who) {
    error = "signature refused: " + why;
    return false;
  }
  data = std::string(fields[0]);
  signer = *who;
  return true;
}

}  // namespace

std::string make_nonce() { return crypto::hex(crypto::random_bytes(16)); }

std::string sha256_hex(std::string_view bytes) { return crypto::hex(crypto::sha256(bytes)); }

std::string encode_signed_request(const SignedRequest& r) {
  std::string out;
  put_netstring(out, "hom-request@v1");
  put_netstring(out, r.device_id);
  put_netstring(out, r.topic_start);
  put_netstring(out, r.verb);
  put_netstring(out, r.path);
  put_netstring(out, r.response_topic);
  put_netstring(out, r.correlation_data);
  put_netstring(out, std::to_string(r.timestamp));
  put_netstring(out, r.nonce);
  put_netstring(out, r.payload);
  return out;
}

std::optional<SignedRequest> decode_signed_request(std::string_view bytes, std::string& error) {
  std::string_view f[10];
  if (!read_fields(bytes, f, 10) || f[0] != "hom-request@v1") {
    error = "not a hom-request@v1 signed request";
    return std::nullopt;
  }
  const std::string_view ts = f[7];
  if (ts.empty() || ts.size() > 18 || (ts.size() > 1 && ts[0] == '0') ||
      ts.find_first_not_of("0123456789") != std::string_view::npos) {
    error = "the timestamp is not unix seconds in decimal";
    return std::nullopt;
  }
  if (f[8].size() < 32 || f[8].size() > 64 || !is_hex(f[8])) {
    error = "the nonce is not 32 to 64 lowercase hex digits";
    return std::nullopt;
  }
  SignedRequest r;
  r.device_id = std::string(f[1]);
  r.topic_start = std::string(f[2]);
  r.verb = std::string(f[3]);
  r.path = std::string(f[4]);
  r.response_topic = std::string(f[5]);
  r.correlation_data = std::string(f[6]);
  r.timestamp = std::stoll(std::string(ts));
  r.nonce = std::string(f[8]);
  r.payload = std::string(f[9]);
  return r;
}

std::string encode_signed_reply(const SignedReply& r) {
  std::string out;
  put_netstring(out, "hom-reply@v1");
  put_netstring(out, r.device_id);
  put_netstring(out, r.request_sha256);
  put_netstring(out, r.payload);
  return out;
}

std::optional<SignedReply> decode_signed_reply(std::string_view bytes, std::string& error) {
  std::string_view f[4];
  if (!read_fields(bytes, f, 4) || f[0] != "hom-reply@v1") {
    error = "not a hom-reply@v1 signed reply";
    return std::nullopt;
  }
  if (f[2].size() != 64 || !is_hex(f[2])) {
    error = "the request hash is not 64 lowercase hex digits";
    return std::nullopt;
  }
  return SignedReply{std::string(f[1]), std::string(f[2]), std::string(f[3])};
}

std::optional<std::string> seal_request(const SignedRequest& request,
                                        const SshPrivateKey& requester,
                                        const std::vector<SshPublicKey>& device_keys,
                                        std::string& error) {
  const std::string data = encode_signed_request(request);
  return age_encrypt(device_keys,
                     signed_message(data, sshsig_sign(requester, "hom-request@v1", data)), error);
}

std::optional<OpenedRequest> open_request(std::string_view sealed, const SshPrivateKey& device,
                                          std::string& error) {
  std::string data;
  OpenedRequest out;
  if (!open_signed(sealed, device, "hom-request@v1", data, out.signer, error)) return std::nullopt;
  auto request = decode_signed_request(data, error);
  if (!request) return std::nullopt;
  out.request = std::move(*request);
  out.request_sha256 = sha256_hex(sealed);
  return out;
}

std::optional<std::string> seal_reply(const OpenedRequest& request, const SshPrivateKey& device,
                                      std::string_view reply_payload, std::string& error) {
  const std::string data = encode_signed_reply(
      {request.request.device_id, request.request_sha256, std::string(reply_payload)});
  return age_encrypt({request.signer},
                     signed_message(data, sshsig_sign(device, "hom-reply@v1", data)), error);
}

std::optional<std::string> open_reply(std::string_view sealed_reply, const SshPrivateKey& requester,
                                      const std::vector<SshPublicKey>& device_keys,
                                      std::string_view device_id, std::string_view sealed_request,
                                      std::string& error) {
  std::string data;
  SshPublicKey signer;
  if (!open_signed(sealed_reply, requester, "hom-reply@v1", data, signer, error))
    return std::nullopt;
  bool known = false;
  for (const auto& key : device_keys) known = known || key == signer;
  if (!known) {
    error = "the reply is signed by " + signer.fingerprint() + ", not by a key of device " +
            std::string(device_id) + " (known_devices)";
    return std::nullopt;
  }
  auto reply = decode_signed_reply(data, error);
  if (!reply) return std::nullopt;
  if (reply->device_id != device_id) {
    error = "the reply comes from device " + reply->device_id + ", not " + std::string(device_id);
    return std::nullopt;
  }
  if (reply->request_sha256 != sha256_hex(sealed_request)) {
    error = "the reply answers another request";
    return std::nullopt;
  }
  return std::move(reply->payload);
}

RequestGate::RequestGate(SshPrivateKey device_key, std::string device_id, std::string topic_start,
                         Authorizer authorizer, ReplayGuard& guard)
    : device_key_(std::move(device_key)),
      device_id_(std::move(device_id)),
      topic_start_(std::move(topic_start)),
      authorizer_(std::move(authorizer)),
      guard_(guard) {}

RequestGate::Verdict RequestGate::admit(std::string_view sealed,
                                        const MessageProperties& properties,
                                        std::int64_t now) const {
  Verdict v;
  const auto refuse = [&v](int status, std::string reason) {
    v.status = status;
    v.reason = std::move(reason);
    return v;
  };
  std::string error;
  auto opened = open_request(sealed, device_key_, error);
  if (!opened) return refuse(401, error);
  const SignedRequest& r = opened->request;
  if (r.device_id != device_id_ || r.topic_start != topic_start_)
    return refuse(401, "the request is signed for device " + r.topic_start + "/" + r.device_id +
                           ", not this one");
  if (r.response_topic != properties.response_topic.value_or("") ||
      r.correlation_data != properties.correlation_data.value_or(""))
    return refuse(401, "the MQTT 5 Response Topic or Correlation Data differ from the signed ones");
  if (!authorizer_.knows(opened->signer))
    return refuse(401,
                  "key " + opened->signer.fingerprint() + " is not in HOM_AUTHORIZED_KEYS_FILE");
  v.request = opened;  // from here on, answers are sealed to the signer
  if (auto stale = guard_.admit(r.nonce, r.timestamp, now)) return refuse(401, *stale);
  const auto decision = authorizer_.check(opened->signer, r.verb, r.path);
  if (decision.status != 0) return refuse(decision.status, decision.reason);
  return v;
}

}  // namespace hom
