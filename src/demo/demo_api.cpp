// hom-demo-api: a tiny stand-in for a device's local REST API, for the README's quick start.
//
//   hom-demo-api [PORT]     listens on 127.0.0.1:PORT (default 8080)
//
//   GET  /gps/latitude      200 {"latitude": 48.8584}
//   POST /food/dessert      201 text/plain "dessert <name> created", from a JSON body {"name": ...}
//   GET  /status            200 {"service": "hom-demo-api", "status": "ok", ...}
//   GET  /logs/follow       a streaming API: one line every 100 ms, chunked (?lines=N,
//                           default 20; ?interval_ms=M)
//   GET  /files/blob        ?size=N bytes (Content-Length), byte i being i % 251: a large
//                           download anyone can check (the pattern repeats every 251 bytes)
//   PUT  /files/upload      takes a body of any size as it arrives (also POST); 200
//                           {"length": n, "sha256": "<hex>"}
//   GET  /                  the device's web UI (web/index.html, /app.css, /app.js, /logo.png):
//                           a page whose script calls the routes above with fetch()
//
// SIGTERM or SIGINT stops it cleanly (exit 0).
#include <httplib.h>
#include <openssl/evp.h>
#include <nlohmann/json.hpp>

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <string_view>
#include <thread>

#include "web_assets.hpp"

namespace {

constexpr int kDefaultPort = 8080;
constexpr const char* kHost = "127.0.0.1";
constexpr int kLogoSize = 256;  // pixels a side: ~260 KB, as the issue asks of the UI

// Parses a TCP port; -1 when the text is not a number in 1..65535.
int parse_port(const char* text) {
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (end == text || *end != '\0' || value < 1 || value > 65535) return -1;
  return static_cast<int>(value);
}

// A query parameter as a non-negative integer, or `fallback`.
std::uint64_t number_param(const httplib::Request& req, const char* name, std::uint64_t fallback) {
  if (!req.has_param(name)) return fallback;
  try {
    return std::stoull(req.get_param_value(name));
  } catch (const std::exception&) {
    return fallback;
  }
}

void add_streaming_routes(httplib::Server& server) {
  server.Get("/logs/follow", [](const httplib::Request& req, httplib::Response& res) {
    const auto lines = std::min<std::uint64_t>(number_param(req, "lines", 20), 100000);
    const auto interval = std::chrono::milliseconds(
        std::min<std::uint64_t>(number_param(req, "interval_ms", 100), 60000));
    res.set_chunked_content_provider(
        "text/plain",
        [lines, interval, n = std::uint64_t{0}](std::size_t, httplib::DataSink& sink) mutable {
          if (n > 0) std::this_thread::sleep_for(interval);  // the API's own pace
          const std::string line = "line " + std::to_string(n) + "\n";
          if (!sink.write(line.data(), line.size())) return false;
          if (++n >= lines) sink.done();
          return true;
        });
  });
  server.Get("/files/blob", [](const httplib::Request& req, httplib::Response& res) {
    const std::uint64_t size = number_param(req, "size", 1 << 20);
    res.set_content_provider(static_cast<std::size_t>(size), "application/octet-stream",
                             [](std::size_t offset, std::size_t length, httplib::DataSink& sink) {
                               std::string piece(std::min<std::size_t>(length, 64 * 1024), '\0');
                               for (std::size_t i = 0; i < piece.size(); ++i)
                                 piece[i] = static_cast<char>((offset + i) % 251);
                               return sink.write(piece.data(), piece.size());
                             });
  });
  const auto upload = [](const httplib::Request&, httplib::Response& res,
                         const httplib::ContentReader& reader) {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
    std::uint64_t length = 0;
    reader([&](const char* data, std::size_t n) {
      EVP_DigestUpdate(ctx, data, n);
      length += n;
      return true;
    });
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_length = 0;
    EVP_DigestFinal_ex(ctx, digest, &digest_length);
    EVP_MD_CTX_free(ctx);
    std::string hex;
    for (unsigned int i = 0; i < digest_length; ++i) {
      char byte[3];
      std::snprintf(byte, sizeof byte, "%02x", digest[i]);
      hex += byte;
    }
    res.set_content(nlohmann::json{{"length", length}, {"sha256", hex}}.dump(), "application/json");
  };
  server.Put("/files/upload", upload);
  server.Post("/files/upload", upload);
}

void add_routes(httplib::Server& server, std::chrono::steady_clock::time_point started,
                std::atomic<long>& served) {
  add_streaming_routes(server);
  server.Get("/gps/latitude", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(nlohmann::json{{"latitude", 48.8584}}.dump(), "application/json");
  });

