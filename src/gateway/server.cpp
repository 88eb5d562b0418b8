#include "hom/gateway_server.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "hom/cli_request.hpp"
#include "hom/envelope.hpp"
#include "hom/path.hpp"
#include "hom/request.hpp"
#include "hom/response.hpp"

namespace hom::gateway {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;
using nlohmann::json;

namespace {

constexpr const char* kServerName = "hom-gateway/" HOM_VERSION;
// Retry-After for a device whose presence says offline.
constexpr int kRetryAfterS = 30;
constexpr std::array<double, 12> kBuckets = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                             0.5,   1,    2.5,   5,    10,  30};

}  // namespace

// Counters for /_hom/metrics; updated from the I/O thread, read from it too. Outside the
// anonymous namespace: Server::Impl (a class with linkage) holds one.
struct GatewayMetrics {
  std::map<int, std::uint64_t> by_status;
  std::array<std::uint64_t, kBuckets.size() + 1> latency{};
  double latency_sum = 0;
  std::uint64_t latency_count = 0;

  void record(int status, double seconds) {
    ++by_status[status];
    std::size_t i = 0;
    while (i < kBuckets.size() && seconds > kBuckets[i]) ++i;
    ++latency[i];
    latency_sum += seconds;
    ++latency_count;
  }
};

struct Server::Impl : std::enable_shared_from_this<Server::Impl> {
  Impl(const GatewayConfig& c, std::vector<Token> t, Requester& r)
      : config(c), tokens(std::move(t)), requester(r), acceptor(ioc) {}

  class Connection;

  void accept();
  // After the I/O thread has stopped: closes every connection and the acceptor, then runs
  // what is left in the io_context (aborted operations, posted completions) so that no
  // handler keeps a connection, or this object, alive.
  void finish();

  std::string metrics_text() const {
    std::string out;
    out += "# HELP hom_gateway_requests_total HTTP requests answered, by status.\n";
    out += "# TYPE hom_gateway_requests_total counter\n";
    for (const auto& [status, n] : metrics.by_status)
      out += "hom_gateway_requests_total{status=\"" + std::to_string(status) + "\"} " +
             std::to_string(n) + "\n";
    out += "# HELP hom_gateway_in_flight Requests waiting for a device.\n";
    out += "# TYPE hom_gateway_in_flight gauge\n";
    out += "hom_gateway_in_flight " + std::to_string(in_flight.load()) + "\n";
    out += "# HELP hom_gateway_connections Open HTTP connections.\n";
    out += "# TYPE hom_gateway_connections gauge\n";
    out += "hom_gateway_connections " + std::to_string(connections.load()) + "\n";
    out += "# HELP hom_gateway_broker_connected 1 while connected to the MQTT broker.\n";
    out += "# TYPE hom_gateway_broker_connected gauge\n";
    out += std::string("hom_gateway_broker_connected ") +
           (requester.session().connected() ? "1" : "0") + "\n";
    const auto stats = requester.stats();
    out +=
        "# HELP hom_gateway_mqtt_replies_total Device replies matched to a request of this "
        "instance.\n";
    out += "# TYPE hom_gateway_mqtt_replies_total counter\n";
    out += "hom_gateway_mqtt_replies_total " + std::to_string(stats.replies) + "\n";
    out +=
        "# HELP hom_gateway_mqtt_unmatched_total Messages on this instance's reply topics that "
        "answer none of its requests (late, or not its own).\n";
    out += "# TYPE hom_gateway_mqtt_unmatched_total counter\n";
    out += "hom_gateway_mqtt_unmatched_total " + std::to_string(stats.unmatched) + "\n";
    out += "# HELP hom_gateway_request_duration_seconds Time from request to response.\n";
    out += "# TYPE hom_gateway_request_duration_seconds histogram\n";
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i <= kBuckets.size(); ++i) {
      cumulative += metrics.latency[i];
      const std::string le = i < kBuckets.size() ? fmt::format("{}", kBuckets[i]) : "+Inf";
      out += "hom_gateway_request_duration_seconds_bucket{le=\"" + le + "\"} " +
             std::to_string(cumulative) + "\n";
    }
    out += fmt::format("hom_gateway_request_duration_seconds_sum {}\n", metrics.latency_sum);
    out += "hom_gateway_request_duration_seconds_count " + std::to_string(metrics.latency_count) +
           "\n";
    return out;
  }

  const GatewayConfig config;
  const std::vector<Token> tokens;
  Requester& requester;
  net::io_context ioc{1};
  tcp::acceptor acceptor;
  std::thread thread;
  std::atomic<std::size_t> connections{0};
  std::atomic<std::size_t> in_flight{0};
  std::atomic<bool> draining{false};
  GatewayMetrics metrics;  // I/O thread only
  std::mutex idle_mu;
  std::condition_variable idle_cv;  // signalled when in_flight drops to 0
  std::mutex live_mu;
  std::vector<std::weak_ptr<Connection>> live;  // guarded by live_mu: for finish()
};

