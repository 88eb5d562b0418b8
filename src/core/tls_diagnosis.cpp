// Why a TLS connection to the broker fails, in words. Paho reports every TLS failure as
// "TCP/TLS connect failure"; after such a failure the session makes one handshake of its
// own with the same trust store, client certificate and host name, and asks OpenSSL why.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <cerrno>
#include <memory>
#include <string>

#include "hom/session.hpp"

namespace hom {

namespace {

struct CtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslFree {
  void operator()(SSL* s) const { SSL_free(s); }
};

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

// A connected, blocking TCP socket with send/receive timeouts, or -1.
int connect_tcp(const std::string& host, int port, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found) != 0) return -1;
  int result = -1;
  for (addrinfo* a = found; a && result < 0; a = a->ai_next) {
    const int fd =
        ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int rc = ::connect(fd, a->ai_addr, a->ai_addrlen);
    if (rc == 0) {
      result = fd;
    } else if (errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int err = 0;
      socklen_t len = sizeof err;
      if (::poll(&p, 1, static_cast<int>(timeout.count())) == 1 &&
          getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0)
        result = fd;
    }
    if (result < 0) ::close(fd);
  }
  freeaddrinfo(found);
  if (result >= 0) {
    ::fcntl(result, F_SETFL, ::fcntl(result, F_GETFL) & ~O_NONBLOCK);
    timeval tv{static_cast<time_t>(timeout.count() / 1000),
               static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    setsockopt(result, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(result, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  return result;
}

std::string openssl_error() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "the handshake failed";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  // "error:0A000086:SSL routines::certificate verify failed" -> the part after the last ':'
  std::string text = buf;
  const auto colon = text.rfind(':');
  return colon == std::string::npos ? text : text.substr(colon + 1);
}

}  // namespace

std::string diagnose_tls(const MqttConfig& mqtt, std::chrono::milliseconds timeout) {
  if (!mqtt.tls) return {};
  ERR_clear_error();
  std::unique_ptr<SSL_CTX, CtxFree> ctx(SSL_CTX_new(TLS_client_method()));
  if (!ctx) return {};
  const bool trust = mqtt.ca_file.empty() ? SSL_CTX_set_default_verify_paths(ctx.get()) == 1
                                          : SSL_CTX_load_verify_locations(
                                                ctx.get(), mqtt.ca_file.c_str(), nullptr) == 1;
  if (!trust) return "cannot load the CA file " + mqtt.ca_file + ": " + openssl_error();
  if (!mqtt.cert_file.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), mqtt.cert_file.c_str()) != 1)
      return "cannot load the client certificate " + mqtt.cert_file + ": " + openssl_error();
    const std::string& key = mqtt.key_file.empty() ? mqtt.cert_file : mqtt.key_file;
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), key.c_str(), SSL_FILETYPE_PEM) != 1)
      return "cannot load the client key " + key + ": " + openssl_error();
  }
  // Complete the handshake whatever the certificate, then read the verification result:
  // it names the reason (unknown CA, expired, host name mismatch).
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_NONE, nullptr);
  std::unique_ptr<SSL, SslFree> ssl(SSL_new(ctx.get()));
  if (!ssl) return {};
  in6_addr ip{};
  const bool is_ip = inet_pton(AF_INET, mqtt.host.c_str(), &ip) == 1 ||
                     inet_pton(AF_INET6, mqtt.host.c_str(), &ip) == 1;
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl.get());
  if (is_ip) {
    X509_VERIFY_PARAM_set1_ip_asc(param, mqtt.host.c_str());
  } else {
    SSL_set_tlsext_host_name(ssl.get(), mqtt.host.c_str());
    X509_VERIFY_PARAM_set1_host(param, mqtt.host.c_str(), 0);
  }
  const Fd fd(connect_tcp(mqtt.host, mqtt.port, timeout));
  if (fd.get() < 0) return {};  // not a TLS problem: the TCP connection fails too
  SSL_set_fd(ssl.get(), fd.get());
  if (SSL_connect(ssl.get()) != 1) return "handshake failed: " + openssl_error();
  if (mqtt.tls_insecure) return {};
  const long verify = SSL_get_verify_result(ssl.get());
  if (verify != X509_V_OK) {
    std::string why = X509_verify_cert_error_string(verify);
    if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH)
      why += ": the broker's certificate is not valid for " + mqtt.host;
    return "certificate verify failed: " + why;
  }
  return {};
}

}  // namespace hom
