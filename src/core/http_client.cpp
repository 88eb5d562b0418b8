#include "hom/http_client.hpp"

#include <curl/curl.h>

#include <strings.h>
#include <algorithm>

#include <cctype>
#include <chrono>
#include <string_view>

namespace hom {

// Outside the anonymous namespace: Impl (a class with linkage) holds one.
struct CurlSlistFree {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

namespace {

std::string trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

bool is_body_method(std::string_view verb) {
  return verb == "POST" || verb == "PUT" || verb == "PATCH";
}

}  // namespace

void http_global_init() { curl_global_init(CURL_GLOBAL_DEFAULT); }

struct HttpClient::Impl {
  Impl(const HttpConfig& c, const std::atomic<bool>* a)
      : config(c), external_abort(a), curl(curl_easy_init()) {}
  ~Impl() {
    if (multi) curl_multi_cleanup(multi);
    curl_easy_cleanup(curl);
  }

  bool setup(const Request& request, StreamChannel* channel, HttpResult& early);
  HttpResult result_of(CURLcode rc);

  // A streamed call's body: to the channel, or paused while its window is full.
  static size_t on_stream_body(char* data, size_t size, size_t count, void* self) {
    auto* impl = static_cast<Impl*>(self);
    const size_t n = size * count;
    if (!impl->stream->body(std::string_view(data, n))) {
      impl->write_paused = true;
      return CURL_WRITEFUNC_PAUSE;
    }
    impl->last_activity = std::chrono::steady_clock::now();
    return n;
  }

  // A streamed upload's body, from the channel; paused until its next chunk is there.
  static size_t on_read(char* out, size_t size, size_t count, void* self) {
    auto* impl = static_cast<Impl*>(self);
    const long n = impl->stream->read(out, size * count);
    if (n == StreamChannel::kWait) {
      impl->read_paused = true;
      return CURL_READFUNC_PAUSE;
    }
    if (n == StreamChannel::kFail) {
      impl->stop_reason = impl->stream->stop_reason();
      if (impl->stop_reason.empty()) impl->stop_reason = "the upload failed";
      return CURL_READFUNC_ABORT;
    }
    impl->last_activity = std::chrono::steady_clock::now();
    return static_cast<size_t>(n);
  }

  static size_t on_body(char* data, size_t size, size_t count, void* self) {
    auto* impl = static_cast<Impl*>(self);
    const size_t n = size * count;
    if (impl->body.size() + n > impl->config.max_response_bytes) {
      impl->too_large = true;
      return 0;  // aborts the transfer with CURLE_WRITE_ERROR
    }
    impl->body.append(data, n);
    return n;
  }

  static size_t on_header(char* data, size_t size, size_t count, void* self) {
    auto* impl = static_cast<Impl*>(self);
    const size_t n = size * count;
    const std::string_view line(data, n);
    if (impl->stream && (line == "\r\n" || line == "\n")) {
      // The end of a header block: the final one (not 1xx) opens the stream.
      long status = 0;
      curl_easy_getinfo(impl->curl, CURLINFO_RESPONSE_CODE, &status);
      if (status >= 200) impl->stream->head(static_cast<int>(status), impl->headers);
      return n;
    }
    if (line.rfind("HTTP/", 0) == 0) {
      impl->headers.clear();  // a new response (after 1xx): its own header block
      return n;
    }
    const auto colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return n;
    std::string name(line.substr(0, colon));
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    impl->headers.emplace_back(std::move(name), trim(line.substr(colon + 1)));
    return n;
  }

  static int on_progress(void* self, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    const auto* impl = static_cast<Impl*>(self);
    const bool external = impl->external_abort && impl->external_abort->load();
    return external || impl->aborted.load() ? 1 : 0;
  }

