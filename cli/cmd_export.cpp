#include <cstdio>

#include "core/base/file_io.h"
#include "core/checkpoint/checkpoint.h"
#include "cli/commands.h"

namespace latte::cli {

void add_export(CLI::App& app) {
  struct Opts {
    std::string model, out, dtype = "f32", tokenizer, format = "hf";
    double max_shard_mib = 0;
    bool keep_rope = false;
  };
  auto o = std::make_shared<Opts>();
  CLI::App* cmd = app.add_subcommand("export", "Write a checkpoint as a Hugging Face safetensors folder");
  cmd->add_option("-m,--model", o->model, "llama2.c .bin, safetensors folder or .gguf file")->required();
  cmd->add_option("-o,--out", o->out, "output folder (created)")->required();
  cmd->add_option("--dtype", o->dtype, "f32, bf16 or f16")->check(CLI::IsMember({"f32", "bf16", "f16"}));
  cmd->add_option("--max-shard-mib", o->max_shard_mib, "split into shards of at most this size (0: one file)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("-z,--tokenizer", o->tokenizer, "llama2.c tokenizer.bin to copy beside the weights");
  cmd->add_option("--format", o->format,
                  "hf (default: Latte's own config keys and tensor names) or deepseek-v3 (an MLA model with one "
                  "shared RoPE key, from --rope-mode rorope, under DeepSeek-V3's names: kv_a_proj_with_mqa, "
                  "kv_b_proj, kv_lora_rank, qk_rope_head_dim, ...; Latte reads it back bit for bit)")
      ->check(CLI::IsMember({"hf", "deepseek-v3"}));
  cmd->add_flag("--keep-rope-layout", o->keep_rope,
                "keep Meta's interleaved q/k rows (bit-identical to the source) instead of HF's rotate_half");
  cmd->callback([o] {
    Checkpoint ck = load_checkpoint(o->model);
    ExportOptions eo;
    eo.dtype = dtype_from_name(o->dtype);
    eo.max_shard_bytes = size_t(o->max_shard_mib * 1024 * 1024);
    eo.keep_rope_layout = o->keep_rope;
    eo.deepseek_layout = o->format == "deepseek-v3";
    eo.llama2c_tokenizer = o->tokenizer;
    if (eo.llama2c_tokenizer.empty() && ck.format == "llama2c") {
      // The usual llama2.c layout keeps the tokenizer beside the model.
      std::string dir = o->model.substr(0, o->model.find_last_of('/') + 1);
      for (std::string name : {std::string("tokenizer.bin"), "tok" + std::to_string(ck.config.vocab_size) + ".bin"})
        if (file_exists(dir + name)) eo.llama2c_tokenizer = dir + name;
    }
    export_checkpoint(ck, o->out, eo);
    std::printf("exported %s (%s) to %s as %s%s\n", o->model.c_str(), ck.format.c_str(), o->out.c_str(),
                o->dtype.c_str(), eo.deepseek_layout ? ", DeepSeek-V3 layout" : "");
  });
}

}  // namespace latte::cli
