// qed: one binary, one subcommand per job. Errors are one line on stderr and a non-zero exit, never a crash.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <exception>
#include <new>

#include "cli/commands.h"
#include "cli/version.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"qed: inference for math-reasoning LLMs"};
  app.set_version_flag("--version", std::string("qed ") + qed::cli::kVersion);
  app.require_subcommand(1);
  qed::cli::register_tokenize(app);
  qed::cli::register_generate(app);
  qed::cli::register_logits(app);
  qed::cli::register_quantize(app);
  qed::cli::register_pipeline(app);
  qed::cli::register_serve(app);
  qed::cli::register_batch(app);
  qed::cli::register_sandbox(app);
  qed::cli::register_inspect(app);
  qed::cli::register_chat_template(app);
  qed::cli::register_eval(app);
  qed::cli::register_bench_report(app);
  qed::cli::register_run(app);
  qed::cli::register_bench_serve(app);
  qed::cli::register_bench_offline(app);
  qed::cli::register_train_drafter(app);
  if (argc > 1 && argv[1][0] != '-') {
    bool known = false;
    for (const auto* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
      known = known || sub->get_name() == argv[1];
    }
    if (!known) {
      fmt::print(stderr, "qed: error: unknown command '{}' (see qed --help)\n", argv[1]);
      return 2;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const qed::Error& e) {
    fmt::print(stderr, "qed: error: {}\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    fmt::print(stderr, "qed: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "qed: error: {}\n", e.what());
    return 1;
  }
  return 0;
}