  const HttpConfig config;
  const std::atomic<bool>* external_abort;
  std::atomic<bool> aborted{false};
  // Never null: abort() can stop any call, so the progress callback is always installed.
  const std::atomic<bool>* abort = &aborted;
  CURL* curl;
  std::string body;
  HeaderList headers;
  bool too_large = false;
  char error[CURL_ERROR_SIZE] = {};
  std::unique_ptr<curl_slist, CurlSlistFree> header_list;
  // Streamed calls (perform_stream).
  CURLM* multi = nullptr;
  StreamChannel* stream = nullptr;
  bool write_paused = false;
  bool read_paused = false;
  std::chrono::steady_clock::time_point last_activity;
  std::string stop_reason;  // why the channel ended the call
};

HttpClient::HttpClient(const HttpConfig& config, const std::atomic<bool>* abort)
    : impl_(std::make_unique<Impl>(config, abort)) {}
HttpClient::~HttpClient() = default;

void HttpClient::abort() { impl_->aborted = true; }

namespace {

HttpResult failure(HttpResult::Outcome outcome, std::string reason) {
  HttpResult r;
  r.outcome = outcome;
  r.reason = std::move(reason);
  return r;
}

}  // namespace

// Sets every option of one call. False when the handle is missing or the call was aborted
// (`early` says why).
bool HttpClient::Impl::setup(const Request& request, StreamChannel* channel, HttpResult& early) {
  using Outcome = HttpResult::Outcome;
  CURL* c = curl;
  if (!c) return early = failure(Outcome::kUnreachable, "could not create an HTTP handle"), false;
  if (aborted || (external_abort && external_abort->load()))
    return early = failure(Outcome::kAborted, "aborted before the call"), false;
  // Reset clears the options but keeps the live connections to the API.
  curl_easy_reset(c);
  body.clear();
  headers.clear();
  too_large = false;
  error[0] = '\0';
  stream = channel;
  write_paused = read_paused = false;
  last_activity = std::chrono::steady_clock::now();

  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  // "" rather than unset: libcurl would otherwise take http_proxy, HTTPS_PROXY, ALL_PROXY...
  // from the environment (SPEC §5.1 "No proxy").
  curl_easy_setopt(c, CURLOPT_PROXY, "");
  curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
  if (!channel) {
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(request.timeout.count()));
    curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE,
                     static_cast<curl_off_t>(config.max_response_bytes));
  }
  // A stream has no overall limit: the loop in perform_stream() watches for a stall instead.
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(std::min(config.connect_timeout, request.timeout).count()));
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, channel ? &Impl::on_stream_body : &Impl::on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, this);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &Impl::on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, this);
  curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, &Impl::on_progress);
  curl_easy_setopt(c, CURLOPT_XFERINFODATA, this);
  curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  if (!config.unix_socket.empty())
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, config.unix_socket.c_str());
  if (!config.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, config.ca_file.c_str());
  if (config.tls_insecure) {
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (config.user) {
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
    curl_easy_setopt(c, CURLOPT_USERNAME, config.user->c_str());
    curl_easy_setopt(c, CURLOPT_PASSWORD, config.password ? config.password->c_str() : "");
  }

  const bool upload = request.stream && request.stream->upload;
  if (request.verb == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, request.verb.c_str());
  }
  const bool send_body = upload || request.body.has_value() || is_body_method(request.verb);
  if (upload && channel) {
    // The body comes from the requester's chunks; Content-Length when it declared one, so
    // the API can tell a cut-off body from a complete one; else chunked.
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, &Impl::on_read);
    curl_easy_setopt(c, CURLOPT_READDATA, this);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                     request.stream->upload_length
                         ? static_cast<curl_off_t>(*request.stream->upload_length)
                         : static_cast<curl_off_t>(-1));
  } else if (send_body && request.verb != "HEAD") {
    const std::string& b = request.body ? *request.body : body;  // body is empty here
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(b.size()));
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, b.data());
  }

  std::unique_ptr<curl_slist, CurlSlistFree> list;
  const auto add = [&list](const std::string& line) {
    curl_slist* next = curl_slist_append(list.get(), line.c_str());
    if (next) (void)list.release(), list.reset(next);
  };
  bool has_content_type = false;
  for (const auto& [name, value] : request.headers) {
    // "Name;" is curl's spelling of a header with an empty value.
    add(value.empty() ? name + ";" : name + ": " + value);
    if (name.size() == 12 && strncasecmp(name.c_str(), "content-type", 12) == 0)
      has_content_type = true;
  }
  if (send_body && !has_content_type) add("Content-Type:");  // no form-urlencoded default
  add("Expect:");
  header_list = std::move(list);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, header_list.get());
  return true;
}

