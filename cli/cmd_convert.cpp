// latte convert: a Llama MHA/GQA checkpoint -> an MLA safetensors folder (trainer/mha2mla/convert.h),
// with its tokenizer, and the conversion report on stdout. A safetensors folder is converted one
// layer at a time (convert_streamed.h), so a 7B-70B checkpoint needs about one layer of memory;
// llama2.c and GGUF files are converted in memory.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include "core/base/file_io.h"
#include "core/base/process_memory.h"
#include "core/checkpoint/checkpoint.h"
#include "cli/commands.h"
#include "cli/device_option.h"
#include "inference/engine/loaded_model.h"
#include "trainer/mha2mla/convert.h"
#include "trainer/mha2mla/convert_streamed.h"

namespace latte::cli {

namespace {

bool same_path(const std::string& a, const std::string& b) {
  std::error_code ec;
  return std::filesystem::equivalent(a, b, ec);
}

}  // namespace

void add_convert(CLI::App& app) {
  struct Opts {
    std::string model, out, strategy = "2norm", svd = "joint", init = "svd", sigma = "code", calib, tokenizer, device = "cpu";
    std::string dtype = "source", rope_mode = "partial";
    double shard_gib = -1;
    int64_t rope_pairs = -1, rope_dims = -1, d_kv = -1, calib_tokens = 32768, calib_window = 0;
    double pca_key_scale = 0;
    bool quiet = false, no_init_comparison = false;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("convert", "Convert a Llama MHA/GQA checkpoint to MLA with MHA2MLA");
  cmd->add_option("-m,--model", o->model, "llama2.c .bin, safetensors folder or .gguf file")->required();
  cmd->add_option("-o,--out", o->out, "output folder (created): config.json, model.safetensors, tokenizer")
      ->required();
  cmd->add_option("--rope-mode", o->rope_mode,
                  "partial (default: MHA2MLA, r RoPE pairs kept per KV head) or rorope (the KV heads' RoPE "
                  "components rotated into one shared RoPE key of --rope-dims dims, DeepSeek's layout; needs --calib)")
      ->check(CLI::IsMember({"partial", "rorope"}));
  cmd->add_option("--rope-dims", o->rope_dims,
                  "--rope-mode rorope: d_r, dims of the shared RoPE key, even, in [2, n_kv_heads*head_dim] "
                  "(default head_dim; n_kv_heads*head_dim keeps every component: exact)");
  cmd->add_option("--rope-strategy", o->strategy,
                  "which frequency pairs keep RoPE: high, low, uniform or 2norm (default; needs --calib)")
      ->check(CLI::IsMember({"high", "low", "uniform", "2norm"}));
  cmd->add_option("--rope-pairs", o->rope_pairs, "r, RoPE pairs kept per head, in [0, head_dim/2] (default head_dim/16, at least 1)");
  cmd->add_option("--d-kv", o->d_kv, "latent rank per KV head (default head_dim/4, at least 1)");
  cmd->add_option("--svd", o->svd, "joint (default: one SVD of [k_nope; v]) or split (D/2 each)")
      ->check(CLI::IsMember({"joint", "split"}));
  cmd->add_option("--init", o->init,
                  "latent initialisation: svd (default: of the weights, MHA2MLA) or pca (principal directions "
                  "of the calibration keys and values, keys balanced against values, TransMLA-style; needs --calib)")
      ->check(CLI::IsMember({"svd", "pca"}));
  cmd->add_option("--pca-key-scale", o->pca_key_scale,
                  "--init pca: the key scale alpha (keys / alpha, key up-projection * alpha); 0 (default): "
                  "balanced, mean key channel norm / mean value channel norm; 1: unbalanced PCA")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--sigma-split", o->sigma, "where the singular values go: code (default; all in the "
                                             "up-projection) or paper (square root on each side)")
      ->check(CLI::IsMember({"code", "paper"}));
  cmd->add_option("--calib", o->calib,
                  "calibration text for --rope-strategy 2norm and --init pca; with --init svd it adds the "
                  "energy kept on its activations to the report");
  cmd->add_flag("--no-init-comparison", o->no_init_comparison,
                "with --calib: skip factorizing the other latent initialisation for the report's side-by-side "
                "activation energies (one eigendecomposition per layer: minutes per layer at 7B width)");
  cmd->add_option("--calib-tokens", o->calib_tokens, "calibration tokens to run (default 32768)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--calib-window", o->calib_window, "positions per calibration pass (default: context, at most 2048)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--dtype", o->dtype,
                  "safetensors folders: source (default: tensors the method copies or permutes keep the source's "
                  "bf16/f16 bit for bit, the computed factors are f32) or f32 (everything f32); other inputs: f32")
      ->check(CLI::IsMember({"source", "f32"}));
  cmd->add_option("--shard-size", o->shard_gib,
                  "GiB per output shard (model-*-of-*.safetensors + index); 0: one model.safetensors; default: "
                  "one file for a one-file source, else 4")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-z,--tokenizer", o->tokenizer,
                  "tokenizer.bin or tokenizer.json (default: the model's own, or one beside it)");
  add_device_option(*cmd, o->device);  // runs the calibration
  cmd->add_flag("-q,--quiet", o->quiet, "no progress on stderr");
  add_threads_option(*cmd, o->threads);
  cmd->callback([o, cmd] {
    // The default strategy (2norm) must not count as a choice: only a given one conflicts with rorope.
    const size_t cmd_count_strategy = cmd->count("--rope-strategy");
    apply_threads(o->threads);
    Backend& backend = resolve_device(o->device);
    LATTE_REQUIRE(file_exists(o->model), ErrorCode::io, "model not found: ", o->model);
    LATTE_REQUIRE(!same_path(o->model, o->out), ErrorCode::invalid_argument, "--out ", o->out,
                  " is the source model; write the MLA model elsewhere");
    const RopeStrategy strategy = rope_strategy_from_name(o->strategy);
    if (!o->calib.empty())
      LATTE_REQUIRE(file_exists(o->calib) && !is_directory(o->calib), ErrorCode::io, "calibration text not found: ",
                    o->calib);
    if (!o->tokenizer.empty())
      LATTE_REQUIRE(file_exists(o->tokenizer) && !is_directory(o->tokenizer), ErrorCode::io, "tokenizer not found: ",
                    o->tokenizer);

    // A folder is converted layer by layer: its map is not read (nor checked for NaN/Inf) up
    // front, each layer is checked as it is reached.
    const bool stream = is_directory(o->model);
    Checkpoint src = load_checkpoint(o->model, {.check_finite = !stream});
    // The tokenizer goes with the converted model (and tokenizes the calibration text).
    std::string tok_path = o->tokenizer;
    if (tok_path.empty() && !src.tokenizer) tok_path = find_tokenizer_beside(o->model, src.config.vocab_size);
    std::unique_ptr<Tokenizer> tokenizer = tok_path.empty() ? std::move(src.tokenizer) : load_tokenizer(tok_path);
    if (tokenizer)
      LATTE_REQUIRE(tokenizer->vocab_size() <= src.config.vocab_size, ErrorCode::invalid_argument, "tokenizer has ",
                    tokenizer->vocab_size(), " tokens, the model's vocabulary only ", src.config.vocab_size);

    ConvertOptions co;
    co.rope_mode = rope_mode_from_name(o->rope_mode);
    LATTE_REQUIRE(co.rope_mode == RopeMode::partial || cmd_count_strategy == 0, ErrorCode::invalid_argument,
                  "--rope-strategy applies to --rope-mode partial; RoRoPE keeps the leading rotated components");
    co.rope_dims = o->rope_dims;
    co.strategy = strategy;
    co.rope_pairs = o->rope_pairs;
    co.kv_rank_per_head = o->d_kv;
    co.svd = svd_method_from_name(o->svd);
    co.init = latent_init_from_name(o->init);
    LATTE_REQUIRE(o->pca_key_scale == 0 || co.init == LatentInit::pca, ErrorCode::invalid_argument,
                  "--pca-key-scale applies to --init pca only");
    co.pca_key_scale = o->pca_key_scale;
    co.sigma_in_up = o->sigma == "code";
    co.compare_inits = !o->no_init_comparison;
    co.calibration.text_path = o->calib;
    co.calibration.max_tokens = o->calib_tokens;
    co.calibration.window = o->calib_window;
    co.tokenizer = tokenizer.get();
    co.backend = &backend;
    co.source_name = o->model;
    const bool tty = isatty(STDERR_FILENO);
    if (!o->quiet)
      co.calibration.progress = [tty](int64_t done, int64_t total) {
        if (tty || done == total)
          std::fprintf(stderr, "%scalibration: %lld/%lld tokens%s", tty ? "\r" : "", (long long)done,
                       (long long)total, done == total || !tty ? "\n" : "");
      };
    // export writes a BPE vocabulary as tokenizer.json; a llama2.c tokenizer has none to write,
    // so its file is copied (the checkpoint's own sits beside it, as load_checkpoint found it).
    const std::string llama2c_tokenizer =
        tokenizer && !tokenizer->bpe_vocab()
            ? (tok_path.empty() ? find_tokenizer_beside(o->model, src.config.vocab_size) : tok_path)
            : std::string();

    ConversionReport report;
    std::string stored = "f32";
    if (stream) {
      StreamedConvertOptions so;
      so.convert = co;
      so.keep_source_dtype = o->dtype == "source";
      namespace fs = std::filesystem;
      const bool one_file = file_exists((fs::path(o->model) / "model.safetensors").string());
      const double gib = o->shard_gib >= 0 ? o->shard_gib : one_file ? 0.0 : 4.0;
      so.max_shard_bytes = size_t(gib * double(1ull << 30));
      if (!o->quiet)
        so.progress = [](const StreamedConvertProgress& p) {
          const double eta = p.seconds / double(p.layers_done) * double(p.layers - p.layers_done);
          std::fprintf(stderr, "layer %lld/%lld converted  %.1f s  ETA %.0f s  resident %.2f GiB\n",
                       (long long)p.layers_done, (long long)p.layers, p.seconds, eta,
                       double(resident_bytes()) / double(1ull << 30));
        };
      convert_to_mla_streamed(src, o->out, so, &report);
      export_tokenizer(tokenizer.get(), o->out, llama2c_tokenizer, src.config.vocab_size);
      if (so.keep_source_dtype) stored = "source dtypes, factors f32";
    } else {
      Checkpoint mla = convert_to_mla(src, co, &report);
      mla.tokenizer = std::move(tokenizer);
      ExportOptions eo;  // f32; MLA heads are written as they are (no RoPE row permutation)
      eo.llama2c_tokenizer = llama2c_tokenizer;
      export_checkpoint(mla, o->out, eo);
    }
    print_conversion_report(std::cout, report);
    namespace fs = std::filesystem;
    const bool wrote_tokenizer = file_exists((fs::path(o->out) / "tokenizer.json").string()) ||
                                 file_exists((fs::path(o->out) / "tokenizer.bin").string());
    const bool sharded = file_exists((fs::path(o->out) / "model.safetensors.index.json").string());
    std::printf("\nwrote %s: config.json, %s (%s)%s\n", o->out.c_str(),
                sharded ? "model-*-of-*.safetensors + index" : "model.safetensors", stored.c_str(),
                wrote_tokenizer ? ", tokenizer" : "; no tokenizer found (pass --tokenizer)");
    std::printf("peak resident memory: %.2f GiB\n", double(peak_resident_bytes()) / double(1ull << 30));
  });
}

}  // namespace latte::cli
