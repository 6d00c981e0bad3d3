// Single .safetensors files without a config: what training checkpoints (per-rank model shards,
// optimizer moments) are made of. The folder format with config.json is in checkpoint.h.
#pragma once
#include <string>

#include "core/tensor/tensor_store.h"

namespace latte {

// Tensors as views on a memory map of the file, validated against the header (errors name the
// file and tensor).
TensorStore read_safetensors_file(const std::string& path);
// Writes every tensor of the store (name order) in `dtype`, atomically.
void write_safetensors_file(const std::string& path, const TensorStore& tensors, DType dtype);

}  // namespace latte
