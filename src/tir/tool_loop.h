#pragma once
// One sample's tool loop (NeMo-Skills' code_execution.py, facts §1.5), without the generation: at every
// `</tool_call>` the caller hands over the text generated so far; run() executes the open tool call in the
// sample's own sandbox session and returns the output block to append, or none when the sample should end there.
// Limits: max executions (the round after the last one may still write a tool call: it ends the sample, as NS's
// extra iteration does), a per-call timeout and a total execution-time budget.
#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "tir/code_tags.h"
#include "tir/sandbox_client.h"

namespace qed::tir {

struct ToolLimits {
  int max_code_executions = 8;
  double code_timeout_s = 10.0;
  int max_code_output_chars = 1000;
  double total_code_time_s = 0;  // 0 = unlimited; else the sample's sandbox time, all calls together
  bool add_remaining_code_executions = false;
};

class ToolLoop {
 public:
  ToolLoop(SandboxAddress sandbox, ToolLimits limits, CodeTags tags = {});
  ~ToolLoop();  // deletes the sandbox session if one was used
  ToolLoop(const ToolLoop&) = delete;
  ToolLoop& operator=(const ToolLoop&) = delete;

  // Throws qed::Error when the sandbox cannot be reached (the caller ends the request with that message).
  std::optional<std::string> run(std::string_view generation);
  void close() noexcept;  // deletes the session now

  int executions() const { return executions_; }
  int timeouts() const { return timeouts_; }

 private:
  SandboxClient client_;
  ToolLimits limits_;
  CodeTags tags_;
  std::string session_id_;
  bool session_used_ = false;
  int executions_ = 0;
  int timeouts_ = 0;
  double time_used_s_ = 0;
};

}  // namespace qed::tir