HttpResult HttpClient::Impl::result_of(CURLcode rc) {
  using Outcome = HttpResult::Outcome;
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, nullptr);
  header_list.reset();
  stream = nullptr;
  if (rc == CURLE_OK) {
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    HttpResult r;
    r.status = static_cast<int>(status);
    r.body = std::move(body);
    r.headers = std::move(headers);
    return r;
  }
  std::string reason = !stop_reason.empty() ? stop_reason
                       : error[0]           ? std::string(error)
                                            : std::string(curl_easy_strerror(rc));
  if (rc == CURLE_ABORTED_BY_CALLBACK && stop_reason.empty())
    return failure(Outcome::kAborted, std::move(reason));
  if (rc == CURLE_ABORTED_BY_CALLBACK) return failure(Outcome::kStopped, std::move(reason));
  if (rc == CURLE_OPERATION_TIMEDOUT) return failure(Outcome::kTimeout, std::move(reason));
  if (too_large || rc == CURLE_FILESIZE_EXCEEDED)
    return failure(Outcome::kTooLarge, std::move(reason));
  return failure(Outcome::kUnreachable, std::move(reason));
}

HttpResult HttpClient::perform(const Request& request) {
  Impl& s = *impl_;
  HttpResult early;
  if (!s.setup(request, nullptr, early)) return early;
  return s.result_of(curl_easy_perform(s.curl));
}

HttpResult HttpClient::perform_stream(const Request& request, StreamChannel& channel) {
  using Clock = std::chrono::steady_clock;
  Impl& s = *impl_;
  HttpResult early;
  if (!s.multi) s.multi = curl_multi_init();
  if (!s.multi)
    return failure(HttpResult::Outcome::kUnreachable, "could not create a multi handle");
  if (!s.setup(request, &channel, early)) return early;
  s.stop_reason.clear();
  CURLM* m = s.multi;
  channel.set_waker([m] { curl_multi_wakeup(m); });
  curl_multi_add_handle(m, s.curl);
  CURLcode rc = CURLE_OK;
  bool timed_out = false;
  for (;;) {
    int running = 0;
    curl_multi_perform(m, &running);
    int left = 0;
    bool done = false;
    while (CURLMsg* msg = curl_multi_info_read(m, &left)) {
      if (msg->msg == CURLMSG_DONE) {
        rc = msg->data.result;
        done = true;
      }
    }
    if (done || running == 0) break;
    if (s.aborted || (s.external_abort && s.external_abort->load())) {
      rc = CURLE_ABORTED_BY_CALLBACK;
      break;
    }
    if (auto why = channel.stop_reason(); !why.empty()) {
      s.stop_reason = std::move(why);
      rc = CURLE_ABORTED_BY_CALLBACK;
      break;
    }
    // Unpausing may call the callbacks at once (curl hands over what it held back).
    // (CURLPAUSE_*_CONT are 0: what is not named in the mask is unpaused.)
    const bool resume_write = s.write_paused && channel.ready_for_body();
    const bool resume_read = s.read_paused && channel.ready_for_read();
    if (resume_write || resume_read) {
      if (resume_write) s.write_paused = false;
      if (resume_read) s.read_paused = false;
      s.last_activity = Clock::now();
      const int still =
          (s.write_paused ? CURLPAUSE_RECV : 0) | (s.read_paused ? CURLPAUSE_SEND : 0);
      curl_easy_pause(s.curl, still);
      continue;
    }
    // Waiting on the API (not on the requester) for longer than the timeout: a stall.
    if (!s.write_paused && !s.read_paused && Clock::now() - s.last_activity > request.timeout) {
      timed_out = true;
      break;
    }
    int fds = 0;
    const auto before = Clock::now();
    curl_multi_poll(m, nullptr, 0, 5, &fds);
    if (fds == 0 && Clock::now() - before >= std::chrono::milliseconds(4)) channel.idle();
  }
  curl_multi_remove_handle(m, s.curl);
  channel.set_waker({});
  if (timed_out) {
    s.stop_reason =
        "the local API sent nothing for " + std::to_string(request.timeout.count()) + " ms";
    return s.result_of(CURLE_OPERATION_TIMEDOUT);
  }
  return s.result_of(rc);
}

}  // namespace hom
