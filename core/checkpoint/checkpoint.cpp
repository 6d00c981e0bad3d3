#include "core/checkpoint/checkpoint.h"

#include "core/base/file_io.h"

namespace latte {

Checkpoint load_checkpoint(const std::string& path, const LoadOptions& opts) {
  LATTE_REQUIRE(file_exists(path), ErrorCode::io, "checkpoint ", path, " does not exist");
  if (is_directory(path)) return load_safetensors_dir(path, opts);
  if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".gguf") == 0) return load_gguf(path, opts);
  return load_llama2c(path, opts);
}

ModelConfig load_checkpoint_config(const std::string& path) {
  LoadOptions lo;
  lo.check_finite = false;
  lo.config_only = true;
  ModelConfig c = load_checkpoint(path, lo).config;
  c.validate(path);
  return c;
}

}  // namespace latte
