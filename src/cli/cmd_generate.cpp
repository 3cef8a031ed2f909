#include "cli/commands.h"
#include "core/error.h"

namespace qed::cli {

void register_generate(CLI::App& app) {
  auto* cmd = app.add_subcommand("generate", "(being built)");
  cmd->callback([] { fail("qed generate: not built yet"); });
}

}  // namespace qed::cli
