#include "inference/engine/loaded_model.h"

#include <filesystem>

#include "core/backend/registry.h"
#include "core/base/file_io.h"

namespace latte {

std::string find_tokenizer_beside(const std::string& model_path, int64_t vocab) {
  namespace fs = std::filesystem;
  fs::path dir = is_directory(model_path) ? fs::path(model_path) : fs::path(model_path).parent_path();
  for (const std::string& name : {std::string("tokenizer.json"), std::string("tokenizer.bin"),
                                  "tok" + std::to_string(vocab) + ".bin"}) {
    fs::path p = dir / name;
    if (file_exists(p.string())) return p.string();
  }
  return "";
}

LoadedModel load_model(const ModelLoadRequest& req) {
  LATTE_REQUIRE(!req.model_path.empty(), ErrorCode::invalid_argument, "no model given (--model PATH)");
  LATTE_REQUIRE(file_exists(req.model_path), ErrorCode::io, "model not found: ", req.model_path);
  LoadedModel m;
  m.checkpoint = load_checkpoint(req.model_path);
  Backend& backend = req.backend ? *req.backend : cpu_backend();
  const ModelConfig& c = m.checkpoint.config;
  if (req.tp && req.tp->size() > 1) {
    const TpLayout layout = tp_layout(c, req.tp->rank(), req.tp->size());
    TensorStore local = shard_store(c, layout, m.checkpoint.tensors);
    m.model = std::make_unique<Transformer>(c, weights_from_store(c, local, layout), backend, req.tp);
  } else {
    m.model = std::make_unique<Transformer>(c, weights_from_store(c, m.checkpoint.tensors), backend);
  }

  std::string tok_path = req.tokenizer_path;
  if (tok_path.empty() && !m.checkpoint.tokenizer)
    tok_path = find_tokenizer_beside(req.model_path, m.checkpoint.config.vocab_size);
  if (!tok_path.empty()) {
    m.tokenizer = load_tokenizer(tok_path);
  } else {
    m.tokenizer = std::move(m.checkpoint.tokenizer);
  }
  if (req.require_tokenizer)
    LATTE_REQUIRE(m.tokenizer != nullptr, ErrorCode::invalid_argument, "no tokenizer for ", req.model_path,
                  ": pass --tokenizer PATH (tokenizer.bin or tokenizer.json)");
  if (m.tokenizer)
    LATTE_REQUIRE(m.tokenizer->vocab_size() <= m.checkpoint.config.vocab_size, ErrorCode::invalid_argument,
                  "tokenizer has ", m.tokenizer->vocab_size(), " tokens, the model's vocabulary only ",
                  m.checkpoint.config.vocab_size);
  return m;
}

}  // namespace latte
