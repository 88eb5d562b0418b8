// The MQTT 5 duplicate cache (SPEC §2 "MQTT 5", §5.1 "Reply cache key", "Bounded memory"):
// a request repeated within the TTL (a QoS 1 redelivery, a client's retry) is answered with
// the first one's reply instead of being executed again.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "hom/request.hpp"
#include "hom/time_source.hpp"

namespace hom {

// Entries are keyed by reply_cache_key() and live from the first request's arrival until the
// TTL, or until the count or byte bound evicts them, oldest first. An entry is "running"
// from begin() until its request completes; duplicates arriving meanwhile are parked in it
// and handed back by complete(). Thread-safe.
class ReplyCache {
 public:
  struct Limits {
    std::size_t max_entries = 10000;
    std::size_t max_bytes = 8 * 1024 * 1024;  // MQTT_REPLY_CACHE_BYTES
    std::chrono::steady_clock::duration ttl = std::chrono::minutes(5);
  };

  enum class Outcome {
    kExecute,  // no entry: one was opened; execute, then complete() or abandon() with `ticket`
    kCached,   // answered: `reply` is the first request's reply
    kParked,   // the first request is running: the duplicate was kept, see complete()
    kRefused,  // the first request is running and `may_park` said no: nothing was kept
  };
  struct Lookup {
    Outcome outcome = Outcome::kExecute;
    std::uint64_t ticket = 0;  // kExecute
    std::string reply;         // kCached
  };

  struct Counts {
    std::size_t entries = 0;  // all entries held, running ones already evicted included
    std::size_t cached = 0;   // entries counted against the limits
    std::size_t bytes = 0;    // what the `cached` entries count against max_bytes
  };

  explicit ReplyCache(Limits limits, TimeSource now = std::chrono::steady_clock::now);
  ReplyCache(const ReplyCache&) = delete;
  ReplyCache& operator=(const ReplyCache&) = delete;

  // Looks `key` up. For a running entry, `may_park` is called (under the cache's lock, so
  // that the entry cannot complete meanwhile) and, when it returns true, `request` is moved
  // into the entry; otherwise `request` is left alone.
  Lookup begin(const std::string& key, Request& request, const std::function<bool()>& may_park);

  // The request that opened the entry (`ticket`) was answered with `reply`: keeps it for its
  // duplicates unless it is larger than a quarter of max_bytes or the entry was evicted
  // meanwhile (then the entry is freed). Returns the parked duplicates, to be answered with
  // the same reply.
  std::vector<Request> complete(const std::string& key, std::uint64_t ticket,
                                const std::string& reply);

  // The request that opened the entry was not executed (refused, aborted): the entry is
  // dropped so that a retry runs. Returns the parked duplicates.
  std::vector<Request> abandon(const std::string& key, std::uint64_t ticket);

  // Drops every entry; returns all parked duplicates (shutdown).
  std::vector<Request> clear();

  Counts counts() const;

  // Bytes an entry counts against max_bytes besides its key and reply.
  static constexpr std::size_t kEntryOverhead = 128;

 private:
  struct Entry {
    std::uint64_t ticket = 0;
    std::chrono::steady_clock::time_point created;
    bool done = false;
    bool listed = true;  // false once evicted while running: freed when it completes
    std::string reply;
    std::vector<Request> parked;
    std::list<const std::string*>::iterator pos;  // in order_, while listed
  };
  using Map = std::unordered_map<std::string, Entry>;

  void trim(std::chrono::steady_clock::time_point now);  // mu_ held
  void unlist(Entry& e, const std::string& key);         // mu_ held
  std::size_t cost(const std::string& key, const Entry& e) const;

  const Limits limits_;
  const TimeSource now_;
  mutable std::mutex mu_;
  Map entries_;                          // guarded by mu_
  std::list<const std::string*> order_;  // guarded by mu_: keys of listed entries, oldest first
  std::size_t bytes_ = 0;                // guarded by mu_: cost of the listed entries
  std::uint64_t next_ticket_ = 0;        // guarded by mu_
};

// The cache key of a request: its Response Topic, its Correlation Data and a SHA-256 digest
// of the request topic and payload, so that a new request reusing a Response Topic and
// Correlation Data is never answered with another request's reply (SPEC §5.1).
std::string reply_cache_key(std::string_view response_topic, std::string_view correlation_data,
                            std::string_view request_topic, std::string_view payload);

}  // namespace hom
