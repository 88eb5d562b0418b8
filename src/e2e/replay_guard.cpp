#include "hom/replay_guard.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

namespace hom {
namespace {

constexpr std::string_view kFile = "e2e-nonces";

bool is_nonce(std::string_view s) {
  if (s.size() < 32 || s.size() > 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::string errno_text() { return std::strerror(errno); }

std::string line_of(std::string_view nonce, std::int64_t expiry) {
  std::string line = std::to_string(expiry);
  line += ' ';
  line.append(nonce);
  line += '\n';
  return line;
}

}  // namespace

std::unique_ptr<ReplayGuard> ReplayGuard::open(const Options& options, std::int64_t now,
                                               std::string& error) {
  const std::string path = options.dir + "/" + std::string(kFile);
  std::unique_ptr<ReplayGuard> guard(new ReplayGuard(options, path));
  guard->lock_fd_ = ::open((path + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (guard->lock_fd_ < 0) {
    error = "cannot open " + path + ".lock: " + errno_text();
    return nullptr;
  }
  if (::flock(guard->lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    error = path + " is in use by another process";
    return nullptr;
  }
  // Read what a previous run accepted; a line without its newline was never acknowledged.
  const int in = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (in >= 0) {
    std::string text;
    char buffer[65536];
    ssize_t n = 0;
    while ((n = ::read(in, buffer, sizeof buffer)) > 0 || (n < 0 && errno == EINTR))
      if (n > 0) text.append(buffer, static_cast<std::size_t>(n));
    ::close(in);
    std::size_t pos = 0;
    while (true) {
      const std::size_t nl = text.find('\n', pos);
      if (nl == std::string::npos) break;
      const std::string_view line(text.data() + pos, nl - pos);
      pos = nl + 1;
      const std::size_t sp = line.find(' ');
      if (sp == std::string_view::npos || sp == 0 || sp > 19) continue;
      std::int64_t expiry = 0;
      bool digits = true;
      for (char c : line.substr(0, sp)) {
        if (c < '0' || c > '9') digits = false;
        expiry = expiry * 10 + (c - '0');
      }
      const std::string_view nonce = line.substr(sp + 1);
      if (!digits || !is_nonce(nonce) || expiry < now) continue;
      auto& kept = guard->seen_[std::string(nonce)];
      kept = std::max(kept, expiry);
    }
  } else if (errno != ENOENT) {
    error = "cannot read " + path + ": " + errno_text();
    return nullptr;
  }
  std::lock_guard<std::mutex> lock(guard->mu_);
  if (!guard->compact(now, error)) return nullptr;
  return guard;
}

ReplayGuard::~ReplayGuard() {
  if (fd_ >= 0) ::close(fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the lock
}

void ReplayGuard::purge(std::int64_t now) {
  for (auto it = seen_.begin(); it != seen_.end();)
    it = it->second < now ? seen_.erase(it) : std::next(it);
}

bool ReplayGuard::compact(std::int64_t now, std::string& error) {
  purge(now);
  const std::string tmp = path_ + ".tmp";
  const int out = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (out < 0) {
    error = "cannot write " + tmp + ": " + errno_text();
    return false;
  }
  std::string text;
  for (const auto& [nonce, expiry] : seen_) text += line_of(nonce, expiry);
  if (!write_all(out, text) || ::fsync(out) != 0) {
    error = "cannot write " + tmp + ": " + errno_text();
    ::close(out);
    return false;
  }
  ::close(out);
  if (::rename(tmp.c_str(), path_.c_str()) != 0) {
    error = "cannot replace " + path_ + ": " + errno_text();
    return false;
  }
  // The rename itself is durable once the directory is.
  const int dir = ::open(options_.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
  if (fd_ >= 0) ::close(fd_);
  fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd_ < 0) {
    error = "cannot open " + path_ + ": " + errno_text();
    return false;
  }
  lines_ = seen_.size();
  compact_at_ = std::max<std::size_t>(1024, 2 * lines_);
  return true;
}

std::optional<std::string> ReplayGuard::admit(std::string_view nonce, std::int64_t timestamp,
                                              std::int64_t now) {
  if (!is_nonce(nonce)) return "the nonce is not 32 to 64 lowercase hex digits";
  if (timestamp < now - options_.skew_s || timestamp > now + options_.skew_s)
    return "the request's timestamp is " + std::to_string(timestamp - now) +
           " s off the device's clock (HOM_E2E_SKEW_S is " + std::to_string(options_.skew_s) + ")";
  std::unique_lock<std::mutex> lock(mu_);
  if (fd_ < 0 || broken_) return "the replay cache is not writable";
  const std::string key(nonce);
  if (auto it = seen_.find(key); it != seen_.end() && it->second >= now)
    return "replayed request (its nonce was already used)";
  if (seen_.size() >= options_.max_entries) {
    purge(now);
    if (seen_.size() >= options_.max_entries)
      return "the replay cache is full (" + std::to_string(seen_.size()) +
             " requests within the time window)";
  }
  const std::int64_t expiry = timestamp + options_.skew_s;
  // Held from now on: a concurrent copy is refused as a replay, even before it is durable.
  seen_[key] = expiry;
  // Durable before the request is accepted: a crash right after must still know it. Group
  // commit: requests that arrive while one thread writes and syncs go together in the next
  // write and fdatasync, made by the first of them; the others wait for it.
  batch_ += line_of(nonce, expiry);
  const std::uint64_t mine = ++appended_;
  while (durable_ < mine && !broken_) {
    if (syncing_) {
      synced_.wait(lock);
      continue;
    }
    syncing_ = true;
    const std::string batch = std::move(batch_);
    batch_.clear();
    const std::uint64_t upto = appended_;
    const int fd = fd_;
    lock.unlock();
    const bool ok = write_all(fd, batch) && ::fdatasync(fd) == 0;
    const std::string why = ok ? std::string() : errno_text();
    lock.lock();
    syncing_ = false;
    if (ok) {
      durable_ = upto;
      lines_ += static_cast<std::size_t>(std::count(batch.begin(), batch.end(), '\n'));
      // Amortised: the file is rewritten after as many appends as it had live lines (or 1024).
      if (lines_ >= compact_at_) {
        std::string error;
        if (!compact(now, error)) broken_ = true;
      }
    } else {
      broken_ = true;
      broken_reason_ = "the replay cache cannot be written: " + why;
    }
    if (broken_ && fd_ >= 0) {
      // Without a durable file, refuse from now on.
      ::close(fd_);
      fd_ = -1;
    }
    synced_.notify_all();
  }
  if (durable_ < mine)
    return broken_reason_.empty() ? "the replay cache is not writable" : broken_reason_;
  return std::nullopt;
}

std::size_t ReplayGuard::live() const {
  std::lock_guard<std::mutex> lock(mu_);
  return seen_.size();
}

}  // namespace hom