// One HTTP connection: reads one request at a time (pipelined requests wait in the buffer),
// answers it, then reads the next. Lives as long as an operation holds it.
class Server::Impl::Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(std::shared_ptr<Impl> server, tcp::socket socket)
      : server_(std::move(server)), stream_(std::move(socket)) {
    ++server_->connections;
  }
  ~Connection() { --server_->connections; }

  void start() {
    {
      std::lock_guard<std::mutex> lock(server_->live_mu);
      auto& live = server_->live;
      if (live.size() > 2 * server_->connections + 64)
        live.erase(
            std::remove_if(live.begin(), live.end(), [](const auto& w) { return w.expired(); }),
            live.end());
      live.push_back(weak_from_this());
    }
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read(); });
  }

  // Only once the I/O thread has stopped (Impl::finish()).
  void abort_now() {
    beast::error_code ignored;
    timer_.cancel();
    stream_.socket().close(ignored);
  }

 private:
  using Response = http::response<http::string_body>;

  // Waits for the next request's first byte (GATEWAY_IDLE_TIMEOUT_MS on a kept-alive
  // connection, GATEWAY_REQUEST_TIMEOUT_MS on a new one), then reads the request, head and
  // body, within GATEWAY_REQUEST_TIMEOUT_MS. Pipelined bytes already in the buffer start
  // the request at once.
  void read() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(server_->config.max_header_bytes));
    parser_->body_limit(server_->config.max_body_bytes);
    stream_.expires_never();  // reads are bounded by timer_, which lets a 408 be written
    if (buffer_.size() > 0) return read_request();
    arm(first_ ? server_->config.request_timeout : server_->config.idle_timeout);
    stream_.socket().async_wait(tcp::socket::wait_read,
                                [self = shared_from_this()](beast::error_code ec) {
                                  self->timer_.cancel();
                                  // Idle, or gone: closed without a word.
                                  if (ec || self->timed_out_) return self->close();
                                  self->read_request();
                                });
  }

  // The head first: a body with a Content-Length over kStreamAbove streams to the device as
  // the device asks for it (flow control end to end); a smaller one is read whole. A chunked
  // body is read whole when it ends within kStreamAbove bytes, else streamed with no length.
  void read_request() {
    arm(server_->config.request_timeout);
    parser_->body_limit(
        std::max<std::uint64_t>(server_->config.max_body_bytes, server_->config.max_upload_bytes));
    http::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec) return on_read(ec);
    const auto length = parser_->content_length();
    const auto& config = server_->config;
    // A sealed request (SPEC §8) carries its body: read whole, never streamed (it must fit
    // GATEWAY_MAX_BODY_BYTES and the broker's packet limit). Its reply may stream.
    const bool sealed = static_cast<bool>(config.sealer);
    const bool chunked = parser_->chunked() && !sealed;
    const bool stream = length && *length > kStreamAbove && !sealed;
    if (stream && *length > config.max_upload_bytes) {
      upload_over_limit_ = true;  // 413 naming GATEWAY_MAX_UPLOAD_BYTES
      return on_read(http::error::body_limit);
    }
    if (!stream && length && *length > config.max_body_bytes)
      return on_read(http::error::body_limit);
    // A client that waits for "100 Continue" before its body (curl does for large ones).
    if (beast::iequals(parser_->get()[http::field::expect], "100-continue") &&
        ((length && *length > 0) || parser_->chunked())) {
      auto interim = std::make_shared<http::response<http::empty_body>>(http::status::continue_,
                                                                        parser_->get().version());
      return http::async_write(
          stream_, *interim,
          [self = shared_from_this(), interim, stream, chunked](beast::error_code ec, std::size_t) {
            if (ec) return self->close();
            self->read_body(stream, chunked);
          });
    }
    read_body(stream, chunked);
  }

  void read_body(bool stream, bool chunked) {
    if (stream || chunked) {
      timer_.cancel();
      upload_.emplace(std::move(*parser_));
      upload_length_.reset();
      if (const auto n = upload_->content_length()) upload_length_ = *n;
      upload_failed_ = false;
      upload_over_limit_ = false;
      upload_prefix_.clear();
      if (chunked) return read_chunked_start();
      return start_upload();
    }
    parser_->body_limit(server_->config.max_body_bytes);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  // The request goes to the device; its body follows as the device asks for it.
  void start_upload() {
    first_ = false;
    started_ = Clock::now();
    request_ = {};
    request_.base() = upload_->get().base();
    stream_.expires_never();
    handle();
  }

  // A chunked body's first kStreamAbove + 1 bytes decide: the whole body when it ended
  // before, else the start of a stream (the device then needs protocol 1.1).
  void read_chunked_start() {
    auto piece = std::make_shared<std::string>(kStreamAbove + 1, '\0');
    buffer_.reserve(64 * 1024);
    prefix_phase_ = true;
    arm(server_->config.request_timeout);
    fill_upload(piece, 0, [self = shared_from_this()](std::string data, bool last, std::string) {
      self->prefix_phase_ = false;
      self->timer_.cancel();
      if (!last) {
        self->upload_prefix_ = std::move(data);
        self->upload_->body_limit(self->server_->config.max_upload_bytes);
        return self->start_upload();
      }
      if (data.size() > self->server_->config.max_body_bytes)
        return self->on_read(http::error::body_limit);
      self->first_ = false;
      self->started_ = Clock::now();
      self->request_ = {};
      self->request_.base() = self->upload_->get().base();
      self->request_.erase(http::field::transfer_encoding);
      self->request_.body() = std::move(data);
      self->upload_.reset();
      self->stream_.expires_never();
      self->handle();
    });
  }

  // The device's next ask for upload bytes: a piece of `max` bytes (or the rest), read
  // straight from the client's socket (after what a chunked body's start left).
  void read_upload(std::size_t max, Requester::Call::Stream::Give give) {
    if (!upload_ || upload_failed_) return;
    if (!upload_prefix_.empty()) {
      std::string piece;
      if (upload_prefix_.size() <= max) {
        piece.swap(upload_prefix_);
      } else {
        piece = upload_prefix_.substr(0, max);
        upload_prefix_.erase(0, max);
      }
      return give(std::move(piece), false, {});  // more followed it: the end is still to come
    }
    if (upload_->is_done()) return give({}, true, {});
    auto piece = std::make_shared<std::string>(max, '\0');
    // Reads of up to 64 KiB (Beast sizes them by the buffer's free capacity).
    buffer_.reserve(64 * 1024);
    fill_upload(piece, 0, std::move(give));
  }

  void fill_upload(std::shared_ptr<std::string> piece, std::size_t got,
                   Requester::Call::Stream::Give give) {
    upload_->get().body().data = piece->data() + got;
    upload_->get().body().size = piece->size() - got;
    upload_->get().body().more = true;
    // A client that stops sending (a chunked body's start is bounded by timer_ instead).
    if (!prefix_phase_) stream_.expires_after(server_->config.request_timeout);
    http::async_read_some(
        stream_, buffer_, *upload_,
        [self = shared_from_this(), piece, got, give](beast::error_code ec, std::size_t) mutable {
          self->stream_.expires_never();
          if (ec == http::error::need_buffer) ec = {};
          if (ec || !self->upload_) {
            // Before the device was asked (a chunked body's start): answered here.
            if (self->prefix_phase_) {
              self->prefix_phase_ = false;
              self->upload_.reset();
              return self->on_read(ec);  // 408 when timed out, 413 over the limit, ...
            }
            // The client went away, sent garbage or too much: the device is told, aborts
            // the call and answers (413 to the client when over the limit).
            self->upload_failed_ = true;
            self->upload_over_limit_ = ec == http::error::body_limit;
            return give({}, true,
                        self->upload_over_limit_
                            ? "the request body is over the gateway's GATEWAY_MAX_UPLOAD_BYTES"
                            : "the client's request body broke off: " + ec.message());
          }
          const std::size_t total = piece->size() - self->upload_->get().body().size;
          const bool last = self->upload_->is_done();
          if (!last && total < piece->size())
            return self->fill_upload(std::move(piece), total, std::move(give));
          piece->resize(total);
          give(std::move(*piece), last, {});
        });
  }

  // Cancels what the socket is waiting for once `d` has passed (timed_out_ says so).
  void arm(std::chrono::milliseconds d) {
    timed_out_ = false;
    timer_.expires_after(d);
    timer_.async_wait([self = shared_from_this()](beast::error_code ec) {
      if (ec) return;  // cancelled: the wait ended in time
      self->timed_out_ = true;
      beast::error_code ignored;
      self->stream_.socket().cancel(ignored);
    });
  }

  void on_read(beast::error_code ec) {
    timer_.cancel();
    first_ = false;
    if (ec && timed_out_) {
      // The request began but did not arrive in time: 408 (the client may read it).
      return fail(http::status::request_timeout,
                  "request not received within GATEWAY_REQUEST_TIMEOUT_MS (" +
                      std::to_string(server_->config.request_timeout.count()) + " ms)",
                  false);
    }
    if (ec == http::error::end_of_stream || ec == net::error::eof ||
        ec == net::error::connection_reset || ec == net::error::operation_aborted)
      return close();
    if (ec == http::error::header_limit)
      return fail(http::status::request_header_fields_too_large, "headers over the limit", false);
    if (ec == http::error::body_limit && upload_over_limit_) {
      upload_over_limit_ = false;
      return fail(http::status::payload_too_large,
                  "body over GATEWAY_MAX_UPLOAD_BYTES (" +
                      std::to_string(server_->config.max_upload_bytes) + ")",
                  false);
    }
    if (ec == http::error::body_limit)
      return fail(http::status::payload_too_large,
                  "body over GATEWAY_MAX_BODY_BYTES (" +
                      std::to_string(server_->config.max_body_bytes) + ")",
                  false);
    if (ec) return fail(http::status::bad_request, "malformed HTTP: " + ec.message(), false);
    started_ = Clock::now();
    request_ = parser_->release();
    stream_.expires_never();  // the wait for the device has its own deadline
    handle();
  }

  void handle() {
    const auto target = std::string(request_.target());
    const std::string method = std::string(request_.method_string());
    if (target == "/_hom/health") {
      const bool up = server_->requester.session().connected();
      return send_text(up ? http::status::ok : http::status::service_unavailable,
                       up ? "ok\n" : "broker unreachable\n", "text/plain");
    }
    if (target == "/_hom/metrics")
      return send_text(http::status::ok, server_->metrics_text(), "text/plain; version=0.0.4");
    const auto r = route(server_->config, target, request_[http::field::host]);
    if (!r) return fail(http::status::not_found, "no device in the request", true);
    device_ = r->device;
    path_ = "/" + r->path;
    if (!server_->config.auth_none) {
      const std::string plain = "/" + percent_decode(r->path.substr(0, r->path.find('?')));
      const auto auth =
          authorize(server_->tokens, request_[http::field::authorization], device_, method, plain);
      token_name_ = auth.token_name;
      if (auth.result == AuthResult::kUnauthenticated)
        return fail(http::status::unauthorized, "a valid bearer token is required", true);
      if (auth.result == AuthResult::kForbidden)
        return fail(http::status::forbidden, "the token does not allow this device, method or path",
                    true);
    }
    if (server_->draining) return fail(http::status::service_unavailable, "shutting down", true);
    if (!server_->requester.session().connected())
      return fail(http::status::service_unavailable, "broker unreachable", true);
    if (server_->in_flight >= server_->config.max_inflight)
      return fail(http::status::service_unavailable,
                  "too many requests waiting (GATEWAY_MAX_INFLIGHT)", true);

    auto timeout = server_->config.timeout;
    if (const auto h = request_.find("Hom-Timeout"); h != request_.end()) {
      const auto asked = parse_hom_timeout(h->value());
      if (!asked) return fail(http::status::bad_request, "Hom-Timeout is not a duration", true);
      timeout = std::min(timeout, *asked);
    }
    Requester::Call call;
    Requester::Call::Stream stream;
    std::weak_ptr<Connection> weak = shared_from_this();
    call.device = device_;
    call.verb = method;
    call.path = r->path;
    call.timeout = timeout;
    call.listen_mirrored = false;
    call.request = to_envelope();
    if (upload_) {
      stream.upload_length = upload_length_;
      stream.next_upload = [weak](std::size_t max, Requester::Call::Stream::Give give) {
        if (auto self = weak.lock()) {
          net::post(self->stream_.get_executor(), [self, max, give = std::move(give)]() mutable {
            self->read_upload(max, std::move(give));
          });
        }
      };
    }
    // Protocol 1.1: a large or streaming reply is relayed as it arrives (SPEC §7). The
    // callbacks run on Paho's thread: each hands over to this connection's strand.

    stream.on_head = [weak](const ReplyEnvelope& head) {
      if (auto self = weak.lock())
        net::post(self->stream_.get_executor(), [self, head] { self->on_stream_head(head); });
    };
    stream.on_data = [weak](std::string data, std::function<void()> consumed) {
      if (auto self = weak.lock()) {
        net::post(self->stream_.get_executor(),
                  [self, data = std::move(data), consumed = std::move(consumed)]() mutable {
                    self->on_stream_data(std::move(data), std::move(consumed));
                  });
      }
    };
    // Sealed, a streamed reply's body is authenticated piece by piece (an upload is not
    // streamed then: the body was read whole).
    call.sealer = server_->config.sealer;
    call.stream = std::move(stream);
    ++server_->in_flight;
    server_->requester.start(std::move(call), [self = shared_from_this()](Requester::Result res) {
      // On Paho's or the requester's thread: hand over to this connection's strand.
      net::post(self->stream_.get_executor(),
                [self, res = std::move(res)]() mutable { self->on_result(std::move(res)); });
    });
  }

  // The HTTP request as a request envelope: headers (minus hop-by-hop ones and the gateway's
  // own), the body as text when it is UTF-8, else as bytes; the reply's headers always.
  RequestEnvelope to_envelope() const {
    RequestEnvelope e;
    for (const auto& field : request_) {
      const std::string name(field.name_string());
      if (is_gateway_dropped_header(name)) continue;
      std::string lowered = name;
      for (auto& c : lowered) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      // HTTP allows a name twice; the payload takes each once: join them as HTTP does.
      const auto same = std::find_if(e.headers.begin(), e.headers.end(),
                                     [&](const auto& h) { return h.first == lowered; });
      if (same == e.headers.end()) {
        e.headers.emplace_back(lowered, std::string(field.value()));
      } else {
        same->second += (lowered == "cookie" ? "; " : ", ") + std::string(field.value());
      }
    }
    e.include_headers = true;
    e.raw = true;  // the body comes back byte for byte, never re-serialised as JSON
    const std::string& body = request_.body();
    if (!body.empty()) {
      e.body_kind =
          is_valid_utf8(body) ? RequestEnvelope::Body::kText : RequestEnvelope::Body::kBytes;
      e.body = body;
    }
    return e;
  }

  // A streamed reply's head: the status line and headers go out now, the body as it comes,
  // with the device's Content-Length when it gave one, else chunked (HTTP/1.1) or up to the
  // connection's close (HTTP/1.0).
  void on_stream_head(const ReplyEnvelope& head) {
    if (head.status < 200 || head.status > 999) return;  // on_result answers 502
    streaming_ = true;
    auto res = std::make_shared<http::response<http::empty_body>>(
        static_cast<http::status>(head.status), request_.version());
    std::optional<std::string> length;
    for (const auto& [name, value] : head.headers) {
      if (!is_token(name) || value.find_first_of(std::string_view("\r\n\0", 3)) != value.npos)
        continue;
      if (beast::iequals(name, "content-length")) {
        length = value;
        continue;
      }
      if (!is_hop_by_hop_response_header(name)) res->insert(name, value);
    }
    res->set(http::field::server, kServerName);
    const unsigned status = res->result_int();
    const bool no_body = request_.method() == http::verb::head || status == 204 || status == 304;
    if (no_body) {
      if (request_.method() == http::verb::head && length)
        res->set(http::field::content_length, *length);
    } else if (length) {
      res->set(http::field::content_length, *length);
    } else if (request_.version() >= 11) {
      chunked_ = true;
      res->chunked(true);
    } else {
      stream_keep_alive_ = false;
    }
    stream_keep_alive_ = stream_keep_alive_ && request_.keep_alive() && !server_->draining &&
                         !(upload_ && !upload_->is_done());
    res->keep_alive(stream_keep_alive_);
    auto sr = std::make_shared<http::response_serializer<http::empty_body>>(*res);
    writing_ = true;
    stream_.expires_never();
    http::async_write_header(
        stream_, *sr, [self = shared_from_this(), res, sr](beast::error_code ec, std::size_t) {
          self->writing_ = false;
          if (ec) return self->abort_stream();
          self->write_next();
        });
  }

  void on_stream_data(std::string data, std::function<void()> consumed) {
    if (request_.method() == http::verb::head) return consumed();
    pending_writes_.emplace_back(std::move(data), std::move(consumed));
    if (!writing_) write_next();
  }

  // Writes queued body pieces one at a time; each is acknowledged to the device once the
  // socket took it, so a slow client slows the device down instead of filling memory.
  void write_next() {
    if (writing_ || !streaming_) return;
    if (pending_writes_.empty()) {
      if (stream_done_) end_stream();
      return;
    }
    writing_ = true;
    auto piece = std::make_shared<std::pair<std::string, std::function<void()>>>(
        std::move(pending_writes_.front()));
    pending_writes_.pop_front();
    stream_.expires_after(server_->config.request_timeout);  // a client that stops reading
    const auto done = [self = shared_from_this(), piece](beast::error_code ec, std::size_t) {
      self->writing_ = false;
      if (ec) return self->abort_stream();
      piece->second();
      self->write_next();
    };
    if (chunked_) {
      net::async_write(stream_, http::make_chunk(net::buffer(piece->first)), done);
    } else {
      net::async_write(stream_, net::buffer(piece->first), done);
    }
  }

  void end_stream() {
    const auto finish = [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->close();
      self->streaming_ = false;
      self->stream_done_ = false;
      self->chunked_ = false;
      self->device_.clear();
      self->token_name_.clear();
      if (!self->stream_keep_alive_) return self->linger();
      self->stream_keep_alive_ = true;
      self->read();
    };
    if (chunked_) {
      writing_ = true;
      net::async_write(stream_, http::make_chunk_last(),
                       [self = shared_from_this(), finish](beast::error_code ec, std::size_t n) {
                         self->writing_ = false;
                         finish(ec, n);
                       });
    } else {
      finish({}, 0);
    }
  }

  // The stream broke (the device's checks failed, it stalled, the client went away): the
  // client must not take a cut-off body for a complete one, so the connection is closed
  // without the terminating chunk.
  void abort_stream() {
    pending_writes_.clear();
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
  }

  void log_stream(int status, const Requester::Result& result) {
    const double seconds = std::chrono::duration<double>(Clock::now() - started_).count();
    server_->metrics.record(status, seconds);
    spdlog::info("{} {} {} {} -> {} streamed {} bytes ({:.1f} ms){}",
                 token_name_.empty() ? "-" : token_name_, device_,
                 std::string(request_.method_string()), path_, status, result.stream_bytes,
                 seconds * 1000, result.error.empty() ? "" : ": " + result.error);
  }

  void on_result(Requester::Result result) {
    --server_->in_flight;
    if (server_->in_flight == 0) server_->idle_cv.notify_all();
    // A streamed upload the device answered before taking all of it (a refusal, a failure):
    // the rest of the body is still on the connection, so it closes after the response.
    if (upload_ && !upload_->is_done()) upload_unread_ = true;
    upload_.reset();
    if (upload_over_limit_ && !streaming_) {
      upload_over_limit_ = false;
      return fail(http::status::payload_too_large,
                  "body over GATEWAY_MAX_UPLOAD_BYTES (" +
                      std::to_string(server_->config.max_upload_bytes) + ")",
                  false);
    }
    if (streaming_) {
      log_stream(result.reply.status, result);
      if (result.outcome != Requester::Outcome::kReply) return abort_stream();
      stream_done_ = true;
      return write_next();
    }
    switch (result.outcome) {
      case Requester::Outcome::kOffline: {
        Response res = error_response(http::status::service_unavailable, "device offline");
        res.set(http::field::retry_after, std::to_string(kRetryAfterS));
        return send(std::move(res));
      }
      case Requester::Outcome::kTimeout:
        return fail(http::status::gateway_timeout, "no reply from the device in time", true);
      case Requester::Outcome::kStreamError:
        return fail(http::status::bad_gateway,
                    "the device's streamed reply failed: " + result.error, false);
      case Requester::Outcome::kUnverified:
        return fail(http::status::bad_gateway, result.error, false);
      case Requester::Outcome::kTooLarge:
        return fail(http::status::payload_too_large, result.error, true);
      case Requester::Outcome::kReply:
        break;
    }
    const ReplyEnvelope& reply = result.reply;
    // A reply is untrusted: an interim (1xx) status is no final response.
    if (reply.status < 200 || reply.status > 999)
      return fail(http::status::bad_gateway, "the device's reply has no valid status", true);
    if (!reply.error.empty()) {
      // A status homd produced itself: its reason goes in Hom-Error.
      return send(error_response(static_cast<http::status>(reply.status), reply.error));
    }
    Response res{static_cast<http::status>(reply.status), request_.version()};
    for (const auto& [name, value] : reply.headers) {
      // Nothing that could split the response or smuggle a header in.
      if (!is_token(name) || value.find_first_of(std::string_view("\r\n\0", 3)) != value.npos)
        continue;
      if (request_.method() == http::verb::head && beast::iequals(name, "content-length"))
        head_length_ = value;  // what a GET would have sent
      if (!is_hop_by_hop_response_header(name)) res.insert(name, value);
    }
    if (request_.method() != http::verb::head) res.body() = reply.content;
    send(std::move(res));
  }

  Response error_response(http::status status, const std::string& reason) {
    Response res{status, request_.version()};
    res.set(http::field::content_type, "application/json");
    res.set("Hom-Error", reason);
    res.body() = json({{"error", reason}}).dump() + "\n";
    return res;
  }

  void fail(http::status status, const std::string& reason, bool keep_alive) {
    Response res = error_response(status, reason);
    if (status == http::status::unauthorized) res.set(http::field::www_authenticate, "Bearer");
    if (!keep_alive) res.keep_alive(false);
    send(std::move(res), keep_alive);
  }

  void send_text(http::status status, std::string body, const char* type) {
    Response res{status, request_.version()};
    res.set(http::field::content_type, type);
    res.body() = std::move(body);
    send(std::move(res));
  }

  void send(Response res, bool keep_alive = true) {
    res.set(http::field::server, kServerName);
    if (std::exchange(upload_unread_, false)) keep_alive = false;
    keep_alive = keep_alive && request_.keep_alive() && !server_->draining;
    res.keep_alive(keep_alive);
    frame(res);
    const int status = res.result_int();
    const double seconds = std::chrono::duration<double>(Clock::now() - started_).count();
    server_->metrics.record(status, seconds);
    if (!device_.empty())
      spdlog::info("{} {} {} {} -> {} ({:.1f} ms)", token_name_.empty() ? "-" : token_name_,
                   device_, std::string(request_.method_string()), path_, status, seconds * 1000);
    response_ = std::make_shared<Response>(std::move(res));
    stream_.expires_after(server_->config.request_timeout);
    http::async_write(stream_, *response_,
                      [self = shared_from_this(), keep_alive](beast::error_code ec, std::size_t) {
                        if (ec) return self->close();
                        if (!keep_alive) return self->linger();
                        self->response_.reset();
                        self->device_.clear();
                        self->token_name_.clear();
                        self->head_length_.reset();
                        self->read();
                      });
  }

  // Content-Length (or none) for the response: 1xx, 204 and 304 carry no body and no
  // length; a HEAD carries the length the device gave for its GET.
  void frame(Response& res) const {
    const unsigned status = res.result_int();
    res.erase(http::field::transfer_encoding);
    if (status < 200 || status == 204 || status == 304) {
      res.body().clear();
      res.erase(http::field::content_length);
      return;
    }
    if (request_.method() == http::verb::head) {
      res.body().clear();
      if (head_length_) res.set(http::field::content_length, *head_length_);
      return;
    }
    res.prepare_payload();
  }

  void close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  // After a response that closes the connection: stop sending, then read and discard what
  // the client still sends (a body we refused, a pipelined request) for a bounded time and
  // amount, so that closing does not reset the connection before the client has read the
  // response.
  void linger() {
    close();
    linger_buffer_.resize(4096);  // only now: an open connection costs no buffer for this
    arm(kLinger);
    discard(0);
  }

  void discard(std::size_t so_far) {
    stream_.socket().async_read_some(
        net::buffer(linger_buffer_.data(), linger_buffer_.size()),
        [self = shared_from_this(), so_far](beast::error_code ec, std::size_t n) {
          if (ec || self->timed_out_ || so_far + n > kLingerBytes) {
            self->timer_.cancel();
            return;
          }
          self->discard(so_far + n);
        });
  }

  static constexpr std::chrono::milliseconds kLinger{2000};
  static constexpr std::size_t kLingerBytes = 4 * 1024 * 1024;

  std::shared_ptr<Impl> server_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> request_;
  std::shared_ptr<Response> response_;
  Clock::time_point started_ = Clock::now();
  std::string device_, path_, token_name_;
  std::optional<std::string> head_length_;  // HEAD: the device's Content-Length
  net::steady_timer timer_{stream_.get_executor()};
  bool timed_out_ = false;           // timer_ expired and cancelled the socket's wait
  std::vector<char> linger_buffer_;  // while lingering only
  bool first_ = true;
  // A streamed reply (on_stream_head ... end_stream).
  bool streaming_ = false;
  bool chunked_ = false;
  bool writing_ = false;
  bool stream_done_ = false;  // the requester reported the end: write the rest, then finish
  bool stream_keep_alive_ = true;
  std::deque<std::pair<std::string, std::function<void()>>> pending_writes_;
  // A streamed upload: a body with a Content-Length over kStreamAbove, or a chunked one that
  // goes on past it.
  static constexpr std::uint64_t kStreamAbove = 64 * 1024;
  std::optional<http::request_parser<http::buffer_body>> upload_;
  std::optional<std::uint64_t> upload_length_;  // none for a chunked body
  // A chunked body's first bytes, not yet given to the device.
  std::string upload_prefix_;
  // Reading a chunked body's start: the device not asked yet.
  bool prefix_phase_ = false;
  // The body is over GATEWAY_MAX_UPLOAD_BYTES: the answer is 413.
  bool upload_over_limit_ = false;
  bool upload_failed_ = false;
  bool upload_unread_ = false;
};

