#include "engine/stop_strings.h"

#include <algorithm>

namespace qed {

StopStringMatcher::StopStringMatcher(std::vector<std::string> stops, std::vector<std::string> holds)
    : stops_(std::move(stops)), holds_(std::move(holds)) {
  std::erase_if(stops_, [](const std::string& s) { return s.empty(); });
  std::erase_if(holds_, [](const std::string& s) { return s.empty(); });
}

StopStringMatcher::Pushed StopStringMatcher::push(std::string_view text) {
  pending_.append(text);
  Pushed out;
  size_t first = std::string::npos;
  for (const std::string& stop : stops_) first = std::min(first, pending_.find(stop));
  size_t first_hold = std::string::npos, hold_end = 0;
  for (const std::string& h : holds_) {
    const size_t at = pending_.find(h);
    if (at < first_hold) first_hold = at, hold_end = at + h.size();
  }
  // A stop that begins inside the hold string still wins: the hold string would not be emitted whole.
  if (first_hold != std::string::npos && (first == std::string::npos || first >= hold_end)) {
    out.text = pending_.substr(0, hold_end);
    out.held = true;
    pending_.erase(0, hold_end);
    return out;
  }
  if (first != std::string::npos) {
    out.text = pending_.substr(0, first);
    out.stopped = true;
    pending_.clear();
    return out;
  }
  // Hold back the longest suffix that is a proper prefix of some stop string: the earliest place one could start.
  size_t hold = 0;
  for (const auto* list : {&stops_, &holds_})
    for (const std::string& stop : *list) {
      const size_t max_len = std::min(stop.size() - 1, pending_.size());
      for (size_t len = max_len; len > hold; --len) {
        if (std::string_view(pending_).substr(pending_.size() - len) == std::string_view(stop).substr(0, len)) {
          hold = len;
          break;
        }
      }
    }
  out.text = pending_.substr(0, pending_.size() - hold);
  pending_.erase(0, pending_.size() - hold);
  return out;
}

std::string StopStringMatcher::flush() {
  std::string rest;
  rest.swap(pending_);
  return rest;
}

}  // namespace qed
