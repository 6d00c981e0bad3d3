#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>

#include "core/base/file_io.h"
#include "cli/commands.h"
#include "cli/device_option.h"
#include "inference/engine/evaluate.h"
#include "inference/engine/loaded_model.h"

namespace latte::cli {

void add_compare(CLI::App& app) {
  struct Opts {
    std::string a, b, tokenizer, text, per_token, device = "cpu";
    PerplexityParams ppl;
    int64_t max_chars = 0;
    bool json = false;
    int threads = 0;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand(
      "compare", "Per-token KL divergence and perplexity of model B against model A on a text (e.g. after convert)");
  cmd->add_option("A", o->a, "reference model (llama2.c .bin, safetensors folder or .gguf)")->required();
  cmd->add_option("B", o->b, "model to compare (same vocabulary)")->required();
  cmd->add_option("--text", o->text, "UTF-8 text file")->required();
  cmd->add_option("-z,--tokenizer", o->tokenizer, "tokenizer (default: A's own)");
  cmd->add_option("--max-chars", o->max_chars, "use only the first N bytes of the text")->check(CLI::NonNegativeNumber);
  cmd->add_option("--max-tokens", o->ppl.max_tokens, "score only the first N tokens")->check(CLI::NonNegativeNumber);
  cmd->add_option("--window", o->ppl.window, "tokens per window (default: the smaller context - 1)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--batch", o->ppl.batch, "windows per forward pass")->check(CLI::PositiveNumber);
  cmd->add_option("--per-token", o->per_token, "write one JSON line per scored token (index, kl, nll_a, nll_b)");
  cmd->add_flag("--json", o->json, "print the summary as one JSON line");
  add_device_option(*cmd, o->device);
  add_threads_option(*cmd, o->threads);
  cmd->callback([o] {
    apply_threads(o->threads);
    Backend& backend = resolve_device(o->device);
    LoadedModel a = load_model({.model_path = o->a, .tokenizer_path = o->tokenizer, .backend = &backend});
    LoadedModel b = load_model(
        {.model_path = o->b, .tokenizer_path = o->tokenizer, .backend = &backend, .require_tokenizer = false});
    std::string text = read_text_file(o->text);
    if (o->max_chars > 0 && size_t(o->max_chars) < text.size()) text.resize(size_t(o->max_chars));
    LATTE_REQUIRE(!text.empty(), ErrorCode::invalid_argument, "text file ", o->text, " is empty");
    std::vector<int32_t> tokens = a.tokenizer->encode(text, false);
    std::ofstream per_token;
    if (!o->per_token.empty()) {
      per_token.open(o->per_token);
      LATTE_REQUIRE(per_token.good(), ErrorCode::io, "cannot write ", o->per_token);
    }
    auto on_token = [&](int64_t i, double kl, double na, double nb) {
      if (per_token.is_open())
        per_token << "{\"token\":" << i << ",\"kl\":" << kl << ",\"nll_a\":" << na << ",\"nll_b\":" << nb << "}\n";
    };
    const bool tty = isatty(STDERR_FILENO);
    auto progress = [&](const PerplexityProgress& p) {
      if (!tty) return;
      std::fprintf(stderr, "\rcompare: %lld/%lld tokens  mean KL %.5f   ", (long long)p.tokens_done,
                   (long long)p.tokens_total, p.mean_nll);
    };
    CompareResult r = compare_models(*a.model, *b.model, tokens, a.tokenizer->bos_id(), o->ppl, on_token, progress);
    if (tty) std::fprintf(stderr, "\n");
    if (o->json) {
      std::printf("{\"a\":\"%s\",\"b\":\"%s\",\"tokens\":%lld,\"mean_kl\":%.6f,\"max_kl\":%.6f,\"perplexity_a\":%.6f,"
                  "\"perplexity_b\":%.6f,\"top1_agreement\":%.6f}\n",
                  o->a.c_str(), o->b.c_str(), (long long)r.tokens, r.mean_kl, r.max_kl, r.perplexity_a, r.perplexity_b,
                  r.top1_agreement);
    } else {
      std::printf("tokens          %lld\n", (long long)r.tokens);
      std::printf("KL(A||B)        mean %.5f nats/token, max %.4f\n", r.mean_kl, r.max_kl);
      std::printf("perplexity      A %.4f   B %.4f   (B/A %.3f)\n", r.perplexity_a, r.perplexity_b,
                  r.perplexity_b / r.perplexity_a);
      std::printf("top-1 agreement %.2f %%\n", 100.0 * r.top1_agreement);
    }
  });
}

}  // namespace latte::cli
