// hom-slow-api: the benchmark's local API (fixtures.hpp) answering every call after a fixed
// delay, to show how homd's throughput scales with WORKERS when the API, not MQTT, is slow.
// nginx cannot sleep per request, hence this small server.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <thread>

#include <httplib.h>
#include <CLI/CLI.hpp>

#include "fixtures.hpp"

int main(int argc, char** argv) {
  using namespace hom::bench;
  int port = 0;
  int delay_ms = 50;
  int threads = 128;
  CLI::App app{"hom-slow-api: the benchmark API, each answer after a delay (127.0.0.1 only)"};
  app.add_option("--port", port, "port on 127.0.0.1; 0 picks a free one")
      ->check(CLI::Range(0, 65535));
  app.add_option("--delay-ms", delay_ms, "delay before each answer")->check(CLI::Range(0, 60000));
  app.add_option("--threads", threads, "connections served at once")->check(CLI::Range(1, 4096));
  CLI11_PARSE(app, argc, argv);

  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // before any thread starts

  httplib::Server server;
  // One thread per keep-alive connection: the pool must outnumber homd's WORKERS.
  server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  // httplib writes headers and body separately; with Nagle on, the body would wait for the
  // client's delayed ACK (~40 ms) and almost double the delay being measured.
  server.set_tcp_nodelay(true);
  server.set_keep_alive_max_count(1000000);
  server.set_keep_alive_timeout(60);
  const auto delay = std::chrono::milliseconds(delay_ms);
  const std::string bin = bin_bytes();
  server.Get(std::string("/") + kLatitudePath,
             [delay](const httplib::Request&, httplib::Response& res) {
               std::this_thread::sleep_for(delay);
               res.set_content(kLatitudeJson, "application/json");
             });
  server.Post(std::string("/") + kDessertPath,
              [delay](const httplib::Request&, httplib::Response& res) {
                std::this_thread::sleep_for(delay);
                res.status = kDessertStatus;
                res.set_content(kDessertText, "text/plain");
              });
  server.Get(std::string("/") + kBinPath,
             [delay, &bin](const httplib::Request&, httplib::Response& res) {
               std::this_thread::sleep_for(delay);
               res.set_content(bin, "application/octet-stream");
             });

  const int bound = port == 0                                ? server.bind_to_any_port("127.0.0.1")
                    : server.bind_to_port("127.0.0.1", port) ? port
                                                             : -1;
  if (bound <= 0) {
    std::fprintf(stderr, "hom-slow-api: cannot listen on 127.0.0.1:%d\n", port);
    return 1;
  }
  std::thread stopper([&server, &signals] {
    int sig = 0;
    sigwait(&signals, &sig);
    server.stop();
  });
  std::cout << "hom-slow-api: listening on 127.0.0.1:" << bound << std::endl;
  const bool clean = server.listen_after_bind();
  kill(getpid(), SIGTERM);  // blocked everywhere, so it only wakes the stopper if still waiting
  stopper.join();
  return clean ? 0 : 1;
}
