// libFuzzer: arbitrary bytes as a safetensors image, and (when they parse as JSON) as a config.json.
// Either must be accepted or refused with qed::Error; anything else (crash, sanitizer report, other exception)
// is a bug.
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "model/model_config.h"
#include "model/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    qed::SafetensorsHeader header = qed::parse_safetensors(data, size, "fuzz");
    // Every accepted tensor must lie inside the input; touch its first and last byte to let ASan check.
    for (const auto& [name, info] : header.tensors) {
      if (info.nbytes > 0) {
        volatile unsigned char edge = info.data[0];
        edge = info.data[info.nbytes - 1];
        (void)edge;
      }
    }
  } catch (const qed::Error&) {
  }

  nlohmann::json config = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (!config.is_discarded()) {
    try {
      qed::ModelConfig::from_json(config, "fuzz").validate("fuzz");
    } catch (const qed::Error&) {
    }
  }
  return 0;
}
