#include "hom/http_client.hpp"

#include <curl/curl.h>

#include <strings.h>
#include <algorithm>

#include <cctype>

namespace hom {

namespace {

struct SlistFree {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

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
  ~Impl() { curl_easy_cleanup(curl); }

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
};

HttpClient::HttpClient(const HttpConfig& config, const std::atomic<bool>* abort)
    : impl_(std::make_unique<Impl>(config, abort)) {}
HttpClient::~HttpClient() = default;

void HttpClient::abort() { impl_->aborted = true; }

HttpResult HttpClient::perform(const Request& request) {
  using Outcome = HttpResult::Outcome;
  const auto failure = [](Outcome outcome, std::string reason) {
    HttpResult r;
    r.outcome = outcome;
    r.reason = std::move(reason);
    return r;
  };
  Impl& s = *impl_;
  CURL* c = s.curl;
  if (!c) return failure(Outcome::kUnreachable, "could not create an HTTP handle");
  if (s.aborted || (s.external_abort && s.external_abort->load()))
    return failure(Outcome::kAborted, "aborted before the call");
  // Reset clears the options but keeps the live connections to the API.
  curl_easy_reset(c);
  s.body.clear();
  s.headers.clear();
  s.too_large = false;
  s.error[0] = '\0';

  curl_easy_setopt(c, CURLOPT_URL, request.url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  // "" rather than unset: libcurl would otherwise take http_proxy, HTTPS_PROXY, ALL_PROXY...
  // from the environment (SPEC §5.1 "No proxy").
  curl_easy_setopt(c, CURLOPT_PROXY, "");
  curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(request.timeout.count()));
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                   static_cast<long>(std::min(s.config.connect_timeout, request.timeout).count()));
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, s.error);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &Impl::on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, &Impl::on_header);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &s);
  curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE,
                   static_cast<curl_off_t>(s.config.max_response_bytes));
  if (s.abort) {
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, &Impl::on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, &s);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  }
  if (!s.config.unix_socket.empty())
    curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, s.config.unix_socket.c_str());
  if (!s.config.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, s.config.ca_file.c_str());
  if (s.config.tls_insecure) {
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
  }
  if (s.config.user) {
    curl_easy_setopt(c, CURLOPT_HTTPAUTH, CURLAUTH_BASIC);
    curl_easy_setopt(c, CURLOPT_USERNAME, s.config.user->c_str());
    curl_easy_setopt(c, CURLOPT_PASSWORD, s.config.password ? s.config.password->c_str() : "");
  }

  if (request.verb == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, request.verb.c_str());
  }
  const bool send_body = request.body.has_value() || is_body_method(request.verb);
  if (send_body && request.verb != "HEAD") {
    const std::string& body = request.body ? *request.body : s.body;  // s.body is empty here
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
  }

  std::unique_ptr<curl_slist, SlistFree> list;
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
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, list.get());

  const CURLcode rc = curl_easy_perform(c);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, nullptr);

  if (rc == CURLE_OK) {
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    HttpResult r;
    r.status = static_cast<int>(status);
    r.body = std::move(s.body);
    r.headers = std::move(s.headers);
    return r;
  }
  std::string reason = s.error[0] ? s.error : curl_easy_strerror(rc);
  if (rc == CURLE_ABORTED_BY_CALLBACK) return failure(Outcome::kAborted, std::move(reason));
  if (rc == CURLE_OPERATION_TIMEDOUT) return failure(Outcome::kTimeout, std::move(reason));
  if (s.too_large || rc == CURLE_FILESIZE_EXCEEDED)
    return failure(Outcome::kTooLarge, std::move(reason));
  return failure(Outcome::kUnreachable, std::move(reason));
}

}  // namespace hom
