#include "cli/commands.h"
#include "core/error.h"

namespace qed::cli {

void register_tokenize(CLI::App& app) {
  auto* cmd = app.add_subcommand("tokenize", "(being built)");
  cmd->callback([] { fail("qed tokenize: not built yet"); });
}

}  // namespace qed::cli
