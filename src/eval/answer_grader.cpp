#include "eval/answer_grader.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <regex>

#include "eval/answer_normalization.h"
#include "eval/math_expression.h"

namespace qed::eval {

namespace {

std::string without_spaces(std::string_view s) {
  std::string out;
  for (char c : s)
    if (!std::isspace(static_cast<unsigned char>(c))) out += c;
  return out;
}

std::optional<long long> parse_integer(std::string_view s) {
  std::string text = without_spaces(s);
  if (text.empty() || text.size() > 18) return std::nullopt;
  size_t i = text[0] == '-' || text[0] == '+' ? 1 : 0;
  if (i == text.size()) return std::nullopt;
  for (size_t j = i; j < text.size(); ++j)
    if (!std::isdigit(static_cast<unsigned char>(text[j]))) return std::nullopt;
  return std::strtoll(text.c_str(), nullptr, 10);
}

// "C", "(C)", "C)", "\text{(C)}" → 'C' (already unwrapped by normalization).
std::optional<char> choice_letter(std::string_view normalized) {
  std::string s = without_spaces(normalized);
  if (s.size() >= 2 && s.front() == '(' && s.back() == ')') s = s.substr(1, s.size() - 2);
  if (s.size() == 2 && s.back() == ')') s.pop_back();
  if (s.size() == 1 && s[0] >= 'A' && s[0] <= 'J') return s[0];
  return std::nullopt;
}

long long positive_mod(long long v, long long m) {
  long long r = v % m;
  return r < 0 ? r + m : r;
}

}  // namespace

bool answers_match(std::string_view ref, const std::optional<std::string>& pred, const GradeOptions& options) {
  if (!pred) return false;
  std::string nref = normalize_answer(ref), npred = normalize_answer(*pred);
  if (options.take_modulo && *options.take_modulo > 0) {
    auto r = parse_integer(nref), p = parse_integer(npred);
    return r && p && positive_mod(*r, *options.take_modulo) == positive_mod(*p, *options.take_modulo);
  }
  if (auto letter = choice_letter(nref)) {
    auto chosen = choice_letter(npred);
    if (chosen) return *chosen == *letter;
  }
  if (npred.empty()) return false;
  if (without_spaces(nref) == without_spaces(npred)) return true;
  // Words ("east", "Evelyn") match without regard to case; single letters are variables or choices and do not.
  static const std::regex words(R"([A-Za-z]{2,}(?: [A-Za-z]+)*)");
  if (nref.size() < 200 && npred.size() < 200 && std::regex_match(nref, words) && std::regex_match(npred, words)) {
    return std::equal(nref.begin(), nref.end(), npred.begin(), npred.end(), [](char a, char b) {
      return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
    });
  }
  auto ref_value = parse_math(nref);
  auto pred_value = parse_math(npred);
  if (!ref_value || !pred_value) return false;
  return math_values_equal(*ref_value, *pred_value);
}

}  // namespace qed::eval
