#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <iostream>

#include "core/base/file_io.h"
#include "cli/commands.h"
#include "cli/device_option.h"
#include "cli/model_job.h"
#include "parallel/job.h"
#include "inference/engine/loaded_model.h"
#include "inference/engine/evaluate.h"

namespace latte::cli {

void add_perplexity(CLI::App& app) {
  struct Opts {
    ModelLoadRequest load;
    PerplexityParams ppl;
    std::string text;
    int64_t max_chars = 0;
    std::string device = "cpu";
    bool json = false, quiet = false;
    int threads = 0;
    int64_t tp = 1;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("perplexity", "Perplexity of a model on a text file");
  cmd->add_option("-m,--model", o->load.model_path, "llama2.c .bin, safetensors folder or .gguf file")->required();
  cmd->add_option("-z,--tokenizer", o->load.tokenizer_path, "tokenizer.bin or tokenizer.json (default: the model's own)");
  cmd->add_option("--text", o->text, "UTF-8 text file")->required();
  cmd->add_option("--max-chars", o->max_chars, "score only the first N characters (bytes) of the file")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-tokens", o->ppl.max_tokens, "score only the first N tokens")->check(CLI::NonNegativeNumber);
  cmd->add_option("--window", o->ppl.window, "tokens per window (default: context - 1)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--batch", o->ppl.batch, "windows per forward pass")->check(CLI::PositiveNumber);
  cmd->add_option_function<std::string>(
         "--paged-cache",
         [o](const std::string& v) { o->ppl.paged_cache = dtype_from_name(v); },
         "run through the serving engine's paged KV cache in this dtype: f32, bf16, or i8 (MLA latent and RoPE keys)")
      ->check(CLI::IsMember({"f32", "bf16", "i8"}));
  cmd->add_flag("--json", o->json, "print the result as one JSON line");
  cmd->add_flag("-q,--quiet", o->quiet, "no progress on stderr");
  add_device_option(*cmd, o->device);
  cmd->add_option("--tp", o->tp, "tensor-parallel ranks (run under mpirun -np N)")->check(CLI::PositiveNumber);
  add_threads_option(*cmd, o->threads);
  cmd->callback([o] {
    apply_threads(o->threads);
    ModelJob run = load_model_job("perplexity", o->tp, o->device, o->load);
    const bool lead = run.lead;
    if (!lead) o->quiet = true;
    LoadedModel& m = run.model;
    std::string text = read_text_file(o->text);
    if (o->max_chars > 0 && size_t(o->max_chars) < text.size()) text.resize(size_t(o->max_chars));
    LATTE_REQUIRE(!text.empty(), ErrorCode::invalid_argument, "text file ", o->text, " is empty");
    std::vector<int32_t> tokens = m.tokenizer->encode(text, false);
    // On a terminal the progress line redraws in place; in a log it is one line every 10 s.
    const bool tty = isatty(STDERR_FILENO);
    double last_logged = -1e9;
    auto progress = [&](const PerplexityProgress& p) {
      if (o->quiet || (!tty && p.seconds - last_logged < 10 && p.tokens_done < p.tokens_total)) return;
      last_logged = p.seconds;
      double rate = p.seconds > 0 ? double(p.tokens_done) / p.seconds : 0;
      double eta = rate > 0 ? double(p.tokens_total - p.tokens_done) / rate : 0;
      std::fprintf(stderr, "%sperplexity: %lld/%lld tokens  %.0f tok/s  ETA %.0fs  ppl %.4f%s",
                   tty ? "\r" : "", (long long)p.tokens_done, (long long)p.tokens_total, rate, eta,
                   std::exp(p.mean_nll), tty ? "   " : "\n");
    };
    PerplexityResult r = perplexity(*m.model, tokens, m.tokenizer->bos_id(), o->ppl, progress);
    if (!o->quiet && tty) std::fprintf(stderr, "\n");
    if (!lead) return;
    double rate = r.seconds > 0 ? double(r.tokens) / r.seconds : 0;
    if (o->json) {
      std::printf("{\"model\":\"%s\",\"text\":\"%s\",\"tokens\":%lld,\"mean_nll\":%.6f,\"perplexity\":%.6f,"
                  "\"seconds\":%.3f,\"tokens_per_second\":%.1f}\n",
                  o->load.model_path.c_str(), o->text.c_str(), (long long)r.tokens, r.mean_nll, r.perplexity,
                  r.seconds, rate);
    } else {
      std::printf("perplexity %.4f  (mean NLL %.4f nats over %lld tokens, %.1fs, %.0f tok/s)\n", r.perplexity,
                  r.mean_nll, (long long)r.tokens, r.seconds, rate);
    }
  });
}

}  // namespace latte::cli
