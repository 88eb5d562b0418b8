// The replay guard of sealed requests (SPEC §8): a request is fresh when its signed timestamp
// is within ±skew of the device's clock and its nonce was not seen. Seen nonces are kept until
// their timestamp leaves the window (after that the timestamp alone refuses a replay), in
// memory and in an append-only file in the state directory, written and fsync'd before a
// request is accepted, so a replay is refused across a restart too. Requests admitted at the
// same time share one write and one fdatasync (group commit).
//
// File `<dir>/e2e-nonces`: one line per accepted request, "<expiry unix s> <nonce>\n". Opening
// rewrites it with the live entries only (compaction; a torn last line from a crash is
// dropped: it was never accepted), and so does an append once the file holds twice as many
// lines as there were live entries at the last rewrite (at least 1024). An exclusive lock (flock on
// the file) keeps a second process off it.
//
// Thread-safe: admit() may be called from many threads.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace hom {

class ReplayGuard {
 public:
  struct Options {
    std::string dir;                    // the state directory; must exist
    std::int64_t skew_s = 300;          // HOM_E2E_SKEW_S
    std::size_t max_entries = 1 << 20;  // more live nonces than this: requests are refused
  };

  // Loads and compacts the file. nullptr with a reason when the directory is not usable or
  // another process holds it.
  static std::unique_ptr<ReplayGuard> open(const Options& options, std::int64_t now,
                                           std::string& error);
  ~ReplayGuard();
  ReplayGuard(const ReplayGuard&) = delete;
  ReplayGuard& operator=(const ReplayGuard&) = delete;

  // nullopt when the request is fresh (and its nonce is now recorded, durably); else why it
  // is refused. `nonce` is 32 to 64 lowercase hex digits (decode_signed_request checks that).
  std::optional<std::string> admit(std::string_view nonce, std::int64_t timestamp,
                                   std::int64_t now);

  // Nonces held in memory (expired ones go at the next compaction or when the cache is full).
  std::size_t live() const;
  std::string path() const { return path_; }

 private:
  ReplayGuard(Options options, std::string path) : options_(std::move(options)), path_(path) {}
  bool compact(std::int64_t now, std::string& error);  // requires mu_
  void purge(std::int64_t now);                        // requires mu_

  const Options options_;
  const std::string path_;
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::int64_t> seen_;  // nonce -> expiry; guarded by mu_
  int fd_ = -1;                                         // guarded by mu_
  int lock_fd_ = -1;
  std::size_t lines_ = 0;       // in the file; guarded by mu_
  std::size_t compact_at_ = 0;  // rewrite the file at this many lines; guarded by mu_
  // Group commit, all guarded by mu_: lines not yet written, how many lines were appended
  // and how many are durable (counted since open), one thread writing at a time.
  std::condition_variable synced_;
  std::string batch_;
  std::uint64_t appended_ = 0;
  std::uint64_t durable_ = 0;
  bool syncing_ = false;
  bool broken_ = false;  // a write, sync or compaction failed: everything is refused
  std::string broken_reason_;
};

}  // namespace hom
