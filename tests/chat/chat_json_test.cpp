// Tool JSON reaches the prompt as Python's json.dumps(ensure_ascii=False) writes it (transformers' `tojson`).
#include "tokenizer/chat_json.h"

#include <gtest/gtest.h>

#include <string>

#include "core/error.h"

namespace qed::chat_json {
namespace {

TEST(ChatJson, FloatsFollowPythonRepr) {
  EXPECT_EQ(python_float_repr(1.0), "1.0");
  EXPECT_EQ(python_float_repr(-0.0), "-0.0");
  EXPECT_EQ(python_float_repr(0.1), "0.1");
  EXPECT_EQ(python_float_repr(0.0001), "0.0001");
  EXPECT_EQ(python_float_repr(0.00001), "1e-05");
  EXPECT_EQ(python_float_repr(1e15), "1000000000000000.0");
  EXPECT_EQ(python_float_repr(1e16), "1e+16");
  EXPECT_EQ(python_float_repr(1.5e300), "1.5e+300");
  EXPECT_EQ(python_float_repr(-2.5e-300), "-2.5e-300");
  EXPECT_EQ(python_float_repr(123.456), "123.456");
  EXPECT_EQ(python_float_repr(1.0 / 3.0), "0.3333333333333333");
}

TEST(ChatJson, ObjectsKeepKeyOrderAndUsePythonSeparators) {
  const auto value = parse(R"({"b": 1, "a": [true, null, 2.0, "x"], "c": {}, "d": []})", "test");
  EXPECT_EQ(python_dumps(value), R"({"b": 1, "a": [true, null, 2.0, "x"], "c": {}, "d": []})");
}

TEST(ChatJson, StringsKeepNonAsciiAndEscapeControls) {
  const auto value = parse(R"(["é π ✓ \u2028", "tab\t nl\n quote\" back\\ bell\u0007"])", "test");
  EXPECT_EQ(python_dumps(value), "[\"é π ✓ \u2028\", \"tab\\t nl\\n quote\\\" back\\\\ bell\\u0007\"]");
}

TEST(ChatJson, InvalidJsonNamesWhatWasBeingRead) {
  try {
    parse("{", "tools[2]");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("tools[2]: invalid JSON", 0), 0u) << e.what();
  }
}

}  // namespace
}  // namespace qed::chat_json
