#pragma once
// Stop strings on streamed text: a stop string may arrive split over several tokens, and neither it nor anything
// after it is emitted. Text that could still become the start of a stop string is held back until it cannot.
// Hold strings are matched the same way but end the text *with* them: the caller pauses there (a tool call).
#include <string>
#include <string_view>
#include <vector>

namespace qed {

class StopStringMatcher {
 public:
  explicit StopStringMatcher(std::vector<std::string> stops, std::vector<std::string> holds = {});

  struct Pushed {
    std::string text;      // safe to emit now
    bool stopped = false;  // a stop string completed; `text` ends right before it
    bool held = false;     // a hold string completed first; `text` ends with it
  };
  Pushed push(std::string_view text);
  // End of stream without a stop: the held-back text is ordinary text after all.
  std::string flush();

 private:
  std::vector<std::string> stops_;
  std::vector<std::string> holds_;
  std::string pending_;
};

}  // namespace qed
