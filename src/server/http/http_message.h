#pragma once
// Transport-neutral request/response values: handlers see these, never Beast types, so a handler can be
// unit-tested without a socket and the server can change its I/O without touching them.
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/http/stream.h"

namespace qed::http {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Request {
  std::string method;                              // upper case, as sent: "GET", "POST", "DELETE"
  std::string target;                              // raw request-target, query included
  std::string path;                                // percent-decoded path, no query
  std::map<std::string, std::string> query;        // decoded ?k=v pairs (last one wins)
  std::map<std::string, std::string> path_params;  // filled by the router from "{name}" segments
  Headers headers;
  std::string body;
  // Set by the server: tells a long-running handler when the client has gone away.
  std::shared_ptr<ClientWatch> client;

  // Case-insensitive header lookup (HTTP field names are case-insensitive).
  std::optional<std::string> header(std::string_view name) const;
  // The body parsed as JSON; throws HttpError(400) naming the parse problem (never lets a bad body crash).
  nlohmann::json json_body() const;
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  Headers headers;
  // Set: the body is streamed with chunked transfer encoding from this stream (`body` is ignored).
  std::shared_ptr<ResponseStream> stream;

  static Response json(int status, const nlohmann::json& value);
  static Response text(int status, std::string body, std::string content_type = "text/plain; charset=utf-8");
  // {"error": message}: the shape NeMo-Skills' sandbox and OpenAI-style clients both read.
  static Response error(int status, std::string_view message);
};

// Thrown by handlers (or json_body) to answer with an error status and {"error": message}.
class HttpError : public std::runtime_error {
 public:
  HttpError(int status, const std::string& message) : std::runtime_error(message), status_(status) {}
  int status() const { return status_; }

 private:
  int status_;
};

// Completes a request. Call it exactly once, from any thread; the Request stays valid until then.
using Respond = std::function<void(Response)>;
// Handlers that finish later (long work on another thread) take a Respond; quick ones return a Response.
using AsyncHandler = std::function<void(const Request&, Respond)>;
using Handler = std::function<Response(const Request&)>;

// Splits "/a%20b?x=1&y" into a decoded path and query map; false when the percent-encoding is malformed.
bool parse_target(std::string_view target, std::string& path, std::map<std::string, std::string>& query);
std::string percent_decode(std::string_view text, bool plus_is_space, bool& ok);

}  // namespace qed::http
