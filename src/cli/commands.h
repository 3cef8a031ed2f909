#pragma once
// Each `qed <subcommand>` lives in its own cmd_<name>.cpp and registers itself on the app here.
#include <CLI/CLI.hpp>

namespace qed::cli {

void register_tokenize(CLI::App& app);
void register_generate(CLI::App& app);
void register_logits(CLI::App& app);
void register_quantize(CLI::App& app);
void register_pipeline(CLI::App& app);
void register_serve(CLI::App& app);
void register_batch(CLI::App& app);
void register_sandbox(CLI::App& app);
void register_inspect(CLI::App& app);
void register_chat_template(CLI::App& app);
void register_eval(CLI::App& app);
void register_bench_report(CLI::App& app);  // under `qed bench`, created if absent
void register_run(CLI::App& app);
void register_bench_serve(CLI::App& app);    // under `qed bench`, created if absent
void register_bench_offline(CLI::App& app);  // under `qed bench`, created if absent
void register_train_drafter(CLI::App& app);

}  // namespace qed::cli
