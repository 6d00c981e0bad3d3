// Any loaded checkpoint -> a standard Hugging Face folder that transformers (and Latte) read.
#include <filesystem>

#include "core/base/file_io.h"
#include "core/checkpoint/checkpoint.h"

namespace latte {

void export_checkpoint(const Checkpoint& src, const std::string& out_dir, const ExportOptions& opts) {
  ModelConfig config = src.config;
  TensorStore tensors = src.tensors;  // shares storage; only permuted q/k are new
  // MLA heads have a fixed [rope | nope] layout (core/model/config.h): nothing to permute.
  if (!opts.keep_rope_layout && !config.is_mla()) convert_rope_layout(config, tensors, RopeLayout::rotate_half);

  SaveOptions save;
  save.dtype = opts.dtype;
  save.max_shard_bytes = opts.max_shard_bytes;
  if (opts.deepseek_layout) {
    save_deepseek_dir(out_dir, config, tensors, save);
  } else {
    save_safetensors_dir(out_dir, config, tensors, save);
  }

  export_tokenizer(src.tokenizer.get(), out_dir, opts.llama2c_tokenizer, config.vocab_size);
}

std::string export_tokenizer(const Tokenizer* tokenizer, const std::string& out_dir,
                             const std::string& llama2c_tokenizer, int64_t vocab_size) {
  namespace fs = std::filesystem;
  const std::string json_path = (fs::path(out_dir) / "tokenizer.json").string();
  const std::string bin_path = (fs::path(out_dir) / "tokenizer.bin").string();
  std::string written;
  if (tokenizer && tokenizer->bpe_vocab()) {
    write_hf_tokenizer_json(*tokenizer->bpe_vocab(), json_path);
    written = json_path;
  } else if (!llama2c_tokenizer.empty()) {
    LATTE_REQUIRE(file_exists(llama2c_tokenizer) && !is_directory(llama2c_tokenizer), ErrorCode::io,
                  "export: tokenizer ", llama2c_tokenizer, " does not exist");
    // Checked before copying, so a wrong tokenizer does not end up beside the weights.
    load_llama2c_tokenizer(llama2c_tokenizer, vocab_size);
    atomic_write_string(bin_path, read_text_file(llama2c_tokenizer));
    written = bin_path;
  }
  // A tokenizer left from an earlier export would be loaded with these weights.
  std::error_code ec;
  for (const std::string& p : {json_path, bin_path})
    if (p != written) fs::remove(p, ec);
  return written;
}

}  // namespace latte
