// What the two daemons (homd, hom-gateway) share around their main(): logging to stderr
// (journald-aware) and SIGTERM/SIGINT taken on a thread of their own.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <thread>

namespace hom {

// The daemons' command line: --help, --version and --check-config. Returns the exit status
// when the process should end now (help or version printed: 0; an unknown argument: 2, with
// a line on stderr), else nullopt, with `check_only` set by --check-config.
std::optional<int> parse_daemon_args(int argc, char** argv, const std::string& name,
                                     const char* usage, bool& check_only);

// Logs to stderr: timestamps and level names on a terminal or in a file; under journald
// (JOURNAL_STREAM set) the sd-daemon(3) priority prefix instead, so `journalctl -p warning`
// works.
void setup_daemon_logging(const std::string& name, const std::string& level);

// Blocks SIGTERM, SIGINT and SIGUSR2 in the calling thread (call before any other thread
// starts, so every thread inherits the mask) and ignores SIGPIPE.
void block_stop_signals();

// Waits for SIGTERM or SIGINT on its own thread, then sets `stop` and calls `wake`: no
// handler ever runs in the middle of Paho, curl or Asio. join_signal_thread() ends it.
std::thread start_signal_thread(std::atomic<bool>& stop, std::function<void()> wake);
void join_signal_thread(std::thread& thread);

}  // namespace hom
