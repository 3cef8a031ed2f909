#include "server/http/http_server.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "core/error.h"
#include "server/http/stream.h"

namespace qed::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

class Connection;

// Handlers capture a raw ServerState*: it outlives the io_context that owns them (member order below).
struct ServerState {
  ServerConfig config;
  Router router;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::mutex mutex;
  std::set<std::shared_ptr<Connection>> connections;
  std::atomic<bool> stopping{false};
  asio::steady_timer grace_timer{io};

  void accept();
  void forget(const std::shared_ptr<Connection>& c);
  void maybe_finish();
};

// One TCP connection: read a request, dispatch, write the response, repeat while keep-alive holds.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, ServerState* server) : stream_(std::move(socket)), server_(server) {}

  void start() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->read(); });
  }

  // Called on shutdown: idle connections close now, busy ones close after their response.
  void close_if_idle() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      if (!self->busy_) self->close();
    });
  }
  void close_soon() {
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->close(); });
  }

 private:
  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.close();
  }

  void read() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(server_->config.max_header_bytes));
    parser_->body_limit(server_->config.max_body_bytes);
    stream_.expires_after(server_->config.read_timeout);
    bhttp::async_read(stream_, buffer_, *parser_,
                      [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == bhttp::error::end_of_stream || ec == asio::error::operation_aborted || ec == beast::error::timeout ||
        ec == asio::error::connection_reset || ec == asio::error::eof) {
      return finish();
    }
    if (ec == bhttp::error::body_limit) {
      keep_alive_ = false;
      return write(
          Response::error(413, "request body exceeds " + std::to_string(server_->config.max_body_bytes) + " bytes"));
    }
    if (ec == bhttp::error::header_limit) {
      keep_alive_ = false;
      return write(Response::error(
          431, "request headers exceed " + std::to_string(server_->config.max_header_bytes) + " bytes"));
    }
    if (ec) {
      keep_alive_ = false;
      if (ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category() ||
          ec == bhttp::error::partial_message) {
        return write(Response::error(400, "malformed HTTP request: " + ec.message()));
      }
      return finish();
    }
    auto message = parser_->release();
    keep_alive_ = message.keep_alive() && !server_->stopping;
    request_ = Request{};
    request_.method = std::string(message.method_string());
    request_.target = std::string(message.target());
    for (const auto& field : message) {
      request_.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    request_.body = std::move(message.body());
    request_.client = std::make_shared<ClientWatch>();
    if (!parse_target(request_.target, request_.path, request_.query)) {
      return write(Response::error(400, "malformed percent-encoding in " + request_.target));
    }
    busy_ = true;
    stream_.expires_never();  // the handler may legitimately take long (a sandbox call runs for its timeout)
    auto self = shared_from_this();
    watch_client(request_.client);
    server_->router.dispatch(request_, [self](Response response) {
      asio::post(self->stream_.get_executor(),
                 [self, r = std::move(response)]() mutable { self->write(std::move(r)); });
    });
  }

  // While a handler works (or streams), a readable socket that yields EOF or an error means the client is gone.
  // Pipelined bytes end the watch instead (they are read after the response). The reactor may report the socket
  // readable when it is not (an edge left over from bytes a speculative read already took), so the peek must not
  // block: a blocking peek there pins this connection's strand, and the response it waits for never gets written.
  void watch_client(std::shared_ptr<ClientWatch> watch) {
    stream_.socket().async_wait(tcp::socket::wait_read, [self = shared_from_this(), watch](beast::error_code ec) {
      if (!self->busy_ || watch != self->request_.client || ec == asio::error::operation_aborted) return;
      if (ec) return watch->notify_disconnected();
      char byte = 0;
      const ssize_t n = ::recv(self->stream_.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
      if (n > 0) return;  // pipelined request bytes: read after this response
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return self->watch_client(watch);
      watch->notify_disconnected();
    });
  }

  void write(Response r) {
    busy_ = true;
    if (r.stream) return write_stream(std::move(r));
    auto out = std::make_shared<bhttp::response<bhttp::string_body>>();
    out->version(11);
    out->result(static_cast<unsigned>(r.status));
    out->set(bhttp::field::server, server_->config.server_name);
    out->set(bhttp::field::content_type, r.content_type);
    for (auto& [k, v] : r.headers) out->set(k, v);
    out->body() = std::move(r.body);
    out->keep_alive(keep_alive_ && !server_->stopping);
    out->prepare_payload();
    stream_.expires_after(server_->config.write_timeout);
    bhttp::async_write(stream_, *out, [self = shared_from_this(), out](beast::error_code ec, size_t) {
      self->busy_ = false;
      if (ec || !out->keep_alive()) {
        self->close();
        return self->finish();
      }
      self->read();
    });
  }

  // Streamed body: the header now, then each batch of pending bytes as one HTTP chunk, then the last chunk.
  void write_stream(Response r) {
    auto head = std::make_shared<bhttp::response<bhttp::empty_body>>();
    head->version(11);
    head->result(static_cast<unsigned>(r.status));
    head->set(bhttp::field::server, server_->config.server_name);
    head->set(bhttp::field::content_type, r.content_type);
    for (auto& [k, v] : r.headers) head->set(k, v);
    head->keep_alive(keep_alive_ && !server_->stopping);
    head->chunked(true);
    out_stream_ = std::move(r.stream);
    std::weak_ptr<Connection> weak = shared_from_this();
    out_stream_->set_waker([weak] {
      if (auto self = weak.lock()) asio::post(self->stream_.get_executor(), [self] { self->pump(); });
    });
    auto serializer = std::make_shared<bhttp::response_serializer<bhttp::empty_body>>(*head);
    stream_writing_ = true;
    stream_.expires_after(server_->config.write_timeout);
    bhttp::async_write_header(stream_, *serializer,
                              [self = shared_from_this(), head, serializer](beast::error_code ec, size_t) {
                                self->stream_writing_ = false;
                                if (ec) return self->stream_failed();
                                self->stream_keep_alive_ = head->keep_alive();
                                self->pump();
                              });
  }

  void pump() {
    if (stream_writing_ || !out_stream_) return;
    ResponseStream::Taken taken = out_stream_->take();
    if (!taken.data.empty()) {
      stream_writing_ = true;
      auto data = std::make_shared<std::string>(std::move(taken.data));
      stream_.expires_after(server_->config.write_timeout);
      asio::async_write(stream_, bhttp::make_chunk(asio::buffer(*data)),
                        [self = shared_from_this(), data](beast::error_code ec, size_t) {
                          self->stream_writing_ = false;
                          self->stream_.expires_never();
                          if (ec) return self->stream_failed();
                          self->pump();
                        });
      return;
    }
    if (!taken.closed) return;
    stream_writing_ = true;
    stream_.expires_after(server_->config.write_timeout);
    asio::async_write(stream_, bhttp::make_chunk_last(), [self = shared_from_this()](beast::error_code ec, size_t) {
      self->stream_writing_ = false;
      self->out_stream_->set_waker(nullptr);
      const bool cancelled = self->out_stream_->cancelled();
      self->out_stream_.reset();
      self->busy_ = false;
      if (ec || cancelled || !self->stream_keep_alive_ || self->server_->stopping) {
        self->close();
        return self->finish();
      }
      self->read();
    });
  }

  void stream_failed() {
    out_stream_->cancel();
    out_stream_.reset();
    if (request_.client) request_.client->notify_disconnected();
    busy_ = false;
    finish();
  }

  void finish() {
    close();
    server_->forget(shared_from_this());
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  ServerState* server_;
  Request request_;
  bool keep_alive_ = true;
  bool busy_ = false;
  std::shared_ptr<ResponseStream> out_stream_;  // the body being streamed, if any
  bool stream_writing_ = false;
  bool stream_keep_alive_ = false;
};

void ServerState::accept() {
  acceptor.async_accept(asio::make_strand(io), [self = this](beast::error_code ec, tcp::socket s) {
    if (ec) {
      if (!self->stopping && ec != asio::error::operation_aborted) {
        spdlog::warn("http: accept failed: {}", ec.message());
        self->accept();
      }
      return;
    }
    if (self->stopping) return;
    auto c = std::make_shared<Connection>(std::move(s), self);
    {
      std::lock_guard lock(self->mutex);
      self->connections.insert(c);
    }
    c->start();
    self->accept();
  });
}

void ServerState::forget(const std::shared_ptr<Connection>& c) {
  {
    std::lock_guard lock(mutex);
    connections.erase(c);
  }
  if (stopping) maybe_finish();
}

void ServerState::maybe_finish() {
  std::lock_guard lock(mutex);
  if (connections.empty() && work) {
    work.reset();
    grace_timer.cancel();
  }
}

struct HttpServer::Impl : ServerState {};

HttpServer::HttpServer(ServerConfig config, Router router) : impl_(std::make_unique<Impl>()) {
  impl_->config = std::move(config);
  impl_->router = std::move(router);
  beast::error_code ec;
  auto address = asio::ip::make_address(impl_->config.host, ec);
  if (ec) fail("http: '{}' is not an IP address: {}", impl_->config.host, ec.message());
  tcp::endpoint endpoint(address, impl_->config.port);
  impl_->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(endpoint, ec);
  if (!ec) impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) fail("http: cannot listen on {}:{}: {}", impl_->config.host, impl_->config.port, ec.message());
  impl_->work.emplace(impl_->io.get_executor());
}

HttpServer::~HttpServer() {
  stop();
  impl_->io.stop();
}

uint16_t HttpServer::port() const {
  return impl_->acceptor.local_endpoint().port();
}

void HttpServer::run() {
  impl_->accept();
  std::vector<std::thread> threads;
  for (int i = 1; i < impl_->config.io_threads; ++i) threads.emplace_back([this] { impl_->io.run(); });
  impl_->io.run();
  for (auto& t : threads) t.join();
}

void HttpServer::stop() {
  if (impl_->stopping.exchange(true)) return;
  asio::post(impl_->io, [impl = impl_.get()] {
    beast::error_code ec;
    impl->acceptor.close(ec);
    std::vector<std::shared_ptr<Connection>> open;
    {
      std::lock_guard lock(impl->mutex);
      open.assign(impl->connections.begin(), impl->connections.end());
    }
    // Arm the grace timer under the mutex: a connection that ends on another io thread meanwhile runs
    // maybe_finish() under it too, so it either sees the armed timer (and cancels it) or finds nothing left to wait
    // for here. Arming after an unlocked check let a connection's last forget() slip in between and the timer then
    // ran its full grace with nothing open.
    {
      std::lock_guard lock(impl->mutex);
      if (impl->connections.empty()) {
        impl->work.reset();
      } else {
        impl->grace_timer.expires_after(impl->config.shutdown_grace);
        impl->grace_timer.async_wait([impl](beast::error_code wait_ec) {
          if (wait_ec) return;  // cancelled: everything drained in time
          spdlog::warn("http: shutdown grace expired; closing busy connections");
          std::vector<std::shared_ptr<Connection>> left;
          {
            std::lock_guard inner(impl->mutex);
            left.assign(impl->connections.begin(), impl->connections.end());
            impl->connections.clear();
          }
          for (auto& c : left) c->close_soon();
          impl->work.reset();
          impl->io.stop();
        });
      }
    }
    for (auto& c : open) c->close_if_idle();
  });
}

}  // namespace qed::http
