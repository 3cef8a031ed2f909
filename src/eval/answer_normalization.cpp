#include "eval/answer_normalization.h"

#include <array>
#include <cctype>
#include <regex>

#include "eval/answer_extraction.h"

namespace qed::eval {

namespace {

constexpr size_t kMaxNormalizedChars = 1000;

// Builds a new string rather than replacing in place (gcc 12's -Wrestrict misfires on in-place replace).
void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty() || s.find(from) == std::string::npos) return;
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
    out.append(s, pos, hit - pos);
    out.append(to);
  }
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

std::string trim(std::string_view s) {
  const char* ws = " \t\r\n";
  size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return std::string(s.substr(b, s.find_last_not_of(ws) - b + 1));
}

bool starts_with(std::string_view s, std::string_view p) {
  return s.substr(0, p.size()) == p;
}
bool ends_with(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

// A command name ends at the first non-letter: "\\left(" yes, "\\leftarrow" no.
void remove_command(std::string& s, std::string_view command, std::string_view replacement = "") {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  for (size_t hit; (hit = s.find(command, pos)) != std::string::npos;) {
    size_t end = hit + command.size();
    out.append(s, pos, hit - pos);
    if (end < s.size() && std::isalpha(static_cast<unsigned char>(s[end]))) {
      out.append(command);
    } else {
      out.append(replacement);
    }
    pos = end;
  }
  out.append(s, pos, std::string::npos);
  s = std::move(out);
}

// \text{abc} → abc for the given wrapper commands (balanced braces).
void unwrap(std::string& s, std::string_view command) {
  std::string open = std::string(command) + "{";
  size_t pos;
  while ((pos = s.find(open)) != std::string::npos) {
    size_t start = pos + open.size();
    int depth = 1;
    size_t i = start;
    for (; i < s.size() && depth > 0; ++i) {
      if (s[i] == '{') ++depth;
      if (s[i] == '}') --depth;
    }
    if (depth != 0) return;
    std::string out = s.substr(0, pos);
    out.append(s, start, i - 1 - start);
    out.append(s, i, std::string::npos);
    s = std::move(out);
  }
}

std::string strip_math_delimiters(std::string s) {
  for (int round = 0; round < 3; ++round) {
    s = trim(s);
    if (s.size() >= 4 && starts_with(s, "$$") && ends_with(s, "$$")) {
      s = s.substr(2, s.size() - 4);
    } else if (s.size() >= 2 && s.front() == '$' && s.back() == '$') {
      s = s.substr(1, s.size() - 2);
    } else if (s.size() >= 4 && (starts_with(s, "\\(") && ends_with(s, "\\)"))) {
      s = s.substr(2, s.size() - 4);
    } else if (s.size() >= 4 && (starts_with(s, "\\[") && ends_with(s, "\\]"))) {
      s = s.substr(2, s.size() - 4);
    } else {
      break;
    }
  }
  return s;
}

// Words that follow a number as its unit ("5 cm", "12\text{ inches}"): dropped when they end the answer.
const std::regex& unit_suffix() {
  static const std::regex re(
      R"(^(.*[0-9}])\s*(?:(?:square|sq|cubic)\s+)?)"
      R"((?:units?|cm|mm|km|m|meters?|metres?|centimeters?|kilometers?|inch|inches|in|feet|foot|ft|yards?|miles?|mph|)"
      R"(seconds?|sec|minutes?|min|hours?|hrs?|days?|weeks?|months?|years?|degrees?|deg|radians?|rad|dollars?|cents?|)"
      R"(pounds?|lbs?|ounces?|oz|grams?|g|kg|liters?|litres?|L|ml|gallons?|people|students|ways|points?|)"
      R"(square\s+units|sq\s+units|cm\^2|m\^2|cm\^3|m\^3|ft\^2|in\^2|units\^2))"
      R"(\s*(?:\^\{?[23]\}?)?$)");
  return re;
}

}  // namespace

