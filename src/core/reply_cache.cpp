#include "hom/reply_cache.hpp"

#include <openssl/evp.h>

#include <memory>

namespace hom {

namespace {

struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

void append_length(std::string& out, std::size_t n) {
  for (int i = 0; i < 8; ++i)
    out += static_cast<char>((static_cast<std::uint64_t>(n) >> (8 * i)) & 0xFF);
}

}  // namespace

std::string reply_cache_key(std::string_view response_topic, std::string_view correlation_data,
                            std::string_view request_topic, std::string_view payload) {
  // Length prefixes keep the parts apart: ("a", "bc") and ("ab", "c") are different keys.
  std::string key;
  key.reserve(16 + response_topic.size() + correlation_data.size() + EVP_MAX_MD_SIZE);
  append_length(key, response_topic.size());
  key += response_topic;
  append_length(key, correlation_data.size());
  key += correlation_data;

  std::string topic_length;
  append_length(topic_length, request_topic.size());
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_size = 0;
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  const bool ok = ctx && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1 &&
                  EVP_DigestUpdate(ctx.get(), topic_length.data(), topic_length.size()) == 1 &&
                  EVP_DigestUpdate(ctx.get(), request_topic.data(), request_topic.size()) == 1 &&
                  EVP_DigestUpdate(ctx.get(), payload.data(), payload.size()) == 1 &&
                  EVP_DigestFinal_ex(ctx.get(), digest, &digest_size) == 1;
  if (ok) {
    key.append(reinterpret_cast<const char*>(digest), digest_size);
  } else {
    // No digest (out of memory): the bytes themselves, still an exact key.
    key += topic_length;
    key += request_topic;
    key += payload;
  }
  return key;
}

ReplyCache::ReplyCache(Limits limits, TimeSource now) : limits_(limits), now_(std::move(now)) {}

std::size_t ReplyCache::cost(const std::string& key, const Entry& e) const {
  return kEntryOverhead + key.size() + e.reply.size();
}

void ReplyCache::unlist(Entry& e, const std::string& key) {
  if (!e.listed) return;
  order_.erase(e.pos);
  bytes_ -= cost(key, e);
  e.listed = false;
}

void ReplyCache::trim(std::chrono::steady_clock::time_point now) {
  while (!order_.empty()) {
    const std::string& key = *order_.front();
    const auto it = entries_.find(key);
    Entry& e = it->second;
    const bool expired = now - e.created >= limits_.ttl;
    if (!expired && order_.size() <= limits_.max_entries && bytes_ <= limits_.max_bytes) return;
    unlist(e, key);
    // A running entry stays until its request completes: its parked duplicates wait on it.
    if (e.done) entries_.erase(it);
  }
}

ReplyCache::Lookup ReplyCache::begin(const std::string& key, Request& request,
                                     const std::function<bool()>& may_park) {
  Lookup lookup;
  std::lock_guard<std::mutex> lock(mu_);
  const auto now = now_();
  trim(now);
  const auto it = entries_.find(key);
  if (it == entries_.end()) {
    auto& [stored_key, e] = *entries_.try_emplace(key).first;
    e.ticket = ++next_ticket_;
    e.created = now;
    e.pos = order_.insert(order_.end(), &stored_key);
    bytes_ += cost(stored_key, e);
    lookup.outcome = Outcome::kExecute;
    lookup.ticket = e.ticket;
    trim(now);
    return lookup;
  }
  Entry& e = it->second;
  if (e.done) {
    lookup.outcome = Outcome::kCached;
    lookup.reply = e.reply;
    return lookup;
  }
  if (!may_park()) {
    lookup.outcome = Outcome::kRefused;
    return lookup;
  }
  e.parked.push_back(std::move(request));
  lookup.outcome = Outcome::kParked;
  return lookup;
}

std::vector<Request> ReplyCache::complete(const std::string& key, std::uint64_t ticket,
                                          const std::string& reply) {
  std::vector<Request> parked;
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = entries_.find(key);
  if (it == entries_.end() || it->second.ticket != ticket || it->second.done) return parked;
  Entry& e = it->second;
  parked.swap(e.parked);
  const bool too_big = kEntryOverhead + key.size() + reply.size() > limits_.max_bytes / 4;
  if (!e.listed || too_big) {
    unlist(e, key);
    entries_.erase(it);
    return parked;
  }
  bytes_ -= cost(key, e);
  e.reply = reply;
  e.done = true;
  bytes_ += cost(key, e);
  trim(now_());
  return parked;
}

std::vector<Request> ReplyCache::abandon(const std::string& key, std::uint64_t ticket) {
  std::vector<Request> parked;
  std::lock_guard<std::mutex> lock(mu_);
  const auto it = entries_.find(key);
  if (it == entries_.end() || it->second.ticket != ticket || it->second.done) return parked;
  parked.swap(it->second.parked);
  unlist(it->second, key);
  entries_.erase(it);
  return parked;
}

std::vector<Request> ReplyCache::clear() {
  std::vector<Request> parked;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [key, e] : entries_)
    for (auto& r : e.parked) parked.push_back(std::move(r));
  entries_.clear();
  order_.clear();
  bytes_ = 0;
  return parked;
}

ReplyCache::Counts ReplyCache::counts() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Counts{entries_.size(), order_.size(), bytes_};
}

}  // namespace hom
