// Pipeline specs come from users: any YAML must either parse into a spec or fail with qed::Error (which names
// file:line:column), never crash or throw anything else. Specs that parse also get ordered and scripted.
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "pipeline/layout.h"
#include "pipeline/spec.h"
#include "pipeline/stage_script.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    const auto spec = qed::pipeline::parse_spec(text, "/fuzz/spec.yaml");
    const qed::pipeline::OutputLayout layout{spec.output_dir};
    for (const auto& name : qed::pipeline::topological_order(spec)) {
      qed::pipeline::stage_script({spec, layout, "/usr/bin/qed", spec.executor, ""}, spec.stage(name));
    }
  } catch (const qed::Error&) {
  }
  return 0;
}
