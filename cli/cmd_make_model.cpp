// latte make-model: a random-weight checkpoint with the exact shapes of a real model
// (core/checkpoint/random_model.h), e.g. the 32 layers of Llama-2-7B as 13.5 GB of sharded bf16,
// or a 2-layer slice of Llama-2-70B, so that large-model paths run without downloading anything.
#include <chrono>
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "core/base/error.h"
#include "core/base/file_io.h"
#include "core/checkpoint/random_model.h"
#include "trainer/planner/planner.h"

namespace latte::cli {

void add_make_model(CLI::App& app) {
  struct Opts {
    std::string preset, config, out, dtype = "bf16";
    int64_t layers = 0;
    uint64_t seed = 0;
    double max_shard_gib = 4.0;
    bool quiet = false;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("make-model", "Write a random-weight checkpoint with a real model's shapes "
                                                   "(sharded safetensors + config.json + a synthetic tokenizer)");
  cmd->add_option("--preset", o->preset, "llama2-7b, llama2-13b, llama2-70b or smollm-135m");
  cmd->add_option("--config", o->config, "a Hugging Face config.json to take the shapes from instead");
  cmd->add_option("-o,--out", o->out, "output folder (created)")->required();
  cmd->add_option("--layers", o->layers, "keep only the first N layers (default: all)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--seed", o->seed, "random seed (default 0); a tensor's values depend on seed, name and shape only");
  cmd->add_option("--dtype", o->dtype, "bf16 (default) or f32")->check(CLI::IsMember({"bf16", "f32"}));
  cmd->add_option("--max-shard-gib", o->max_shard_gib, "largest weight file, GiB (default 4; 0: one file)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_flag("-q,--quiet", o->quiet, "no progress on stderr");
  add_threads_option(*cmd, o->threads);
  cmd->callback([o] {
    apply_threads(o->threads);
    LATTE_REQUIRE(o->preset.empty() != o->config.empty(), ErrorCode::invalid_argument,
                  "give exactly one of --preset and --config");
    ModelConfig c = o->preset.empty() ? config_from_json_text(read_text_file(o->config), o->config)
                                      : planner::preset(o->preset);
    LATTE_REQUIRE(!c.is_mla(), ErrorCode::invalid_argument, "make-model writes llama models; ",
                  o->config, " describes an MLA model");
    LATTE_REQUIRE(o->layers <= c.n_layers, ErrorCode::invalid_argument, "--layers ", o->layers, " is more than the ",
                  c.n_layers, " layers of the model");
    if (o->layers > 0) c.n_layers = o->layers;
    RandomModelOptions ro;
    ro.seed = o->seed;
    ro.dtype = o->dtype == "bf16" ? DType::bf16 : DType::f32;
    ro.max_shard_bytes = size_t(o->max_shard_gib * double(1ull << 30));
    const auto start = std::chrono::steady_clock::now();
    if (!o->quiet)
      ro.progress = [start](size_t i, size_t n, uint64_t done, uint64_t total) {
        const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        const double rate = double(done) / std::max(s, 1e-9);
        std::fprintf(stderr, "\rmake-model: tensor %zu/%zu, %.2f / %.2f GB, %.0f MB/s, ETA %.0f s   ", i, n,
                     double(done) / 1e9, double(total) / 1e9, rate / 1e6, double(total - done) / std::max(rate, 1.0));
        if (i == n) std::fprintf(stderr, "\n");
      };
    write_random_model(o->out, c, ro);
    std::printf("make-model: %s: %lld layers, dim %lld, %lld/%lld heads, FFN %lld, vocab %lld, %.3f B parameters, %s, "
                "seed %llu\n",
                o->out.c_str(), (long long)c.n_layers, (long long)c.dim, (long long)c.n_heads,
                (long long)c.n_kv_heads, (long long)c.hidden_dim, (long long)c.vocab_size,
                double(c.parameter_count()) / 1e9, o->dtype.c_str(), (unsigned long long)o->seed);
  });
}

}  // namespace latte::cli
