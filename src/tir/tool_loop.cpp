#include "tir/tool_loop.h"

#include <algorithm>

namespace qed::tir {

ToolLoop::ToolLoop(SandboxAddress sandbox, ToolLimits limits, CodeTags tags)
    : client_(std::move(sandbox)), limits_(limits), tags_(std::move(tags)), session_id_(new_session_id()) {}

ToolLoop::~ToolLoop() {
  close();
}

void ToolLoop::close() noexcept {
  if (!session_used_) return;
  session_used_ = false;
  client_.delete_session(session_id_);
}

std::optional<std::string> ToolLoop::run(std::string_view generation) {
  if (executions_ >= limits_.max_code_executions) return std::nullopt;
  const std::optional<std::string> code = code_to_execute(generation, tags_);
  if (!code) return std::nullopt;  // a stray closing tag: the model has finished
  double timeout_s = limits_.code_timeout_s;
  if (limits_.total_code_time_s > 0) {
    const double left = limits_.total_code_time_s - time_used_s_;
    if (left <= 0) return std::nullopt;
    timeout_s = std::min(timeout_s, left);
  }
  session_used_ = true;
  const auto start = std::chrono::steady_clock::now();
  const ExecutionResult result = client_.execute(*code, session_id_, timeout_s, limits_.max_code_output_chars);
  time_used_s_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ++executions_;
  if (result.process_status == "timeout") ++timeouts_;
  std::optional<int> remaining;
  if (limits_.add_remaining_code_executions) remaining = limits_.max_code_executions - executions_;
  return format_code_output(result.stdout_text, result.stderr_text, remaining, tags_);
}

}  // namespace qed::tir
