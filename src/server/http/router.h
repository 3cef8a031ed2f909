#pragma once
// Maps (method, path pattern) to handlers. Patterns are literal segments or "{name}" placeholders that match
// one non-empty segment ("/sessions/{id}"). Unknown path → 404, known path with another method → 405.
#include <string>
#include <vector>

#include "server/http/http_message.h"

namespace qed::http {

class Router {
 public:
  void add(std::string method, std::string pattern, AsyncHandler handler);
  // Quick handlers that answer inline (on the I/O thread: keep them short).
  void add_sync(std::string method, std::string pattern, Handler handler);

  // Answers requests for paths no route has (instead of the plain 404), e.g. in the API's own error shape.
  void set_fallback(AsyncHandler handler) { fallback_ = std::move(handler); }

  // Runs the matching handler; HttpError and other exceptions become error responses, never escape.
  void dispatch(Request& request, const Respond& respond) const;

 private:
  struct Route {
    std::string method;
    std::vector<std::string> segments;
    AsyncHandler handler;
  };
  std::vector<Route> routes_;
  AsyncHandler fallback_;
};

std::vector<std::string> split_path(std::string_view path);

}  // namespace qed::http
