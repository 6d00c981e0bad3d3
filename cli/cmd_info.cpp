#include <cstdio>

#include "cli/commands.h"
#include "inference/engine/loaded_model.h"

namespace latte::cli {

void add_info(CLI::App& app) {
  auto path = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("info", "Print a checkpoint's config, parameter count and KV-cache size");
  cmd->add_option("-m,--model", *path, "llama2.c .bin, safetensors folder or .gguf file")->required();
  cmd->callback([path] {
    Checkpoint ck = load_checkpoint(*path);
    const ModelConfig& c = ck.config;
    std::printf("model        %s (%s)\n", path->c_str(), ck.format.c_str());
    std::printf("architecture %s\n", c.architecture.c_str());
    std::printf("dim %lld  hidden_dim %lld  layers %lld  heads %lld  kv_heads %lld  head_dim %lld\n",
                (long long)c.dim, (long long)c.hidden_dim, (long long)c.n_layers, (long long)c.n_heads,
                (long long)c.n_kv_heads, (long long)c.head_dim);
    std::printf("vocab %lld  context %lld  rope_theta %g  rope_layout %s  norm_eps %g  tied %s\n",
                (long long)c.vocab_size, (long long)c.max_seq_len, double(c.rope_theta), rope_layout_name(c.rope_layout),
                double(c.norm_eps), c.tied_embeddings ? "yes" : "no");
    if (c.shared_rope()) {
      std::printf("mla          one shared RoPE key of d_r %lld dims (DeepSeek layout; query heads %lld = d_r + %lld wide), "
                  "d_kv %lld, latent width %lld; cache per layer per token d_r + n_kv*d_kv = %lld + %lld*%lld = %lld "
                  "elements\n",
                  (long long)c.rope_dim(), (long long)c.qk_head_dim(), (long long)c.head_dim,
                  (long long)c.kv_rank_per_head, (long long)c.kv_lora_rank(), (long long)c.rope_dim(),
                  (long long)c.n_kv_heads, (long long)c.kv_rank_per_head, (long long)(c.rope_dim() + c.kv_lora_rank()));
    } else if (c.is_mla()) {
      std::printf("mla          r %lld (%lld RoPE dims per head), d_kv %lld, latent width %lld; cache per layer per token "
                  "n_kv*(2r+d_kv) = %lld*(%lld+%lld) = %lld elements\n",
                  (long long)c.rope_pairs, (long long)c.rope_dim(), (long long)c.kv_rank_per_head,
                  (long long)c.kv_lora_rank(), (long long)c.n_kv_heads, (long long)c.rope_dim(),
                  (long long)c.kv_rank_per_head, (long long)(c.n_kv_heads * (c.rope_dim() + c.kv_rank_per_head)));
    }
    std::printf("parameters   %lld\n", (long long)c.parameter_count());
    int64_t per_token = c.kv_cache_elements_per_token();
    std::printf("kv cache     %lld elements/token = %lld B/token f32, %lld B/token bf16 (all %lld layers)\n",
                (long long)per_token, (long long)(per_token * 4), (long long)(per_token * 2), (long long)c.n_layers);
    if (ck.tokenizer) std::printf("tokenizer    %s\n", ck.tokenizer->id().c_str());
  });
}

}  // namespace latte::cli