  server.Post("/food/dessert", [](const httplib::Request& req, httplib::Response& res) {
    const auto body = nlohmann::json::parse(req.body, nullptr, /*allow_exceptions=*/false);
    if (!body.is_object() || !body.contains("name") || !body["name"].is_string() ||
        body["name"].get<std::string>().empty()) {
      res.status = 400;
      res.set_content("expected a JSON body {\"name\": \"...\"}\n", "text/plain");
      return;
    }
    const auto name = body["name"].get<std::string>();
    res.status = 201;
    res.set_header("Location", "/food/dessert/" + name);
    res.set_content("dessert " + name + " created", "text/plain");
  });

  server.Get("/status", [started, &served](const httplib::Request&, httplib::Response& res) {
    const auto uptime = std::chrono::duration_cast<std::chrono::seconds>(
        std::chrono::steady_clock::now() - started);
    const nlohmann::json status = {{"service", "hom-demo-api"},
                                   {"status", "ok"},
                                   {"uptime_s", uptime.count()},
                                   {"requests_served", served.load()}};
    res.set_content(status.dump(), "application/json");
  });

  // One access-log line per request on stderr, so a quick start shows what homd called.
  server.set_logger([&served](const httplib::Request& req, const httplib::Response& res) {
    ++served;
    std::fprintf(stderr, "hom-demo-api: %s %s -> %d\n", req.method.c_str(), req.target.c_str(),
                 res.status);
  });
}

// httplib's route patterns are regular expressions: "/app.js" must not match "/app_js".
std::string regex_quote(std::string_view path) {
  std::string out;
  for (const char c : path) {
    if (std::string_view(".[]{}()*+?^$|\\").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

// The web UI: the embedded files at their paths, index.html also at "/", and the logo.
// `logo` must outlive the server.
void add_web_routes(httplib::Server& server, const std::string& logo) {
  for (const auto& asset : hom::demo::web_assets()) {
    const auto serve = [asset](const httplib::Request&, httplib::Response& res) {
      res.set_content(asset.bytes.data(), asset.bytes.size(),
                      hom::demo::content_type_for(asset.path));
    };
    server.Get(regex_quote(asset.path), serve);
    if (asset.path == "/index.html") server.Get("/", serve);
  }
  server.Get(regex_quote("/logo.png"), [&logo](const httplib::Request&, httplib::Response& res) {
    res.set_content(logo.data(), logo.size(), "image/png");
  });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2 ||
      (argc == 2 && (std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help"))) {
    std::cerr << "usage: hom-demo-api [PORT]   (listens on " << kHost << ", default port "
              << kDefaultPort << ")\n";
    return argc > 2 ? 2 : 0;
  }
  const int port = argc == 2 ? parse_port(argv[1]) : kDefaultPort;
  if (port < 0) {
    std::cerr << "hom-demo-api: invalid port '" << argv[1] << "', expected 1..65535\n";
    return 2;
  }

  // Block the stop signals in every thread (httplib's workers inherit this mask); the main
  // thread takes them synchronously with sigwait(), so no work happens in a signal handler.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  httplib::Server server;
  std::atomic<long> served{0};
  add_routes(server, std::chrono::steady_clock::now(), served);
  const std::string logo = hom::demo::logo_png(kLogoSize);
  add_web_routes(server, logo);

  if (!server.bind_to_port(kHost, port)) {
    std::cerr << "hom-demo-api: cannot listen on " << kHost << ":" << port << "\n";
    return 1;
  }
  std::cout << "hom-demo-api: listening on http://" << kHost << ":" << port << "/" << std::endl;

  std::atomic<bool> stopping{false};
  std::atomic<bool> failed{false};
  std::thread listener([&] {
    if (!server.listen_after_bind() && !stopping) failed = true;
    // Wake the main thread if the server ended on its own; after a stop this is a no-op.
    if (!stopping) kill(getpid(), SIGTERM);
  });

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  stopping = true;
  server.stop();
  listener.join();

  if (failed) {
    std::cerr << "hom-demo-api: the server stopped unexpectedly\n";
    return 1;
  }
  std::cout << "hom-demo-api: stopped (" << (signal_number == SIGINT ? "SIGINT" : "SIGTERM") << ")"
            << std::endl;
  return 0;
}
