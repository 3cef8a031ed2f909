// ToolLoop against a scripted sandbox on a real socket (the NeMo-Skills protocol as `qed sandbox` speaks it):
// what it sends, the output blocks it returns, its limits, session clean-up and errors.
#include "tir/tool_loop.h"

#include <gtest/gtest.h>

#include <mutex>
#include <thread>
#include <vector>

#include "core/error.h"
#include "server/http/http_server.h"

namespace qed::tir {
namespace {

// Answers /execute with `reply` (status + JSON) and records each call's body and session header.
class ScriptedSandbox {
 public:
  ScriptedSandbox() {
    http::Router router;
    router.add_sync("POST", "/execute", [this](const http::Request& r) {
      std::lock_guard lock(mutex_);
      calls.push_back({r.json_body(), r.header("X-Session-ID").value_or("")});
      return http::Response::json(status, reply);
    });
    router.add_sync("DELETE", "/sessions/{id}", [this](const http::Request& r) {
      std::lock_guard lock(mutex_);
      deleted.push_back(r.path_params.at("id"));
      return http::Response::json(200, {{"message", "deleted"}});
    });
    server_ = std::make_unique<http::HttpServer>(http::ServerConfig{}, std::move(router));
    thread_ = std::thread([this] { server_->run(); });
  }
  ~ScriptedSandbox() {
    server_->stop();
    thread_.join();
  }
  SandboxAddress address() const { return parse_sandbox_url("http://127.0.0.1:" + std::to_string(server_->port())); }

  struct Call {
    nlohmann::json body;
    std::string session;
  };
  int status = 200;
  nlohmann::json reply = {{"process_status", "completed"}, {"stdout", "401\n"}, {"stderr", ""}};
  std::vector<Call> calls;
  std::vector<std::string> deleted;

 private:
  std::mutex mutex_;
  std::unique_ptr<http::HttpServer> server_;
  std::thread thread_;
};

const std::string kCall = "Let me compute.\n<tool_call>\nprint(pow(7, 2024, 1000))\n</tool_call>";

TEST(ToolLoop, RunsTheOpenCallInOneSessionAndReturnsTheOutputBlock) {
  ScriptedSandbox sandbox;
  ToolLimits limits;
  limits.code_timeout_s = 2;
  limits.max_code_output_chars = 200;
  {
    ToolLoop loop(sandbox.address(), limits);
    EXPECT_EQ(loop.run(kCall), "\n```output\n401\n```\n");
    sandbox.reply["stderr"] = "NameError: x\n";
    EXPECT_EQ(loop.run(kCall + "\n```output\n401\n```\nAgain <tool_call>x</tool_call>"),
              "\n```output\n401\nNameError: x\n```\n");
    EXPECT_EQ(loop.executions(), 2);
  }
  ASSERT_EQ(sandbox.calls.size(), 2u);
  EXPECT_EQ(sandbox.calls[0].body["generated_code"], "\nprint(pow(7, 2024, 1000))\n");
  EXPECT_EQ(sandbox.calls[1].body["generated_code"], "x");
  EXPECT_EQ(sandbox.calls[0].body["language"], "ipython");
  EXPECT_EQ(sandbox.calls[0].body["timeout"], 2.0);
  EXPECT_EQ(sandbox.calls[0].body["max_output_characters"], 200);
  EXPECT_FALSE(sandbox.calls[0].session.empty());
  EXPECT_EQ(sandbox.calls[0].session, sandbox.calls[1].session);
  EXPECT_EQ(sandbox.deleted, std::vector<std::string>{sandbox.calls[0].session});  // at destruction
}

TEST(ToolLoop, StopsAfterMaxExecutionsWithTheNoticeCountingDown) {
  ScriptedSandbox sandbox;
  ToolLimits limits;
  limits.max_code_executions = 2;
  limits.add_remaining_code_executions = true;
  ToolLoop loop(sandbox.address(), limits);
  EXPECT_NE(loop.run(kCall)->find("Remaining code executions: 1."), std::string::npos);
  EXPECT_NE(loop.run(kCall)->find("You have run out of code executions!"), std::string::npos);
  EXPECT_EQ(loop.run(kCall), std::nullopt);  // NS's extra round: a further call ends the sample
  EXPECT_EQ(sandbox.calls.size(), 2u);
}

TEST(ToolLoop, NoOpenToolCallRunsNothing) {
  ScriptedSandbox sandbox;
  ToolLoop loop(sandbox.address(), {});
  EXPECT_EQ(loop.run("just text</tool_call>"), std::nullopt);
  EXPECT_TRUE(sandbox.calls.empty());
  loop.close();
  EXPECT_TRUE(sandbox.deleted.empty());  // no session was ever used
}

TEST(ToolLoop, TotalTimeBudgetCapsEachCallsTimeout) {
  ScriptedSandbox sandbox;
  ToolLimits limits;
  limits.code_timeout_s = 10;
  limits.total_code_time_s = 3;
  ToolLoop loop(sandbox.address(), limits);
  ASSERT_TRUE(loop.run(kCall));
  ASSERT_EQ(sandbox.calls.size(), 1u);
  const double timeout = sandbox.calls[0].body["timeout"].get<double>();
  EXPECT_LE(timeout, 3.0);
  EXPECT_GT(timeout, 0.0);
}

TEST(ToolLoop, BadGatewayIsATimeoutAsInNeMoSkills) {
  ScriptedSandbox sandbox;
  sandbox.status = 502;
  ToolLoop loop(sandbox.address(), {});
  EXPECT_EQ(loop.run(kCall), "\n```output\nClient timed out\n```\n");
  EXPECT_EQ(loop.timeouts(), 1);
}

TEST(ToolLoop, SandboxErrorsAndAnUnreachableSandboxThrowWithTheUrl) {
  ScriptedSandbox sandbox;
  sandbox.status = 400;
  sandbox.reply = {{"error", "X-Session-ID header required for ipython sessions"}};
  ToolLoop loop(sandbox.address(), {});
  try {
    loop.run(kCall);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("HTTP 400"), std::string::npos) << e.what();
  }
  SandboxAddress gone = sandbox.address();
  {
    ScriptedSandbox other;  // a port that was just free again after this one stops
    gone = other.address();
  }
  ToolLoop nowhere(gone, {});
  try {
    nowhere.run(kCall);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unreachable"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(gone.url), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace qed::tir
