#include "core/tokenizer/tokenizer.h"

#include <filesystem>

namespace latte {

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  int32_t prev = -1;
  for (int32_t id : ids) {
    out += decode_piece(prev, id);
    prev = id;
  }
  return out;
}

std::unique_ptr<Tokenizer> load_tokenizer(const std::string& path) {
  // Any *.json is a Hugging Face tokenizer (a llama2.c tokenizer.bin is never JSON), so renamed
  // copies such as "smollm2-tokenizer.json" load too.
  const std::string name = std::filesystem::path(path).filename().string();
  const bool json = name.size() >= 5 && name.compare(name.size() - 5, 5, ".json") == 0;
  if (json) return load_hf_tokenizer_json(path);
  return load_llama2c_tokenizer(path);
}

}  // namespace latte
