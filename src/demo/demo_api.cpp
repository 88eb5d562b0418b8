// hom-demo-api: a tiny stand-in for a device's local REST API, for the README's quick start.
//
//   hom-demo-api [PORT]     listens on 127.0.0.1:PORT (default 8080)
//
//   GET  /gps/latitude      200 {"latitude": 48.8584}
//   POST /food/dessert      201 text/plain "dessert <name> created", from a JSON body {"name": ...}
//   GET  /status            200 {"service": "hom-demo-api", "status": "ok", ...}
//   GET  /                  the device's web UI (web/index.html, /app.css, /app.js, /logo.png):
//                           a page whose script calls the routes above with fetch()
//
// SIGTERM or SIGINT stops it cleanly (exit 0).
#include <httplib.h>
#include <nlohmann/json.hpp>

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
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

void add_routes(httplib::Server& server, std::chrono::steady_clock::time_point started,
                std::atomic<long>& served) {
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
