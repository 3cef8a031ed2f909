#include "cli/demo_model.h"

#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <vector>

#include "core/error.h"

namespace qed::cli {

namespace fs = std::filesystem;

std::string find_demo_model_dir() {
  if (const char* env = std::getenv("QED_DEMO_MODEL"); env && *env) return env;
  std::vector<fs::path> candidates;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const fs::path dir = exe.parent_path();
    candidates = {dir / "models/demo", dir / "../models/demo", dir / "../share/qed/models/demo"};
  }
  candidates.push_back(fs::current_path(ec) / "models/demo");
  std::string looked;
  for (const fs::path& c : candidates) {
    if (fs::exists(c / "config.json", ec)) return c.lexically_normal().string();
    looked += (looked.empty() ? "" : ", ") + c.lexically_normal().string();
  }
  fail("no --model given and the demo model is not at any of: {} (pass --model DIR or set QED_DEMO_MODEL)", looked);
}

}  // namespace qed::cli
