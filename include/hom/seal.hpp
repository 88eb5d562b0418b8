// Sealed requests and replies (SPEC §8): what is signed, byte for byte, and how it travels.
// Built only from SSHSIG (sshsig.hpp) and age (age.hpp), so that a shell script with
// `ssh-keygen -Y sign` and `age -R` can make a request and `age -d -i` plus
// `ssh-keygen -Y verify` can check a reply. README "Trusting no broker" has the same layout.
//
// Framing: a netstring is `<length in decimal, no leading zero>:<bytes>,` (the length
// counts the bytes only). N(x) below is x as a netstring.
//
// Signed request R = N("hom-request@v1") N(device id) N(topic start) N(verb) N(path)
//                    N(Response Topic) N(Correlation Data) N(timestamp) N(nonce) N(payload)
//   path       everything after the verb level of a v1 request topic, no leading '/'
//              (may hold ?query)
//   Response Topic, Correlation Data   the MQTT 5 properties the request is published with;
//              empty when it has none (over 3.1.1)
//   timestamp  unix seconds, decimal
//   nonce      32 to 64 lowercase hex digits (16 to 32 random bytes)
//   payload    the v1 request payload (SPEC §2: params = the query, headers, body, req_id,
//              ...), byte for byte
// Sealed request = age(to the device's key(s)) of  N(R) N(SSHSIG of R, "hom-request@v1",
//                  binary, not armored)
//   published on {start}/req/{id}/@sealed ("@" is no HTTP method: a plain homd answers 405).
//
// Signed reply  R' = N("hom-reply@v1") N(device id) N(request hash) N(payload)
//   request hash  SHA-256 of the sealed request's bytes as published, 64 lowercase hex digits
//   payload       the v1 reply document (SPEC §2 "Response payload")
// Sealed reply  = age(to the key that signed the request) of  N(R') N(SSHSIG of R',
//                 "hom-reply@v1", by the device's key)
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "hom/authorizer.hpp"
#include "hom/message.hpp"
#include "hom/replay_guard.hpp"
#include "hom/ssh_keys.hpp"

namespace hom {

// The verb level of sealed requests.
inline constexpr std::string_view kSealedVerb = "@sealed";

struct SignedRequest {
  std::string device_id;
  std::string topic_start;
  std::string verb;
  std::string path;
  std::string response_topic;
  std::string correlation_data;
  std::int64_t timestamp = 0;
  std::string nonce;
  std::string payload;
};

struct SignedReply {
  std::string device_id;
  std::string request_sha256;  // hex
  std::string payload;
};

// A fresh nonce: 32 lowercase hex digits from 16 random bytes.
std::string make_nonce();
// SHA-256 of `bytes` as 64 lowercase hex digits.
std::string sha256_hex(std::string_view bytes);

std::string encode_signed_request(const SignedRequest& request);
// Strict: exactly the fields above, nothing after them, a decimal timestamp, a hex nonce.
std::optional<SignedRequest> decode_signed_request(std::string_view bytes, std::string& error);
std::string encode_signed_reply(const SignedReply& reply);
std::optional<SignedReply> decode_signed_reply(std::string_view bytes, std::string& error);

// ---- The requester's side ----------------------------------------------------------------

// The MQTT payload of a sealed request, signed by `requester`, to every key of the device.
std::optional<std::string> seal_request(const SignedRequest& request,
                                        const SshPrivateKey& requester,
                                        const std::vector<SshPublicKey>& device_keys,
                                        std::string& error);

// Opens a sealed reply to a request this requester sent (`sealed_request`: its bytes as
// published): decrypts with `requester`, checks the signature by one of `device_keys`, the
// device id and the request hash. The reply payload, or nullopt with a reason.
std::optional<std::string> open_reply(std::string_view sealed_reply, const SshPrivateKey& requester,
                                      const std::vector<SshPublicKey>& device_keys,
                                      std::string_view device_id, std::string_view sealed_request,
                                      std::string& error);

// ---- The device's side -------------------------------------------------------------------

// A sealed request that passed every check.
struct OpenedRequest {
  SignedRequest request;
  SshPublicKey signer;         // the reply is sealed to this key
  std::string request_sha256;  // hex, of the sealed bytes
};

// Decrypts and checks the signature (no policy: that is RequestGate's). A reason on failure.
std::optional<OpenedRequest> open_request(std::string_view sealed, const SshPrivateKey& device,
                                          std::string& error);

// The MQTT payload of the reply to `request`, signed by the device, to the request's signer.
std::optional<std::string> seal_reply(const OpenedRequest& request, const SshPrivateKey& device,
                                      std::string_view reply_payload, std::string& error);

// homd's checks of a sealed request, in order: decrypts (401), signature (401), meant for
// this device id and topic start (401), the MQTT 5 properties it came with equal the signed
// ones (401), the signer is in authorized_keys (401), timestamp and nonce (401, through the
// replay guard), hom-allow (403). Thread-safe (the guard is; the rest is immutable).
class RequestGate {
 public:
  RequestGate(SshPrivateKey device_key, std::string device_id, std::string topic_start,
              Authorizer authorizer, ReplayGuard& guard);

  struct Verdict {
    int status = 0;      // 0: accepted; else 401 or 403
    std::string reason;  // for the reply and the log; holds no secret
    // Set once the signature checked out and its key is authorized (accepted, a stale or
    // replayed request, 403): the reply is then sealed to that key. Unset: answer in clear.
    std::optional<OpenedRequest> request;
  };
  Verdict admit(std::string_view sealed, const MessageProperties& properties,
                std::int64_t now) const;

  const SshPrivateKey& device_key() const { return device_key_; }

 private:
  const SshPrivateKey device_key_;
  const std::string device_id_;
  const std::string topic_start_;
  const Authorizer authorizer_;
  ReplayGuard& guard_;
};

}  // namespace hom