void Server::Impl::accept() {
  acceptor.async_accept(
      net::make_strand(ioc), [self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
        if (ec) {
          if (ec != net::error::operation_aborted) spdlog::warn("accept: {}", ec.message());
          if (!self->draining) self->accept();
          return;
        }
        if (self->connections >= self->config.max_connections) {
          beast::error_code ignored;
          socket.shutdown(tcp::socket::shutdown_both, ignored);  // over GATEWAY_MAX_CONNECTIONS
        } else {
          std::make_shared<Connection>(self, std::move(socket))->start();
        }
        self->accept();
      });
}

Server::Server(const GatewayConfig& config, std::vector<Token> tokens, Requester& requester)
    : impl_(std::make_shared<Impl>(config, std::move(tokens), requester)) {}

Server::~Server() { drain(std::chrono::milliseconds(0)); }

void Server::start() {
  Impl& s = *impl_;
  beast::error_code ec;
  const auto address = net::ip::make_address(s.config.listen_host, ec);
  if (ec)
    throw std::runtime_error("GATEWAY_LISTEN: '" + s.config.listen_host + "' is not an IP address");
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(s.config.listen_port));
  s.acceptor.open(endpoint.protocol(), ec);
  if (!ec) s.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(endpoint, ec);
  if (!ec) s.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    throw std::runtime_error("cannot listen on " + s.config.listen_host + ":" +
                             std::to_string(s.config.listen_port) + ": " + ec.message());
  s.accept();
  s.thread = std::thread([impl = impl_] { impl->ioc.run(); });
}

