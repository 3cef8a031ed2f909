// The generic HTTP layer (src/server/http) on a real socket: routing, limits, async answers, shutdown.
#include "server/http/http_server.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "core/error.h"
#include "server/http/http_client.h"

namespace qed::http {
namespace {

using namespace std::chrono_literals;

class RunningServer {
 public:
  explicit RunningServer(Router router, ServerConfig config = {}) : server_(config, std::move(router)) {
    thread_ = std::thread([this] { server_.run(); });
  }
  ~RunningServer() { stop(); }
  void stop() {
    server_.stop();
    if (thread_.joinable()) thread_.join();
  }
  uint16_t port() const { return server_.port(); }

 private:
  HttpServer server_;
  std::thread thread_;
};

Router test_router() {
  Router r;
  r.add_sync("GET", "/hello", [](const Request&) { return Response::text(200, "hi"); });
  r.add_sync("DELETE", "/items/{id}", [](const Request& req) {
    return Response::json(200, {{"deleted", req.path_params.at("id")}});
  });
  r.add_sync("POST", "/echo", [](const Request& req) {
    auto body = req.json_body();
    return Response::json(200, {{"got", body}, {"header", req.header("x-test").value_or("")}});
  });
  r.add_sync("GET", "/boom", [](const Request&) -> Response { throw std::runtime_error("kaput"); });
  r.add("GET", "/later", [](const Request&, Respond respond) {
    std::thread([respond] {
      std::this_thread::sleep_for(200ms);
      respond(Response::text(200, "done"));
    }).detach();
  });
  return r;
}

TEST(HttpServer, RoutesByMethodAndPath) {
  RunningServer s(test_router());
  HttpClient c("127.0.0.1", s.port());
  auto r = c.get("/hello");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "hi");
  r = c.request("DELETE", "/items/a%20b");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.json()["deleted"], "a b");
}

TEST(HttpServer, UnknownPathIs404AndWrongMethodIs405) {
  RunningServer s(test_router());
  HttpClient c("127.0.0.1", s.port());
  EXPECT_EQ(c.get("/nothing").status, 404);
  EXPECT_EQ(c.get("/items/1").status, 405);
  EXPECT_EQ(c.get("/nothing").json()["error"], "no route for /nothing");
}

TEST(HttpServer, JsonBodiesAndCaseInsensitiveHeaders) {
  RunningServer s(test_router());
  HttpClient c("127.0.0.1", s.port());
  auto r = c.post_json("/echo", {{"a", 1}}, {{"X-Test", "yes"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.json()["got"]["a"], 1);
  EXPECT_EQ(r.json()["header"], "yes");
}

TEST(HttpServer, MalformedJsonIs400WithAMessage) {
  RunningServer s(test_router());
  HttpClient c("127.0.0.1", s.port());
  auto r = c.request("POST", "/echo", "{\"a\": ");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.json()["error"].get<std::string>().find("not valid JSON"), std::string::npos);
  // The connection (and server) survive a bad request.
  EXPECT_EQ(c.get("/hello").status, 200);
}

TEST(HttpServer, HandlerExceptionIs500NotACrash) {
  RunningServer s(test_router());
  HttpClient c("127.0.0.1", s.port());
  auto r = c.get("/boom");
  EXPECT_EQ(r.status, 500);
  EXPECT_NE(r.body.find("kaput"), std::string::npos);
  EXPECT_EQ(c.get("/hello").status, 200);
}

TEST(HttpServer, BodyOverTheLimitIs413) {
  ServerConfig config;
  config.max_body_bytes = 1024;
  RunningServer s(test_router(), config);
  HttpClient c("127.0.0.1", s.port());
  auto r = c.request("POST", "/echo", std::string(4096, 'x'));
  EXPECT_EQ(r.status, 413);
  HttpClient fresh("127.0.0.1", s.port());
  EXPECT_EQ(fresh.post_json("/echo", {{"small", true}}).status, 200);
}

TEST(HttpServer, KeepAliveServesManyRequestsOnOneClient) {
  RunningServer s(test_router());
  HttpClient c("127.0.0.1", s.port());
  for (int i = 0; i < 50; ++i) ASSERT_EQ(c.get("/hello").status, 200);
}

TEST(HttpServer, AsyncHandlersAnswerFromOtherThreads) {
  RunningServer s(test_router());
  std::vector<std::thread> clients;
  std::atomic<int> ok{0};
  for (int i = 0; i < 8; ++i) {
    clients.emplace_back([&] {
      HttpClient c("127.0.0.1", s.port());
      if (c.get("/later").body == "done") ++ok;
    });
  }
  for (auto& t : clients) t.join();
  EXPECT_EQ(ok, 8);
}

TEST(HttpServer, StopFinishesRequestsInFlight) {
  auto s = std::make_unique<RunningServer>(test_router());
  uint16_t port = s->port();
  std::string body;
  std::thread client([&] {
    HttpClient c("127.0.0.1", port);
    body = c.get("/later").body;
  });
  std::this_thread::sleep_for(50ms);
  s->stop();  // returns once the in-flight answer has been written
  client.join();
  EXPECT_EQ(body, "done");
  HttpClient late("127.0.0.1", port, 2s);
  EXPECT_THROW(late.get("/hello"), Error);
}

TEST(HttpServer, BindFailureNamesTheAddress) {
  RunningServer s(test_router());
  ServerConfig taken;
  taken.port = s.port();
  taken.host = "127.0.0.1";
  try {
    HttpServer second(taken, test_router());
    FAIL() << "second bind succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(s.port())), std::string::npos);
  }
}

}  // namespace
}  // namespace qed::http
