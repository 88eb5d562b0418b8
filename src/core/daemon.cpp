#include "hom/daemon.hpp"

#include <pthread.h>

#include <csignal>
#include <cstdlib>
#include <iostream>

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

namespace hom {

namespace {

// "%*" in a pattern: the sd-daemon(3) syslog priority prefix of the level ("<4>" for warn).
class SyslogPriorityFlag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    static constexpr const char* kPrefix[] = {"<7>", "<7>", "<6>", "<4>", "<3>", "<2>", "<6>"};
    const char* p = kPrefix[static_cast<int>(msg.level)];
    dest.append(p, p + 3);
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<SyslogPriorityFlag>();
  }
};

sigset_t stop_signals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGUSR2);  // our own wake-up at exit
  return signals;
}

}  // namespace

std::optional<int> parse_daemon_args(int argc, char** argv, const std::string& name,
                                     const char* usage, bool& check_only) {
  check_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::cout << usage;
      return 0;
    }
    if (arg == "--version") {
      std::cout << name << " " << HOM_VERSION << "\n";
      return 0;
    }
    if (arg == "--check-config") {
      check_only = true;
      continue;
    }
    std::cerr << name << ": unknown argument '" << arg << "'; see " << name << " --help\n";
    return 2;
  }
  return std::nullopt;
}

void setup_daemon_logging(const std::string& name, const std::string& level) {
  auto logger = spdlog::stderr_logger_mt(name);
  auto formatter = std::make_unique<spdlog::pattern_formatter>();
  if (std::getenv("JOURNAL_STREAM")) {
    // Under journald: no timestamp (journald adds one) and the syslog priority per line.
    formatter->add_flag<SyslogPriorityFlag>('*').set_pattern("%*%v");
  } else {
    formatter->set_pattern("%Y-%m-%d %H:%M:%S.%e %l %v");
  }
  logger->set_formatter(std::move(formatter));
  logger->set_level(spdlog::level::from_str(level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
}

void block_stop_signals() {
  std::signal(SIGPIPE, SIG_IGN);
  const sigset_t signals = stop_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
}

std::thread start_signal_thread(std::atomic<bool>& stop, std::function<void()> wake) {
  return std::thread([&stop, wake = std::move(wake)] {
    const sigset_t signals = stop_signals();
    int sig = 0;
    sigwait(&signals, &sig);
    if (sig == SIGUSR2) return;
    spdlog::info("received {}; stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    stop = true;
    wake();
  });
}

void join_signal_thread(std::thread& thread) {
  if (!thread.joinable()) return;
  pthread_kill(thread.native_handle(), SIGUSR2);
  thread.join();
}

}  // namespace hom