std::string normalize_answer(std::string_view answer) {
  std::string s(answer);
  if (s.find("\\boxed{") != std::string::npos) {
    if (auto inner = extract_boxed(s)) s = *inner;
  }
  s = strip_math_delimiters(s);
  // std::regex recurses per character: an answer this long is no answer anyway, and is compared as it is.
  if (s.size() > kMaxNormalizedChars) return s;

  // Unicode forms models emit in place of LaTeX.
  static const std::array<std::pair<const char*, const char*>, 9> kUnicode = {{{"\u2212", "-"},
                                                                               {"\u00d7", "\\times "},
                                                                               {"\u00b7", "\\cdot "},
                                                                               {"\u03c0", "\\pi "},
                                                                               {"\u221e", "\\infty "},
                                                                               {"\u221a", "\\sqrt"},
                                                                               {"\u00b0", ""},
                                                                               {"\u2264", "\\le "},
                                                                               {"\u2265", "\\ge "}}};
  for (const auto& [from, to] : kUnicode) replace_all(s, from, to);

  replace_all(s, "\\dfrac", "\\frac");
  replace_all(s, "\\tfrac", "\\frac");
  replace_all(s, "\\dbinom", "\\binom");
  replace_all(s, "\\tbinom", "\\binom");
  replace_all(s, "\\lbrace", "\\{");
  replace_all(s, "\\rbrace", "\\}");
  for (const char* cmd : {"\\left", "\\right", "\\bigl", "\\bigr", "\\Bigl", "\\Bigr", "\\big", "\\Big",
                          "\\displaystyle", "\\textstyle"}) {
    remove_command(s, cmd);
  }
  replace_all(s, "\\!", "");
  for (const char* space : {"\\,", "\\;", "\\:", "~"}) replace_all(s, space, " ");
  // "\ " is a space, but in "1 \\ 2" (a matrix row break) the backslash before the space is the break's.
  static const std::regex escaped_space(R"((^|[^\\])\\ )");
  s = std::regex_replace(s, escaped_space, "$1 ");
  remove_command(s, "\\qquad", " ");
  remove_command(s, "\\quad", " ");

  // Degrees: 30^\circ, 30^{\circ}, 30\degree.
  for (const char* deg : {"^{\\circ}", "^\\circ", "^{\\circ }", "{}^\\circ", "\\circ", "\\degree"}) {
    replace_all(s, deg, "");
  }
  replace_all(s, "^{}", "");
  // Percent and currency signs carry no value here (NeMo-Skills strips a trailing %; math-verify equates 9% and 9).
  replace_all(s, "\\%", "");
  replace_all(s, "%", "");
  replace_all(s, "\\$", "");
  replace_all(s, "$", "");

  for (const char* wrapper : {"\\text", "\\textbf", "\\textit", "\\textrm", "\\mathrm", "\\mathbf", "\\mathit",
                              "\\mbox", "\\operatorname", "\\boldsymbol", "\\mathnormal"}) {
    unwrap(s, wrapper);
  }
  s = trim(s);
  // "1 or 2", "x=1 and x=2": a list of answers.
  static const std::regex spelled_list(R"(\s+(?:or|and)\s+)");
  s = std::regex_replace(s, spelled_list, ", ");

  // Thousands separators: 1{,}000, 1\,000 (now "1 000") and a plain 12,345 standing alone.
  replace_all(s, "{,}", "");
  static const std::regex spaced_thousands(R"((\d) (\d{3})(?!\d))");
  for (int i = 0; i < 4; ++i) s = std::regex_replace(s, spaced_thousands, "$1$2");
  static const std::regex comma_thousands(R"(^-?\d{1,3}(,\d{3})+(\.\d+)?$)");
  if (std::regex_match(s, comma_thousands)) replace_all(s, ",", "");

  // A trailing full stop (NeMo-Skills strips "." and "\" at the end).
  while (!s.empty() && (s.back() == '.' || s.back() == '\\' || s.back() == ' ')) s.pop_back();

  std::smatch m;
  if (std::regex_match(s, m, unit_suffix())) s = trim(m[1].str());

  // "x = 5", "k=3", "x \in [1,2]" state the value of the one unknown: keep the value.
  static const std::regex assignment(R"(^\s*[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*(?:=|\\in)\s*([^=]+)$)");
  if (std::regex_match(s, m, assignment)) s = trim(m[1].str());
  return s;
}

}  // namespace qed::eval
