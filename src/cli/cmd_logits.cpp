#include "cli/commands.h"
#include "core/error.h"

namespace qed::cli {

void register_logits(CLI::App& app) {
  auto* cmd = app.add_subcommand("logits", "(being built)");
  cmd->callback([] { fail("qed logits: not built yet"); });
}

}  // namespace qed::cli
