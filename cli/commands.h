// The `latte` executable: one subcommand per file, each registering itself on the CLI11 app.
// Subcommands throw latte::Error; main() is the one place that prints it and picks the exit code.
#pragma once
#include <CLI/CLI.hpp>

namespace latte::cli {

void add_generate(CLI::App& app);
void add_perplexity(CLI::App& app);
void add_eval(CLI::App& app);
void add_info(CLI::App& app);
void add_export(CLI::App& app);
void add_compare(CLI::App& app);
void add_tokenize(CLI::App& app);
void add_train(CLI::App& app);
void add_convert(CLI::App& app);
void add_plan(CLI::App& app);
void add_plot(CLI::App& app);
void add_make_model(CLI::App& app);
void add_shard(CLI::App& app);  // cmd_shard.cpp with gRPC, cmd_shard_off.cpp without
// Serving over gRPC (builds with LATTE_CLI_WITH_GRPC only).
void add_coordinator(CLI::App& app);

// --threads N for OpenMP and OpenBLAS (0: leave the defaults).
void add_threads_option(CLI::App& cmd, int& threads);
void apply_threads(int threads);

}  // namespace latte::cli
