// TCP_NODELAY for the MQTT connection.
//
// MQTT is request/response with small packets: a QoS 2 exchange is four of them. With
// Nagle's algorithm on, each small write waits for the peer's delayed ACK (~40 ms on
// Linux), so a request costs tens of milliseconds of idle waiting. Debian's Paho C (1.3.x)
// never sets TCP_NODELAY and offers no hook to reach its socket, so homd interposes
// connect(2): every TCP socket the process connects gets TCP_NODELAY first (libcurl sets
// it on its own sockets anyway). The executable's definition takes precedence over libc's
// for the shared libraries it loads; the real connect is looked up with RTLD_NEXT.
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <atomic>

namespace {

using ConnectFn = int (*)(int, const sockaddr*, socklen_t);

ConnectFn real_connect() {
  static std::atomic<ConnectFn> fn{nullptr};
  ConnectFn f = fn.load(std::memory_order_acquire);
  if (!f) {
    f = reinterpret_cast<ConnectFn>(dlsym(RTLD_NEXT, "connect"));
    fn.store(f, std::memory_order_release);
  }
  return f;
}

}  // namespace

extern "C" int connect(int fd, const sockaddr* addr, socklen_t len) {
  if (addr && (addr->sa_family == AF_INET || addr->sa_family == AF_INET6)) {
    int type = 0;
    socklen_t type_len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &type_len) == 0 && type == SOCK_STREAM) {
      const int on = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
    }
  }
  return real_connect()(fd, addr, len);
}

namespace hom {
// Referenced by the MQTT code so the linker keeps this object (and its connect) in.
bool tcp_nodelay_linked() { return true; }
}  // namespace hom