int Server::port() const {
  return impl_->acceptor.is_open() ? impl_->acceptor.local_endpoint().port() : 0;
}

std::size_t Server::in_flight() const { return impl_->in_flight; }

void Server::Impl::finish() {
  std::vector<std::shared_ptr<Connection>> open;
  {
    std::lock_guard<std::mutex> lock(live_mu);
    for (const auto& w : live)
      if (auto c = w.lock()) open.push_back(std::move(c));
    live.clear();
  }
  for (const auto& c : open) c->abort_now();
  open.clear();
  beast::error_code ignored;
  acceptor.close(ignored);
  ioc.restart();
  ioc.run();
}

void Server::drain(std::chrono::milliseconds grace) {
  Impl& s = *impl_;
  if (s.draining.exchange(true) && !s.thread.joinable()) {
    s.finish();  // completions posted since the last time
    return;
  }
  net::post(s.ioc, [impl = impl_] {
    beast::error_code ignored;
    impl->acceptor.close(ignored);
  });
  {
    std::unique_lock<std::mutex> lock(s.idle_mu);
    s.idle_cv.wait_for(lock, grace, [&] { return s.in_flight == 0; });
  }
  s.ioc.stop();
  if (s.thread.joinable()) s.thread.join();
  s.finish();
}

}  // namespace hom::gateway
