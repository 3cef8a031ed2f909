#include "server/http/http_client.h"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <optional>

#include "core/error.h"

namespace qed::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

struct HttpClient::Impl {
  asio::io_context io;
  std::optional<beast::tcp_stream> stream;
  beast::flat_buffer buffer;
};

nlohmann::json ClientResponse::json() const {
  try {
    return nlohmann::json::parse(body);
  } catch (const nlohmann::json::parse_error& e) {
    fail("http response (status {}) is not JSON: {}", status, e.what());
  }
}

HttpClient::HttpClient(std::string host, uint16_t port, std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>()), host_(std::move(host)), port_(port), timeout_(timeout) {}

HttpClient::~HttpClient() = default;

namespace {

// Runs the io_context until the operation completes; the tcp_stream's own timer enforces the deadline.
void run_until_done(asio::io_context& io) {
  io.restart();
  io.run();
}

}  // namespace

ClientResponse HttpClient::request(const std::string& method, const std::string& target, const std::string& body,
                                   const Headers& headers) {
  bhttp::request<bhttp::string_body> req;
  req.method_string(method);
  req.target(target);
  req.version(11);
  req.set(bhttp::field::host, host_ + ":" + std::to_string(port_));
  req.set(bhttp::field::user_agent, "qed");
  for (const auto& [k, v] : headers) req.set(k, v);
  if (!body.empty() || method == "POST" || method == "PUT") {
    if (req.find(bhttp::field::content_type) == req.end()) req.set(bhttp::field::content_type, "application/json");
    req.body() = body;
  }
  req.keep_alive(true);
  req.prepare_payload();

  for (int attempt = 0; attempt < 2; ++attempt) {
    bool reused = impl_->stream.has_value();
    beast::error_code ec;
    if (!impl_->stream) {
      impl_->stream.emplace(impl_->io);
      impl_->buffer.clear();
      tcp::resolver resolver(impl_->io);
      auto endpoints = resolver.resolve(host_, std::to_string(port_), ec);
      if (ec) fail("http: cannot resolve {}:{}: {}", host_, port_, ec.message());
      impl_->stream->expires_after(timeout_);
      impl_->stream->async_connect(endpoints, [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
      run_until_done(impl_->io);
      if (ec) {
        impl_->stream.reset();
        fail("http: cannot connect to {}:{}: {}", host_, port_, ec.message());
      }
    }
    impl_->stream->expires_after(timeout_);
    bhttp::async_write(*impl_->stream, req, [&](beast::error_code e, size_t) { ec = e; });
    run_until_done(impl_->io);
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    if (!ec) {
      bhttp::async_read(*impl_->stream, impl_->buffer, parser, [&](beast::error_code e, size_t) { ec = e; });
      run_until_done(impl_->io);
    }
    if (ec) {
      impl_->stream.reset();
      // A keep-alive connection the server closed while idle fails on first use: retry once, fresh.
      bool stale = reused && (ec == bhttp::error::end_of_stream || ec == asio::error::connection_reset ||
                              ec == asio::error::broken_pipe || ec == asio::error::eof);
      if (stale && attempt == 0) continue;
      fail("http: {} {}:{}{} failed: {}", method, host_, port_, target, ec.message());
    }
    auto res = parser.release();
    ClientResponse out;
    out.status = static_cast<int>(res.result_int());
    for (const auto& field : res)
      out.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    out.body = std::move(res.body());
    if (!res.keep_alive()) impl_->stream.reset();
    return out;
  }
  fail("http: {} {}:{}{} failed", method, host_, port_, target);
}

ClientResponse HttpClient::post_json(const std::string& target, const nlohmann::json& body, const Headers& headers) {
  return request("POST", target, body.dump(), headers);
}

}  // namespace qed::http
