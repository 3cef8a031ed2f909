#include "server/http/router.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <exception>
#include <memory>

namespace qed::http {

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < path.size()) {
    while (i < path.size() && path[i] == '/') ++i;
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    if (j > i) out.emplace_back(path.substr(i, j - i));
    i = j;
  }
  return out;
}

namespace {

bool is_placeholder(const std::string& s) {
  return s.size() > 2 && s.front() == '{' && s.back() == '}';
}

bool match(const std::vector<std::string>& pattern, const std::vector<std::string>& path,
           std::map<std::string, std::string>& params) {
  if (pattern.size() != path.size()) return false;
  std::map<std::string, std::string> found;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (is_placeholder(pattern[i])) {
      found[pattern[i].substr(1, pattern[i].size() - 2)] = path[i];
    } else if (pattern[i] != path[i]) {
      return false;
    }
  }
  params = std::move(found);
  return true;
}

}  // namespace

void Router::add(std::string method, std::string pattern, AsyncHandler handler) {
  routes_.push_back(Route{std::move(method), split_path(pattern), std::move(handler)});
}

void Router::add_sync(std::string method, std::string pattern, Handler handler) {
  add(std::move(method), std::move(pattern),
      [h = std::move(handler)](const Request& request, Respond respond) { respond(h(request)); });
}

void Router::dispatch(Request& request, const Respond& respond) const {
  auto segments = split_path(request.path);
  bool path_known = false;
  for (const auto& route : routes_) {
    std::map<std::string, std::string> params;
    if (!match(route.segments, segments, params)) continue;
    path_known = true;
    if (route.method != request.method) continue;
    request.path_params = std::move(params);
    // A handler may throw after it has already handed `respond` to another thread; a shared flag makes sure
    // the request is answered once only.
    auto answered = std::make_shared<std::atomic<bool>>(false);
    Respond once = [respond, answered](Response r) {
      if (!answered->exchange(true)) respond(std::move(r));
    };
    try {
      route.handler(request, once);
    } catch (const HttpError& e) {
      once(Response::error(e.status(), e.what()));
    } catch (const std::exception& e) {
      spdlog::error("http: {} {}: handler failed: {}", request.method, request.path, e.what());
      once(Response::error(500, std::string("internal error: ") + e.what()));
    }
    return;
  }
  if (!path_known && fallback_) {
    try {
      fallback_(request, respond);
    } catch (const std::exception& e) {
      respond(Response::error(500, std::string("internal error: ") + e.what()));
    }
  } else if (path_known) {
    respond(Response::error(405, "method " + request.method + " not allowed on " + request.path));
  } else {
    respond(Response::error(404, "no route for " + request.path));
  }
}

}  // namespace qed::http
