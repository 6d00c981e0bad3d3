#include <cblas.h>
#include <omp.h>

#include <iostream>

#include "core/base/error.h"
#include "cli/commands.h"
#include "core/backend/cpu/openblas_kernels.h"

namespace latte::cli {

void add_threads_option(CLI::App& cmd, int& threads) {
  cmd.add_option("--threads", threads, "CPU threads for OpenMP and OpenBLAS (0: all cores)")
      ->check(CLI::Range(0, 1024));
}

void apply_threads(int threads) {
  if (threads <= 0) return;
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);
}

}  // namespace latte::cli

int main(int argc, char** argv) {
  latte::cpu::use_openblas_kernels_for_this_cpu(argv);  // before anything else: it may re-execute
  CLI::App app{"latte: convert Llama MHA/GQA models to Multi-head Latent Attention, train and serve them"};
  app.require_subcommand(1);
  latte::cli::add_generate(app);
  latte::cli::add_perplexity(app);
  latte::cli::add_eval(app);
  latte::cli::add_info(app);
  latte::cli::add_export(app);
  latte::cli::add_compare(app);
  latte::cli::add_tokenize(app);
  latte::cli::add_train(app);
  latte::cli::add_convert(app);
  latte::cli::add_plan(app);
  latte::cli::add_plot(app);
  latte::cli::add_make_model(app);
  latte::cli::add_shard(app);
#if LATTE_CLI_WITH_GRPC
  latte::cli::add_coordinator(app);
#endif
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "latte: " << e.what() << " (see latte --help)\n";
    return 2;
  } catch (const latte::Error& e) {
    std::cerr << "latte: " << latte::error_code_name(e.code()) << ": " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "latte: unexpected error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
