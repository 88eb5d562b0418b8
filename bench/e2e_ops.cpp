// hom-e2e-ops: what each step of a sealed call costs on this machine's one core (bench/e2e.sh):
// seal_request (the requester), open_request (homd), seal_reply (homd), open_reply (the
// requester), a GET's sizes, each timed over N calls after a warm-up. Markdown on stdout.
//
//   hom-e2e-ops DEVICE_KEY REQUESTER_KEY [N]    (unencrypted OpenSSH Ed25519 private keys)
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "hom/seal.hpp"
#include "hom/ssh_keys.hpp"

namespace {

hom::SshPrivateKey load(const char* path) {
  std::ifstream f(path);
  std::ostringstream text;
  text << f.rdbuf();
  std::string error;
  auto key = hom::parse_private_key(text.str(), error);
  if (!key) {
    std::fprintf(stderr, "hom-e2e-ops: %s: %s\n", path, error.c_str());
    std::exit(2);
  }
  return *key;
}

// Mean µs per call of `step`, after a warm-up call; exits when a step fails.
double time_us(int n, const std::function<bool()>& step) {
  if (!step()) std::exit(1);
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i)
    if (!step()) std::exit(1);
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() /
         n;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: hom-e2e-ops DEVICE_KEY REQUESTER_KEY [N]\n");
    return 2;
  }
  const hom::SshPrivateKey device = load(argv[1]);
  const hom::SshPrivateKey requester = load(argv[2]);
  const int n = argc > 3 ? std::stoi(argv[3]) : 500;
  hom::SignedRequest request;
  request.device_id = "bench-e2e";
  request.topic_start = "v1";
  request.verb = "GET";
  request.path = "gps/latitude";
  request.timestamp = 1;
  request.nonce = hom::make_nonce();
  request.payload = R"({"req_id":"1"})";
  const std::string reply_doc = R"({"content":{"latitude":48.8584},"req_id":"1","status":200})";
  std::string error, sealed, reply;
  std::optional<hom::OpenedRequest> opened;
  const auto fail = [&](const char* what) {
    std::fprintf(stderr, "hom-e2e-ops: %s: %s\n", what, error.c_str());
    return false;
  };
  const double seal_request = time_us(n, [&] {
    auto s = hom::seal_request(request, requester, {device.public_key()}, error);
    if (!s) return fail("seal_request");
    sealed = std::move(*s);
    return true;
  });
  const double open_request = time_us(n, [&] {
    opened = hom::open_request(sealed, device, error);
    return opened ? true : fail("open_request");
  });
  const double seal_reply = time_us(n, [&] {
    auto s = hom::seal_reply(*opened, device, reply_doc, error);
    if (!s) return fail("seal_reply");
    reply = std::move(*s);
    return true;
  });
  const double open_reply = time_us(n, [&] {
    return hom::open_reply(reply, requester, {device.public_key()}, "bench-e2e", sealed, error)
               ? true
               : fail("open_reply");
  });
  std::printf("| step (who) | µs per call |\n| --- | ---: |\n");
  std::printf("| seal_request (requester) | %.0f |\n", seal_request);
  std::printf("| open_request (homd) | %.0f |\n", open_request);
  std::printf("| seal_reply (homd) | %.0f |\n", seal_reply);
  std::printf("| open_reply (requester) | %.0f |\n", open_reply);
  std::printf("| all four, in series | %.0f |\n",
              seal_request + open_request + seal_reply + open_reply);
  std::printf("\nsizes: sealed request %zu bytes, sealed reply %zu bytes (mean of %d calls each)\n",
              sealed.size(), reply.size(), n);
  return 0;
}
