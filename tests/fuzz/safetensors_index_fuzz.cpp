// A sharded Hugging Face folder: model.safetensors.index.json (the fuzz input) against real
// shards. The folder is built once from models/stories260K: config.json plus one shard per tensor,
// named "<tensor name>.safetensors", so an index that maps names to files can be right, wrong,
// partial, duplicated or hostile (paths outside the folder) in every combination the fuzzer finds.
#include <filesystem>

#include "core/base/file_io.h"
#include "core/checkpoint/checkpoint.h"
#include "core/checkpoint/safetensors_file.h"
#include "tests/fuzz/fuzz_input.h"

namespace {

const std::filesystem::path& sharded_folder() {
  static const std::filesystem::path dir = [] {
    const std::filesystem::path d = latte::fuzz::scratch_dir() / "sharded";
    std::filesystem::create_directories(d);
    const latte::Checkpoint ck = latte::load_llama2c(std::string(LATTE_MODELS_DIR) + "/stories260K/stories260K.bin");
    latte::atomic_write_string((d / "config.json").string(), latte::config_to_json_text(ck.config));
    for (const auto& [name, entry] : ck.tensors.entries()) {
      latte::TensorStore one;
      one.put(name, entry.tensor, "stories260K.bin");
      latte::write_safetensors_file((d / (name + ".safetensors")).string(), one, latte::DType::f32);
    }
    return d;
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::filesystem::path& dir = sharded_folder();
  latte::atomic_write_string((dir / "model.safetensors.index.json").string(),
                             std::string(reinterpret_cast<const char*>(data), size));
  latte::fuzz::parse_or_reject([&] { latte::load_safetensors_dir(dir.string(), {.check_finite = false}); });
  return 0;
}
