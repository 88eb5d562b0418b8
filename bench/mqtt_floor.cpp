// hom-mqtt-floor: the MQTT limit of a streamed download (bench/README.md, "Streams"). One
// client publishes SIZE bytes (byte i being i % 251, as the demo API's /files/blob) in
// messages of CHUNK bytes at QoS 1, at most WINDOW unacknowledged (PUBACK) at a time; another
// subscribed client receives them through the same broker. Prints
// "<bytes> <seconds> <MB/s> <sha256>" of what arrived, timed from the first publish to the
// last byte received.
#include <openssl/evp.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <string>

#include <CLI/CLI.hpp>

#include "paho_client.hpp"

namespace {

using Clock = std::chrono::steady_clock;

std::string hex(const unsigned char* digest, unsigned n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < n; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xF];
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"hom-mqtt-floor: bytes through the broker in QoS 1 messages, as fast as it goes"};
  int port = 1883;
  std::uint64_t size = 256ULL << 20;
  std::size_t chunk = 128 * 1024;
  std::size_t window = 8;
  app.add_option("--port", port, "the broker's port on 127.0.0.1");
  app.add_option("--size", size, "bytes to move");
  app.add_option("--chunk", chunk, "bytes per message")->check(CLI::Range(1, 1 << 28));
  app.add_option("--window", window, "unacknowledged publishes at most")
      ->check(CLI::Range(1, 65535));
  CLI11_PARSE(app, argc, argv);

  const std::string topic = "bench/floor/" + std::to_string(::getpid());
  std::mutex mu;
  std::condition_variable cv;
  std::uint64_t received = 0;  // guarded by mu
  std::size_t in_flight = 0;   // guarded by mu
  Clock::time_point last;      // guarded by mu
  EVP_MD_CTX* sha = EVP_MD_CTX_new();
  EVP_DigestInit_ex(sha, EVP_sha256(), nullptr);

  hom::bench::PahoClient sub("127.0.0.1", port, "floor-sub-" + std::to_string(::getpid()),
                             [&](std::string_view, std::string_view payload, int, bool) {
                               EVP_DigestUpdate(sha, payload.data(), payload.size());
                               std::lock_guard<std::mutex> lock(mu);
                               received += payload.size();
                               last = Clock::now();
                               cv.notify_all();
                             });
  hom::bench::PahoClient pub("127.0.0.1", port, "floor-pub-" + std::to_string(::getpid()), {});
  pub.on_delivery([&](std::uint64_t, bool) {
    std::lock_guard<std::mutex> lock(mu);
    --in_flight;
    cv.notify_all();
  });
  try {
    sub.connect(true, std::chrono::seconds(10));
    sub.subscribe(topic, 1, std::chrono::seconds(10));
    pub.connect(true, std::chrono::seconds(10));
  } catch (const std::exception& e) {
    std::cerr << "hom-mqtt-floor: " << e.what() << "\n";
    return 1;
  }

  std::string message(chunk, '\0');
  const auto start = Clock::now();
  std::uint64_t offset = 0;
  for (std::uint64_t tag = 0; offset < size; ++tag) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, size - offset));
    message.resize(n);
    for (std::size_t i = 0; i < n; ++i) message[i] = static_cast<char>((offset + i) % 251);
    {
      std::unique_lock<std::mutex> lock(mu);
      if (!cv.wait_until(lock, Clock::now() + std::chrono::seconds(30),
                         [&] { return in_flight < window; })) {
        std::cerr << "hom-mqtt-floor: no PUBACK for 30 s\n";
        return 1;
      }
      ++in_flight;
    }
    if (pub.publish_tracked(topic, message, 1, tag) != MQTTASYNC_SUCCESS) {
      std::cerr << "hom-mqtt-floor: the publish was refused\n";
      return 1;
    }
    offset += n;
  }
  std::unique_lock<std::mutex> lock(mu);
  if (!cv.wait_until(lock, Clock::now() + std::chrono::seconds(60),
                     [&] { return received >= size; })) {
    std::cerr << "hom-mqtt-floor: " << received << " of " << size << " bytes arrived\n";
    return 1;
  }
  const double seconds = std::chrono::duration<double>(last - start).count();
  lock.unlock();
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned n = 0;
  EVP_DigestFinal_ex(sha, digest, &n);
  EVP_MD_CTX_free(sha);
  std::printf("%llu %.3f %.1f %s\n", static_cast<unsigned long long>(size), seconds,
              static_cast<double>(size) / 1e6 / seconds, hex(digest, n).c_str());
  pub.disconnect(std::chrono::seconds(5));
  sub.disconnect(std::chrono::seconds(5));
  return 0;
}
