// Answers come from model generations: any bytes as (reference, prediction) must grade to true/false without a
// crash, a hang or an exception. The input is split at its first newline; both directions are graded.
#include <cstddef>
#include <cstdint>
#include <string>

#include "eval/answer_extraction.h"
#include "eval/answer_grader.h"
#include "eval/answer_normalization.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const size_t newline = text.find('\n');
  const std::string ref = text.substr(0, newline);
  const std::string pred = newline == std::string::npos ? std::string() : text.substr(newline + 1);
  qed::eval::answers_match(ref, qed::eval::extract_boxed(pred));
  qed::eval::answers_match(pred, ref);
  qed::eval::GradeOptions aimo;
  aimo.take_modulo = 1000;
  qed::eval::answers_match(ref, pred, aimo);
  qed::eval::normalize_answer(text);
  qed::eval::strip_reasoning(text);
  return 0;
}
