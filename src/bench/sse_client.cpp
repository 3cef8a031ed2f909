#include "bench/sse_client.h"

#include <fmt/format.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <optional>

namespace qed::bench {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using nlohmann::json;

namespace {

bool carries_text(const json& event) {
  const auto choices = event.find("choices");
  if (choices == event.end() || !choices->is_array()) return false;
  for (const auto& c : *choices) {
    if (auto t = c.find("text"); t != c.end() && t->is_string() && !t->get_ref<const std::string&>().empty()) {
      return true;
    }
    if (auto d = c.find("delta"); d != c.end() && d->is_object()) {
      if (auto t = d->find("content"); t != d->end() && t->is_string() && !t->get_ref<const std::string&>().empty()) {
        return true;
      }
    }
  }
  return false;
}

// Splits the SSE byte stream into events ("\n\n"-terminated) and records each `data:` payload.
class SseParser {
 public:
  explicit SseParser(StreamedResponse& out) : out_(out) {}

  void feed(std::string_view bytes) {
    pending_.append(bytes);
    size_t end;
    while ((end = pending_.find("\n\n")) != std::string::npos) {
      on_event(std::string_view(pending_).substr(0, end));
      pending_.erase(0, end + 2);
    }
  }

 private:
  void on_event(std::string_view event) {
    const auto now = BenchClock::now();
    constexpr std::string_view kData = "data: ";
    if (event.substr(0, kData.size()) != kData) return;
    const std::string_view payload = event.substr(kData.size());
    if (payload == "[DONE]") {
      out_.done = true;
      return;
    }
    json parsed = json::parse(payload, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_discarded()) {
      if (out_.error.empty()) out_.error = fmt::format("unparsable SSE event: {}", payload.substr(0, 200));
      return;
    }
    if (parsed.contains("error") && out_.error.empty()) out_.error = "error event: " + parsed["error"].dump();
    if (carries_text(parsed)) out_.content_times.push_back(now);
    out_.events.push_back(std::move(parsed));
  }

  StreamedResponse& out_;
  std::string pending_;
};

}  // namespace

StreamedResponse stream_post(const std::string& host, uint16_t port, const std::string& target, const json& body,
                             const std::string& api_key, std::chrono::milliseconds timeout) {
  StreamedResponse out;
  asio::io_context io;
  beast::tcp_stream stream(io);
  beast::error_code ec;
  const auto run = [&] {
    io.restart();
    io.run();
  };
  const auto failed = [&](const char* what) {
    out.error = fmt::format("{} {}:{}{}: {}", what, host, port, target, ec.message());
    return out;
  };

  tcp::resolver resolver(io);
  const auto endpoints = resolver.resolve(host, std::to_string(port), ec);
  if (ec) return failed("resolve");
  out.sent = BenchClock::now();
  stream.expires_after(timeout);
  stream.async_connect(endpoints, [&](beast::error_code e, const tcp::endpoint&) { ec = e; });
  run();
  if (ec) return failed("connect");

  bhttp::request<bhttp::string_body> req{bhttp::verb::post, target, 11};
  req.set(bhttp::field::host, fmt::format("{}:{}", host, port));
  req.set(bhttp::field::content_type, "application/json");
  req.set(bhttp::field::accept, "text/event-stream");
  if (!api_key.empty()) req.set(bhttp::field::authorization, "Bearer " + api_key);
  req.keep_alive(false);
  req.body() = body.dump();
  req.prepare_payload();
  stream.expires_after(timeout);
  bhttp::async_write(stream, req, [&](beast::error_code e, size_t) { ec = e; });
  run();
  if (ec) return failed("write");

  beast::flat_buffer buffer;
  bhttp::response_parser<bhttp::string_body> parser;
  parser.body_limit(std::numeric_limits<std::uint64_t>::max());
  SseParser sse(out);
  // Streams come chunked; a plain (Content-Length) body is an error answer and stays in parser.get().body().
  auto on_chunk = [&](std::uint64_t, std::string_view data, beast::error_code&) -> std::size_t {
    sse.feed(data);
    return data.size();
  };
  parser.on_chunk_body(on_chunk);
  stream.expires_after(timeout);
  bhttp::async_read_header(stream, buffer, parser, [&](beast::error_code e, size_t) { ec = e; });
  run();
  if (ec) return failed("read header");
  out.status = static_cast<int>(parser.get().result_int());
  while (!parser.is_done()) {
    stream.expires_after(timeout);
    bhttp::async_read_some(stream, buffer, parser, [&](beast::error_code e, size_t) { ec = e; });
    run();
    if (ec) return failed("read");
  }
  if (out.status != 200 && out.error.empty()) {
    out.error = fmt::format("HTTP {}: {}", out.status, parser.get().body().substr(0, 300));
  }
  if (out.error.empty() && !out.done) out.error = "stream ended without data: [DONE]";
  stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  return out;
}

}  // namespace qed::bench
