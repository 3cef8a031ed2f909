#pragma once
// What the quantization_config tests share: a config parsed from JSON text as config.json's field, and the message
// of the qed::Error a call throws ("" when it throws none).
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "model/quant_config.h"

namespace qed::test {

inline QuantizationConfig parse(const std::string& text) {
  const nlohmann::json value = nlohmann::json::parse(text);
  return QuantizationConfig::from_json(&value, "config.json");
}

inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace qed::test
