#pragma once
// Server-side tool-integrated reasoning for one request: the engine holds a sample at `</tool_call>` (keeping its
// KV cache), this runs the call in the sample's own sandbox session on a ToolExecutor thread, tokenizes the
// output block on its own and resumes the sample with those tokens; the engine prefills them as one chunk and
// decoding continues. Each of the n samples has its own ToolLoop (limits, session). A sandbox that cannot be
// reached ends the request with that error.
//
// Tokenization at the boundary: the output block is tokenized alone and appended to the generated ids, never
// re-tokenized with the text before it. That is what a model sees when a client-side loop sends token ids, and
// for the demo model it equals the in-context tokenization it was trained on (test_demo_data_model.py checks
// both). A client loop that re-sends the concatenated *text* may merge tokens across the boundary differently.
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "server/engine_service.h"
#include "tir/tool_executor.h"
#include "tir/tool_loop.h"
#include "tokenizer/tokenizer.h"

namespace qed::server {

// What the server shares between requests for TIR (null sandbox: TIR requests are refused).
struct TirContext {
  std::optional<tir::SandboxAddress> sandbox;
  tir::ToolExecutor* executor = nullptr;
};

class TirSession : public std::enable_shared_from_this<TirSession> {
 public:
  TirSession(const TirContext& context, tir::ToolLimits limits, int num_samples, const Tokenizer& tokenizer,
             EngineService& engine);

  // The SamplingParams a TIR request runs with: holds at the code end tag.
  static void configure(SamplingParams& params);

  // Engine thread, at a held event: `generation` = the sample's text so far (ends with `</tool_call>`).
  void on_hold(RequestId id, int index, std::string generation);
  // Engine thread, when the request has finished: queued calls are skipped, sessions deleted off this thread.
  void on_finish();

  std::string error() const;  // why the request was ended (sandbox unreachable); empty if it was not
  int executions() const;     // all samples together
  int timeouts() const;

 private:
  tir::ToolExecutor& executor_;
  const Tokenizer& tokenizer_;
  EngineService& engine_;
  struct Sample {
    std::mutex mutex;  // a call in flight vs. the session delete after an abort
    std::unique_ptr<tir::ToolLoop> loop;
  };
  std::vector<std::unique_ptr<Sample>> samples_;
  std::atomic<bool> finished_{false};
  std::atomic<int> executions_{0}, timeouts_{0};  // read on the engine thread while calls may be in flight
  mutable std::mutex mutex_;
  std::string error_;
};

}  // namespace qed::server
