#pragma once
// A small parser for the LaTeX that final answers are written in (numbers, \frac, \sqrt, powers, \pi, variables,
// implicit products, tuples/intervals, sets, matrices, relations) and a value comparison over it. Values are
// compared numerically: exactly for integer literals, by rounding to 6 decimals when a side is a decimal literal
// (math-verify's rule), to ~1e-12 relative otherwise, and expressions with variables at fixed sample points, so a
// comparison is deterministic and its cost is bounded by the input length (no CAS, no timeouts needed).
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qed::eval {

struct MathNode {
  enum class Op {
    Number,    // text holds the literal ("12", "0.5")
    Variable,  // text holds the name ("x", "a_1")
    Pi,
    Euler,
    Infinity,
    Add,
    Mul,
    Div,
    Pow,
    Neg,
    Function,  // text holds the name (sqrt, sin, log, ln, exp, abs, ...); children: arguments
    Factorial,
    Binomial,
    Tuple,     // ordered; open/close hold the brackets: "(" ")" for points and open intervals, "[" ")" ...
    Set,       // unordered
    Union,     // of intervals/sets, unordered
    Matrix,    // rows x cols, row-major children
    Relation,  // text holds "=", "<", ">", "<=", ">=", "!="; children: lhs, rhs
  };
  Op op = Op::Number;
  std::string text;
  char open = 0, close = 0;
  int rows = 0, cols = 0;
  std::vector<MathNode> children;
};

// nullopt when the text is not an expression this parser understands (words, unbalanced brackets, ...).
std::optional<MathNode> parse_math(std::string_view latex);

// Whether `pred` denotes the same value as `ref`. Not symmetric in one way, as math-verify: an equation on the
// prediction side is reduced to its right-hand side when the reference is not an equation, and vice versa.
bool math_values_equal(const MathNode& ref, const MathNode& pred);

}  // namespace qed::eval
